"""meshsim.telemetry without processes: hand-built OTLP, sampling, the export thread, metrics."""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client.parser import text_string_to_metric_families

from meshsim.boutique.hops import INGRESS, Hop
from meshsim.spec import load_spec
from meshsim.telemetry.istio import peers
from meshsim.telemetry.metrics import BYTES_BUCKETS, DURATION_BUCKETS_MS, IstioMetrics
from meshsim.telemetry.otlp import SpanEncoder, export_request, field_bytes, workload_resource
from meshsim.telemetry.spans import SpanObserver, sampled_by_trace_id

SPEC = load_spec()
PEERS = peers(SPEC.workloads)
BACKENDS = [w.name for w in SPEC.workloads if w.service != "frontend"]


def synthetic_hops(n: int, seed: int = 3) -> list[Hop]:
    rng = random.Random(seed)
    hops = []
    for _ in range(n):
        trace_id = f"{rng.getrandbits(128):032x}"
        root = f"{rng.getrandbits(64):016x}"
        start_ns = 1_700_000_000_000_000_000 + rng.randrange(10**12)
        frontend = rng.choice(["frontend-v1", "frontend-v2"])
        for _ in range(rng.randrange(1, 4)):
            status = rng.choice([200, 200, 200, 404, 500])
            hops.append(
                Hop(
                    frontend,
                    rng.choice(BACKENDS),
                    "GetProduct",
                    "grpc",
                    start_ns + rng.randrange(10**6),
                    rng.lognormvariate(0, 1.5),
                    status,
                    status != 200,
                    trace_id,
                    f"{rng.getrandbits(64):016x}",
                    root,
                )
            )
        code = rng.choice([200, 200, 500])
        duration = rng.choice([0.5, 1.0, rng.expovariate(0.01)])  # bucket edges included
        hops.append(
            Hop(
                INGRESS,
                frontend,
                "GET /",
                "http",
                start_ns,
                duration,
                code,
                code >= 500,
                trace_id,
                root,
                None,
            )  # fmt: skip
        )
    return hops


def decode(body: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(body)


def attributes(span: trace_pb2.Span) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in span.attributes}


def test_hand_built_span_decodes_to_the_hop_field_for_field() -> None:
    hops = synthetic_hops(50)
    encoder = SpanEncoder(PEERS)
    body = export_request(
        [
            (workload_resource(PEERS[h.destination]), [encoder.span(h, f"rid-{i}")])
            for i, h in enumerate(hops)
        ]  # fmt: skip
    )
    request = decode(body)
    assert len(request.resource_spans) == len(hops)
    for i, (hop, rs) in enumerate(zip(hops, request.resource_spans, strict=True)):
        resource = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
        peer = PEERS[hop.destination]
        assert resource["service.name"] == peer.canonical_service
        assert resource["service.version"] == hop.destination.rsplit("-", 1)[1]
        (span,) = rs.scope_spans[0].spans
        assert span.trace_id.hex() == hop.trace_id
        assert span.span_id.hex() == hop.span_id
        assert span.parent_span_id.hex() == (hop.parent_span_id or "")
        assert span.name == hop.operation
        assert span.kind == trace_pb2.Span.SPAN_KIND_SERVER
        assert span.start_time_unix_nano == hop.start_ns
        assert span.end_time_unix_nano == hop.start_ns + int(hop.duration_ms * 1e6)
        assert span.status.code == (2 if hop.error else 0)
        attrs = attributes(span)
        assert attrs["http.status_code"] == str(hop.status_code)
        assert attrs["guid:x-request-id"] == f"rid-{i}"
        assert attrs["istio.canonical_revision"] == resource["service.version"]
        assert attrs["istio.canonical_service"] == peer.app
        assert attrs["istio.namespace"] == "default"
        assert attrs["component"] == "proxy"
        assert attrs["upstream_cluster"].startswith("inbound|80|")
        assert attrs["node_id"].startswith(f"sidecar~127.0.0.1~{hop.destination}.default~")
        assert attrs["response_flags"] == "-"


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16_384, 2_097_152])
def test_length_prefixes_match_protobuf_for_every_varint_width(size: int) -> None:
    name = "x" * size
    encoded = field_bytes(5, name.encode())
    assert trace_pb2.Span.FromString(encoded).name == name
    if size:  # protobuf itself leaves an empty string out
        assert encoded == trace_pb2.Span(name=name).SerializeToString()


def test_trace_id_ratio_sampling_keeps_the_ratio_within_3_se() -> None:
    rng = random.Random(11)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(20_000)]
    for ratio in (0.01, 0.25, 0.5):
        kept = sum(sampled_by_trace_id(t, ratio) for t in ids)
        se = (ratio * (1 - ratio) / len(ids)) ** 0.5
        assert abs(kept / len(ids) - ratio) <= 3 * se, (ratio, kept)
    assert all(sampled_by_trace_id(t, 1.0) for t in ids)
    assert not any(sampled_by_trace_id(t, 0.0) for t in ids)


