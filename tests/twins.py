"""In-memory twins of the outside systems, for unit tests only.

`InMemoryMeshClient` is `meshcore.kube.client.MeshClient` over a list of objects: the same
weight and apply logic, the same 409 retry loop, on dicts instead of HTTP; core Services
(`kind: Service`) among the objects answer `service()`. `StaticReader` is
`loadgen.clusterread.ClusterReader` over a list of objects. Both name kinds as the client does
(`meshcore.kube.httproute.kind_key`: `Gateway.gateway.networking.k8s.io` for a Gateway API
Gateway); a cluster-scoped kind (GatewayClass) is found whatever the namespace asked.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from meshcore.kube.client import ApiRefusal, Conflict, MeshClient
from meshcore.kube.httproute import GATEWAY_KINDS, kind_key
from meshcore.kube.istio import namespace_of


def _is(obj: Mapping[str, Any], kind: str, namespace: str | None) -> bool:
    """`obj` is of `kind` (as the client names kinds) and, when namespaced, in `namespace`."""
    cluster_scoped = kind in GATEWAY_KINDS and not GATEWAY_KINDS[kind][1]
    in_ns = namespace is None or cluster_scoped or namespace_of(obj) == namespace
    return kind_key(obj) == kind and in_ns


class InMemoryMeshClient(MeshClient):
    """`conflicts_to_inject` makes the next N writes fail with 409, as a concurrent writer would."""

    def __init__(
        self, objects: Iterable[dict[str, Any]] = (), conflicts_to_inject: int = 0
    ) -> None:
        super().__init__(None)
        self.objects = [copy.deepcopy(o) for o in objects]
        self.conflicts_to_inject = conflicts_to_inject
        self.writes: list[dict[str, Any]] = []
        self._rv = 100
        for obj in self.objects:
            self._rv += 1
            obj.setdefault("metadata", {}).setdefault("namespace", "default")
            obj["metadata"]["resourceVersion"] = str(self._rv)

    def _find(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        for obj in self.objects:
            if _is(obj, kind, namespace) and obj["metadata"].get("name") == name:
                return obj
        raise ApiRefusal(f"{kind} {namespace}/{name} not found (404)", 404, {})

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._find(kind, namespace, name))

    def list_of(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return copy.deepcopy([o for o in self.objects if _is(o, kind, namespace)])

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get("Service", namespace, name)
        except ApiRefusal:
            return None

    def replace(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        current = self._find(kind_key(obj), namespace_of(obj), obj["metadata"]["name"])
        if self.conflicts_to_inject > 0:
            self.conflicts_to_inject -= 1
            self._rv += 1
            current["metadata"]["resourceVersion"] = str(self._rv)
        if obj["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        return self._store(obj, self.objects.index(current)), ()

    def create(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        self.objects.append({})
        return self._store(obj, len(self.objects) - 1), ()

    def _store(self, obj: Mapping[str, Any], index: int) -> dict[str, Any]:
        self._rv += 1
        stored = copy.deepcopy(dict(obj))
        stored["metadata"]["resourceVersion"] = str(self._rv)
        self.objects[index] = stored
        self.writes.append(copy.deepcopy(stored))
        return copy.deepcopy(stored)


class StaticReader:
    """`ClusterReader` over a list of object dicts."""

    def __init__(self, objects: Iterable[dict[str, Any]]) -> None:
        self.objects = list(objects)

    def _of(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for o in self.objects if _is(o, kind, namespace)]

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

    def can(self, verb: str, group: str, resource: str, namespace: str, name: str) -> bool:
        return (verb, resource, namespace, name) not in self.forbidden

    forbidden: frozenset[tuple[str, str, str, str]] = frozenset()
