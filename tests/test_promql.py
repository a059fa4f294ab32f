"""analysis.promql against a REAL Prometheus (/usr/bin/prometheus) scraping a live exporter.

The exporter (prometheus_client on 127.0.0.1, port 0) holds a counter, a histogram and a
counter that resets, all with Istio-like labels; their values change for ~8 s while
Prometheus scrapes every second. Raw samples read with `PrometheusClient.raw_samples` then
give, through `analysis.promql`, the same `increase`, `rate` and `histogram_quantile` answers
Prometheus computes itself at the same evaluation time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from analysis import promql
from analysis.prometheus import PrometheusClient
from meshcore.errors import BackendError

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.access(PROMETHEUS, os.X_OK), reason="no prometheus binary"),
]
BUCKETS_MS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0)
TRAFFIC_S = 8.0


class ResettingCounter(Collector):
    """A counter whose process 'restarts' half-way: its value drops back near zero."""

    def __init__(self) -> None:
        self.value = 0.0

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "envoy_cluster_upstream_rq", "upstream requests", labels=["envoy_cluster_name"]
        )
        family.add_metric(["outbound|80|v2|reviews"], self.value)
        yield family


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drive(stop: threading.Event, resetting: ResettingCounter, registry: CollectorRegistry) -> None:
    rng = np.random.default_rng(7)
    requests = Counter(
        "istio_requests",
        "requests",
        ["destination_service", "destination_version", "response_code"],
        registry=registry,
    )
    latency = Histogram(
        "istio_request_duration_milliseconds",
        "latency",
        ["destination_version"],
        buckets=BUCKETS_MS,
        registry=registry,
    )
    started = time.monotonic()
    while not stop.is_set():
        for version, scale in (("v1", 20.0), ("v2", 60.0)):
            code = "500" if rng.random() < 0.1 else "200"
            requests.labels("reviews.default.svc.cluster.local", version, code).inc(
                float(rng.integers(1, 20))
            )
            for value in rng.exponential(scale, size=int(rng.integers(5, 30))):
                latency.labels(version).observe(float(value))
        elapsed = time.monotonic() - started
        resetting.value = (3.0 if elapsed > TRAFFIC_S / 2 else 100.0) + 7.0 * elapsed
        stop.wait(0.1)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusClient]:
    registry = CollectorRegistry()
    resetting = ResettingCounter()
    registry.register(resetting)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    exporter_port = server.server_address[1]
    tmp: Path = tmp_path_factory.mktemp("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: mesh\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
    )
    port = _free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stop = threading.Event()
    driver = threading.Thread(target=_drive, args=(stop, resetting, registry), daemon=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"prometheus did not start: {(tmp / 'prometheus.log').read_text()}")
            time.sleep(0.2)
        client = PrometheusClient(url)
        while client.query("up").empty:  # target discovery takes a few seconds
            if time.monotonic() > deadline:
                pytest.fail("prometheus never scraped the exporter")
            time.sleep(0.2)
        driver.start()
        time.sleep(TRAFFIC_S)
        stop.set()
        driver.join()
        time.sleep(1.5)  # one more scrape after the last change
        yield client
    finally:
        stop.set()
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        server.shutdown()
        server.server_close()


def _semantics(client: PrometheusClient) -> promql.Semantics:
    return "v2" if client.buildinfo().get("version", "3").startswith("2.") else "v3"


def _by_labels(frame: object) -> dict[str, float]:
    return {str(k): float(v) for k, v in zip(frame["labels"], frame["value"], strict=True)}  # type: ignore[index]


def _eval_time(client: PrometheusClient, metric: str) -> tuple[float, float]:
    """A time between two scrapes near the end, and the first sample's time."""
    now = time.time()
    samples = client.raw_samples(metric, now - 60, now)
    times = np.unique(samples["t"].to_numpy())
    assert len(times) >= 6, f"too few scrapes of {metric}: {len(times)}"
    return float(times[-2]) + 0.4, float(times[0])


def assert_close(ours: dict[str, float], theirs: dict[str, float]) -> None:
    assert ours.keys() == theirs.keys() and ours
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("window_s", [3.0, 5.0, 30.0])
def test_increase_and_rate_equal_prometheus(prometheus: PrometheusClient, window_s: float) -> None:
    semantics = _semantics(prometheus)
    at_s, _ = _eval_time(prometheus, "istio_requests_total")
    for metric in ("istio_requests_total", "envoy_cluster_upstream_rq_total"):
        samples = prometheus.raw_samples(metric, at_s - 60, at_s + 5)
        ours = promql.increase(samples, at_s=at_s, window_s=window_s, semantics=semantics)
        theirs = prometheus.query(f"increase({metric}[{window_s:g}s])", at_s=at_s)
        assert_close(_by_labels(ours), _by_labels(theirs))
        ours = promql.rate(samples, at_s=at_s, window_s=window_s, semantics=semantics)
        theirs = prometheus.query(f"rate({metric}[{window_s:g}s])", at_s=at_s)
        assert_close(_by_labels(ours), _by_labels(theirs))


def test_counter_reset_is_counted(prometheus: PrometheusClient) -> None:
    # The resetting counter dropped from >100 to ~33 half-way; a plain last-first would be < 0.
    at_s, first_t = _eval_time(prometheus, "envoy_cluster_upstream_rq_total")
    samples = prometheus.raw_samples("envoy_cluster_upstream_rq_total", first_t - 1, at_s + 5)
    window_s = at_s - first_t + 0.5
    values = samples.sort_values("t")["value"].to_numpy()
    assert (np.diff(values) < 0).any(), "the exporter did not reset its counter"
    ours = promql.increase(samples, at_s=at_s, window_s=window_s, semantics=_semantics(prometheus))
    assert float(ours["value"].iloc[0]) > 0


@pytest.mark.parametrize("q", [0.5, 0.9, 0.99])
def test_histogram_quantile_equals_prometheus(prometheus: PrometheusClient, q: float) -> None:
    semantics = _semantics(prometheus)
    metric = "istio_request_duration_milliseconds_bucket"
    at_s, _ = _eval_time(prometheus, metric)
    samples = prometheus.raw_samples(metric, at_s - 60, at_s + 5)
    rates = promql.rate(samples, at_s=at_s, window_s=5.0, semantics=semantics)
    for by in (["le"], ["le", "destination_version"]):
        ours = promql.histogram_quantile(q, promql.sum_by(rates, by))
        grouping = ", ".join(by)
        theirs = prometheus.query(
            f"histogram_quantile({q}, sum by ({grouping}) (rate({metric}[5s])))", at_s=at_s
        )
        assert_close(_by_labels(ours), _by_labels(theirs))
        assert all(0 < v <= max(BUCKETS_MS) for v in _by_labels(ours).values())


def test_query_range_is_chunked_under_the_point_limit(prometheus: PrometheusClient) -> None:
    now = time.time()
    # 0.001 s steps over 30 s = 30,001 points: three requests of <= 11,000 points each.
    frame = prometheus.query_range("vector(1)", now - 30, now, 0.001)
    assert len(frame) == 30_001
    assert np.allclose(np.diff(frame["t"].to_numpy()), 0.001, rtol=0, atol=1e-6)
    assert json.loads(frame["labels"].iloc[0]) == {}


def test_a_bad_query_is_one_line_naming_prometheus_reason(prometheus: PrometheusClient) -> None:
    with pytest.raises(BackendError) as err:
        prometheus.query("rate(up[")
    assert "HTTP 400" in str(err.value) and "parse error" in str(err.value)
    assert "\n" not in str(err.value)
