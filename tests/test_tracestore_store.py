"""The span store: spilling beyond its memory limit loses nothing, and every query filter
agrees with a plain computation over the same seeded synthetic spans."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshsim.tracestore.query import TraceQuery
from meshsim.tracestore.receiver import SPAN_ID, rows_from_request
from meshsim.tracestore.store import SpanStore
from meshsim.tracestore.tags import tag_search

SERVICES = ("frontend", "cartservice", "checkoutservice")
OPERATIONS = ("ingress", "GET /cart", "PlaceOrder")
T0 = 1_790_000_000_000_000_000


@dataclass(frozen=True)
class PlainSpan:
    trace_id: bytes
    span_id: bytes
    service: str
    operation: str
    kind: int
    start_ns: int
    duration_ns: int
    tags: dict[str, str]


Data = tuple[list[PlainSpan], list[bytes]]


def synthetic(seed: int, n_traces: int = 120) -> Data:
    """Plain span dicts plus one OTLP request body per trace (one request per trace, as an
    exporter flushing per request would send)."""
    rng = random.Random(seed)
    plain: list[PlainSpan] = []
    bodies: list[bytes] = []
    for t in range(n_traces):
        trace_id = rng.randbytes(16)
        request = ExportTraceServiceRequest()
        for _ in range(rng.randint(1, 6)):
            service = rng.choice(SERVICES)
            rs = request.resource_spans.add()
            kv = rs.resource.attributes.add()
            kv.key, kv.value.string_value = "service.name", service
            span = rs.scope_spans.add().spans.add()
            span.trace_id, span.span_id = trace_id, rng.randbytes(8)
            span.name, span.kind = rng.choice(OPERATIONS), rng.choice((1, 2, 3))
            span.start_time_unix_nano = T0 + t * 1_000_000_000 + rng.randrange(10**8)
            span.end_time_unix_nano = span.start_time_unix_nano + rng.randrange(10**7)
            revision = rng.choice(("v1", "v2"))
            for key, value in (
                ("istio.canonical_revision", revision),
                ("http.status_code", rng.choice(("200", "503"))),
            ):
                a = span.attributes.add()
                a.key, a.value.string_value = key, value
            plain.append(
                PlainSpan(
                    trace_id,
                    span.span_id,
                    service,
                    span.name,
                    span.kind,
                    span.start_time_unix_nano,
                    span.end_time_unix_nano - span.start_time_unix_nano,
                    {
                        "istio.canonical_revision": revision,
                        "http.status_code": span.attributes[1].value.string_value,
                    },
                )
            )
        bodies.append(request.SerializeToString())
    return plain, bodies


def fill(store: SpanStore, bodies: list[bytes]) -> None:
    for body in bodies:
        store.add(rows_from_request(ExportTraceServiceRequest.FromString(body)))


def plain_find(spans: list[PlainSpan], q: TraceQuery) -> list[bytes]:
    latest: dict[bytes, int] = {}
    for s in spans:
        ok = (
            (q.service is None or s.service == q.service)
            and (q.operation is None or s.operation == q.operation)
            and (q.span_kind is None or s.kind == q.span_kind)
            and (q.start_min_ns is None or s.start_ns >= q.start_min_ns)
            and (q.start_max_ns is None or s.start_ns <= q.start_max_ns)
            and (q.duration_min_ns is None or s.duration_ns >= q.duration_min_ns)
            and (q.duration_max_ns is None or s.duration_ns <= q.duration_max_ns)
            and all(s.tags.get(k) == v for k, v in q.tags.items())
        )
        if ok:
            latest[s.trace_id] = max(latest.get(s.trace_id, -1), s.start_ns)
    return sorted(latest, key=lambda t: latest[t], reverse=True)[: q.limit]


@pytest.fixture(scope="module")
def data() -> Data:
    return synthetic(seed=11)


def test_spill_keeps_every_span_queryable(tmp_path: Path, data: Data) -> None:
    spans, bodies = data
    store = SpanStore(max_spans=40, spill_dir=tmp_path)
    fill(store, bodies)
    assert store.segment_count >= 3, "the limit must have forced several spills"
    assert store.memory_count <= 40
    assert len(list(tmp_path.glob("*.parquet"))) == store.segment_count
    assert store.received == len(spans)
    by_trace: dict[bytes, set[bytes]] = {}
    for s in spans:
        by_trace.setdefault(s.trace_id, set()).add(s.span_id)
    for trace_id, span_ids in by_trace.items():
        assert {row[SPAN_ID] for row in store.trace(trace_id)} == span_ids
    assert store.trace(b"\x01" * 16) == []
    # Each segment's membership index: the sorted unique first 8 bytes of its trace ids.
    spilled: set[bytes] = set()
    for segment in store._segments:
        ids = set(pq.read_table(segment.path, columns=["trace_id"])["trace_id"].to_pylist())
        plain = sorted({int.from_bytes(t[:8], "big") for t in ids})
        assert segment.prefixes.tolist() == plain and segment.prefixes.dtype == np.uint64
        spilled |= ids
    assert all(any(seg.may_hold(t) for seg in store._segments) for t in spilled)
    assert store.services() == sorted({s.service for s in spans})
    for service in SERVICES:
        want = sorted({(s.operation, s.kind) for s in spans if s.service == service})
        assert store.operations(service) == want
        assert store.operations(service, 2) == [op for op in want if op[1] == 2]
    store.close()
    assert tmp_path.exists(), "a spill dir the caller gave is the caller's to remove"


def test_own_spill_dir_is_removed_on_close(data: Data) -> None:
    store = SpanStore(max_spans=10)
    fill(store, data[1][:20])
    spill_dir = store.spill_dir
    assert any(spill_dir.iterdir())
    store.close()
    assert not spill_dir.exists()


def _queries(seed: int) -> list[TraceQuery]:
    rng = random.Random(seed)
    queries = [TraceQuery(service="frontend", limit=1000), TraceQuery(limit=5)]
    for _ in range(40):
        lo = T0 + rng.randrange(0, 120) * 1_000_000_000
        queries.append(
            TraceQuery(
                service=rng.choice((None, *SERVICES)),
                operation=rng.choice((None, None, *OPERATIONS)),
                span_kind=rng.choice((None, None, 2, 3)),
                tags=rng.choice(
                    (
                        {},
                        {"istio.canonical_revision": "v2"},
                        {"istio.canonical_revision": "v1", "http.status_code": "503"},
                    )
                ),
                start_min_ns=rng.choice((None, lo)),
                start_max_ns=rng.choice((None, lo + rng.randrange(1, 60) * 1_000_000_000)),
                duration_min_ns=rng.choice((None, 2_000_000)),
                duration_max_ns=rng.choice((None, 8_000_000)),
                limit=rng.choice((3, 20, 1000)),
            )
        )
    return queries


@pytest.mark.parametrize("max_spans", [25, 100_000])
def test_filters_match_plain_computation(tmp_path: Path, data: Data, max_spans: int) -> None:
    spans, bodies = data
    store = SpanStore(max_spans=max_spans, spill_dir=tmp_path)
    fill(store, bodies)
    nonempty = 0
    for q in _queries(seed=5):
        got = store.find_trace_ids(q, tag_search(q.tags))
        want = plain_find(spans, q)
        assert got == want, q
        nonempty += bool(want)
    assert nonempty >= 10, "the seeded queries must exercise real matches"
    store.close()


def _typed_request(seed: int) -> tuple[ExportTraceServiceRequest, list[dict[str, str]]]:
    """Spans whose tags take every form: typed span attributes, event and resource attributes,
    and the tags Jaeger derives from kind, status and scope. Returns each span's tags as
    Jaeger prints them, for a plain computation of what a tag search should find."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    printed: list[dict[str, str]] = []
    for i in range(60):
        rs = request.resource_spans.add()
        zone = rng.choice(("a", "b"))
        for key, value in (("service.name", "svc"), ("zone", zone)):
            kv = rs.resource.attributes.add()
            kv.key, kv.value.string_value = key, value
        scope = rs.scope_spans.add()
        scope.scope.name = rng.choice(("envoy", "sdk"))
        span = scope.spans.add()
        span.trace_id, span.span_id = rng.randbytes(16), rng.randbytes(8)
        span.name, span.kind = "op", rng.choice((1, 2, 3))
        span.start_time_unix_nano = T0 + i * 1000
        span.end_time_unix_nano = span.start_time_unix_nano + 10
        span.status.code = rng.choice((0, 1, 2))
        retries, ratio, cached = rng.choice((0, 3, 503)), rng.choice((0.5, 2.0)), rng.random() < 0.5
        for key, setter in (
            ("retries", "int_value"),
            ("ratio", "double_value"),
            ("cached", "bool_value"),
        ):
            kv = span.attributes.add()
            kv.key = key
            setattr(kv.value, setter, {"retries": retries, "ratio": ratio, "cached": cached}[key])
        attempt = rng.choice(("1", "2"))
        event = span.events.add()
        kv = event.attributes.add()
        kv.key, kv.value.string_value = "attempt", attempt
        tags = {
            "retries": str(retries),
            "ratio": "0.5" if ratio == 0.5 else "2",
            "cached": "true" if cached else "false",
            "attempt": attempt,
            "zone": zone,
            "span.kind": {1: "internal", 2: "server", 3: "client"}[span.kind],
            "otel.scope.name": scope.scope.name,
        }
        if span.status.code:
            tags["otel.status_code"] = "ERROR" if span.status.code == 2 else "OK"
        if span.status.code == 2:
            tags["error"] = "true"
        printed.append(tags)
    return request, printed


