"""How Istio names a workload in its telemetry: canonical service and revision, node id, clusters.

One `Peer` per workload (and one for the ingress gateway), computed once: spans and metrics
only look these up by name on the request path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshcore.kube.istio import service_fqdn
from meshsim.boutique.hops import INGRESS
from meshsim.spec import Workload

GATEWAY_NAMESPACE = "istio-system"
SERVICE_PORT = 80
"""The port every Service of the embedded mesh declares (meshsim.cluster_objects)."""

# Istio's response_flags for a request that got an answer from its upstream.
NO_FLAGS = "-"
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Peer:
    """One proxy's identity as Istio's telemetry labels it."""

    workload: str
    namespace: str
    app: str
    version: str
    service: str
    canonical_service: str
    canonical_revision: str
    fqdn: str
    node_id: str
    inbound_cluster: str

    def outbound_cluster(self, subset: str = "") -> str:
        """The caller's Envoy cluster for this service: `outbound|port|subset|fqdn`."""
        return f"outbound|{SERVICE_PORT}|{subset}|{self.fqdn}"


def peer_of(workload: Workload) -> Peer:
    labels = workload.labels
    app = labels.get("app", workload.service)
    version = labels.get("version", UNKNOWN)
    # Istio's canonical-name/-revision labels win, then app/version, as in istiod.
    canonical_service = labels.get("service.istio.io/canonical-name", app)
    canonical_revision = labels.get(
        "service.istio.io/canonical-revision", labels.get("version", "latest")
    )
    ns = workload.namespace
    return Peer(
        workload=workload.name,
        namespace=ns,
        app=app,
        version=version,
        service=workload.service,
        canonical_service=canonical_service,
        canonical_revision=canonical_revision,
        fqdn=service_fqdn(workload.service, ns),
        node_id=f"sidecar~127.0.0.1~{workload.name}.{ns}~{ns}.svc.cluster.local",
        inbound_cluster=f"inbound|{SERVICE_PORT}||",
    )


def gateway_peer() -> Peer:
    """The ingress gateway as the source of the hops that enter the mesh."""
    ns = GATEWAY_NAMESPACE
    return Peer(
        workload=INGRESS,
        namespace=ns,
        app=INGRESS,
        version=UNKNOWN,
        service=INGRESS,
        canonical_service=INGRESS,
        canonical_revision="latest",
        fqdn=service_fqdn(INGRESS, ns),
        node_id=f"router~127.0.0.1~{INGRESS}.{ns}~{ns}.svc.cluster.local",
        inbound_cluster="",
    )


def peers(workloads: Iterable[Workload]) -> dict[str, Peer]:
    """Every workload's peer by workload name, the ingress gateway included."""
    out = {w.name: peer_of(w) for w in workloads}
    out[INGRESS] = gateway_peer()
    return out


def response_flags(status_code: int) -> str:
    """Envoy's flags for what the simulation can produce.

    503 without an upstream is "UH" (no healthy upstream), a cut-short request (499) is "DC"
    (downstream connection termination); every other answer came from the upstream ("-").
    """
    if status_code == 503:
        return "UH"
    if status_code == 499:
        return "DC"
    return NO_FLAGS


GRPC_STATUS: Mapping[int, str] = {200: "0", 400: "3", 404: "5", 499: "1", 500: "13", 503: "14"}
"""gRPC status codes of the simulation's HTTP-like status codes (OK, INVALID_ARGUMENT,
NOT_FOUND, CANCELLED, INTERNAL, UNAVAILABLE)."""


def grpc_status(status_code: int) -> str:
    return GRPC_STATUS.get(status_code, "2")  # UNKNOWN
