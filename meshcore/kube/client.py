"""The Kubernetes API for Istio resources, the one client stack of the project.

`connect()` (`meshcore.kube.config`) builds an `ApiClient` as kubectl would. `Kube` makes
every call with a timeout and turns every failure into one line: a ConfigError when the
request cannot work as given (404, 400, 422: `ApiRefusal`, with the API's Status), a
BackendError when the API is unreachable, refuses the credentials or fails; 409 Conflict is
`Conflict`, which writers retry through `retry_on_conflict` after reading again. Messages never
carry credentials.

`MeshClient` reads and writes Istio and Gateway API objects (`get`, `list_of`, `replace`,
`create`, `service`: the primitives an in-memory twin overrides in unit tests) and builds on them
the write a rollout makes: the weights of one VirtualService http route or HTTPRoute rule
(`set_weights`; `meshcore.kube.istio`, `meshcore.kube.httproute`); `route()` gives a
rollout's weight interface over it, with its stamps (`meshcore.kube.routes.RouteWeights`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from kubernetes import client

from meshcore.errors import BackendError, ConfigError, MeshloadError
from meshcore.kube import httproute
from meshcore.kube.config import connect
from meshcore.kube.httproute import GATEWAY_GROUP, GATEWAY_KINDS, GATEWAY_VERSIONS, kind_key
from meshcore.kube.istio import (
    CLUSTER_DOMAIN,
    GROUP,
    PLURALS,
    VERSIONS,
    apply_weights,
    check_weights,
    route_destinations,
    route_index,
    route_subsets,
    with_twin,
    without_twin,
)
from meshcore.stamps import Stamping

if TYPE_CHECKING:
    from meshcore.kube.routes import RouteWeights

log = logging.getLogger(__name__)
T = TypeVar("T")
_WARNING_TEXT = re.compile(r'^\s*\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"')


class Conflict(Exception):
    """The object changed since it was read (HTTP 409); the writer re-reads and retries."""


class ApiRefusal(ConfigError):
    """The API refused the request as given (400, 404, 422); `status` is its Status object."""

    def __init__(self, message: str, code: int, status: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.code = code
        self.status = dict(status)


def warning_texts(values: Iterable[str]) -> tuple[str, ...]:
    """The texts of `Warning: 299 - "..."` headers."""
    out = []
    for value in values:
        m = _WARNING_TEXT.match(value)
        if m:
            out.append(re.sub(r"\\(.)", r"\1", m.group(1)))
    return tuple(out)


def retry_on_conflict(write: Callable[[int], T], what: str, *, tries: int = 6) -> T:
    """`write(attempt)` until it does not raise Conflict (each attempt reads afresh)."""
    for attempt in range(1, tries + 1):
        try:
            return write(attempt)
        except Conflict:
            log.info("%s changed (409); read again, attempt %d", what, attempt + 1)
            time.sleep(0.02 * attempt)
    raise BackendError(
        f"{what}: {tries} writes got 409 Conflict; another writer keeps changing it, "
        "stop it or retry later"
    )


class Kube:
    """An ApiClient whose every call has a timeout and fails with one line."""

    def __init__(self, api_client: Any, *, timeout_s: float = 10.0) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.timeout_s = timeout_s
        self.server = str(getattr(api_client.configuration, "host", "?"))

    @classmethod
    def connect(
        cls, kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None, **kw: Any
    ) -> Kube:
        return cls(connect(kubeconfig, context), **kw)

    def close(self) -> None:
        self.api_client.close()

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, what: str, verb: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """`fn(*args)`; raw JSON (`_preload_content=False`) comes back parsed."""
        try:
            answer = fn(*args, _request_timeout=self.timeout_s, **kw)
        except client.ApiException as exc:
            raise self.translate(exc, what, verb) from None
        except MeshloadError:
            raise
        except Exception as exc:  # urllib3 and socket errors: the API is not reachable
            raise BackendError(
                f"Kubernetes API at {self.server} unreachable ({type(exc).__name__} on {verb} "
                f"{what}); check the cluster is running and --kubeconfig/--context"
            ) from None
        if kw.get("_preload_content") is False:
            return json.loads(answer.data or b"null")
        return answer

    def translate(self, exc: Any, what: str, verb: str) -> Exception:
        code = int(getattr(exc, "status", 0) or 0)
        try:
            status = json.loads(exc.body or "{}")
        except (ValueError, TypeError):
            status = {}
        if not isinstance(status, dict):
            status = {}
        message = " ".join(str(status.get("message") or exc.reason or "").split())[:400]
        if code == 409:
            return Conflict(message)
        if code == 404:
            return ApiRefusal(
                f"{what} not found (404); check the name, the namespace and that Istio's "
                "CRDs are installed",
                code,
                status,
            )
        if code in (401, 403):
            return BackendError(
                f"Kubernetes API at {self.server} refused to {verb} {what} ({code}); check "
                "the kubeconfig's credentials and RBAC"
            )
        if code in (400, 422):
            return ApiRefusal(f"Kubernetes API refused to {verb} {what}: {message}", code, status)
        return BackendError(f"Kubernetes API failed to {verb} {what} ({code}): {message}")


def _warnings(headers: Any) -> tuple[str, ...]:
    return warning_texts(headers.getlist("Warning") if hasattr(headers, "getlist") else [])


@dataclass(frozen=True)
class WeightChange:
    """One accepted weight change: asked for at requested_ns, acknowledged at accepted_ns."""

    weights: dict[str, int]
    requested_ns: int
    accepted_ns: int
    resource_version: str
    attempts: int = 1
    warnings: tuple[str, ...] = ()


class MeshClient:
    """Istio objects through the Kubernetes API (any cluster, or the embedded mesh's)."""

    def __init__(self, kube: Kube | None = None) -> None:
        self.kube = kube

    @classmethod
    def connect(
        cls, kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None, **kw: Any
    ) -> MeshClient:
        return cls(Kube.connect(kubeconfig, context, **kw))

    def close(self) -> None:
        if self.kube is not None:
            self.kube.close()

    def __enter__(self) -> MeshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _kube(self) -> Kube:
        assert self.kube is not None, "MeshClient without a Kube: a twin must override this"
        return self.kube

    # -- the primitives --------------------------------------------------------------------
    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        """The object, in the first version the API serves it in; ApiRefusal 404. `kind` as
        `meshcore.kube.httproute.kind_key` names it; a cluster-scoped kind ignores namespace."""
        kube, (group, versions, plural, namespaced) = self._kube(), _api(kind)
        custom = kube.custom
        what = f"{kind} {namespace}/{name}" if namespaced else f"{kind} {name}"
        fn: Callable[..., Any]
        args: tuple[str, ...]
        for version in versions:
            try:
                if namespaced:
                    fn, args = custom.get_namespaced_custom_object, (namespace, plural, name)
                else:
                    fn, args = custom.get_cluster_custom_object, (plural, name)
                return dict(kube.call(what, "get", fn, group, version, *args))
            except ApiRefusal as exc:
                if exc.code != 404 or version == versions[-1]:
                    raise
        raise AssertionError("unreachable")

    def list_of(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        kube, what = self._kube(), f"{kind}s of namespace {namespace}"
        group, versions, plural, _ = _api(kind)
        list_ = kube.custom.list_namespaced_custom_object
        for version in versions:
            try:
                found = kube.call(what, "list", list_, group, version, namespace, plural)
                return list(found.get("items") or [])
            except ApiRefusal as exc:
                if exc.code != 404:
                    raise
        return []

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The core Service (GET, as kubectl get service reads it); None when there is none."""
        kube = self._kube()
        read = kube.core.read_namespaced_service
        try:
            found = kube.call(f"Service {namespace}/{name}", "get", read, name, namespace,
                              _preload_content=False)  # fmt: skip
        except ApiRefusal as exc:
            if exc.code == 404:
                return None
            raise
        return dict(found)

    def exists(self, namespace: str, service: str) -> bool:
        return self.service(namespace, service) is not None

    def replace(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Write `obj` conditional on its resourceVersion; Conflict on 409."""
        return self._write(obj, "update", "replace")

    def create(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        return self._write(obj, "create", "create")

    def _write(
        self, obj: Mapping[str, Any], verb: str, call: str
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        kube, (group, version, ns, plural, name) = self._kube(), _address(obj)
        named = (name,) if call == "replace" else ()
        fn: Callable[..., Any]
        if ns:
            fn = getattr(kube.custom, f"{call}_namespaced_custom_object_with_http_info")
            what, args = f"{obj['kind']} {ns}/{name}", (group, version, ns, plural, *named, obj)
        else:
            fn = getattr(kube.custom, f"{call}_cluster_custom_object_with_http_info")
            what, args = f"{obj['kind']} {name}", (group, version, plural, *named, obj)
        data, _, headers = kube.call(what, verb, fn, *args)
        return dict(data), _warnings(headers)

    # -- weights ---------------------------------------------------------------------------
    def route(
        self, name: str, namespace: str, route: str | int = 0, *, kind: str = "VirtualService"
    ) -> RouteWeights:
        from meshcore.kube.routes import RouteWeights  # it builds on this module

        return RouteWeights(self, name, namespace, route, kind=kind)

    def set_weights(
        self,
        name: str,
        namespace: str,
        weights: Mapping[str, int],
        *,
        route: str | int = 0,
        host: str | None = None,
        stamp: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
        kind: str = "VirtualService",
    ) -> WeightChange:
        """Replace the weights of one http route (`meshcore.kube.istio.apply_weights`) or
        HTTPRoute rule (`meshcore.kube.httproute.apply_weights`, `route` its rule), carrying
        the resourceVersion read, re-read and retried on 409. A stamp twin of an earlier write
        (or run) is dropped; `stamp(obj, index)` may add this write's."""
        clean, kinds = check_weights(weights), ROUTE_KINDS[kind]

        def write(attempt: int) -> WeightChange:
            obj = kinds.without_twin(self.get(kind, namespace, name))
            if kind == "HTTPRoute":
                new = httproute.apply_weights(obj, clean, rule=route, service_exists=self.exists)
            else:
                new = apply_weights(obj, self._rules_near(obj), clean, route=route, host=host)
            if stamp is not None:
                new = stamp(new, kinds.find(new, route))
            requested_ns = time.time_ns()
            written, warnings = self.replace(new)
            accepted_ns = time.time_ns()
            for w in warnings:
                log.warning("Kubernetes API warning on %s %s/%s: %s", kind, namespace, name, w)
            rv = str((written.get("metadata") or {}).get("resourceVersion") or "")
            return WeightChange(clean, requested_ns, accepted_ns, rv, attempt, warnings)

        return retry_on_conflict(write, f"{kind} {namespace}/{name}")

    def _rules_near(self, vs: Mapping[str, Any]) -> list[dict[str, Any]]:
        """DestinationRules of the VirtualService's namespace and of its destinations' ones."""
        namespace = str(vs["metadata"].get("namespace") or "default")
        namespaces = [namespace]
        for fqdn in route_destinations(vs):
            parts = fqdn.split(".")
            if fqdn.endswith(CLUSTER_DOMAIN) and parts[1] not in namespaces:
                namespaces.append(parts[1])
        rules = self.list_of("DestinationRule", namespace)
        for ns in namespaces[1:]:
            try:  # a rule elsewhere is optional; RBAC may hide that namespace from us
                rules.extend(self.list_of("DestinationRule", ns))
            except MeshloadError as exc:
                log.info("DestinationRules of namespace %s not read: %s", ns, exc)
        return rules


class RouteKind(NamedTuple):
    """The pure functions of one kind of route (`meshcore.kube.istio`, `.httproute`)."""

    part: str  # what a route of it is made of: "route" (http routes) or "rule"
    find: Callable[[Mapping[str, Any], str | int], int]  # the index of a route or rule
    versions: Callable[[Mapping[str, Any], int], list[str]]
    with_twin: Callable[[Mapping[str, Any], int, Stamping, int], tuple[dict[str, Any], list[str]]]
    without_twin: Callable[[Mapping[str, Any]], dict[str, Any]]
    twin: Callable[[Mapping[str, Any], int], str]


ROUTE_KINDS = {
    "VirtualService": RouteKind("route", route_index, route_subsets, with_twin, without_twin,
                                lambda vs, i: str(vs["spec"]["http"][i]["name"])),
    "HTTPRoute": RouteKind("rule", httproute.rule_index, httproute.rule_backends,
                           httproute.with_twin, httproute.without_twin, httproute.twin_label),
}  # fmt: skip


def _api(kind: str) -> tuple[str, tuple[str, ...], str, bool]:
    """(group, versions, plural, namespaced) of a kind, as `httproute.kind_key` names it."""
    if kind in GATEWAY_KINDS:
        plural, namespaced = GATEWAY_KINDS[kind]
        return GATEWAY_GROUP, GATEWAY_VERSIONS, plural, namespaced
    return GROUP, VERSIONS, PLURALS[kind], True


def _address(obj: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    """group, version, namespace ("" when cluster-scoped), plural and name of an object."""
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    meta = obj["metadata"]
    _, _, plural, namespaced = _api(kind_key(obj))
    ns = str(meta.get("namespace") or "default") if namespaced else ""
    return group, version, ns, plural, meta["name"]
