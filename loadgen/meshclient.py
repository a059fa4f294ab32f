"""Reading and moving canary weights through the Kubernetes API, for real clusters and the
embedded mesh alike (both are reached with the official `kubernetes` client).

`set_weights` rewrites the weights of one HTTP route of a VirtualService:
- every subset named in `weights` must be defined by a DestinationRule for the route's host and
  have a destination in the route (meshload never invents destinations: each one carries its
  own response headers that mark the serving version);
- a destination whose subset is not named in `weights` gets weight 0, so `{"v2": 100}` moves all
  traffic to v2;
- the route must send to one host; `host=` only asserts which one;
- the write is a replace carrying the resourceVersion that was read, retried (re-read, re-apply)
  on 409 Conflict a bounded number of times, so a concurrent writer is never overwritten.
Failures are one-line ConfigError (the request cannot work as given) or BackendError (the API is
unreachable or failing); messages never carry credentials.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config

from meshcore.errors import BackendError, ConfigError, MeshloadError

log = logging.getLogger(__name__)

GROUP = "networking.istio.io"
DEFAULT_VERSION = "v1"
CLUSTER_DOMAIN = "svc.cluster.local"
_WARNING_TEXT = re.compile(r'^\s*\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class WeightChange:
    """One accepted weight change: when it was asked for and when the API acknowledged it."""

    requested_ns: int
    accepted_ns: int
    resource_version: str
    weights: dict[str, int]
    attempts: int = 1
    warnings: tuple[str, ...] = ()


class Conflict(Exception):
    """The object changed since it was read (HTTP 409); the writer re-reads and retries."""


def resolve_host(host: str, namespace: str) -> str:
    """The fully qualified service name a short host in `namespace` stands for."""
    parts = host.strip().lower().split(".")
    if len(parts) == 1:
        return f"{parts[0]}.{namespace}.{CLUSTER_DOMAIN}"
    if len(parts) == 2 or (len(parts) == 3 and parts[2] == "svc"):
        return f"{parts[0]}.{parts[1]}.{CLUSTER_DOMAIN}"
    return ".".join(parts)


def check_weights(weights: Mapping[str, int]) -> dict[str, int]:
    if not weights:
        raise ConfigError("weights are empty; map each subset to a weight, e.g. {v1: 90, v2: 10}")
    clean: dict[str, int] = {}
    for subset, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ConfigError(f"weight of subset {subset} is {w!r}; give a whole number >= 0")
        clean[str(subset)] = w
    if sum(clean.values()) == 0:
        raise ConfigError("weights sum to 0; give at least one subset a positive weight")
    return clean


def _ns(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "default")


def _route_index(vs: dict[str, Any], route: str | int, ref: str) -> int:
    http = (vs.get("spec") or {}).get("http") or []
    names = [r.get("name") or f"#{i}" for i, r in enumerate(http)]
    if isinstance(route, int) and not isinstance(route, bool) and 0 <= route < len(http):
        return route
    if isinstance(route, str) and route in names:
        return names.index(route)
    known = ", ".join(names) or "none"
    raise ConfigError(f"{ref} has no http route {route!r}; its routes: {known} (or an index)")


def apply_weights(
    vs: dict[str, Any],
    rules: Iterable[dict[str, Any]],
    weights: Mapping[str, int],
    *,
    route: str | int = 0,
    host: str | None = None,
) -> dict[str, Any]:
    """A copy of `vs` with the weights set (see the module docstring); ConfigError if refused."""
    clean = check_weights(weights)
    ns = _ns(vs)
    ref = f"VirtualService {ns}/{(vs.get('metadata') or {}).get('name', '?')}"
    new = copy.deepcopy(vs)
    index = _route_index(new, route, ref)
    target = new["spec"]["http"][index]
    label = f"{ref} route {target.get('name') or index}"
    dests = target.get("route") or []
    if not dests:
        raise ConfigError(f"{label} has no destinations; give it one per subset")
    hosts = sorted({resolve_host(str((d.get("destination") or {})["host"]), ns) for d in dests})
    if len(hosts) > 1:
        many = ", ".join(hosts)
        raise ConfigError(f"{label} sends to several hosts ({many}); use a one-host route")
    fqdn = hosts[0]
    if host is not None and resolve_host(host, ns) != fqdn:
        raise ConfigError(f"{label} sends to {fqdn}, not {resolve_host(host, ns)}; fix the host")
    specs = [
        r.get("spec") or {}
        for r in rules
        if resolve_host(str((r.get("spec") or {}).get("host", "")), _ns(r)) == fqdn
    ]
    defined = {str(s.get("name")) for spec in specs for s in spec.get("subsets") or []}
    if not defined:
        wanted = ", ".join(clean)
        raise ConfigError(f"no DestinationRule defines subsets for {fqdn}; apply one ({wanted})")
    for subset in clean:
        if subset not in defined:
            known = ", ".join(sorted(defined))
            raise ConfigError(f"subset {subset} is not defined for {fqdn}; defined: {known}")
    by_subset: dict[str, dict[str, Any]] = {}
    for i, d in enumerate(dests):
        sub = str((d.get("destination") or {}).get("subset") or "")
        if not sub or sub in by_subset:
            why = f"subset {sub} used twice" if sub else "no subset"
            raise ConfigError(f"{label} destination {i}: {why}; give each its own subset")
        by_subset[sub] = d
    for subset in clean:
        if subset not in by_subset:
            fix = "add one (weight 0, with its response header) to the manifest"
            raise ConfigError(f"{label} has no destination for subset {subset}; {fix}")
    for sub, d in by_subset.items():
        d["weight"] = clean.get(sub, 0)
    return new


def warning_texts(values: Iterable[str]) -> tuple[str, ...]:
    """The texts of `Warning: 299 - "..."` headers."""
    out = []
    for value in values:
        m = _WARNING_TEXT.match(value)
        if m:
            out.append(re.sub(r"\\(.)", r"\1", m.group(1)))
    return tuple(out)


class MeshApi:
    """What loadgen needs from a mesh's control plane; `set_weights` is built on the primitives
    that MeshClient (Kubernetes API) and InMemoryMeshClient (unit tests) provide."""

    max_conflict_retries = 5
    conflict_backoff_s = 0.02

    def get_virtual_service(self, name: str, namespace: str) -> dict[str, Any]:
        raise NotImplementedError

    def get_destination_rule(self, name: str, namespace: str) -> dict[str, Any]:
        raise NotImplementedError

    def list_destination_rules(self, namespace: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _replace_vs(self, vs: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Write `vs` conditional on its resourceVersion; raise Conflict on 409."""
        raise NotImplementedError

    def set_weights(
        self,
        name: str,
        namespace: str,
        weights: Mapping[str, int],
        *,
        route: str | int = 0,
        host: str | None = None,
    ) -> WeightChange:
        clean = check_weights(weights)
        for attempt in range(1, self.max_conflict_retries + 2):
            vs = self.get_virtual_service(name, namespace)
            rules = self._rules_near(vs, namespace)
            new = apply_weights(vs, rules, clean, route=route, host=host)
            requested_ns = time.time_ns()
            try:
                written, warnings = self._replace_vs(new)
            except Conflict:
                log.info("VirtualService %s/%s changed (409); re-read %d", namespace, name, attempt)
                time.sleep(self.conflict_backoff_s * attempt)
                continue
            accepted_ns = time.time_ns()
            for w in warnings:
                log.warning(
                    "Kubernetes API warning on VirtualService %s/%s: %s", namespace, name, w
                )
            rv = str((written.get("metadata") or {}).get("resourceVersion") or "")
            return WeightChange(requested_ns, accepted_ns, rv, clean, attempt, warnings)
        tries = self.max_conflict_retries + 1
        raise BackendError(
            f"VirtualService {namespace}/{name}: {tries} writes got 409 Conflict; "
            "another writer keeps changing it, stop it or retry later"
        )

    def _rules_near(self, vs: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
        """DestinationRules of the VirtualService's namespace and of its destinations' ones."""
        namespaces = [namespace]
        for r in (vs.get("spec") or {}).get("http") or []:
            for d in r.get("route") or []:
                fqdn = resolve_host(str((d.get("destination") or {}).get("host", "")), namespace)
                parts = fqdn.split(".")
                if fqdn.endswith(CLUSTER_DOMAIN) and parts[1] not in namespaces:
                    namespaces.append(parts[1])
        rules = self.list_destination_rules(namespace)
        for ns in namespaces[1:]:
            try:  # a rule elsewhere is optional; RBAC may hide that namespace from us
                rules.extend(self.list_destination_rules(ns))
            except MeshloadError as exc:
                log.info("DestinationRules of namespace %s not read: %s", ns, exc)
        return rules


def _api_message(exc: Any) -> str:
    try:
        text = json.loads(exc.body or "{}").get("message") or ""
    except (ValueError, AttributeError):
        text = ""
    return " ".join(str(text or exc.reason or "").split())[:400]


class MeshClient(MeshApi):
    """The Kubernetes API (any cluster, or the embedded mesh) through `CustomObjectsApi`."""

    def __init__(
        self, api_client: Any, *, version: str = DEFAULT_VERSION, timeout_s: float = 10.0
    ) -> None:
        self._api_client = api_client
        self._api = client.CustomObjectsApi(api_client)
        self.version = version
        self.timeout_s = timeout_s
        self.server = str(getattr(api_client.configuration, "host", "?"))

    @classmethod
    def from_kubeconfig(
        cls, path: str | os.PathLike[str] | None = None, context: str | None = None, **kwargs: Any
    ) -> MeshClient:
        """From a kubeconfig (None: $KUBECONFIG, else ~/.kube/config) and optional context."""
        where = str(path) if path else os.environ.get("KUBECONFIG") or "~/.kube/config"
        if path and not os.path.isfile(path):
            raise ConfigError(f"kubeconfig {where} does not exist; pass an existing file")
        try:
            api_client = config.new_client_from_config(
                config_file=str(path) if path else None, context=context
            )
        except (config.ConfigException, OSError, ValueError, TypeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            ctx = context or "current-context"
            raise ConfigError(f"kubeconfig {where}: {first}; check it and context {ctx}") from None
        return cls(api_client, **kwargs)

    @classmethod
    def in_cluster(cls, **kwargs: Any) -> MeshClient:
        """From the pod's service account (when meshload itself runs in the cluster)."""
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException as exc:
            raise ConfigError(f"not in a Kubernetes pod ({exc}); use a kubeconfig") from None
        return cls(client.ApiClient(cfg), **kwargs)

    def close(self) -> None:
        self._api_client.close()

    def __enter__(self) -> MeshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, verb: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, _request_timeout=self.timeout_s, **kwargs)
        except client.ApiException as exc:
            raise self._translate(exc, what, verb) from None
        except MeshloadError:
            raise
        except Exception as exc:  # urllib3 and socket errors: the API is not reachable
            raise BackendError(
                f"Kubernetes API at {self.server} unreachable ({type(exc).__name__}"
                f" on {verb} {what}); check the cluster and kubeconfig"
            ) from None

    def _translate(self, exc: Any, what: str, verb: str) -> Exception:
        code = int(getattr(exc, "status", 0) or 0)
        message = _api_message(exc)
        if code == 409:
            return Conflict(message)
        if code == 404:
            return ConfigError(
                f"{what} not found in {GROUP}/{self.version} (404); check the "
                "name, namespace and Istio version"
            )
        if code in (401, 403):
            return BackendError(
                f"Kubernetes API refused to {verb} {what} ({code}); check the "
                f"kubeconfig credentials and RBAC for {GROUP}"
            )
        if code in (400, 422):
            return ConfigError(f"Kubernetes API refused to {verb} {what}: {message}")
        return BackendError(f"Kubernetes API failed to {verb} {what} ({code}): {message}")

    def _get(self, kind: str, plural: str, name: str, namespace: str) -> dict[str, Any]:
        get = self._api.get_namespaced_custom_object
        what = f"{kind} {namespace}/{name}"
        return dict(self._call(what, "get", get, GROUP, self.version, namespace, plural, name))

    def get_virtual_service(self, name: str, namespace: str) -> dict[str, Any]:
        return self._get("VirtualService", "virtualservices", name, namespace)

    def get_destination_rule(self, name: str, namespace: str) -> dict[str, Any]:
        return self._get("DestinationRule", "destinationrules", name, namespace)

    def list_destination_rules(self, namespace: str) -> list[dict[str, Any]]:
        what, call = (
            f"DestinationRules of namespace {namespace}",
            self._api.list_namespaced_custom_object,
        )
        found = self._call(what, "list", call, GROUP, self.version, namespace, "destinationrules")
        return list(found.get("items") or [])

    def _replace_vs(self, vs: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        meta = vs["metadata"]
        what = f"VirtualService {meta['namespace']}/{meta['name']}"
        replace = self._api.replace_namespaced_custom_object_with_http_info
        args = (GROUP, self.version, meta["namespace"], "virtualservices", meta["name"], vs)
        data, _, headers = self._call(what, "update", replace, *args)
        values = headers.getlist("Warning") if hasattr(headers, "getlist") else []
        return dict(data), warning_texts(values)


@dataclass
class InMemoryMeshClient(MeshApi):
    """A mesh API held in a dict, for unit tests: same checks, same 409 retry loop.

    `conflicts_to_inject` makes the next N writes fail with 409, as a concurrent writer would.
    """

    objects: list[dict[str, Any]] = field(default_factory=list)
    conflicts_to_inject: int = 0
    writes: list[dict[str, Any]] = field(default_factory=list)
    conflict_backoff_s: float = 0.0
    _rv: int = field(default=100, init=False, repr=False)

    def __post_init__(self) -> None:
        for obj in self.objects:
            self._rv += 1
            obj.setdefault("metadata", {}).setdefault("namespace", "default")
            obj["metadata"]["resourceVersion"] = str(self._rv)

    def _find(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        for obj in self.objects:
            meta = obj["metadata"]
            if obj.get("kind") == kind and meta.get("name") == name and _ns(obj) == namespace:
                return obj
        raise ConfigError(f"{kind} {namespace}/{name} not found (404); check name and namespace")

    def get_virtual_service(self, name: str, namespace: str) -> dict[str, Any]:
        return copy.deepcopy(self._find("VirtualService", name, namespace))

    def get_destination_rule(self, name: str, namespace: str) -> dict[str, Any]:
        return copy.deepcopy(self._find("DestinationRule", name, namespace))

    def list_destination_rules(self, namespace: str) -> list[dict[str, Any]]:
        rules = [o for o in self.objects if o.get("kind") == "DestinationRule"]
        return [copy.deepcopy(o) for o in rules if _ns(o) == namespace]

    def _replace_vs(self, vs: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        current = self._find("VirtualService", vs["metadata"]["name"], _ns(vs))
        if self.conflicts_to_inject > 0:
            self.conflicts_to_inject -= 1
            self._rv += 1
            current["metadata"]["resourceVersion"] = str(self._rv)
        if vs["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict("the object has been modified")
        self._rv += 1
        stored = copy.deepcopy(vs)
        stored["metadata"]["resourceVersion"] = str(self._rv)
        self.objects[self.objects.index(current)] = stored
        self.writes.append(copy.deepcopy(stored))
        return copy.deepcopy(stored), ()
