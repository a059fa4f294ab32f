"""Traces through the real embedded mesh: client -> Envoy gateway -> simulated boutique, read
back from the trace store with the parser analysis uses (Jaeger v1 and v3 answers)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from analysis.spans import load_spans
from meshsim.mesh import Mesh
from tests.support import hammer

pytestmark = pytest.mark.integration

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
PAGE = "/product/OLJCESPC7Z"
BACKENDS = {"productcatalogservice", "currencyservice", "cartservice", "recommendationservice",
            "adservice"}  # fmt: skip


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with Mesh(prometheus=False) as m:
        yield m


def fetch_trace(url: str, want_spans: int, timeout_s: float = 10.0) -> pd.DataFrame:
    """The trace once all its spans arrived (Envoy and the workloads flush every second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            frame = load_spans(url, progress=False)
        except Exception:  # 404 until the first span arrives
            frame = pd.DataFrame()
        if len(frame) >= want_spans or time.monotonic() > deadline:
            return frame
        time.sleep(0.3)


def attrs(row: Any) -> dict[str, str]:
    parsed: dict[str, str] = json.loads(row["attributes"])
    return parsed


def test_traced_product_page_is_the_demos_tree_rooted_at_the_client(mesh: Mesh) -> None:
    request = urllib.request.Request(
        mesh.gateway_url + PAGE, headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200
        version = resp.headers["x-version"]
    assert mesh.jaeger_url is not None
    spans = fetch_trace(f"{mesh.jaeger_url}/api/traces/{TRACE_ID}", 14)
    assert set(spans["trace_id"]) == {TRACE_ID}
    by_id = {row["span_id"]: row for _, row in spans.iterrows()}
    (gateway,) = [r for r in by_id.values() if r["parent_id"] == CLIENT_SPAN]
    assert gateway["service"] == "istio-ingressgateway"
    (frontend,) = [r for r in by_id.values() if r["parent_id"] == gateway["span_id"]]
    assert (frontend["service"], frontend["version"]) == ("frontend", version)
    below = [r for r in by_id.values() if r["parent_id"] == frontend["span_id"]]
    assert {r["service"] for r in below} == BACKENDS
    (recommendation,) = [r for r in below if r["service"] == "recommendationservice"]
    (listing,) = [r for r in by_id.values() if r["parent_id"] == recommendation["span_id"]]
    assert (listing["service"], listing["operation"]) == ("productcatalogservice", "ListProducts")
    assert len(by_id) == 2 + len(below) + 1  # nothing else in the trace
    assert all(r["kind"] == "server" for r in by_id.values())

    # Istio's sidecar attributes; one x-request-id through the whole request (Envoy's).
    request_id = attrs(gateway)["guid:x-request-id"]
    for row in [frontend, *below, listing]:
        a = attrs(row)
        assert a["istio.canonical_service"] == row["service"]
        assert a["istio.canonical_revision"] == row["version"]
        assert a["istio.namespace"] == "default"
        assert a["http.status_code"] == "200"
        assert a["guid:x-request-id"] == request_id
        assert a["component"] == "proxy"
        assert a["response_flags"] == "-"
        assert a["upstream_cluster"] == "inbound|80||"
        assert a["node_id"].startswith("sidecar~127.0.0.1~")
        # Children lie inside their parent (the virtual clock keeps a trace consistent).
        parent = by_id[row["parent_id"]]
        assert row["start_ns"] >= parent["start_ns"]
    assert attrs(gateway)["upstream_cluster"] == f"frontend_{version}"

    # The v3 answer gives the same spans (v1 keeps microseconds only, as Jaeger's does).
    v3 = fetch_trace(f"{mesh.jaeger_url}/api/v3/traces/{TRACE_ID}", 14)
    cols = ["span_id", "parent_id", "service", "operation", "kind", "version", "status_code"]

    def canonical(frame: pd.DataFrame) -> pd.DataFrame:
        # Jaeger v1 adds the scope and kind as tags; v3 keeps them in their own fields.
        tags = [
            {k: v for k, v in json.loads(a).items() if k != "span.kind" and "otel.scope" not in k}
            for a in frame["attributes"]
        ]
        out = frame[cols].assign(start_us=frame["start_ns"] // 1000, tags=tags)
        return out.sort_values("span_id").reset_index(drop=True)

    pd.testing.assert_frame_equal(canonical(v3), canonical(spans))


def test_unsampled_client_trace_leaves_no_span(mesh: Mesh) -> None:
    trace_id = "1" * 32
    request = urllib.request.Request(
        mesh.gateway_url + PAGE, headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-00"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200
    assert fetch_trace(f"{mesh.jaeger_url}/api/traces/{trace_id}", 1, timeout_s=2.5).empty


def test_trace_store_down_never_breaks_traffic_and_is_logged_once(mesh: Mesh) -> None:
    (store,) = [c for c in mesh.children if c.name == "tracestore"]
    store.stop()  # by its PID, like every child
    tally = hammer(mesh.gateway_url + PAGE, 200, concurrency=8)
    assert tally.statuses == {200: 200}
    time.sleep(2.5)  # a failed export or two
    log = (mesh.workdir / "workloads.log").read_text()
    assert log.count("span export failed") == 1
