"""Seeded synthetic runs: a run.json dict, a requests frame and a spans frame.

Everything is drawn with one numpy Generator so a seed fixes the whole run, and every column is
built as a vector: a million requests and five million spans take a few seconds. The ground truth
(where each weight change really took effect, per gateway replica) comes back beside the frames
so tests can measure the analysis against it.

A run can have several gateway replicas, each switching `replica_delay_ms` later than the
change's `propagation_ms`; a stamped run (`stamped=True`) records, as `meshcore.stamps` has a
response say, the generation and the replica that served every response, and run.json says so
(`stamps`, `replica_pods`). Options left at their defaults draw nothing, so a seed gives the
same run it always gave. `make_run` is `schedule`, then `draw_requests` for every start time;
a writer of runs too big for memory (benchmarks.long_run) calls `draw_requests` window by
window under one schedule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from meshcore.stamps import replica_id, run_token

DEFAULT_STEPS: tuple[dict[str, int], ...] = (
    {"v1": 100, "v2": 0},
    {"v1": 90, "v2": 10},
    {"v1": 50, "v2": 50},
    {"v1": 0, "v2": 100},
)
ENDPOINTS = ("/", "/product/[id]", "/cart", "/setCurrency", "/cart/checkout")
ENDPOINT_P = (0.2, 0.4, 0.2, 0.1, 0.1)
ENDPOINT_METHOD = ("GET", "GET", "GET", "POST", "POST")
T0_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z, a fixed epoch keeps runs comparable

# One trace: frontend calls productcatalog, currency and recommendation (which calls
# productcatalog again). Offsets and durations are fractions of the baseline-equivalent frontend
# time, so a slower canary shows up as extra frontend self time only.
SPAN_SERVICES = (
    "frontend",
    "productcatalogservice",
    "currencyservice",
    "recommendationservice",
    "productcatalogservice",
)
SPAN_OPERATIONS = (
    "frontend.default",
    "GetProduct",
    "Convert",
    "ListRecommendations",
    "ListProducts",
)
SPAN_PARENT = (-1, 0, 0, 0, 3)
SPAN_OFFSET = (0.0, 0.05, 0.40, 0.30, 0.10)  # of base (slot 4: of its parent's duration)
SPAN_LENGTH = (1.0, 0.30, 0.15, 0.55, 0.50)


@dataclass(frozen=True)
class SyntheticRun:
    run: dict[str, object]
    requests: pd.DataFrame
    spans: pd.DataFrame
    effective_ns: list[int] = field(default_factory=list)  # per weights event, true switch time
    switch_index: list[int] = field(default_factory=list)  # first request drawn with new weights
    # per replica (as records name it), per weights event: when that replica switched
    replica_effective_ns: dict[str, list[int]] = field(default_factory=dict)


def hex_ids(rng: np.random.Generator, n: int, n_chars: int) -> pa.StringArray:
    """n random lowercase hex ids of n_chars characters, built straight into an Arrow buffer."""
    data = rng.bytes(n * n_chars // 2).hex().encode()
    offsets = np.arange(n + 1, dtype=np.int32) * n_chars
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _str_series(arr: pa.Array) -> pd.Series:
    return pd.Series(arr.to_pandas(), copy=False)


def _categorical(labels: Sequence[str], codes: np.ndarray) -> pd.Categorical:
    """labels[codes] as a categorical; a negative code is a null. Repeated labels are merged."""
    cats = list(dict.fromkeys(labels))
    lookup = np.array([cats.index(x) for x in labels] + [-1], dtype=np.int32)
    return pd.Categorical.from_codes(lookup[np.where(codes < 0, len(labels), codes)], cats)


def make_run(
    *,
    seed: int = 0,
    n_requests: int = 20_000,
    steps: Sequence[Mapping[str, int]] = DEFAULT_STEPS,
    rps: float = 200.0,
    accept_lag_ms: float = 40.0,
    propagation_ms: float = 500.0,
    latency_median_ms: float = 20.0,
    latency_sigma: float = 0.5,
    slowdown: Mapping[str, float] | None = None,
    error_rate: Mapping[str, float] | None = None,
    unknown_rate: float = 0.0,
    trace_sample: float = 1.0,
    with_spans: bool = True,
    open_model: bool = False,
    n_users: int = 0,
    stamped: bool = False,
    replicas: int = 1,
    replica_delay_ms: Sequence[float] | None = None,
    no_header_rate: float = 0.0,
) -> SyntheticRun:
    """A run whose weights move through `steps`, equally long, the first set before traffic.

    `replica_delay_ms[r]`: how much later than `propagation_ms` replica r switches;
    `no_header_rate`: the share of responses without a version header (their traces keep it)."""
    rng = np.random.default_rng(seed)
    traffic = Traffic(
        latency_median_ms=latency_median_ms,
        latency_sigma=latency_sigma,
        slowdown=dict(slowdown or {}),
        error_rate=dict(error_rate or {}),
        unknown_rate=unknown_rate,
        trace_sample=trace_sample,
        with_spans=with_spans,
        open_model=open_model,
        n_users=n_users,
        stamped=stamped,
        no_header_rate=no_header_rate,
    )
    duration_ns = int(n_requests / rps * 1e9)
    gaps = rng.exponential(1.0, n_requests)
    start_ns = T0_NS + (np.cumsum(gaps) / gaps.sum() * (duration_ns - 1)).astype(np.int64)
    plan = schedule(
        steps,
        duration_ns,
        accept_lag_ms=accept_lag_ms,
        propagation_ms=propagation_ms,
        replicas=replicas,
        replica_delay_ms=replica_delay_ms,
    )
    drawn = draw_requests(rng, start_ns, plan, traffic)
    run = run_info(f"synthetic-{seed}", plan, duration_ns, stamped=stamped)
    switch = [int(np.searchsorted(start_ns, e)) for e in plan.effective_ns]
    ids = replica_ids(replicas)
    per_replica = {i: [int(t) for t in plan.switch_ns[r]] for r, i in enumerate(ids)}
    return SyntheticRun(
        run, drawn.requests, drawn.spans, [int(e) for e in plan.effective_ns], switch, per_replica
    )


@dataclass(frozen=True)
class Schedule:
    """A run's weight changes: step k starts at `step_start[k]` (the client's cut), its change
    was requested and accepted then, and replica r switched to it at `switch_ns[r, k]`."""

    steps: tuple[Mapping[str, int], ...]
    versions: list[str]
    step_start: np.ndarray
    requested: np.ndarray
    accepted: np.ndarray
    switch_ns: np.ndarray

    @property
    def effective_ns(self) -> np.ndarray:
        """When each change first took effect (its first replica)."""
        return np.asarray(self.switch_ns.min(axis=0))

    def events(self) -> list[dict[str, object]]:
        """run.json's `weights` events."""
        return [
            {
                "kind": "weights",
                "step": k,
                "weights": dict(w),
                "requested_ns": int(self.requested[k]),
                "accepted_ns": int(self.accepted[k]),
            }
            for k, w in enumerate(self.steps)
        ]


