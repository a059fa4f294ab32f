"""A real Prometheus for the embedded mesh: its generated config and its process.

Scrapes every second: Envoy's admin `/stats/prometheus` (job `envoy`), every workload's
`/metrics` (job `workloads`, one target per workload, labelled as Kubernetes pods are) and the
ingress gateway's Istio series (job `istio-ingressgateway`). The same `Target` list drives the
embedded scraper (`meshsim.telemetry.scrape`) when no Prometheus is installed. The TSDB lives
in the mesh's workdir; the process is stopped by PID like every other child.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from meshcore.errors import BackendError
from meshcore.tools import find_tool
from meshsim.boutique.hops import INGRESS
from meshsim.procs import Child
from meshsim.spec import Workload
from meshsim.telemetry.istio import GATEWAY_NAMESPACE

SCRAPE_INTERVAL = "1s"


def prometheus_binary() -> str | None:
    return find_tool("prometheus")


@dataclass(frozen=True)
class Target:
    """One scrape URL and the labels Prometheus adds to its samples (besides `job` and
    `instance`)."""

    url: str
    job: str
    labels: Mapping[str, str] = field(default_factory=dict)


def mesh_targets(
    *,
    envoy_admin: str | None,
    workloads: Sequence[tuple[Workload, int]],
    gateway_metrics_port: int | None = None,
    envoy_replicas: Mapping[str, str] | None = None,
) -> list[Target]:
    """What the mesh's Prometheus (or scraper) scrapes: Envoy, the gateway's Istio series and
    every workload's `/metrics`, labelled as Kubernetes pod discovery would label them.
    `envoy_replicas` ({pod: admin URL}) are the Envoys of a gateway of several replicas, each
    labelled with its pod."""
    gateway = {"pod": INGRESS, "namespace": GATEWAY_NAMESPACE}
    targets = []
    if envoy_admin:
        targets.append(Target(f"{envoy_admin}/stats/prometheus?usedonly", "envoy", gateway))
    for pod, admin in (envoy_replicas or {}).items():
        replica = {**gateway, "pod": pod}
        targets.append(Target(f"{admin}/stats/prometheus?usedonly", "envoy", replica))
    if gateway_metrics_port:
        targets.append(Target(f"http://127.0.0.1:{gateway_metrics_port}/metrics", INGRESS, gateway))
    for w, port in workloads:
        labels = {"pod": w.name, "namespace": w.namespace}
        labels.update({_label_name(k): v for k, v in w.labels.items()})
        targets.append(Target(f"http://127.0.0.1:{port}/metrics", "workloads", labels))
    return targets


def scrape_config(targets: Sequence[Target]) -> dict[str, Any]:
    """The prometheus.yml scraping `targets` every second, one job per `Target.job`."""
    jobs: dict[str, dict[str, Any]] = {}
    for t in targets:
        url = urllib.parse.urlsplit(t.url)
        job = jobs.setdefault(t.job, {"job_name": t.job, "static_configs": []})
        if url.path != "/metrics":
            job["metrics_path"] = url.path
        if url.query:
            job["params"] = {k: [v] for k, v in urllib.parse.parse_qsl(url.query, True)}
        job["static_configs"].append({"targets": [url.netloc], "labels": dict(t.labels)})
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
        "scrape_configs": list(jobs.values()),
    }


def _label_name(key: str) -> str:
    """A Kubernetes label as Prometheus' pod discovery maps it (non-alphanumerics -> _)."""
    return "".join(c if c.isalnum() else "_" for c in key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """The `prometheus` process on 127.0.0.1, ready when the constructor returns."""

    def __init__(
        self,
        workdir: Path,
        config: Mapping[str, Any],
        *,
        binary: str | None = None,
        ready_timeout_s: float = 20.0,
    ) -> None:
        binary = binary or prometheus_binary()
        if binary is None:
            raise BackendError(
                "the `prometheus` command is not on PATH; install it (Debian: apt-get install "
                "prometheus) or let the mesh scrape by itself"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        # A reused workdir must not bring back a previous mesh's series: within Prometheus'
        # 5-minute lookback they would add to this mesh's sums.
        shutil.rmtree(workdir / "tsdb", ignore_errors=True)
        config_file = workdir / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        # Prometheus cannot report a port it chose itself: take a free one, retry if raced.
        last_error: BackendError | None = None
        for _ in range(3):
            self.port = free_port()
            self.child = Child(
                "prometheus",
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=warn",
                ],
                workdir / "prometheus.log",
            )
            try:
                self._wait_ready(ready_timeout_s)
                return
            except BackendError as e:
                self.child.stop()
                last_error = e
        assert last_error is not None
        raise last_error

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.child.alive():
                raise self.child.died_error()
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise BackendError(
            f"prometheus was not ready within {timeout_s:.0f} s; last log lines: "
            f"{self.child.tail()}"
        )

    def query(self, promql: str, timeout_s: float = 2.0) -> list[dict[str, Any]]:
        """An instant query's result vector (`[{"metric": {...}, "value": [t, "v"]}]`)."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                doc = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise BackendError(f"prometheus query {promql!r} failed: {e}") from None
        result: list[dict[str, Any]] = doc.get("data", {}).get("result", [])
        return result

    def wait_scraped(self, targets: int, timeout_s: float = 15.0) -> None:
        """Wait until all `targets` have been scraped after this call began.

        Prometheus applies a new config's targets up to 5 s after start, so the first call can
        take that long; later ones about one scrape interval.
        """
        since_s = time.time()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.child.alive():
                raise self.child.died_error()
            try:
                rows = self.query("count(up) or vector(0)")
                oldest = self.query("min(timestamp(up))")
            except BackendError:
                rows, oldest = [], []
            if (
                rows
                and int(float(rows[0]["value"][1])) >= targets
                and oldest
                and float(oldest[0]["value"][1]) > since_s
            ):
                return
            time.sleep(0.2)
        raise BackendError(
            f"prometheus did not scrape its {targets} targets within {timeout_s:.0f} s; "
            f"see {self.url}/targets"
        )

    def stop(self) -> None:
        self.child.stop()
