"""Read-only core resources (namespaces, pods, services, endpoints) for preflight checks.

The mesh describes its workloads as plain dicts (`{"kind": "Pod", "metadata": {...},
"spec": {...}, "status": {...}}`); this module gives them the bookkeeping fields a real API
server adds, so code written against a cluster (is the namespace labelled
`istio-injection=enabled`? does every pod have a Ready `istio-proxy`?) runs unchanged.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from meshcore.errors import ConfigError
from meshsim.kubeapi.store import now_rfc3339


@dataclass(frozen=True)
class CoreType:
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    namespaced: bool


CORE_TYPES = (
    CoreType("Namespace", "namespaces", "namespace", ("ns",), False),
    CoreType("Pod", "pods", "pod", ("po",), True),
    CoreType("Service", "services", "service", ("svc",), True),
    CoreType("Endpoints", "endpoints", "endpoints", ("ep",), True),
)
# Every cluster has these; custom objects may be created in them without the mesh naming them.
BUILTIN_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")


class CoreObjects:
    """The core objects by plural, namespace and name; list and get only."""

    def __init__(
        self,
        objects: Iterable[dict[str, Any]] = (),
        *,
        namespaces: Iterable[str] = (),
        first_rv: int = 1,
    ) -> None:
        self.types = {t.plural: t for t in CORE_TYPES}
        by_kind = {t.kind: t for t in CORE_TYPES}
        self._items: dict[tuple[str, str, str], dict[str, Any]] = {}
        rv = first_rv
        for raw in objects:
            if not isinstance(raw, dict) or raw.get("kind") not in by_kind:
                kind = raw.get("kind") if isinstance(raw, dict) else type(raw).__name__
                raise ConfigError(
                    f"kubeapi core objects: kind {kind!r} is not served; give "
                    "Namespace, Pod, Service or Endpoints dicts"
                )
            ctype = by_kind[raw["kind"]]
            rv += 1
            obj = self._normalise(ctype, raw, rv)
            self._items[
                (ctype.plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            ] = obj
        used = {ns for plural, ns, _ in self._items if plural != "namespaces"}.union(namespaces)
        for ns in sorted(used.union(BUILTIN_NAMESPACES)):
            if ("namespaces", "", ns) not in self._items:
                rv += 1
                self._items[("namespaces", "", ns)] = self._normalise(
                    self.types["namespaces"], {"kind": "Namespace", "metadata": {"name": ns}}, rv
                )
        self.resource_version = rv

    @staticmethod
    def _normalise(ctype: CoreType, raw: dict[str, Any], rv: int) -> dict[str, Any]:
        obj = copy.deepcopy(raw)
        obj["apiVersion"] = "v1"
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta.get("name"), str) or not meta["name"]:
            raise ConfigError(
                f"kubeapi core objects: a {ctype.kind} has no metadata.name; name every object"
            )
        if ctype.namespaced:
            meta.setdefault("namespace", "default")
        else:
            meta.pop("namespace", None)
            labels = meta.setdefault("labels", {})
            labels.setdefault("kubernetes.io/metadata.name", meta["name"])
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_rfc3339())
        meta["resourceVersion"] = str(rv)
        return obj

    def has_namespace(self, name: str) -> bool:
        return ("namespaces", "", name) in self._items

    def list_objects(self, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (p, ns, _), o in sorted(self._items.items())
            if p == plural and namespace in (None, ns)
        ]

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self._items.get((plural, namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None
