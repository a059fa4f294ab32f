"""What a run points at: the embedded mesh (no --host) or a running gateway and its API.

`resolve_target` is the whole start-up check of the master: it starts the embedded mesh or
checks that --host answers, connects to the Kubernetes API (the cluster's, or the embedded
mesh's) and checks the route (a VirtualService's http route or an HTTPRoute's rule), the plan's
versions (subsets, or backendRef Services that exist) and the results directory, so bad input
ends the run before any user starts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen import embedded
from loadgen.client_tls import ClientTls
from loadgen.options import Settings
from loadgen.plan import Plan
from loadgen.runinfo import versions
from meshcore.errors import ConfigError
from meshcore.kube import httproute
from meshcore.kube.client import MeshClient
from meshcore.kube.istio import authority
from meshcore.kube.routes import RouteWeights

log = logging.getLogger("meshload")


@dataclass
class Target:
    host: str
    setter: RouteWeights
    mesh: Any = None  # the embedded Mesh this run started, if any
    info: dict[str, Any] = field(default_factory=dict)  # for run.json


def check_writable(results_dir: Path) -> None:
    """Fail before the run starts, not at its first record, when results cannot be written."""
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".meshload-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(
            f"--results-dir {results_dir}: cannot write there ({e.strerror}); pass a writable "
            "directory"
        ) from None


def resolve_target(
    *,
    settings: Settings,
    plan: Plan,
    host: str | None,
    manifests: Path | None,
    spec: Path | None,
) -> Target:
    """Start or check the target; raises a one-line MeshloadError (the mesh then stopped)."""
    mode = settings.mesh_mode(host)
    kind = plan.route_kind
    if kind == "HTTPRoute" and settings.virtual_service:
        raise ConfigError(
            f"--virtual-service {settings.virtual_service}: {plan.source} moves an HTTPRoute; "
            "drop the flag, or name the route in the plan's route.name"
        )
    name = settings.virtual_service or plan.virtual_service or plan.http_route or "frontend"
    namespace = settings.namespace or plan.namespace or "default"
    route = plan.route if plan.route is not None else 0
    mesh = None
    if mode == "embedded":
        if host:
            raise ConfigError(
                f"--host {host} with --mesh embedded: drop --host to start the embedded "
                "mesh, or use --mesh kubernetes for a running gateway"
            )
        check_writable(Path(settings.results_dir))  # before the mesh: a quick refusal
        log.info("starting the embedded mesh (%s)", manifests)
        mesh = embedded.start_mesh(
            manifests,
            spec,
            gateway_replicas=settings.gateway_replicas,
            push_skew_ms=settings.push_skews(),
        )
        host = embedded.gateway_target(mesh)
        ca = mesh.gateway.ca_file if host.startswith("https://") else None
        log.info("embedded mesh gateway at %s%s", host, f" (its CA: {ca})" if ca else "")
    elif not host:
        raise ConfigError("--mesh kubernetes needs --host URL of the Istio ingress gateway")
    elif settings.gateway_replicas != 1 or settings.push_skew_ms.strip():
        raise ConfigError(
            "--gateway-replicas and --push-skew-ms shape the embedded mesh; a cluster's gateway "
            "has the replicas it has: drop them with --host (or --mesh kubernetes)"
        )
    elif not embedded.is_url(host):
        raise ConfigError(f"--host {host}: not a URL; give http://HOST:PORT of the gateway")
    try:
        if mesh is not None:  # the embedded mesh's own Kubernetes API, as a cluster's
            client = MeshClient.connect(mesh.kubeconfig)
        else:
            client = MeshClient.connect(settings.kubeconfig or None, settings.kube_context or None)
        setter = client.route(name, namespace, route, kind=kind)
        setter.check_subsets(plan.subsets(), plan.source)
        backends = setter.workload_versions()  # the pods' version label of each backend
        host_header = settings.host_header or derived_authority(client, name, namespace, kind)
        if mesh is None:  # as the users will connect: TLS named by the Host they send
            tls = ClientTls(settings.ca_bundle or None, settings.insecure, host_header or None)
            embedded.check_reachable(host, tls)
        check_writable(Path(settings.results_dir))
        versions(mesh is not None)  # `envoy --version` now, not while users wait
    except BaseException:
        if mesh is not None:
            mesh.stop()
        raise
    key = "http_route" if kind == "HTTPRoute" else "virtual_service"
    info: dict[str, Any] = {"route_kind": kind, key: name, "namespace": namespace, "route": route}
    if backends:
        info["backend_versions"] = backends
    if host_header:
        info["host_header"] = host_header
        log.info("requests carry Host: %s", host_header)
    return Target(host=host, setter=setter, mesh=mesh, info=info)


def derived_authority(
    client: MeshClient, name: str, namespace: str, kind: str = "VirtualService"
) -> str | None:
    """--host-header's default: the VirtualService's first host its Gateways serve, when it
    names no `*` host (Istio matches the request's authority against its hosts); an
    HTTPRoute's first hostname without a wildcard."""
    if kind == "HTTPRoute":
        return httproute.authority(client.get(kind, namespace, name))
    vs = client.get("VirtualService", namespace, name)
    gateways = []
    for ref in (vs.get("spec") or {}).get("gateways") or []:
        if ref == "mesh":
            continue
        gw_ns, _, gw_name = str(ref).rpartition("/")
        try:
            gateways.append(client.get("Gateway", gw_ns or namespace, gw_name))
        except ConfigError:  # a missing Gateway: preflight says so; no Host to derive from it
            continue
    return authority(vs, gateways)
