"""Reading a cluster for preflight and port-forward: the `ClusterReader` interface.

`KubeReader` reads a real cluster (or the embedded mesh) through the shared client stack
(`meshcore.kube.client`); unit tests use an in-memory twin (`tests/twins.py`). Objects are
plain dicts in the API's own JSON form (camelCase), as `kubectl get -o json` shows them; a 404
reads as None or [] so callers turn absence into a verdict, not an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from meshcore.errors import BackendError
from meshcore.kube.client import ApiRefusal, Kube, MeshClient

SIDECAR = "istio-proxy"


class ClusterReader(Protocol):
    """The reads preflight and port-forward need; None or [] where the API says 404."""

    def namespace(self, name: str) -> dict[str, Any] | None: ...
    def pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]: ...
    def service(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def nodes(self) -> list[dict[str, Any]]: ...
    def istio(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    def istio_list(self, kind: str, namespace: str) -> list[dict[str, Any]]: ...
    def can(self, verb: str, group: str, resource: str, namespace: str, name: str) -> bool: ...


def selector_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class KubeReader:
    """`ClusterReader` over the Kubernetes API."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.mesh = MeshClient(kube)

    def _read(self, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """The answer as a dict; None on 404."""
        try:
            return self.kube.call(what, "read", fn, *args, _preload_content=False, **kw)
        except ApiRefusal as exc:
            if exc.code == 404:
                return None
            raise

    def namespace(self, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._read(
            f"namespace {name}", self.kube.core.read_namespace, name
        )
        return found

    def pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        sel = selector_text(labels)
        what, fn = f"pods {sel} in {namespace}", self.kube.core.list_namespaced_pod
        found = self._read(what, fn, namespace, label_selector=sel)
        return list((found or {}).get("items") or [])

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        what, fn = f"service {namespace}/{name}", self.kube.core.read_namespaced_service
        found: dict[str, Any] | None = self._read(what, fn, name, namespace)
        return found

    def nodes(self) -> list[dict[str, Any]]:
        try:
            found = self._read("nodes", self.kube.core.list_node)
        except BackendError:  # a namespaced kubeconfig may not list nodes; address unknown
            return []
        return list((found or {}).get("items") or [])

    def istio(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.mesh.get(kind, namespace, name)
        except ApiRefusal as exc:
            if exc.code == 404:
                return None
            raise

    def istio_list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return self.mesh.list_of(kind, namespace)

    def can(self, verb: str, group: str, resource: str, namespace: str, name: str) -> bool:
        """A SelfSubjectAccessReview: may these credentials do it?"""
        from kubernetes import client

        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                            "namespace": namespace, "name": name}},
        }  # fmt: skip
        api = client.AuthorizationV1Api(self.kube.api_client)
        what = f"access review of {verb} {resource} {namespace}/{name}"
        answer = self.kube.call(what, "create", api.create_self_subject_access_review, review,
                                _preload_content=False)  # fmt: skip
        return bool(((answer or {}).get("status") or {}).get("allowed"))


def is_ready(pod: Mapping[str, Any]) -> bool:
    """Running, not being deleted, and its Ready condition True (as endpoints count it)."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def has_sidecar(pod: Mapping[str, Any]) -> bool:
    """An `istio-proxy` container, or init container (Istio's native-sidecar mode)."""
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    return any(c.get("name") == SIDECAR for c in containers)
