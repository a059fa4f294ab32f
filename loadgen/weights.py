"""Changing a VirtualService's route weights: one narrow interface, chosen in one place.

`KubeWeights` goes through the Kubernetes API (`loadgen.meshclient.MeshClient`) and serves both
a real cluster and the embedded mesh once it exposes a kubeconfig; `MeshApplyWeights` edits the
VirtualService and calls `Mesh.apply` for an embedded mesh without one. `weight_setter()` is
the only place that picks between them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from meshcore.errors import BackendError, ConfigError, MeshloadError


@dataclass(frozen=True)
class Applied:
    """A weight change as the API saw it: asked for at requested_ns, accepted at accepted_ns."""

    weights: Mapping[str, int]
    requested_ns: int
    accepted_ns: int
    resource_version: str | None = None


class WeightSetter(Protocol):
    target: str  # how messages name it: "VirtualService default/frontend route primary"

    def subsets(self) -> list[str]:
        """The subsets the route sends to; raises ConfigError if the resource is unknown."""
        ...

    def set_weights(self, weights: Mapping[str, int]) -> Applied: ...


def find_route(spec: Mapping[str, Any], route: str | int, target: str) -> int:
    """Index of the http route named `route` (or the index itself), checked."""
    http = spec.get("http") or []
    if isinstance(route, int):
        if 0 <= route < len(http):
            return route
        raise ConfigError(f"{target}: has {len(http)} http routes, no index {route}; fix `route`")
    for i, rule in enumerate(http):
        if rule.get("name") == route:
            return i
    names = ", ".join(str(r.get("name")) for r in http if r.get("name")) or "(unnamed)"
    raise ConfigError(f"{target}: no http route named {route!r} (routes: {names}); fix `route`")


def route_subsets(spec: Mapping[str, Any], index: int) -> list[str]:
    dests = (spec.get("http") or [])[index].get("route") or []
    return [str((d.get("destination") or {}).get("subset")) for d in dests]


def with_weights(spec: Mapping[str, Any], index: int, weights: Mapping[str, int]) -> dict[str, Any]:
    """A copy of the VirtualService spec whose route `index` carries the new weights.

    Subsets the plan does not name get weight 0, so a step always says where all traffic goes.
    """
    new = copy.deepcopy(dict(spec))
    for dest in new["http"][index].get("route") or []:
        subset = (dest.get("destination") or {}).get("subset")
        dest["weight"] = int(weights.get(str(subset), 0))
    return new


def check_plan_subsets(setter: WeightSetter, subsets: list[str], plan_source: str) -> None:
    known = setter.subsets()
    unknown = [s for s in subsets if s not in known]
    if unknown:
        raise ConfigError(
            f"{plan_source}: subset {unknown[0]!r} is not a destination of {setter.target} "
            f"(known: {', '.join(known)}); fix the plan's weights"
        )


class MeshApplyWeights:
    """Weights for an embedded mesh without a Kubernetes API, through `Mesh.apply`.

    It keeps its own copy of the VirtualService (from the manifests the mesh started with) and
    applies an edited copy at each step; `Mesh.apply` validates it like any manifest.
    """

    def __init__(
        self, mesh: Any, resources: list[Any], name: str, namespace: str, route: str | int
    ) -> None:
        self.mesh = mesh
        self.name = name
        self.namespace = namespace
        self.route = route
        self.target = f"VirtualService {namespace}/{name} route {route}"
        self._vs = next(
            (r for r in resources if r.key == ("VirtualService", namespace, name)), None
        )

    def _resource(self) -> Any:
        if self._vs is None:
            raise ConfigError(
                f"VirtualService {self.namespace}/{self.name} not found in the embedded mesh; "
                "pass --virtual-service/--namespace of one in scenarios/manifests/"
            )
        return self._vs

    def subsets(self) -> list[str]:
        r = self._resource()
        return route_subsets(r.spec, find_route(r.spec, self.route, self.target))

    def set_weights(self, weights: Mapping[str, int]) -> Applied:
        from meshsim.resources import Resource

        r = self._resource()
        spec = with_weights(r.spec, find_route(r.spec, self.route, self.target), weights)
        changed = Resource(r.kind, r.name, r.namespace, spec, r.api_version, "meshload-plan")
        requested_ns = time.time_ns()
        self.mesh.apply([changed])
        self._vs = changed
        return Applied(dict(weights), requested_ns, time.time_ns())


class KubeWeights:
    """Weights through the Kubernetes API, the production path (cluster or embedded API)."""

    def __init__(self, client: Any, name: str, namespace: str, route: str | int) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.route = route
        self.target = f"VirtualService {namespace}/{name} route {route}"

    def _spec(self) -> Mapping[str, Any]:
        try:
            vs = self.client.get_virtual_service(self.name, self.namespace)
        except ConfigError as e:
            if "404" not in str(e):
                raise
            vs = None
        except MeshloadError:
            raise
        except Exception as e:
            raise BackendError(f"cannot read {self.target}: {e}; check --kubeconfig") from None
        if vs is None:
            raise ConfigError(
                f"VirtualService {self.namespace}/{self.name} not found; pass --virtual-service "
                f"NAME of an existing one (kubectl get virtualservices -n {self.namespace})"
            )
        spec = vs.get("spec") if isinstance(vs, Mapping) else getattr(vs, "spec", None)
        return spec or {}

    def subsets(self) -> list[str]:
        spec = self._spec()
        return route_subsets(spec, find_route(spec, self.route, self.target))

    def set_weights(self, weights: Mapping[str, int]) -> Applied:
        change = self.client.set_weights(self.name, self.namespace, weights, route=self.route)
        return Applied(
            dict(weights),
            int(change.requested_ns),
            int(change.accepted_ns),
            getattr(change, "resource_version", None),
        )


def weight_setter(
    *,
    mesh: Any | None,
    resources: list[Any] | None = None,
    kubeconfig: str | None,
    context: str | None,
    name: str,
    namespace: str,
    route: str | int,
) -> WeightSetter:
    """The weight interface for this run: the Kubernetes API whenever there is one."""
    if mesh is not None:
        mesh_kubeconfig = getattr(mesh, "kubeconfig", None)
        if mesh_kubeconfig is None or not Path(mesh_kubeconfig).is_file():
            return MeshApplyWeights(mesh, list(resources or []), name, namespace, route)
        kubeconfig, context = str(mesh_kubeconfig), None
    from loadgen.meshclient import MeshClient

    try:
        client = MeshClient.from_kubeconfig(path=kubeconfig or None, context=context or None)
    except MeshloadError:
        raise
    except Exception as e:
        raise BackendError(
            f"cannot load the Kubernetes configuration ({e}); pass --kubeconfig PATH "
            "and --kube-context NAME"
        ) from None
    return KubeWeights(client, name, namespace, route)
