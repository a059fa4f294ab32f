"""Telemetry wired into served workloads (in-process aiohttp on 127.0.0.1), the scraper, and the
Prometheus config."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import pyarrow.parquet as pq
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from meshcore.runfolder import METRICS_DIR, METRICS_FILE, RunFolder
from meshcore.schemas import METRIC_SCHEMA
from meshsim.boutique import INGRESS, Hop, serve
from meshsim.prometheus import Target, mesh_targets, scrape_config
from meshsim.spec import load_spec
from meshsim.telemetry.exposition import ExpositionReader
from meshsim.telemetry.istio import peers
from meshsim.telemetry.metrics import IstioMetrics
from meshsim.telemetry.scrape import Scraper
from meshsim.telemetry.scrape_files import read_rounds, write_targets
from meshsim.telemetry.workloads import WorkloadTelemetry

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


async def _product_pages(
    sampling: float, headers: list[dict[str, str]]
) -> tuple[list[bytes], dict[str, str], list[int]]:
    bodies: list[bytes] = []
    spec = load_spec()
    telemetry = WorkloadTelemetry(spec, poster=bodies.append, sampling_ratio=sampling)
    running = await serve(spec, 5, telemetry=telemetry)
    sizes = []
    try:
        async with aiohttp.ClientSession() as session:
            for h in headers:
                url = running.url("frontend-v1") + "/product/OLJCESPC7Z"
                async with session.get(url, headers=h) as resp:
                    sizes.append(len(await resp.read()))
            exposition = {}
            for proxy in ("frontend-v1", "productcatalogservice-v1"):
                async with session.get(running.url(proxy) + "/metrics") as resp:
                    exposition[proxy] = await resp.text()
            async with session.get(running.url(INGRESS) + "/metrics") as resp:
                exposition[INGRESS] = await resp.text()
    finally:
        await running.close()  # flushes the spans
    return bodies, exposition, sizes


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def spans_of(bodies: list[bytes]) -> list[tuple[str, Any]]:
    out = []
    for body in bodies:
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
            service = rs.resource.attributes[0].value.string_value
            out += [(service, s) for s in rs.scope_spans[0].spans]
    return out


@pytest.mark.integration  # serves on 127.0.0.1
def test_client_traceparent_roots_the_spans_and_request_id_reaches_every_span() -> None:
    traced = {"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01", "x-request-id": "req-42"}
    unsampled = {"traceparent": f"00-{'1' * 32}-{CLIENT_SPAN}-00"}
    bodies, _, _ = run(_product_pages(1.0, [traced, unsampled]))
    spans = spans_of(bodies)
    assert {s.trace_id.hex() for _, s in spans} == {TRACE_ID}, "unsampled client trace exported"
    by_id = {s.span_id.hex(): (svc, s) for svc, s in spans}
    (root,) = [s for _, s in spans if s.parent_span_id.hex() == CLIENT_SPAN]
    assert root.name == "GET /product/{id}"
    children = Counter(
        by_id[s.span_id.hex()][0] for _, s in spans if s.parent_span_id == root.span_id
    )
    assert set(children) == {
        "productcatalogservice", "currencyservice", "cartservice", "recommendationservice",
        "adservice",
    }  # fmt: skip
    for _, s in spans:
        attrs = {kv.key: kv.value.string_value for kv in s.attributes}
        assert attrs["guid:x-request-id"] == "req-42"


@pytest.mark.integration  # serves on 127.0.0.1
def test_without_traceparent_the_ratio_decides_per_request() -> None:
    bodies, _, _ = run(_product_pages(0.0, [{}] * 5))
    assert spans_of(bodies) == []
    bodies, _, _ = run(_product_pages(1.0, [{}] * 3))
    traces: Counter[str] = Counter(s.trace_id.hex() for _, s in spans_of(bodies))
    assert len(traces) == 3 and len(set(traces.values())) == 1  # whole trees, never parts


@pytest.mark.integration  # serves on 127.0.0.1
def test_metrics_routes_count_what_was_served_with_real_body_sizes() -> None:
    bodies, exposition, sizes = run(_product_pages(1.0, [{}] * 4))

    def samples(proxy: str, name: str) -> list[Any]:
        families = text_string_to_metric_families(exposition[proxy])
        return [s for f in families for s in f.samples if s.name == name]

    destination = [
        s for s in samples("frontend-v1", "istio_requests_total")
        if s.labels["reporter"] == "destination"
    ]  # fmt: skip
    assert [(s.labels["source_workload"], s.value) for s in destination] == [(INGRESS, 4.0)]
    (source,) = samples(INGRESS, "istio_requests_total")
    assert source.labels["reporter"] == "source" and source.value == 4.0
    (resp_sum,) = [
        s.value for s in samples("frontend-v1", "istio_response_bytes_sum")
        if s.labels["reporter"] == "destination"
    ]  # fmt: skip
    assert resp_sum == sum(sizes)
    catalog = samples("productcatalogservice-v1", "istio_requests_total")
    # GetProduct once and once per recommendation (<= 4), ListProducts once per page.
    assert sum(s.value for s in catalog if s.labels["reporter"] == "destination") >= 4 * 2


ENVOY_LIKE = """# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="frontend_v1"} 1042
envoy_cluster_upstream_rq_total{envoy_cluster_name="frontend_v2"} 3 1700000000000
# TYPE odd gauge
odd{path="C:\\\\tmp",quote="say \\"hi\\"",nl="a\\nb",brace="}{"} -1.5e-3
odd_inf{le="+Inf"} +Inf
server_live 1
"""


def test_exposition_reader_agrees_with_prometheus_client_parser() -> None:
    metrics = IstioMetrics(peers(load_spec().workloads))
    rng = random.Random(9)
    for i in range(60):
        status = rng.choice([200, 404, 500])
        ids = (f"{i:032x}", f"{i + 1:016x}", f"{i + 2:016x}")
        hop = Hop("frontend-v1", rng.choice(["adservice-v1", "cartservice-v1"]), "GetAds",
                  "grpc", 0, rng.expovariate(0.1), status, status != 200, *ids)  # fmt: skip
        metrics(hop)
    extra = {"job": "j", "pod": "p"}
    for text in (metrics.render(), ENVOY_LIKE):
        reader = ExpositionReader(extra)
        for _ in range(2):  # the second time from the label cache
            names, labels, values = reader.read(text)
            expected = [
                (s.name, {**extra, **s.labels}, s.value)
                for f in text_string_to_metric_families(text)
                for s in f.samples
            ]
            got = [(n, json.loads(lab), v) for n, lab, v in zip(names, labels, values, strict=True)]
            assert got == expected
    with pytest.raises(ValueError):
        ExpositionReader({}).read('broken{a="1" 2\n')


class _Exposition(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def exporter() -> Iterator[str]:
    _Exposition.body = (
        b'# TYPE istio_requests_total counter\nistio_requests_total{destination_version="v1"} 7\n'
        b'istio_requests_total{destination_version="v2"} 3\n# TYPE up gauge\nup 1\n'
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()
    server.server_close()


@pytest.mark.integration  # serves on 127.0.0.1
def test_scraper_writes_the_samples_frame_and_survives_a_dead_target(
    exporter: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = "http://127.0.0.1:9/metrics"  # discard port: nothing listens
    with caplog.at_level(logging.WARNING, logger="meshsim.telemetry.scrape"):
        scraper = Scraper(
            [Target(exporter, "w", {"pod": "a"}), Target(dead, "gone")], tmp_path, interval_s=0.05
        )
        scraper.wait_scraped()
        scraper.wait_scraped()
        scraper.close()
    parts = RunFolder(tmp_path).metric_parts()
    assert parts and not (tmp_path / METRICS_FILE).exists()  # parts of metrics/, no single file
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    assert list(frame.columns) == ["t", "metric", "labels", "value"]
    rounds = scraper.scrapes
    assert rounds >= 4 and len(frame) == 3 * rounds
    last = frame[frame["t"] == frame["t"].max()]
    got = {(m, json.loads(lab).get("destination_version")): v for m, lab, v in
           zip(last["metric"], last["labels"], last["value"], strict=True)}  # fmt: skip
    assert got == {("istio_requests_total", "v1"): 7.0, ("istio_requests_total", "v2"): 3.0,
                   ("up", None): 1.0}  # fmt: skip
    labels = json.loads(frame["labels"].iloc[0])
    assert labels["job"] == "w" and labels["pod"] == "a" and labels["instance"].startswith("127.")
    assert sum("scraping" in r.message and dead in r.message for r in caplog.records) == 1


def _scraper_child(targets: Path, out_dir: Path, status: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "meshsim.telemetry.scrape", "--targets", str(targets)]
        + ["--out-dir", str(out_dir), "--status-file", str(status), "--interval-s", "0.05"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


@pytest.mark.integration  # starts the scraper child
def test_the_scraper_child_writes_its_file_on_sigterm_and_exits_0(
    exporter: str, tmp_path: Path
) -> None:
    write_targets(tmp_path / "targets.json", [Target(exporter, "w")])
    status = tmp_path / "status.json"
    proc = _scraper_child(tmp_path / "targets.json", tmp_path / "run", status)
    try:
        deadline = time.monotonic() + 20
        while read_rounds(status) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "no rounds"
            time.sleep(0.05)
        assert RunFolder(tmp_path / "run").metric_parts() == []  # a part every 5 s, and at exit
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        assert proc.stderr is not None
        proc.stderr.close()
    folder = RunFolder(tmp_path / "run")
    tables = [pq.read_table(p) for p in folder.metric_parts()]
    assert tables and all(t.schema.equals(METRIC_SCHEMA) for t in tables)
    rows = sum(t.num_rows for t in tables)
    assert rows == 3 * read_rounds(status)  # the last round, after SIGTERM, too
    assert read_rounds(status, "written") == read_rounds(status)
    [state] = folder.recordings(METRICS_DIR)
    assert state["done"] and state["rows"] == rows and state["pid"] == proc.pid


@pytest.mark.integration  # starts the scraper child
def test_the_scraper_child_refuses_a_broken_targets_file_in_one_line(tmp_path: Path) -> None:
    targets = tmp_path / "targets.json"
    targets.write_text("{not json")
    proc = _scraper_child(targets, tmp_path / "run", tmp_path / "status.json")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    (line,) = err.decode().splitlines()
    assert line.startswith(f"{targets}: not a targets file (") and "write_targets" in line


def test_prometheus_config_scrapes_envoy_gateway_and_every_workload() -> None:
    spec = load_spec()
    workloads = [(w, 2000 + i) for i, w in enumerate(spec.workloads)]
    targets = mesh_targets(
        envoy_admin="http://127.0.0.1:1000", workloads=workloads, gateway_metrics_port=3000
    )
    config = scrape_config(targets)
    assert config["global"]["scrape_interval"] == "1s"
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"envoy", INGRESS, "workloads"}
    assert jobs["envoy"]["metrics_path"] == "/stats/prometheus"
    assert jobs["envoy"]["params"] == {"usedonly": [""]}
    assert jobs["envoy"]["static_configs"][0]["targets"] == ["127.0.0.1:1000"]
    assert jobs[INGRESS]["static_configs"][0]["targets"] == ["127.0.0.1:3000"]
    assert "metrics_path" not in jobs["workloads"]  # Prometheus' default, /metrics
    configs = jobs["workloads"]["static_configs"]
    assert [c["targets"] for c in configs] == [[f"127.0.0.1:{p}"] for _, p in workloads]
    assert configs[1]["labels"] == {
        "pod": "frontend-v2", "namespace": "default", "app": "frontend", "version": "v2"
    }  # fmt: skip
    # The scraper reads the very same list.
    assert [t.url for t in targets][-1] == f"http://127.0.0.1:{workloads[-1][1]}/metrics"
