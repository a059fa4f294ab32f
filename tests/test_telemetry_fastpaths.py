"""Telemetry shortcuts give what the plain code gives: per-request observers, the hand-built
export request, and the trace store keeping each span's own bytes."""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from meshsim.boutique.hops import Hop
from meshsim.spec import load_spec
from meshsim.telemetry import exchange
from meshsim.telemetry.istio import peers
from meshsim.telemetry.metrics import IstioMetrics
from meshsim.telemetry.otlp import SCOPE_NAME, SpanEncoder, export_request, workload_resource
from meshsim.telemetry.spans import SpanObserver
from meshsim.tracestore.receiver import SPAN, decode, rows_from_request, span_slices

SPEC = load_spec()
PEERS = peers(SPEC.workloads)
NAMES = [w.name for w in SPEC.workloads]


def request_hops(rng: random.Random) -> list[Hop]:
    """The hops of one request: calls from a frontend, then the frontend's own hop last."""
    trace_id, root = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}"
    start_ns = 1_700_000_000_000_000_000 + rng.randrange(10**12)
    hops = []
    for _ in range(rng.randrange(0, 12)):
        status = rng.choice([200, 200, 404, 500])
        hops.append(
            Hop("frontend-v1", rng.choice(NAMES[2:]), rng.choice(["GetCart", "Convert"]), "grpc",
                start_ns + rng.randrange(10**6), rng.expovariate(1.0), status, status != 200,
                trace_id, f"{rng.getrandbits(64):016x}", root)
        )  # fmt: skip
    code = rng.choice([200, 500])
    parent = rng.choice([None, f"{rng.getrandbits(64):016x}"])
    hops.append(
        Hop("istio-ingressgateway", "frontend-v1", "GET /", "http", start_ns, 3.5, code,
            code >= 500, trace_id, root, parent)
    )  # fmt: skip
    return hops


def _exchange(request_id: str) -> exchange.Exchange:
    return exchange.Exchange("frontend-v1", request_id, True, 10)


def test_metrics_per_request_match_metrics_per_hop() -> None:
    per_hop, per_request = IstioMetrics(PEERS), IstioMetrics(PEERS)
    rng = random.Random(4)
    for _ in range(200):
        hops = request_hops(rng)
        entries = []
        for metrics in (per_hop, per_request):
            ex = _exchange("rid")
            token = exchange.CURRENT.set(ex)
            try:
                if metrics is per_hop:
                    for hop in hops:
                        metrics(hop)
                else:
                    metrics.observe_request(hops)
            finally:
                exchange.CURRENT.reset(token)
            entries.append(ex.entry)
            if ex.entry is not None:
                metrics.record(ex.entry, 12, 345)
        assert entries[0] == entries[1] == hops[-1]
    assert per_hop.render() == per_request.render()


def test_spans_per_request_match_spans_per_hop() -> None:
    bodies: dict[str, list[bytes]] = {"hop": [], "request": []}
    observers = {k: SpanObserver(PEERS, v.append, flush_interval_s=60) for k, v in bodies.items()}
    rng = random.Random(8)
    for i in range(100):
        hops = request_hops(rng)
        for kind, observer in observers.items():
            token = exchange.CURRENT.set(_exchange(f"req-{i}"))
            try:
                if kind == "hop":
                    for hop in hops:
                        observer(hop)
                else:
                    observer.observe_request(hops)
            finally:
                exchange.CURRENT.reset(token)
    for observer in observers.values():
        observer.close()
    assert bodies["hop"] == bodies["request"] and bodies["hop"]
    assert observers["request"].exported == observers["hop"].exported > 0


def test_export_request_is_what_protobuf_serializes() -> None:
    rng = random.Random(2)
    encoder = SpanEncoder(PEERS)
    batches = []
    for name in NAMES[:4]:
        spans = [encoder.span(h, "rid") for _ in range(3) for h in request_hops(rng)]
        batches.append((workload_resource(PEERS[name]), spans))
    expected = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource.FromString(resource),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(name=SCOPE_NAME),
                        spans=[Span.FromString(s) for s in spans],
                    )
                ],
            )
            for resource, spans in batches
        ]
    )
    assert export_request(batches) == expected.SerializeToString()


def test_trace_store_keeps_each_spans_bytes_as_serializing_would() -> None:
    rng = random.Random(6)
    encoder = SpanEncoder(PEERS)
    body = export_request(
        (workload_resource(PEERS[name]), [encoder.span(h, "r") for h in request_hops(rng)])
        for name in NAMES
    )
    request = ExportTraceServiceRequest.FromString(body)
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert span_slices(body) == [s.SerializeToString() for s in spans]
    rows = decode(body, "application/x-protobuf")
    assert rows == rows_from_request(request)
    assert [Span.FromString(r[SPAN]) for r in rows] == spans
    # A body the walk cannot follow (a group field) still decodes, by serializing again.
    grouped = body + b"\x0b\x0c"  # an empty unknown group, field 1
    assert span_slices(grouped) is None
