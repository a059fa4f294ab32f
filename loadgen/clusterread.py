"""Reading a cluster for preflight and port-forward: the `ClusterReader` interface.

`KubeReader` reads a real cluster (or the embedded mesh) with the official `kubernetes` client
(CoreV1Api + CustomObjectsApi); `StaticReader` holds objects in memory for unit tests. Objects
are plain dicts in the API's own JSON form (camelCase), as `kubectl get -o json` shows them;
a 404 reads as None or [] so callers turn absence into a verdict, not an exception.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from kubernetes import client, config

from meshcore.errors import BackendError, ConfigError

ISTIO_GROUP = "networking.istio.io"
# Istio < 1.22 serves only v1beta1; newer ones serve both, so v1 first and v1beta1 after a 404.
ISTIO_VERSIONS = ("v1", "v1beta1")
PLURALS = {
    "VirtualService": "virtualservices",
    "DestinationRule": "destinationrules",
    "Gateway": "gateways",
}
SIDECAR = "istio-proxy"


class ClusterReader(Protocol):
    """The reads preflight and port-forward need; None or [] where the API says 404."""

    def namespace(self, name: str) -> dict[str, Any] | None: ...
    def pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]: ...
    def service(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def nodes(self) -> list[dict[str, Any]]: ...
    def istio(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...
    def istio_list(self, kind: str, namespace: str) -> list[dict[str, Any]]: ...


def selector_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def kube_api_client(kubeconfig: str | None, context: str | None) -> Any:
    """An ApiClient from a kubeconfig (None: $KUBECONFIG, else ~/.kube/config)."""
    where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    if kubeconfig and not os.path.isfile(kubeconfig):
        raise ConfigError(f"kubeconfig {where} does not exist; pass an existing --kubeconfig")
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        ctx = context or "its current-context"
        raise ConfigError(f"kubeconfig {where}: {first}; check the file and {ctx}") from None


class KubeReader:
    """`ClusterReader` over the Kubernetes API (CoreV1Api + CustomObjectsApi)."""

    def __init__(self, api_client: Any, *, timeout_s: float = 10.0) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.timeout_s = timeout_s
        self.server = str(getattr(api_client.configuration, "host", "?"))

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """The answer as a dict; None on 404; BackendError when the API fails or refuses."""
        try:
            answer = fn(*args, _request_timeout=self.timeout_s, _preload_content=False)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            hint = "check RBAC of your kubeconfig's user" if exc.status in (401, 403) else ""
            raise BackendError(
                f"Kubernetes API at {self.server} answered {exc.status} {exc.reason} reading "
                f"{what}; {hint or 'check the cluster'}"
            ) from None
        except Exception as exc:  # urllib3 and socket errors: the API is not reachable
            raise BackendError(
                f"Kubernetes API at {self.server} unreachable ({type(exc).__name__} reading "
                f"{what}); check the cluster is running and --kubeconfig/--context"
            ) from None
        return json.loads(answer.data or b"null")

    def namespace(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call(
            f"namespace {name}", self.core.read_namespace, name
        )
        return result

    def pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        sel = selector_text(labels)
        found = self._call(
            f"pods {sel} in {namespace}",
            lambda ns, **kw: self.core.list_namespaced_pod(ns, label_selector=sel, **kw),
            namespace,
        )
        return list((found or {}).get("items") or [])

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call(
            f"service {namespace}/{name}", self.core.read_namespaced_service, name, namespace
        )
        return result

    def nodes(self) -> list[dict[str, Any]]:
        try:
            found = self._call("nodes", self.core.list_node)
        except BackendError:  # a namespaced kubeconfig may not list nodes; address unknown
            return []
        return list((found or {}).get("items") or [])

    def istio(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        get = self.custom.get_namespaced_custom_object
        for version in ISTIO_VERSIONS:
            args = (ISTIO_GROUP, version, namespace, PLURALS[kind], name)
            found = self._call(f"{kind} {namespace}/{name}", get, *args)
            if found is not None:
                return dict(found)
        return None

    def istio_list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        list_ = self.custom.list_namespaced_custom_object
        for version in ISTIO_VERSIONS:
            args = (ISTIO_GROUP, version, namespace, PLURALS[kind])
            found = self._call(f"{kind}s of {namespace}", list_, *args)
            if found is not None:
                return list(found.get("items") or [])
        return []


class StaticReader:
    """`ClusterReader` over a list of object dicts, for unit tests."""

    def __init__(self, objects: Iterable[dict[str, Any]]) -> None:
        self.objects = list(objects)

    def _of(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [
            o
            for o in self.objects
            if o.get("kind") == kind
            and (namespace is None or o["metadata"].get("namespace", "default") == namespace)
        ]

    def _named(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        return next((o for o in self._of(kind, namespace) if o["metadata"]["name"] == name), None)

    def namespace(self, name: str) -> dict[str, Any] | None:
        return self._named("Namespace", None, name)

    def pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        def matches(pod: dict[str, Any]) -> bool:
            have = pod["metadata"].get("labels") or {}
            return all(have.get(k) == v for k, v in labels.items())

        return [p for p in self._of("Pod", namespace) if matches(p)]

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._named("Service", namespace, name)

    def nodes(self) -> list[dict[str, Any]]:
        return self._of("Node")

    def istio(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._named(kind, namespace, name)

    def istio_list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return self._of(kind, namespace)


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
