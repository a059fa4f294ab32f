"""The Kubernetes API for Istio resources, the one client stack of the project.

`connect()` (`meshcore.kube.config`) builds an `ApiClient` as kubectl would. `Kube` makes
every call with a timeout and turns every failure into one line: a ConfigError when the
request cannot work as given (404, 400, 422: `ApiRefusal`, with the API's Status), a
BackendError when the API is unreachable, refuses the credentials or fails; 409 Conflict is
`Conflict`, which writers retry through `retry_on_conflict` after reading again. Messages never
carry credentials.

`MeshClient` reads and writes Istio objects (`get`, `list_of`, `replace`, `create`: the primitives
an in-memory twin overrides in unit tests) and builds on them the write a rollout makes: the
weights of one route (`set_weights`), with its stamps (`RouteWeights`, `meshcore.stamps`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes import client

from meshcore.errors import BackendError, ConfigError, MeshloadError
from meshcore.kube.config import connect
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
        """The object, in the first Istio version the API serves it in; ApiRefusal 404."""
        kube, what = self._kube(), f"{kind} {namespace}/{name}"
        get = kube.custom.get_namespaced_custom_object
        for version in VERSIONS:
            try:
                return dict(
                    kube.call(what, "get", get, GROUP, version, namespace, PLURALS[kind], name)
                )
            except ApiRefusal as exc:
                if exc.code != 404 or version == VERSIONS[-1]:
                    raise
        raise AssertionError("unreachable")

    def list_of(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        kube, what = self._kube(), f"{kind}s of namespace {namespace}"
        list_ = kube.custom.list_namespaced_custom_object
        for version in VERSIONS:
            try:
                found = kube.call(what, "list", list_, GROUP, version, namespace, PLURALS[kind])
                return list(found.get("items") or [])
            except ApiRefusal as exc:
                if exc.code != 404:
                    raise
        return []

    def replace(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Write `obj` conditional on its resourceVersion; Conflict on 409."""
        kube, (group, version, ns, plural, name) = self._kube(), _address(obj)
        fn = kube.custom.replace_namespaced_custom_object_with_http_info
        data, _, headers = kube.call(
            f"{obj['kind']} {ns}/{name}", "update", fn, group, version, ns, plural, name, obj
        )
        return dict(data), _warnings(headers)

    def create(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        kube, (group, version, ns, plural, name) = self._kube(), _address(obj)
        fn = kube.custom.create_namespaced_custom_object_with_http_info
        data, _, headers = kube.call(
            f"{obj['kind']} {ns}/{name}", "create", fn, group, version, ns, plural, obj
        )
        return dict(data), _warnings(headers)

    # -- weights ---------------------------------------------------------------------------
    def route(self, name: str, namespace: str, route: str | int = 0) -> RouteWeights:
        return RouteWeights(self, name, namespace, route)

    def set_weights(
        self,
        name: str,
        namespace: str,
        weights: Mapping[str, int],
        *,
        route: str | int = 0,
        host: str | None = None,
        stamp: Callable[[dict[str, Any], int], dict[str, Any]] | None = None,
    ) -> WeightChange:
        """Replace the weights of one http route (`meshcore.kube.istio.apply_weights`),
        carrying the resourceVersion read, re-read and retried on 409. A stamp twin of an
        earlier write (or run) is dropped; `stamp(vs, index)` may add this write's."""
        clean = check_weights(weights)

        def write(attempt: int) -> WeightChange:
            vs = without_twin(self.get("VirtualService", namespace, name))
            new = apply_weights(vs, self._rules_near(vs), clean, route=route, host=host)
            if stamp is not None:
                new = stamp(new, route_index(new, route))
            requested_ns = time.time_ns()
            written, warnings = self.replace(new)
            accepted_ns = time.time_ns()
            for w in warnings:
                log.warning(
                    "Kubernetes API warning on VirtualService %s/%s: %s", namespace, name, w
                )
            rv = str((written.get("metadata") or {}).get("resourceVersion") or "")
            return WeightChange(clean, requested_ns, accepted_ns, rv, attempt, warnings)

        return retry_on_conflict(write, f"VirtualService {namespace}/{name}")

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


@dataclass(frozen=True)
class Stamping:
    """What a rollout stamps into its route (`meshcore.stamps`)."""

    token: str
    version_header: str
    replica: bool = True


class RouteWeights:
    """The weight interface of a rollout: one http route of one VirtualService, stamped
    (a twin route for meshload's requests, `meshcore.stamps`) when `stamping` is given."""

    def __init__(
        self,
        client: MeshClient,
        name: str,
        namespace: str,
        route: str | int,
        stamping: Stamping | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.namespace = namespace
        self.route = route
        self.target = f"VirtualService {namespace}/{name} route {route}"
        self.stamping = stamping
        self.refused: str | None = None  # why the API refused the stamps, if it did
        self.stamped: list[str] = []  # subsets whose version header the twin adds
        self.twin: str | None = None  # the twin route's name, once written

    def subsets(self) -> list[str]:
        """The subsets the route sends to; ConfigError naming the flag if it does not exist."""
        try:
            vs = self.client.get("VirtualService", self.namespace, self.name)
        except ApiRefusal as exc:
            if exc.code != 404:
                raise
            raise ConfigError(
                f"VirtualService {self.namespace}/{self.name} not found; pass --virtual-service "
                f"NAME of an existing one (kubectl get virtualservices -n {self.namespace})"
            ) from None
        return route_subsets(vs, route_index(vs, self.route))

    def check_subsets(self, subsets: Iterable[str], plan_source: str) -> None:
        known = self.subsets()
        unknown = [s for s in subsets if s not in known]
        if unknown:
            raise ConfigError(
                f"{plan_source}: subset {unknown[0]!r} is not a destination of {self.target} "
                f"(known: {', '.join(known)}); fix the plan's weights"
            )

    def set_weights(self, weights: Mapping[str, int], step: int = 0) -> WeightChange:
        """The step's weights, stamped with the step; if the API refuses the stamps, the
        weights alone (and `refused` says why: the run is then measured unstamped)."""
        s = self.stamping
        if s is not None and self.refused is None:

            def stamp(vs: dict[str, Any], index: int) -> dict[str, Any]:
                new, self.stamped = with_twin(vs, index, token=s.token, step=step,
                                              version_header=s.version_header,
                                              replica=s.replica)  # fmt: skip
                self.twin = new["spec"]["http"][index]["name"]
                return new

            try:
                return self.client.set_weights(
                    self.name, self.namespace, weights, route=self.route, stamp=stamp
                )
            except ApiRefusal as exc:
                if exc.code not in (400, 422):
                    raise
                self.refused = str(exc)
                log.error("the API refused meshload's stamps (%s); measuring unstamped", exc)
        return self.client.set_weights(self.name, self.namespace, weights, route=self.route)

    def unstamp(self) -> None:
        """Remove the stamp twin: the VirtualService as the user wrote it, with the weights
        the rollout left (retried on 409; a BackendError when the API cannot be reached)."""

        def write(attempt: int) -> None:
            vs = self.client.get("VirtualService", self.namespace, self.name)
            clean = without_twin(vs)
            if clean != vs:
                self.client.replace(clean)

        retry_on_conflict(write, self.target)


def _address(obj: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    group, _, version = str(obj["apiVersion"]).rpartition("/")
    meta = obj["metadata"]
    return (
        group,
        version,
        str(meta.get("namespace") or "default"),
        PLURALS[obj["kind"]],
        meta["name"],
    )
