"""Client, metrics and trace counts per step and version; stickiness and cohort reach."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from analysis.consistency import (
    client_counts,
    consistency_table,
    metrics_counts_from_istio,
    step_windows,
    trace_counts,
    trace_coverage,
)
from analysis.sticky import cohort_reach, stickiness, user_versions
from analysis.synthetic import make_run
from meshcore.errors import ConfigError


@pytest.fixture(scope="module")
def run():
    return make_run(n_requests=6000, seed=51, unknown_rate=0.01, trace_sample=0.6, n_users=300)


def test_client_counts_equal_a_plain_loop(run) -> None:
    expected = Counter(
        (r["step"], r["version"] if isinstance(r["version"], str) else "unknown")
        for r in run.requests.to_dict("records")
    )
    got = {(r.step, r.version): r.requests for r in client_counts(run.requests).itertuples()}
    assert got == dict(expected)


def test_trace_counts_equal_a_plain_loop(run) -> None:
    windows = step_windows(run.run)
    assert windows["end_ns"].iloc[-1] == run.run["ended_ns"]
    expected: Counter = Counter()
    bounds = list(zip(windows["step"], windows["start_ns"], windows["end_ns"], strict=True))
    for r in run.spans.to_dict("records"):
        if r["service"] != "frontend" or isinstance(r["parent_id"], str):
            continue
        for step, lo, hi in bounds:
            if lo <= r["start_ns"] < hi:
                expected[(step, r["version"])] += 1
    got = {(r.step, r.version): r.requests for r in trace_counts(run.spans, windows).itertuples()}
    assert got == dict(expected)


def test_trace_coverage_normalises_ids(run) -> None:
    assert trace_coverage(run.requests, run.spans) == pytest.approx(0.6 * 0.99, abs=0.03)
    requests = pd.DataFrame({"trace_id": ["00ab" + "0" * 28, "00CD" + "1" * 28, "ef" * 16]})
    spans = pd.DataFrame({"trace_id": ["ab" + "0" * 28, "cd" + "1" * 28]})
    assert trace_coverage(requests, spans) == pytest.approx(2 / 3)


def samples(rows: list[tuple[float, dict, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "t": [t for t, _, _ in rows],
            "metric": "istio_requests_total",
            "labels": [json.dumps(lb) for _, lb, _ in rows],
            "value": [v for _, _, v in rows],
        }
    )


def test_metrics_counts_interpolate_and_survive_resets() -> None:
    v1 = {"reporter": "destination", "destination_app": "frontend", "destination_version": "v1"}
    v2 = {**v1, "destination_version": "v2"}
    src = {**v1, "reporter": "source"}  # the same requests seen by the caller's sidecar
    rows = [(t, v1, 10.0 * t) for t in range(0, 21, 5)]  # 10 req/s
    rows += [(0.0, v2, 0.0), (5.0, v2, 20.0), (10.0, v2, 5.0), (20.0, v2, 25.0)]  # reset at 10 s
    rows += [(t, src, 1e6) for t in range(0, 21, 5)]
    windows = pd.DataFrame({"step": [0, 1], "start_ns": [0, 8_000_000_000], "end_ns": [8e9, 2e10]})
    expected = {(0, "v1"): 80.0, (1, "v1"): 120.0, (0, "v2"): 23.0, (1, "v2"): 22.0}
    # v2: reset-corrected counter 0, 20, 25, 45 at 0, 5, 10, 20 s; at 8 s: 20 + 3/5 * 5 = 23
    frame = samples(rows)
    out = metrics_counts_from_istio(frame, windows.astype(np.int64))
    assert {(r.step, r.version): r.requests for r in out.itertuples()} == pytest.approx(expected)
    # the same samples with one column per label instead of a labels JSON string
    wide = pd.concat(
        [frame.drop(columns="labels"), pd.DataFrame([json.loads(x) for x in frame["labels"]])],
        axis=1,
    )
    out = metrics_counts_from_istio(wide, windows.astype(np.int64))
    assert {(r.step, r.version): r.requests for r in out.itertuples()} == pytest.approx(expected)


def test_table_joins_all_sources(run) -> None:
    windows = step_windows(run.run)
    client = client_counts(run.requests)
    metrics = client[client["version"] != "unknown"].assign(requests=lambda f: f["requests"] * 1.0)
    table = consistency_table(client, metrics, trace_counts(run.spans, windows))
    assert list(table.columns) == ["step", "version", "client", "metrics", "traces"]
    known = table[table["version"] != "unknown"]
    assert (known["metrics"] == known["client"]).all()
    assert table["traces"].isna().sum() == (table["version"] == "unknown").sum()


def test_stickiness_and_cohort_reach() -> None:
    requests = pd.DataFrame(
        {
            "user": ["a", "a", "b", "b", "c", "c", "d", None],
            "version": ["v1", "v1", "v2", "v2", "v1", "v2", None, "v2"],
        }
    )
    assert stickiness(requests) == {
        "users": 3,
        "single_version_users": 2,
        "share_single_version": pytest.approx(2 / 3),
        "users_by_first_version": {"v1": 2, "v2": 1},  # no start_ns: in row order
    }
    table = user_versions(requests).set_index("user")
    assert table.loc["c", "version"] == "mixed" and table.loc["b", "version"] == "v2"
    reach = cohort_reach(requests, ["b", "c"], version="v2")
    assert reach["cohort_share"] == 1.0 and reach["others_share"] == 0.0
    with pytest.raises(ConfigError, match="cookie"):
        stickiness(requests, user_col="session")


def test_random_routing_is_not_sticky(run) -> None:
    result = stickiness(run.requests)
    users = run.requests.groupby("user", observed=True)["version"].nunique()
    assert result["users"] == len(users)
    assert result["single_version_users"] == int((users == 1).sum())
    seen = run.requests.dropna(subset=["user", "version"]).sort_values("start_ns", kind="stable")
    by_first = Counter(str(v) for v in seen.drop_duplicates("user")["version"])
    assert result["users_by_first_version"] == dict(sorted(by_first.items()))


def test_loadgen_users_are_keyed_by_worker_and_user_id() -> None:
    """Each worker numbers its users from 1: user 1 of w1 and user 1 of w2 are two users."""
    rng = np.random.default_rng(52)
    n = 4000
    worker = rng.choice(["worker1", "worker2", "worker3"], n)
    user_id = rng.integers(1, 40, n)
    # each (worker, user) sticks to one version, but user ids alone see both
    sticky = {(w, u): ("v1", "v2")[rng.integers(0, 2)] for w in set(worker) for u in range(1, 40)}
    version = [sticky[(w, int(u))] for w, u in zip(worker, user_id, strict=True)]
    requests = pd.DataFrame(
        {
            "start_ns": np.arange(n, dtype=np.int64),
            "version": pd.Categorical(version),
            "worker": pd.Categorical(worker),
            "user_id": pd.array(np.where(rng.random(n) < 0.05, None, user_id), dtype="Int64"),
        }
    )
    known = requests[requests["user_id"].notna()]
    pairs = set(zip(known["worker"], known["user_id"], strict=True))
    result = stickiness(requests, user_col="user_id")
    assert result["users"] == len(pairs)
    assert result["single_version_users"] == len(pairs)  # every worker's user is sticky
    ids_alone = known.groupby("user_id")["version"].nunique()
    assert (ids_alone > 1).any()  # ... while user ids alone would have looked mixed
    table = user_versions(requests, user_col="user_id")
    assert len(table) == len(pairs) and (table["versions"] == 1).all()
    beta = {"3", "5"}
    reach = cohort_reach(requests, beta, version="v2", user_col="user_id")
    members = {(w, u) for w, u in pairs if str(u) in beta}
    assert reach["cohort_users"] == len(members)
    assert reach["cohort_reached"] == sum(sticky[(w, int(u))] == "v2" for w, u in members)


def test_cohort_from_a_column() -> None:
    requests = pd.DataFrame(
        {
            "user": ["a", "a", "b", "c", "d"],
            "version": ["v2", "v2", "v1", "v2", "v1"],
            "beta": [True, True, True, False, False],
        }
    )
    reach = cohort_reach(requests, "beta", version="v2")
    assert (reach["cohort_users"], reach["cohort_reached"]) == (2, 1)
    assert (reach["others_users"], reach["others_reached"]) == (2, 1)
    with pytest.raises(ConfigError, match="cohort column"):
        cohort_reach(requests, "gamma")
