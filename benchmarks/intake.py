"""INTAKE: the trace store alone, fed OTLP/HTTP protobuf batches as fast as it accepts them.

The store runs as the embedded mesh runs it (`meshsim.procs.start_tracestore`: a child on
127.0.0.1 with a ports file and a spill folder, stopped by PID). `SENDERS` separate processes
post `CONNECTIONS` keep-alive streams each for `INTAKE_S` seconds (`MESHLOAD_INTAKE_S`
overrides it for short runs). Their batches are what the simulated Boutique exports: Boutique
page shapes (a product page is 12 hops) encoded by `meshsim.telemetry.otlp`, 2048 spans a
request, grouped by workload. A pool is encoded before the start and each send only rewrites
every trace id's first 8 bytes and every span's times in place, so every trace is new, every
span recent, and the sender never the bottleneck.

Measured: spans the store counted (`GET /_meshload/stats`) against the senders' 2xx answers,
per second of the run and per CPU-second of the store process (utime+stime: the store is one
process), its RSS every `SAMPLE_S` and the least-squares slope after `WARMUP_S`, and every
second the latency of one search (`/api/traces?service=frontend&limit=20`) and one fetch.
Goal: >= 100,000 spans per second, every span sent accepted and counted by the store.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import random
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any, NamedTuple

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from benchmarks.procfs import cpu_s, rss_mb
from benchmarks.soak import slope_per_min
from meshsim.boutique.hops import INGRESS, Hop
from meshsim.procs import Child, start_tracestore
from meshsim.spec import load_spec
from meshsim.telemetry.istio import peers
from meshsim.telemetry.otlp import SpanEncoder, export_request, workload_resource
from meshsim.telemetry.spans import DEFAULT_BATCH_SPANS

INTAKE_S = 300.0
SENDERS = 2
CONNECTIONS = 2  # per sender process: one request in flight each
POOL_BATCHES = 12  # per connection
SAMPLE_S = 5.0
WARMUP_S = 30.0
QUERY_EVERY_S = 1.0
SEARCH_SERVICE = "frontend"
GOAL_SPANS_PER_S = 100_000.0
_TRACE_ID_TAG = b"\x0a\x10"  # Span.trace_id: field 1, 16 bytes
_TRACE_PREFIX = struct.Struct(">Q")
_START_TAG, _END_TAG = b"\x39", 0x41  # start/end_time_unix_nano: fields 7, 8 (fixed64)
_TIMES = struct.Struct("<QBQ")

# A Boutique page's calls from the frontend, (service, operation, nested calls), as
# meshsim.boutique.frontend makes them; and how often a shopper asks for each page.
_Call = tuple[str, str, tuple[Any, ...]]
_LIST = ("productcatalogservice", "ListProducts", ())
_RECOMMEND = ("recommendationservice", "ListRecommendations", (_LIST,))
_CURRENCIES = ("currencyservice", "GetSupportedCurrencies", ())
_CART = ("cartservice", "GetCart", ())
_PRODUCT = ("productcatalogservice", "GetProduct", ())
_CONVERT = ("currencyservice", "Convert", ())
_ADS = ("adservice", "GetAds", ())
PAGES: dict[str, tuple[float, tuple[_Call, ...]]] = {
    "GET /": (0.3, (_CURRENCIES, _LIST, _CART, *[_CONVERT] * 9, _ADS)),
    "GET /product/{id}": (
        0.5,
        (_PRODUCT, _CURRENCIES, _CART, _CONVERT, _RECOMMEND, *[_PRODUCT] * 4, _ADS),
    ),
    "GET /cart": (
        0.1,
        (
            _CURRENCIES,
            _CART,
            _RECOMMEND,
            *[_PRODUCT] * 4,
            ("shippingservice", "GetQuote", ()),
            _CONVERT,
            _PRODUCT,
            _CONVERT,
        ),
    ),
    "POST /cart": (0.1, (_PRODUCT, ("cartservice", "AddItem", ()))),
}


def _hex(rng: random.Random, size: int) -> str:
    return rng.getrandbits(8 * size).to_bytes(size, "big").hex()


def page_hops(rng: random.Random, start_ns: int) -> Iterator[Hop]:
    """One page's hops, callees before their caller as a request emits them."""
    operation = rng.choices(list(PAGES), [w for w, _ in PAGES.values()])[0]
    frontend = rng.choice(("frontend-v1", "frontend-v2"))
    trace_id, root_id = _hex(rng, 16), _hex(rng, 8)
    clock_ms = rng.uniform(0.2, 1.0)

    def calls(caller: str, parent: str, made: tuple[_Call, ...]) -> Iterator[Hop]:
        nonlocal clock_ms
        for service, op, nested in made:
            span_id, begun_ms = _hex(rng, 8), clock_ms
            clock_ms += rng.uniform(0.1, 1.5)
            yield from calls(f"{service}-v1", span_id, nested)
            yield Hop(caller, f"{service}-v1", op, "grpc", start_ns + int(begun_ms * 1e6),
                      clock_ms - begun_ms, 200, False, trace_id, span_id, parent)  # fmt: skip

    yield from calls(frontend, root_id, PAGES[operation][1])
    failed = frontend == "frontend-v2" and rng.random() < 0.005
    yield Hop(INGRESS, frontend, operation, "http", start_ns, clock_ms, 500 if failed else 200,
              failed, trace_id, root_id, _hex(rng, 8))  # fmt: skip


