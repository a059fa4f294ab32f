"""The weight interface of a rollout: one route of one VirtualService or HTTPRoute.

`RouteWeights` reads the route's versions (a VirtualService http route's subsets, an HTTPRoute
rule's backendRef Services), checks a plan's against them, writes each step's weights through
`MeshClient.set_weights` (optimistic concurrency, 409 retries) with the run's stamps (a twin
route or rule, `meshcore.stamps`), falls back to unstamped writes when the API refuses the
stamps, and removes the twin at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from meshcore.errors import ConfigError
from meshcore.kube import httproute
from meshcore.kube.client import (
    ROUTE_KINDS,
    ApiRefusal,
    MeshClient,
    WeightChange,
    retry_on_conflict,
)
from meshcore.kube.istio import resolve_host
from meshcore.stamps import Stamping

log = logging.getLogger(__name__)


class RouteWeights:
    """The weight interface of a rollout: one http route of a VirtualService, or one rule of
    an HTTPRoute (its versions the rule's backendRef Services), stamped (a twin route for
    meshload's requests, `meshcore.stamps`) when `stamping` is given."""

    def __init__(
        self,
        client: MeshClient,
        name: str,
        namespace: str,
        route: str | int,
        stamping: Stamping | None = None,
        *,
        kind: str = "VirtualService",
    ) -> None:
        if kind not in ROUTE_KINDS:
            raise ConfigError(f"route kind {kind!r}; give VirtualService or HTTPRoute")
        self.client = client
        self.name = name
        self.namespace = namespace
        self.route = route
        self.kind, self.kinds = kind, ROUTE_KINDS[kind]
        self.target = f"{kind} {namespace}/{name} {self.kinds.part} {route}"
        self.stamping = stamping
        self.refused: str | None = None  # why the API refused the stamps, if it did
        self.stamped: list[str] = []  # versions whose version header the twin adds
        self.twin: str | None = None  # the twin route's name, once written

    def _read(self) -> dict[str, Any]:
        try:
            return self.client.get(self.kind, self.namespace, self.name)
        except ApiRefusal as exc:
            if exc.code != 404:
                raise
            ns, plural = self.namespace, f"{self.kind.lower()}s"
            fix = "pass --virtual-service NAME of an existing one"
            if self.kind == "HTTPRoute":
                fix = "fix the plan's route.name"
            raise ConfigError(
                f"{self.kind} {ns}/{self.name} not found; {fix} (kubectl get {plural} -n {ns})"
            ) from None

    def subsets(self) -> list[str]:
        """The versions the route sends to (subsets, or an HTTPRoute rule's Services);
        ConfigError naming the fix if it does not exist."""
        obj = self._read()
        return self.kinds.versions(obj, self.kinds.find(obj, self.route))

    def check_subsets(self, subsets: Iterable[str], plan_source: str) -> None:
        """The plan's versions are the route's; an HTTPRoute rule's Services all exist."""
        obj = self._read()
        index = self.kinds.find(obj, self.route)
        known = self.kinds.versions(obj, index)
        unknown = [s for s in subsets if s not in known]
        if unknown and self.kind == "HTTPRoute":
            raise ConfigError(
                f"{plan_source}: weights: {unknown[0]!r} is not a backendRef of {self.target} "
                f"(its Services: {', '.join(known)}); fix the plan's weights"
            )
        if unknown:
            raise ConfigError(
                f"{plan_source}: subset {unknown[0]!r} is not a destination of {self.target} "
                f"(known: {', '.join(known)}); fix the plan's weights"
            )
        if self.kind == "HTTPRoute":  # every backendRef names a Service that exists
            exists = self.client.exists
            httproute.apply_weights(obj, {known[0]: 1}, rule=self.route, service_exists=exists)

    def workload_versions(self) -> dict[str, str]:
        """{version as the plan names it: the `version` label of its pods}, so the traces' and
        Prometheus's versions (the pods' label) can be named as the plan names them: an
        HTTPRoute rule's backendRef Services by their selectors (`frontend-v1` over `{app:
        frontend, version: v1}`), a VirtualService route's subsets by their DestinationRule's
        labels (`stable` over `{version: v1}`). Versions without a `version` label are left out."""
        obj = self._read()
        index = self.kinds.find(obj, self.route)
        if self.kind == "VirtualService":
            return self._subset_versions(obj, index)
        out = {}
        for _, ns, name in httproute.backend_services(obj, index):
            svc = self.client.service(ns, name) or {}
            version = ((svc.get("spec") or {}).get("selector") or {}).get("version")
            if version:
                out[name] = str(version)
        return out

    def _subset_versions(self, vs: Mapping[str, Any], index: int) -> dict[str, str]:
        """{subset: its DestinationRule's `version` label} of the route's destinations."""
        dests = vs["spec"]["http"][index].get("route") or []
        hosts = {resolve_host(str((d.get("destination") or {}).get("host")), self.namespace)
                 for d in dests}  # fmt: skip
        out = {}
        for dr in self.client.list_of("DestinationRule", self.namespace):
            if resolve_host(str((dr.get("spec") or {}).get("host")), self.namespace) not in hosts:
                continue
            for subset in (dr.get("spec") or {}).get("subsets") or []:
                version = (subset.get("labels") or {}).get("version")
                if version:
                    out[str(subset.get("name"))] = str(version)
        wanted = set(self.kinds.versions(vs, index))
        return {k: v for k, v in out.items() if k in wanted}

    def set_weights(self, weights: Mapping[str, int], step: int = 0) -> WeightChange:
        """The step's weights, stamped with the step; if the API refuses the stamps, the
        weights alone (and `refused` says why: the run is then measured unstamped)."""
        s, args = self.stamping, (self.name, self.namespace, weights)
        if s is not None and self.refused is None:

            def stamp(obj: dict[str, Any], index: int) -> dict[str, Any]:
                new, self.stamped = self.kinds.with_twin(obj, index, s, step)
                self.twin = self.kinds.twin(new, index)
                return new

            try:
                return self.client.set_weights(*args, route=self.route, stamp=stamp, kind=self.kind)
            except ApiRefusal as exc:
                if exc.code not in (400, 422):
                    raise
                self.refused = str(exc)
                log.error("the API refused meshload's stamps (%s); measuring unstamped", exc)
        return self.client.set_weights(*args, route=self.route, kind=self.kind)

    def unstamp(self) -> None:
        """Remove the stamp twin: the route as the user wrote it, with the weights the rollout
        left (retried on 409; a BackendError when the API cannot be reached)."""

        def write(attempt: int) -> None:
            obj = self.client.get(self.kind, self.namespace, self.name)
            clean = self.kinds.without_twin(obj)
            if clean != obj:
                self.client.replace(clean)

        retry_on_conflict(write, self.target)
