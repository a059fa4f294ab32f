"""Workloads of the embedded mesh, the services they serve, and their Envoy cluster names.

Hosts resolve as Istio resolves them (`meshcore.kube.istio.resolve_host`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshcore.kube.istio import CLUSTER_DOMAIN, service_fqdn


@dataclass(frozen=True)
class Endpoint:
    """A listening workload: what a service's pods are in the embedded mesh."""

    workload: str
    service: str
    namespace: str
    labels: Mapping[str, str]
    port: int
    host: str = "127.0.0.1"

    @property
    def fqdn(self) -> str:
        return service_fqdn(self.service, self.namespace)


def cluster_name(fqdn: str, subset: str | None = None) -> str:
    """An Envoy cluster name without dots, so Envoy's stats keep the whole name as a tag.

    `frontend.default.svc.cluster.local` + `v2` -> `frontend_v2`; other namespaces keep theirs.
    """
    service, namespace = _service_and_namespace(fqdn)
    base = service if namespace == "default" else f"{service}_{namespace}"
    name = f"{base}_{subset}" if subset else base
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _service_and_namespace(fqdn: str) -> tuple[str, str]:
    parts = fqdn.split(".")
    if fqdn.endswith("." + CLUSTER_DOMAIN) and len(parts) >= 5:
        return parts[0], parts[1]
    return fqdn, "external"


def select(
    endpoints: Iterable[Endpoint], fqdn: str, labels: Mapping[str, str] | None = None
) -> list[Endpoint]:
    """The endpoints of a service whose labels include every given label (a subset's selector)."""
    wanted = dict(labels or {})
    return [
        e
        for e in endpoints
        if e.fqdn == fqdn and all(e.labels.get(k) == v for k, v in wanted.items())
    ]