class Payload(NamedTuple):
    """An export request and where each span's trace id and times sit in it, so a send can
    make every trace new and every span recent by rewriting bytes in place."""

    body: bytes
    # Per span: where its trace id is, the id's first 8 bytes, where its times are, the times.
    spans: list[tuple[int, int, int, int, int]]
    newest_ns: int


def encode_pool(seed: int, batches: int) -> list[Payload]:
    """`batches` export requests of DEFAULT_BATCH_SPANS spans, grouped by workload as
    `SpanObserver` posts them."""
    rng = random.Random(seed)
    workload_peers = peers(load_spec().workloads)
    encoder = SpanEncoder(workload_peers)
    resources = {name: workload_resource(p) for name, p in workload_peers.items()}
    start_ns = time.time_ns()
    hops: list[Hop] = []
    pool: list[Payload] = []
    while len(pool) < batches:
        while len(hops) < DEFAULT_BATCH_SPANS:
            start_ns += rng.randrange(100_000, 2_000_000)
            hops.extend(page_hops(rng, start_ns))
        batch, hops = hops[:DEFAULT_BATCH_SPANS], hops[DEFAULT_BATCH_SPANS:]
        by_workload: dict[str, list[bytes]] = {}
        request_ids: dict[str, str] = {}  # one x-request-id a page, as the gateway sets it
        for hop in batch:
            request_id = request_ids.get(hop.trace_id)
            if request_id is None:
                request_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
                request_ids[hop.trace_id] = request_id
            by_workload.setdefault(hop.destination, []).append(encoder.span(hop, request_id))
        body = export_request((resources[w], spans) for w, spans in by_workload.items())
        pool.append(_locate(body))
    return pool


def _locate(body: bytes) -> Payload:
    """Every span's trace id and times in `body`, found in span order from its parse."""
    request = ExportTraceServiceRequest.FromString(body)
    spans = []
    pos = 0
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                trace_at = body.index(_TRACE_ID_TAG + span.trace_id, pos) + len(_TRACE_ID_TAG)
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                pos = body.index(_START_TAG + _TIMES.pack(start, _END_TAG, end), trace_at) + 1
                first = int.from_bytes(span.trace_id[:8], "big")
                spans.append((trace_at, first, pos, start, end))
    return Payload(body, spans, max(start for _, _, _, start, _ in spans))