@pytest.mark.parametrize("max_spans", [4, 1000])
@pytest.mark.parametrize(
    "tags",
    [
        {"retries": "503"},
        {"retries": "0"},
        {"ratio": "2"},
        {"ratio": "0.5"},
        {"cached": "true"},
        {"attempt": "2"},
        {"zone": "b"},
        {"error": "true"},
        {"otel.status_code": "OK"},
        {"span.kind": "client"},
        {"otel.scope.name": "sdk"},
        {"cached": "false", "zone": "a", "span.kind": "server"},
        {"retries": "5"},
    ],
)
def test_tags_of_every_type(tmp_path: Path, max_spans: int, tags: dict[str, str]) -> None:
    request, printed = _typed_request(seed=2)
    store = SpanStore(max_spans=max_spans, spill_dir=tmp_path)
    rows = rows_from_request(request)
    for at in range(0, len(rows), 7):
        store.add(rows[at : at + 7])
    got = store.find_trace_ids(TraceQuery(limit=1000), tag_search(tags))
    want = [
        rows[i][0]
        for i in reversed(range(len(rows)))
        if all(printed[i].get(k) == v for k, v in tags.items())
    ]
    assert got == want
    assert (store.segment_count > 0) == (max_spans == 4)
    store.close()


def test_a_failing_spill_keeps_spans_in_memory(tmp_path: Path, data: Data) -> None:
    spans, bodies = data
    blocked = tmp_path / "spill"
    store = SpanStore(max_spans=10, spill_dir=blocked)
    blocked.rmdir()
    blocked.write_text("a file where the spill directory was")
    fill(store, bodies[:20])
    assert store.spill_error is not None and store.segment_count == 0
    trace_ids = {s.trace_id for s in spans[: store.received]}
    assert store.memory_count == store.received > 10
    assert all(store.trace(t) for t in trace_ids)
    store.close()


def test_background_spill_answers_every_span_throughout(tmp_path: Path, data: Data) -> None:
    spans, bodies = data
    per_trace: dict[bytes, set[bytes]] = {}
    for s in spans:
        per_trace.setdefault(s.trace_id, set()).add(s.span_id)

    async def main() -> None:
        store = SpanStore(max_spans=40, spill_dir=tmp_path)
        seen: set[bytes] = set()
        for i, body in enumerate(bodies):
            rows = rows_from_request(ExportTraceServiceRequest.FromString(body))
            seen.update(row[0] for row in rows)
            await store.add_async(rows)
            # Whether or not a segment is being written right now, nothing is missing.
            assert len(store.find_trace_ids(TraceQuery(limit=0))) == len(seen)
            if i % 3 == 0:
                await asyncio.sleep(0.01)
        await store.wait_spilled()
        assert store.segment_count >= 2
        for trace_id, span_ids in per_trace.items():
            assert sorted(row[SPAN_ID] for row in store.trace(trace_id)) == sorted(span_ids)
        store.close()

    asyncio.run(main())