def test_observer_exports_every_sampled_hop_once_in_batches() -> None:
    bodies: list[bytes] = []
    observer = SpanObserver(PEERS, bodies.append, batch_spans=64, flush_interval_s=0.05)
    hops = synthetic_hops(200)
    unsampled = hops[0]._replace(sampled=False, parent_span_id="00f067aa0ba902b7")
    for hop in [*hops, unsampled]:
        observer(hop)
    observer.close()
    spans = [
        (s.span_id.hex(), rs.resource.attributes[0].value.string_value)
        for body in bodies
        for rs in decode(body).resource_spans
        for s in rs.scope_spans[0].spans
    ]
    assert sorted(s for s, _ in spans) == sorted(h.span_id for h in hops)
    by_span = {h.span_id: PEERS[h.destination].canonical_service for h in hops}
    assert all(by_span[s] == service for s, service in spans)
    assert max(len(decode(b).resource_spans) for b in bodies) <= len(PEERS)
    assert observer.exported == len(hops) and observer.dropped == 0


def test_a_failing_collector_is_logged_once_and_never_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = Counter[str]()

    def down(body: bytes) -> None:
        calls["post"] += 1
        raise ConnectionRefusedError("connection refused")

    observer = SpanObserver(PEERS, down, batch_spans=10, flush_interval_s=0.01, max_queue=50)
    with caplog.at_level(logging.WARNING, logger="meshsim.telemetry.spans"):
        for hop in synthetic_hops(100):
            observer(hop)  # never raises, whatever the exporter does
        observer.close()
    assert calls["post"] >= 2
    assert observer.failed_batches == calls["post"]
    assert sum("span export failed" in r.message for r in caplog.records) == 1
    assert observer.dropped + observer.exported + 10 * observer.failed_batches >= 50


def test_a_full_queue_drops_and_counts_instead_of_growing() -> None:
    gate = threading.Event()
    observer = SpanObserver(PEERS, lambda body: gate.wait(5), max_queue=30, batch_spans=10**6)
    hops = synthetic_hops(60)
    for hop in hops:
        observer(hop)
    assert observer.dropped == len(hops) - 30
    gate.set()
    observer.close()
    assert observer.exported == 30


def test_metrics_exposition_matches_a_plain_count_of_the_hops() -> None:
    hops = synthetic_hops(400)
    metrics = IstioMetrics(PEERS)
    for hop in hops:
        metrics(hop)
    for proxy in ("frontend-v2", INGRESS):
        families = {f.name: f for f in text_string_to_metric_families(metrics.render(proxy))}
        for reporter, side in (("destination", 1), ("source", 0)):
            mine = [h for h in hops if (h.destination, h.source)[1 - side] == proxy]
            counts = Counter((h.source, h.destination, h.status_code) for h in mine)
            got = {
                (s.labels["source_workload"], s.labels["destination_workload"],
                 int(s.labels["response_code"]) if s.labels["request_protocol"] == "http"
                 else {"0": 200, "5": 404, "13": 500}[s.labels["grpc_response_status"]]): s.value
                for s in families["istio_requests"].samples
                if s.labels["reporter"] == reporter
            }  # fmt: skip
            assert got == counts, (proxy, reporter)
        # The frontend's inbound histogram, bucket by bucket, against numpy.
        inbound = np.array(
            [h.duration_ms for h in hops if h.destination == proxy and h.status_code == 200]
        )
        buckets = {
            s.labels["le"]: s.value
            for s in families["istio_request_duration_milliseconds"].samples
            if s.name.endswith("_bucket")
            and s.labels["reporter"] == "destination"
            and s.labels["response_code"] == "200"
        }
        if proxy == INGRESS:
            assert not buckets
            continue
        for bound in DURATION_BUCKETS_MS:
            assert buckets[str(bound)] == np.count_nonzero(inbound <= bound), bound
        assert buckets["+Inf"] == len(inbound)


def test_metric_labels_are_istios() -> None:
    metrics = IstioMetrics(PEERS)
    hop = synthetic_hops(1)[-1]
    metrics.record(hop, 120, 5_000)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render())}
    samples = families["istio_requests"].samples
    assert {s.labels["reporter"] for s in samples} == {"source", "destination"}
    labels = next(s.labels for s in samples if s.labels["reporter"] == "destination")
    version = hop.destination.rsplit("-", 1)[1]
    assert labels == {
        "reporter": "destination",
        "source_workload": INGRESS,
        "source_workload_namespace": "istio-system",
        "source_principal": "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway",
        "source_app": INGRESS,
        "source_version": "unknown",
        "source_canonical_service": INGRESS,
        "source_canonical_revision": "latest",
        "source_cluster": "Kubernetes",
        "destination_workload": hop.destination,
        "destination_workload_namespace": "default",
        "destination_principal": "spiffe://cluster.local/ns/default/sa/frontend",
        "destination_app": "frontend",
        "destination_version": version,
        "destination_service": "frontend.default.svc.cluster.local",
        "destination_service_name": "frontend",
        "destination_service_namespace": "default",
        "destination_canonical_service": "frontend",
        "destination_canonical_revision": version,
        "destination_cluster": "Kubernetes",
        "request_protocol": "http",
        "response_code": str(hop.status_code),
        "grpc_response_status": "",
        "response_flags": "-",
        "connection_security_policy": "mutual_tls",
    }
    sizes = {
        (f.name, s.labels["le"]): s.value
        for f in families.values()
        for s in f.samples
        if s.name.endswith("bytes_bucket") and s.labels["reporter"] == "destination"
    }
    for bound in BYTES_BUCKETS:
        assert sizes[("istio_request_bytes", str(bound))] == (bound >= 120)
        assert sizes[("istio_response_bytes", str(bound))] == (bound >= 5_000)
