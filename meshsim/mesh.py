"""The embedded mesh as one object: simulated workloads, a real Envoy gateway, its control plane.

    with Mesh() as mesh:                   # everything on 127.0.0.1, free ports
        mesh.gateway_url                   # http://127.0.0.1:PORT, the Istio ingress gateway
        mesh.kubeconfig                    # the embedded Kubernetes API serving Istio resources
        mesh.apply("scenarios/manifests")  # through that API, validated, pushed to Envoy

    Mesh(gateway_replicas=3, push_skew_ms={1: 800})   # replica 1 gets every push 0.8 s late

Each server runs in a child process of its own (asyncio never shares Locust's gevent loop),
started in its own session and stopped by PID. The gateway is `meshsim.gateway.Gateway`: one
Envoy, or several replicas behind a balancer on the gateway's address.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from meshcore.errors import BackendError, ConfigError
from meshsim.apply import apply_resources, not_applied, wait_applied
from meshsim.boutique.hops import INGRESS
from meshsim.cluster_objects import core_objects
from meshsim.gateway import Gateway, check_replicas
from meshsim.hosts import Endpoint
from meshsim.httproutes import with_istio_class
from meshsim.kubeapi.kubeconfig import write_kubeconfig
from meshsim.procs import Child, python_module, start_tracestore, wait_for_json
from meshsim.prometheus import Prometheus, Target, mesh_targets, prometheus_binary, scrape_config
from meshsim.pusher import Replica
from meshsim.resources import Resource, read_manifests
from meshsim.spec import DEFAULT_SPEC, MeshSpec, load_spec
from meshsim.telemetry.scrape_files import wait_scraper_rounds, write_targets
from meshsim.translate import build_snapshot

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MANIFESTS = REPO_ROOT / "scenarios" / "manifests" / "canary.yaml"


class Mesh:
    """Starts, serves and stops the embedded mesh; a context manager for tests and scenarios."""

    def __init__(
        self,
        *,
        manifests: str | Path | Sequence[Resource] | None = None,
        spec: str | Path | None = None,
        seed: int | None = None,
        gateway_port: int = 0,
        gateway_replicas: int = 1,
        push_skew_ms: Mapping[int, float] | None = None,
        gateway_balance: str = "request",
        workdir: str | Path | None = None,
        envoy_concurrency: int = 1,
        tracing: bool = True,
        trace_sampling: float = 100.0,
        prometheus: bool = True,
        run_folder: str | Path | None = None,
    ) -> None:
        self._manifests = manifests
        self.spec_path = Path(spec) if spec is not None else DEFAULT_SPEC
        self.spec: MeshSpec = load_spec(spec)
        self.seed = self.spec.seed if seed is None else seed
        self.gateway_port = gateway_port
        # Several replicas, each pushed to on its own, replica i `push_skew_ms[i]` late: the
        # stale replica a rollout must find (meshsim.gateway, meshsim.pusher).
        self.push_skew_ms = {int(k): float(v) for k, v in (push_skew_ms or {}).items()}
        check_replicas(gateway_replicas, self.push_skew_ms, gateway_balance)
        self.gateway_replicas = gateway_replicas
        self.gateway_balance = gateway_balance
        self.envoy_concurrency = envoy_concurrency
        self.tracing = tracing
        self.trace_sampling = trace_sampling
        self.jaeger_url: str | None = None
        # Telemetry: a real Prometheus when asked and installed; with a run folder (now or
        # through record() later), the spans and metric samples are also recorded into it as
        # the run goes, so the folder keeps them after this mesh (and its TSDB) is gone.
        self.use_prometheus = prometheus
        self.run_folder = Path(run_folder) if run_folder is not None else None
        self.prometheus: Prometheus | None = None
        self.prometheus_url: str | None = None
        self.scraper: Child | None = None
        self.recording_spans = False
        self.metrics_ports: dict[str, int] = {}
        self._workload_ports: dict[str, int] = {}
        self.metrics_targets: list[Target] = []
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="meshload-"))
        self.children: list[Child] = []
        self.gateway: Gateway | None = None
        self.api_url: str | None = None
        self.warnings: list[str] = []
        self._unsimulated: list[dict[str, Any]] = []  # stored by the API, not simulated

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Mesh:
        try:
            resources = self._initial_resources()
            # Refuse bad manifests before any process starts: ports do not matter to validity.
            build_snapshot(resources, self._endpoints(dict.fromkeys(self._names(), 0)))
            otlp_port = self._start_tracestore() if self.tracing else None
            endpoints = self._start_workloads(otlp_port)
            snapshot = build_snapshot(resources, endpoints)
            self.warnings = list(snapshot.warnings)
            for w in self.warnings:
                log.warning("%s", w)
            self.gateway = Gateway(
                self.workdir,
                snapshot,
                replicas=self.gateway_replicas,
                port=self.gateway_port,
                balance=self.gateway_balance,
                concurrency=self.envoy_concurrency,
                otlp_port=otlp_port,
                trace_sampling=self.trace_sampling,
            )
            self.children.extend(self.gateway.children)
            self._start_control(endpoints, resources)
            self._start_metrics()
        except BaseException:
            self.stop()
            raise
        return self

    def _initial_resources(self) -> list[Resource]:
        source = self._manifests
        if source is None:
            if not DEFAULT_MANIFESTS.exists():
                raise ConfigError(f"{DEFAULT_MANIFESTS} not found; pass --manifests PATH")
            source = DEFAULT_MANIFESTS
        if isinstance(source, str | Path):
            read = read_manifests(source, self.spec.namespace)
            self._unsimulated = read.unsimulated
            return read.resources
        return list(source)

    def _start_tracestore(self) -> int:
        child, port = start_tracestore(self.workdir)
        self.children.append(child)
        self.jaeger_url = f"http://127.0.0.1:{port}"
        return port

    def _start_workloads(self, otlp_port: int | None) -> list[Endpoint]:
        ports_file = self.workdir / "workloads.json"
        telemetry = ["--metrics"]
        if otlp_port is not None:
            telemetry += [
                "--otlp-endpoint",
                f"http://127.0.0.1:{otlp_port}/v1/traces",
                # Envoy takes a percentage, the workloads a share.
                "--trace-sampling",
                str(min(max(self.trace_sampling / 100.0, 0.0), 1.0)),
            ]
        args = ["--spec", str(self.spec_path), "--ports-file", str(ports_file)]
        args += ["--seed", str(self.seed), *telemetry]
        child = Child(
            "workloads", python_module("meshsim.boutique", *args), self.workdir / "workloads.log"
        )
        self.children.append(child)
        published = wait_for_json(ports_file, child)
        self._workload_ports = {k: int(v) for k, v in published["workloads"].items()}
        self.metrics_ports = {k: int(v) for k, v in published.get("metrics", {}).items()}
        return self._endpoints(published["workloads"])

    def _start_metrics(self) -> None:
        """Prometheus (or the scraper) over Envoy's stats and every workload's /metrics.

        Failing to start it is logged and leaves the mesh serving: telemetry never breaks
        traffic.
        """
        assert self.gateway is not None
        replicas = self.gateway.replicas
        self.metrics_targets = mesh_targets(
            envoy_admin=replicas[0].admin_url if len(replicas) == 1 else None,
            envoy_replicas={r.pod_name: r.admin_url for r in replicas}
            if len(replicas) > 1
            else None,
            workloads=[(w, self._workload_ports[w.name]) for w in self.spec.workloads],
            gateway_metrics_port=self.metrics_ports.get(INGRESS),
        )
        if self.use_prometheus and prometheus_binary() is not None:
            try:
                self.prometheus = Prometheus(
                    self.workdir / "prometheus", scrape_config(self.metrics_targets)
                )
            except BackendError as e:
                log.warning("%s; the mesh runs without Prometheus", e)
            else:
                self.prometheus_url = self.prometheus.url
        if self.run_folder is not None:
            self.record(self.run_folder)

    def record(self, run_folder: str | Path) -> None:
        """Record the run's telemetry into its folder as it goes: every span the trace store
        receives (`spans/*.parquet`, every 2 s) and every target scraped each second by the
        scraper child (`metrics/*.parquet`, every 5 s), e.g. into a run folder created after
        the mesh started. A recording that fails to start is logged: traffic goes on."""
        if Path(run_folder) != self.run_folder:  # a new run in the same mesh (Locust's web UI)
            self.stop_recording()
        self.run_folder = Path(run_folder)
        if self.jaeger_url is not None and not self.recording_spans:
            try:
                self._recording_call("PUT", {"dir": str(self.run_folder)})
            except (OSError, ValueError) as e:
                log.warning("spans will not be recorded into %s: %s", self.run_folder, e)
            else:
                self.recording_spans = True
        if self.scraper is None:
            targets_file = self.workdir / "scrape-targets.json"
            write_targets(targets_file, self.metrics_targets)
            args = ["--targets", str(targets_file), "--out-dir", str(self.run_folder)]
            args += ["--status-file", str(self._scraper_status)]
            scrape = python_module("meshsim.telemetry.scrape", *args)
            self.scraper = Child("scraper", scrape, self.workdir / "scraper.log")

    def stop_recording(self) -> None:
        """Flush and close both recordings: the trace store writes what it holds (after the
        exporters' last flush), the scraper scrapes once more and writes its last part. Once
        this returns the run folder holds everything recorded; a trace store that died is
        logged (the folder keeps what it recorded until then)."""
        if self.recording_spans:
            self.recording_spans = False
            try:
                counts = self._recording_call("DELETE", None)
            except (OSError, ValueError) as e:
                log.warning("the trace store did not finish its recording: %s", e)
            else:
                log.info("spans recorded into %s: %s", self.run_folder, counts)
        if self.scraper is not None:
            self.scraper.stop(timeout_s=10.0)
            self.scraper = None

    def _recording_call(self, method: str, body: dict[str, str] | None) -> object:
        url = f"{self.jaeger_url}/_meshload/recording"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30.0) as resp:
            return json.loads(resp.read())

    @property
    def _scraper_status(self) -> Path:
        return self.workdir / "scraper-status.json"

    def _start_control(self, endpoints: list[Endpoint], resources: list[Resource]) -> None:
        assert self.gateway is not None
        config = {
            "endpoints": [
                {
                    "workload": e.workload,
                    "service": e.service,
                    "namespace": e.namespace,
                    "labels": dict(e.labels),
                    "port": e.port,
                }
                for e in endpoints
            ],
            "objects": with_istio_class([r.to_object() for r in resources]) + self._unsimulated,
            "core_objects": core_objects(
                endpoints,
                gateway_port=self.gateway.port,
                namespace=self.spec.namespace,
                gateway_pods=self.gateway.pods,
                selectors={s.name: s.selector for s in self.spec.selector_services},
            ),
            "gateway_replicas": [
                Replica(r.pod_name, r.workdir, r.admin_url, self.push_skew_ms.get(i, 0.0)).to_json()
                for i, r in enumerate(self.gateway.replicas)
            ],
            "applied_file": str(self.applied_file),
        }
        config_file = self.workdir / "controlplane-config.json"
        config_file.write_text(json.dumps(config))
        ports_file = self.workdir / "controlplane.json"
        child = Child(
            "controlplane",
            python_module(
                "meshsim.controld", "--config", str(config_file), "--ports-file", str(ports_file)
            ),
            self.workdir / "controlplane.log",
        )
        self.children.append(child)
        self.api_url = f"http://127.0.0.1:{wait_for_json(ports_file, child)['port']}"
        write_kubeconfig(self.kubeconfig, self.api_url, self.spec.namespace)

    def _names(self) -> list[str]:
        return [w.name for w in self.spec.workloads]

    def _endpoints(self, ports: dict[str, int]) -> list[Endpoint]:
        return [
            Endpoint(w.name, service, w.namespace, dict(w.labels), int(ports[w.name]))
            for w in self.spec.workloads
            for service in self.spec.services_of(w)
        ]

    def stop(self) -> None:
        # The scraper's last scrape needs everything still up; Prometheus is no child of the
        # mesh's health (dead_child), so it is stopped apart.
        self.stop_recording()  # the last spans and one last scrape, into the run folder
        if self.prometheus is not None:
            self.prometheus.stop()
            self.prometheus = None
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Mesh:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- use -------------------------------------------------------------------------------
    @property
    def gateway_url(self) -> str:
        if self.gateway is None:
            raise BackendError("the mesh is not running; call start() or use `with Mesh()`")
        return self.gateway.url

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def applied_file(self) -> Path:
        return self.workdir / "controlplane-applied.json"

    def urls(self) -> dict[str, str]:
        """One line each in `meshload mesh up`'s output, in this order."""
        assert self.gateway is not None and self.api_url is not None
        urls = {"gateway": self.gateway_url, **self.gateway.urls()}
        if self.jaeger_url:
            urls["jaeger"] = self.jaeger_url
        if self.prometheus_url:
            urls["prometheus"] = self.prometheus_url
        urls.update(kubernetes=self.api_url, kubeconfig=str(self.kubeconfig))
        return urls

    def state(self) -> dict[str, object]:
        """What another process needs to find and use this mesh (`meshload mesh apply`)."""
        return {
            "pid": os.getpid(),
            "urls": self.urls(),
            "kubeconfig": str(self.kubeconfig),
            "applied_file": str(self.applied_file),
            "pids": {c.name: c.pid for c in self.children}
            | ({"prometheus": self.prometheus.child.pid} if self.prometheus else {}),
        }

    def apply(self, manifests: str | Path | Sequence[Resource], *, wait: bool = True) -> list[str]:
        """Create or replace resources through the Kubernetes API, as `kubectl apply` does.

        A refused set raises ManifestError and leaves the mesh as it was. With `wait`, returns
        once every gateway replica serves the change (a skewed one after its skew).
        """
        if isinstance(manifests, str | Path):
            read = read_manifests(manifests, self.spec.namespace)
            resources, left_out = read.resources, not_applied(read, manifests)
        else:
            resources, left_out = list(manifests), []
        warnings, resource_version = apply_resources(self.kubeconfig, resources)
        warnings += left_out
        if wait:
            wait_applied(self.applied_file, resource_version)
        return warnings

    def wait_metrics_scraped(self, timeout_s: float = 15.0) -> None:
        """Return once Prometheus and the scraper have scraped every target after this call
        (the scraper's samples written into the run folder too): counts read afterwards
        include all traffic that ended before it."""
        if self.scraper is not None:
            wait_scraper_rounds(self._scraper_status, self.scraper, 2, timeout_s)
        if self.prometheus is not None:
            self.prometheus.wait_scraped(len(self.metrics_targets), timeout_s)

    def dead_child(self) -> Child | None:
        """The first child that exited though nobody asked it to."""
        return next((c for c in self.children if not c.alive()), None)