def _stream(port: int, pool: list[Payload], seed: int, until: float) -> dict[str, int]:
    """Post the pool round and round until `until` (monotonic). Each send XORs the first 8
    bytes of every trace id with a random mask (a new trace, its ids still random-looking,
    as the store's trace-id prefixes expect) and moves its spans so the newest starts now."""
    rng = random.Random(seed)
    bodies = [(bytearray(p.body), p.spans, p.newest_ns) for p in pool]
    counts = dict.fromkeys(("requests", "accepted_spans", "rejected_spans", "failures"), 0)
    headers = {"Content-Type": "application/x-protobuf"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    pack_id, pack_times = _TRACE_PREFIX.pack_into, _TIMES.pack_into
    sent = 0
    while time.monotonic() < until:
        body, spans, newest_ns = bodies[sent % len(bodies)]
        sent += 1
        mask, shift_ns = rng.getrandbits(64), time.time_ns() - newest_ns
        for trace_at, first, times_at, start, end in spans:
            pack_id(body, trace_at, first ^ mask)
            pack_times(body, times_at, start + shift_ns, _END_TAG, end + shift_ns)
        try:
            conn.request("POST", "/v1/traces", body, headers)
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            counts["failures"] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        counts["requests"] += 1
        counts["accepted_spans" if 200 <= resp.status < 300 else "rejected_spans"] += len(spans)
    conn.close()
    return counts


def send(
    index: int, port: int, duration_s: float, ready: Queue[Any], go: Event, done: Queue[Any]
) -> None:
    """A sender process: encode its pools, say so, wait for `go`, stream over CONNECTIONS."""
    import threading

    pools = [encode_pool(1000 * index + c, POOL_BATCHES) for c in range(CONNECTIONS)]
    ready.put(index)
    go.wait()
    until = time.monotonic() + duration_s
    results: list[dict[str, int]] = []

    def run(c: int) -> None:
        results.append(_stream(port, pools[c], 1000 * index + c, until))

    threads = [threading.Thread(target=run, args=(c,)) for c in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.put({k: sum(r[k] for r in results) for k in results[0]})


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{path} answered HTTP {resp.status}: {body[:200]!r}")
    return (time.perf_counter() - started) * 1000, body


def _query(conn: http.client.HTTPConnection) -> tuple[float, float | None]:
    """Latency (ms) of one search and of fetching the first trace it found."""
    search_ms, body = _get(conn, f"/api/traces?service={SEARCH_SERVICE}&limit=20")
    found = json.loads(body)["data"]
    if not found:
        return search_ms, None
    fetch_ms, _ = _get(conn, f"/api/traces/{found[0]['traceID']}")
    return search_ms, fetch_ms


def _received(conn: http.client.HTTPConnection) -> int:
    return int(json.loads(_get(conn, "/_meshload/stats")[1])["received_spans"])


def latency_figures(name: str, values: list[float]) -> dict[str, Any]:
    """p50, p95 (nearest rank) and max of latencies in ms, and how many there were."""
    ordered = sorted(values)
    if not ordered:
        return {f"{name}_queries": 0}

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {
        f"{name}_queries": len(ordered),
        f"{name}_p50_ms": round(rank(0.50), 1),
        f"{name}_p95_ms": round(rank(0.95), 1),
        f"{name}_max_ms": round(ordered[-1], 1),
    }


def intake_s() -> float:
    return float(os.environ.get("MESHLOAD_INTAKE_S") or INTAKE_S)


def run(duration_s: float | None = None, warmup_s: float | None = None) -> dict[str, Any]:
    duration_s = intake_s() if duration_s is None else duration_s
    # A short run (MESHLOAD_INTAKE_S) still keeps two thirds of its samples for the slope.
    warmup_s = min(WARMUP_S, duration_s / 3) if warmup_s is None else warmup_s
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="meshload-intake-") as tmp:
        store, port = start_tracestore(Path(tmp))  # as the embedded mesh starts it
        senders: list[Any] = []
        try:
            ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
            senders = [
                ctx.Process(target=send, args=(i, port, duration_s, ready, go, done), daemon=True)
                for i in range(SENDERS)
            ]
            for p in senders:
                p.start()
            for _ in senders:
                ready.get(timeout=120)
            figures = _measure(store, port, duration_s, go, done, senders)
        finally:
            for p in senders:
                if p.is_alive():
                    p.kill()  # by its PID
                p.join()
            store.stop()
    return _result(duration_s, warmup_s, figures)


def _measure(
    store: Child, port: int, duration_s: float, go: Event, done: Queue[Any], senders: list[Any]
) -> dict[str, Any]:
    """Start the senders and sample the store until every sender has reported."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    received0, cpu0 = _received(conn), cpu_s(store.pid) or 0.0
    go.set()
    t0 = time.monotonic()
    rss: list[tuple[float, float]] = []
    counts: list[tuple[float, int]] = []
    searches: list[float] = []
    fetches: list[float] = []
    results: list[dict[str, int]] = []
    next_sample = next_query = 0.0
    while len(results) < len(senders):
        if any(p.exitcode not in (None, 0) for p in senders):
            raise RuntimeError(f"a sender exited {[p.exitcode for p in senders]}")
        t = time.monotonic() - t0
        if t >= next_sample:
            next_sample += SAMPLE_S
            mb = rss_mb(store.pid)
            if mb is None:
                raise store.died_error()
            rss.append((t, mb))
            counts.append((time.monotonic() - t0, _received(conn)))
        if t >= next_query and t < duration_s:
            next_query = t + QUERY_EVERY_S
            search_ms, fetch_ms = _query(conn)
            searches.append(search_ms)
            if fetch_ms is not None:
                fetches.append(fetch_ms)
        while not done.empty():
            results.append(done.get())
        if len(results) < len(senders):
            time.sleep(max(0.0, min(next_sample, next_query) - (time.monotonic() - t0)) + 0.01)
    wall_s = time.monotonic() - t0
    cpu = (cpu_s(store.pid) or 0.0) - cpu0
    received = _received(conn) - received0
    conn.close()
    return {"wall_s": wall_s, "store_cpu_s": cpu, "store_spans": received, "rss": rss,
            "counts": counts, "searches": searches, "fetches": fetches,
            "sent": {k: sum(r[k] for r in results) for k in results[0]}}  # fmt: skip


def _result(duration_s: float, warmup_s: float, f: dict[str, Any]) -> dict[str, Any]:
    wall_s, cpu, spans, sent = f["wall_s"], f["store_cpu_s"], f["store_spans"], f["sent"]
    rate = spans / wall_s
    steady = [(t, n) for t, n in f["counts"] if t >= warmup_s]
    steady_rate = (
        (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0])
        if len(steady) >= 2
        else float("nan")
    )
    rss = f["rss"]
    slope = slope_per_min([(t, mb) for t, mb in rss if t >= warmup_s])
    complete = spans == sent["accepted_spans"] and not sent["rejected_spans"]
    return {
        "id": "INTAKE",
        "what": f"trace store alone, OTLP/HTTP protobuf from {SENDERS} processes x "
        f"{CONNECTIONS} connections for {duration_s:g} s, {DEFAULT_BATCH_SPANS} spans a request",
        "spans_per_s": round(rate),
        "steady_spans_per_s": round(steady_rate) if steady_rate == steady_rate else None,
        "store_spans": spans,
        "sender_accepted_spans": sent["accepted_spans"],
        "sender_rejected_spans": sent["rejected_spans"],
        "sender_requests": sent["requests"],
        "sender_failures": sent["failures"],
        "wall_s": round(wall_s, 1),
        "store_cpu_s": round(cpu, 1),
        "store_cpu_share": round(cpu / wall_s, 3),
        "spans_per_store_cpu_s": round(spans / cpu) if cpu > 0 else None,
        "warmup_s": round(warmup_s, 1),
        "rss_mb_per_min": round(slope, 2),
        "rss_mb": [round(rss[0][1]), round(max(mb for _, mb in rss)), round(rss[-1][1])],
        "rss_samples": len(rss),
        **latency_figures("search", f["searches"]),
        **latency_figures("fetch", f["fetches"]),
        "goal": f">= {GOAL_SPANS_PER_S:,.0f} spans/s, every span sent accepted and counted",
        "met": rate >= GOAL_SPANS_PER_S and complete,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2), file=sys.stderr)