def schedule(
    steps: Sequence[Mapping[str, int]],
    duration_ns: int,
    *,
    accept_lag_ms: float = 40.0,
    propagation_ms: float = 500.0,
    replicas: int = 1,
    replica_delay_ms: Sequence[float] | None = None,
) -> Schedule:
    """`steps` equally long over a run of `duration_ns` from T0_NS, the first set before traffic."""
    step_start = T0_NS + np.arange(len(steps), dtype=np.int64) * (duration_ns // len(steps))
    requested = step_start.copy()
    requested[0] = T0_NS - 1_000_000_000  # initial weights are applied before traffic starts
    accepted = requested + int(accept_lag_ms * 1e6)
    delays = np.asarray(replica_delay_ms if replica_delay_ms is not None else [0.0] * replicas)
    if len(delays) != replicas:
        raise ValueError(f"replica_delay_ms has {len(delays)} delays for {replicas} replicas")
    switch_ns = accepted[None, :] + ((propagation_ms + delays[:, None]) * 1e6).astype(np.int64)
    versions = sorted({v for w in steps for v in w})
    return Schedule(tuple(steps), versions, step_start, requested, accepted, switch_ns)


def replica_ids(replicas: int) -> list[str]:
    """The gateway replicas' pods' short ids, as records name them."""
    return [str(replica_id(p)) for p in _replica_pods(replicas)]


def _replica_pods(replicas: int) -> list[str]:
    return [f"istio-ingressgateway-5c8f7d9b4-{r:05d}" for r in range(replicas)]


def run_info(
    run_id: str, plan: Schedule, duration_ns: int, *, stamped: bool = False
) -> dict[str, object]:
    """run.json of a synthetic run of `duration_ns` from T0_NS."""
    run: dict[str, object] = {
        "schema_version": 1,
        "run_id": run_id,
        "scenario": "synthetic",
        "started_ns": int(T0_NS),
        "ended_ns": int(T0_NS + duration_ns),
        "target": "http://127.0.0.1:0",
        "mesh": "embedded",
        "plan": {"source": "synthetic", "steps": [{"weights": dict(w)} for w in plan.steps]},
        "events": plan.events(),
        "telemetry": {"jaeger_url": None, "prometheus_url": None},
        "versions": {"meshload": "synthetic"},
    }
    if stamped:
        pods = _replica_pods(plan.switch_ns.shape[0])
        run["stamps"] = {
            "token": run_token(run_id),
            "route": "primary-meshload",
            "version_header": "x-version",
            "version_header_added": [],
            "replica": True,
        }
        run["stamping"] = None
        run["replica_pods"] = dict(zip([str(replica_id(p)) for p in pods], pods, strict=True))
    return run


@dataclass(frozen=True)
class Traffic:
    """How each request is drawn once its start is known (make_run's options of the same
    names); the defaults draw nothing beyond a plain run."""

    latency_median_ms: float = 20.0
    latency_sigma: float = 0.5
    slowdown: Mapping[str, float] = field(default_factory=dict)
    error_rate: Mapping[str, float] = field(default_factory=dict)
    unknown_rate: float = 0.0
    trace_sample: float = 1.0
    with_spans: bool = True
    open_model: bool = False
    n_users: int = 0
    stamped: bool = False
    no_header_rate: float = 0.0


@dataclass(frozen=True)
class Drawn:
    """Requests drawn at given starts, their spans, and which requests were traced."""

    requests: pd.DataFrame
    spans: pd.DataFrame
    traced: np.ndarray  # row numbers of `requests` whose traces are in `spans`


def draw_requests(
    rng: np.random.Generator, start_ns: np.ndarray, plan: Schedule, traffic: Traffic
) -> Drawn:
    """Requests starting at `start_ns` (ascending, any window of the run) under `plan`, and
    their spans: the same draws, in the same order, whatever the window, so one call for the
    whole run and calls for consecutive windows of it build alike runs."""
    n_requests = len(start_ns)
    versions, replicas = plan.versions, plan.switch_ns.shape[0]
    slowdown, error_rate = traffic.slowdown, traffic.error_rate
    step = np.searchsorted(plan.step_start, start_ns, side="right") - 1
    shares = np.array([[w.get(v, 0) for v in versions] for w in plan.steps], dtype=float)
    cum = np.cumsum(shares / shares.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(n_requests)
    replica = rng.integers(0, replicas, n_requests) if replicas > 1 else np.zeros(n_requests, int)
    regime = np.zeros(n_requests, dtype=np.int64)
    for r in range(replicas):  # the generation each request's replica had at its start
        mine = replica == r
        regime[mine] = np.searchsorted(plan.switch_ns[r], start_ns[mine], side="right") - 1
    regime = np.maximum(regime, 0)  # a replica slower than the first step: its initial routes
    vcode = (u[:, None] >= cum[regime]).sum(axis=1).clip(0, len(versions) - 1)

    slow = np.array([slowdown.get(v, 1.0) for v in versions])[vcode]
    latency_ms = (
        rng.lognormal(np.log(traffic.latency_median_ms), traffic.latency_sigma, n_requests) * slow
    )
    unknown = rng.random(n_requests) < traffic.unknown_rate
    failed = rng.random(n_requests) < np.array([error_rate.get(v, 0.0) for v in versions])[vcode]
    status = np.where(unknown, 0, np.where(failed, 503, 200))
    latency_ms = np.where(unknown, rng.uniform(0.5, 2.0, n_requests), latency_ms)
    endpoint = rng.choice(len(ENDPOINTS), n_requests, p=ENDPOINT_P)
    vcode_or_null = np.where(unknown, -1, vcode)
    trace_ids = hex_ids(rng, n_requests, 32)
    error_codes = np.where(unknown, 1, np.where(failed, 0, -1))

    requests = pd.DataFrame(
        {
            "start_ns": start_ns,
            "latency_ms": latency_ms,
            "name": _categorical(ENDPOINTS, endpoint),
            "method": _categorical(ENDPOINT_METHOD, endpoint),
            "status": status.astype(np.int64),
            "ok": status == 200,
            "error": pd.Series(
                _categorical(["HTTP 503", "ConnectionError"], error_codes), dtype="str"
            ),
            "version": _categorical(versions, vcode_or_null),
            "trace_id": _str_series(trace_ids),
            "step": step.astype(np.int64),
            "worker": _categorical(["w0", "w1", "w2", "w3"], rng.integers(0, 4, n_requests)),
        }
    )
    if traffic.open_model:
        lag_ms = rng.exponential(5.0, n_requests) * (rng.random(n_requests) < 0.1)
        requests["intended_ns"] = start_ns - (lag_ms * 1e6).astype(np.int64)
        requests["co_latency_ms"] = latency_ms + lag_ms
    if traffic.n_users:
        users = [f"u{i:05d}" for i in range(traffic.n_users)]
        requests["user"] = _categorical(users, rng.integers(0, traffic.n_users, n_requests))

    traced = np.flatnonzero(~unknown & (rng.random(n_requests) < traffic.trace_sample))
    spans = (
        _make_spans(rng, requests, traced, vcode, versions, slowdown)
        if traffic.with_spans
        else pd.DataFrame()
    )
    if traffic.no_header_rate > 0:  # a response without its version header; its trace has it
        bare = ~unknown & (rng.random(n_requests) < traffic.no_header_rate)
        requests["version"] = _categorical(versions, np.where(unknown | bare, -1, vcode))
    if traffic.stamped:
        requests["config_step"] = pd.array(np.where(unknown, -1, regime), dtype="Int64")
        requests.loc[unknown, "config_step"] = pd.NA
        requests["replica"] = _categorical(replica_ids(replicas), np.where(unknown, -1, replica))
    return Drawn(requests, spans, traced)


def _make_spans(
    rng: np.random.Generator,
    requests: pd.DataFrame,
    traced: np.ndarray,
    vcode: np.ndarray,
    versions: list[str],
    slowdown: Mapping[str, float],
) -> pd.DataFrame:
    n, slots = len(traced), len(SPAN_SERVICES)
    latency_ms = requests["latency_ms"].to_numpy()[traced]
    root_start = requests["start_ns"].to_numpy()[traced] + 200_000
    root_ms = np.maximum(latency_ms - 0.4, 0.1)
    slow = np.array([slowdown.get(v, 1.0) for v in versions])[vcode[traced]]
    base_ms = root_ms / slow
    starts = np.empty((slots, n), dtype=np.int64)
    durations = np.empty((slots, n))
    starts[0], durations[0] = root_start, root_ms
    for s in range(1, slots):
        parent = SPAN_PARENT[s]
        scale = base_ms if parent == 0 else durations[parent]
        starts[s] = starts[parent] + (SPAN_OFFSET[s] * scale * 1e6).astype(np.int64)
        durations[s] = SPAN_LENGTH[s] * scale

    span_ids = hex_ids(rng, n * slots, 16)  # slot-major: row s * n + i
    parent_rows = np.concatenate(
        [np.full(n, -1) if p < 0 else p * n + np.arange(n) for p in SPAN_PARENT]
    )
    parent_ids = pc.take(span_ids, pa.array(parent_rows, mask=parent_rows < 0))
    trace_ids = pc.take(pa.array(requests["trace_id"]), pa.array(np.tile(traced, slots)))
    slot = np.repeat(np.arange(slots), n)
    services = sorted(set(SPAN_SERVICES))
    downstream = versions.index("v1") if "v1" in versions else 0
    version_code = np.concatenate([vcode[traced], np.full(n * (slots - 1), downstream)])
    # HTTP status as analysis.frames declares it (nullable Int64); only the frontend fails
    status_code = np.concatenate(
        [requests["status"].to_numpy()[traced], np.full(n * (slots - 1), 200)]
    )
    return pd.DataFrame(
        {
            "trace_id": _str_series(trace_ids),
            "span_id": _str_series(span_ids),
            "parent_id": _str_series(parent_ids),
            "service": pd.Categorical.from_codes(
                np.array([services.index(s) for s in SPAN_SERVICES])[slot], categories=services
            ),
            "operation": _categorical(SPAN_OPERATIONS, slot),
            "kind": _categorical(["server"], np.zeros(n * slots, dtype=np.int64)),
            "start_ns": starts.ravel(),
            "duration_ms": durations.ravel(),
            "version": pd.Categorical.from_codes(version_code, categories=versions),
            "status_code": pd.array(status_code, dtype="Int64"),
            "attributes": _str_series(pa.array(["{}"]).take(np.zeros(n * slots, dtype=np.int64))),
        }
    )
