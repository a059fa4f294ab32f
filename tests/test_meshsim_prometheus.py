"""Istio metrics of the embedded mesh counted by a REAL Prometheus (and by the embedded scraper,
into the run folder's parts) against the client's own counts."""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from meshcore.runfolder import METRICS_DIR, RunFolder
from meshsim.mesh import Mesh
from meshsim.resources import Resource, load_manifests
from tests.support import Tally, hammer

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
CANARY = HERE.parent / "scenarios" / "manifests" / "canary.yaml"
SPEC = HERE / "data" / "gateway-spec.yaml"
PROMETHEUS = shutil.which("prometheus")
FRONTEND_BY_VERSION = (
    'sum by (destination_version) (istio_requests_total{reporter="destination", '
    'destination_app="frontend"})'
)


def canary(*weights: int) -> list[Resource]:
    """The shipped canary manifests with other weights."""
    out = []
    for r in load_manifests(CANARY):
        if r.kind == "VirtualService":
            spec = copy.deepcopy(r.spec)
            for dest, w in zip(spec["http"][0]["route"], weights, strict=False):
                dest["weight"] = w
            r = Resource(r.kind, r.name, r.namespace, spec, r.api_version, "test.yaml")
        out.append(r)
    return out


def client_counts(tally: Tally) -> dict[str, float]:
    assert tally.statuses == {200: tally.n}
    return {str(v): float(n) for v, n in tally.header.items()}


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    if PROMETHEUS is None or not os.access(PROMETHEUS, os.X_OK):
        pytest.skip("no prometheus binary on PATH")
    with Mesh(manifests=canary(50, 50), spec=SPEC) as m:
        yield m


def test_prometheus_counts_equal_the_clients_per_version(mesh: Mesh) -> None:
    assert mesh.urls()["prometheus"] == mesh.prometheus_url
    mesh.apply(canary(50, 50))
    tally = hammer(mesh.gateway_url + "/_healthz", 2_000)
    expected = client_counts(tally)
    assert set(expected) == {"v1", "v2"}
    mesh.wait_metrics_scraped()
    assert mesh.prometheus is not None
    rows = mesh.prometheus.query(FRONTEND_BY_VERSION)
    got = {r["metric"]["destination_version"]: float(r["value"][1]) for r in rows}
    assert got == expected

    # The gateway's source-reported series and Envoy's own cluster stats say the same.
    source = mesh.prometheus.query(
        'sum by (destination_version) (istio_requests_total{reporter="source", '
        'source_workload="istio-ingressgateway"})'
    )
    assert {r["metric"]["destination_version"]: float(r["value"][1]) for r in source} == expected
    envoy = mesh.prometheus.query(
        'sum by (envoy_cluster_name) (envoy_cluster_upstream_rq_total{job="envoy", '
        'envoy_cluster_name=~"frontend_v[12]"})'
    )
    by_cluster = {r["metric"]["envoy_cluster_name"]: float(r["value"][1]) for r in envoy}
    assert by_cluster == {f"frontend_{v}": n for v, n in expected.items()}


def test_duration_histogram_counts_every_request(mesh: Mesh) -> None:
    assert mesh.prometheus is not None
    mesh.wait_metrics_scraped()
    count = mesh.prometheus.query(
        'sum(istio_request_duration_milliseconds_count{reporter="destination", '
        'destination_app="frontend"})'
    )
    inf = mesh.prometheus.query(
        'sum(istio_request_duration_milliseconds_bucket{reporter="destination", '
        'destination_app="frontend", le="+Inf"})'
    )
    total = mesh.prometheus.query(f"sum({FRONTEND_BY_VERSION})")
    assert float(count[0]["value"][1]) == float(inf[0]["value"][1]) == float(total[0]["value"][1])
    assert float(total[0]["value"][1]) >= 2_000


def test_embedded_scraper_writes_the_same_counts_into_the_run_folder(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    with Mesh(manifests=canary(50, 50), spec=SPEC, prometheus=False, run_folder=tmp_path) as m:
        assert "prometheus" not in m.urls()
        tally = hammer(m.gateway_url + "/_healthz", 600)
        m.wait_metrics_scraped()
        # Already on disk while the scraper runs: the rounds waited for are in its parts.
        during = frontend_counts(metric_frame(folder))
    expected = client_counts(tally)
    assert during == expected
    assert frontend_counts(metric_frame(folder)) == expected  # and after its last part
    assert not (tmp_path / "metrics.parquet").exists()
    [state] = folder.recordings(METRICS_DIR)
    assert state["done"] and state["lost"] == 0 and state["parts"] == len(folder.metric_parts())


def metric_frame(folder: RunFolder) -> pd.DataFrame:
    parts = folder.metric_parts()
    assert parts and all(p.parent.name == METRICS_DIR for p in parts)
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def frontend_counts(frame: pd.DataFrame) -> dict[str, float]:
    requests = frame[frame["metric"].astype(str) == "istio_requests_total"]
    last = requests.sort_values("t").groupby(requests["labels"].astype(str)).tail(1)
    got: dict[str, float] = {}
    for text, value in zip(last["labels"].astype(str), last["value"], strict=True):
        labels: dict[str, Any] = json.loads(text)
        if labels["reporter"] == "destination" and labels["destination_app"] == "frontend":
            version = labels["destination_version"]
            got[version] = got.get(version, 0.0) + value
    return got
