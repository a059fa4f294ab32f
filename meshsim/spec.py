"""The mesh spec: which simulated workloads exist and how each one behaves.

The file format is documented at the top of `meshsim/data/default-spec.yaml`. Every problem in a
spec file is reported as one `ConfigError` line naming the file, the field and the fix.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from meshcore.errors import ConfigError
from meshcore.yamldoc import load_yaml

DEFAULT_SPEC = Path(__file__).parent / "data" / "default-spec.yaml"

# z of the 99th percentile of the standard normal: a lognormal's p99 is median * exp(Z99 * sigma).
Z99 = 2.3263478740408408
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_TOP_FIELDS = ("seed", "namespace", "defaults", "workloads", "services")
_WORKLOAD_FIELDS = ("name", "service", "namespace", "labels", "profile")
_PROFILE_FIELDS = (
    "latency_ms",
    "operations",
    "error_rate",
    "outbound_latency_factor",
    "message",
)
_LATENCY_FIELDS = ("median", "p99")


@dataclass(frozen=True)
class Latency:
    """A lognormal latency given by its median and 99th percentile, in milliseconds."""

    median_ms: float
    p99_ms: float
    mu: float = field(init=False, repr=False, compare=False)
    sigma: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.median_ms <= self.p99_ms:
            raise ValueError(f"need 0 <= median <= p99, got {self.median_ms}, {self.p99_ms}")
        mu = math.log(self.median_ms) if self.median_ms > 0 else -math.inf
        sigma = math.log(self.p99_ms / self.median_ms) / Z99 if self.median_ms > 0 else 0.0
        object.__setattr__(self, "mu", mu)
        object.__setattr__(self, "sigma", sigma)

    def sample_ms(self, rng: random.Random) -> float:
        if self.sigma == 0.0:
            return self.median_ms
        return math.exp(self.mu + self.sigma * rng.gauss())


@dataclass(frozen=True)
class Profile:
    """How one workload behaves: its own latency per operation, its errors, its outbound path.

    `message` is the banner a frontend shows on every page (the demo's FRONTEND_MESSAGE).
    """

    latency: Latency = Latency(0.5, 2.0)
    operations: Mapping[str, Latency] = field(default_factory=lambda: MappingProxyType({}))
    error_rate: float = 0.0
    outbound_latency_factor: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({})
    )
    message: str | None = None

    def latency_for(self, operation: str) -> Latency:
        return self.operations.get(operation, self.latency)


@dataclass(frozen=True)
class Workload:
    name: str
    service: str
    namespace: str
    labels: Mapping[str, str]
    profile: Profile


@dataclass(frozen=True)
class SelectorService:
    """A Service of its own over some workloads of other services (`frontend-v1` over the
    frontend's v1 pods), as a Gateway API backendRef names one version."""

    name: str
    namespace: str
    selector: Mapping[str, str]

    def selects(self, w: Workload) -> bool:
        return w.namespace == self.namespace and all(
            w.labels.get(k) == v for k, v in self.selector.items()
        )


@dataclass(frozen=True)
class MeshSpec:
    seed: int
    namespace: str
    workloads: tuple[Workload, ...]
    selector_services: tuple[SelectorService, ...] = ()

    def services_of(self, w: Workload) -> list[str]:
        """Every Service a workload serves: its own first, then the selector Services."""
        return [w.service] + [s.name for s in self.selector_services if s.selects(w)]

    def services(self) -> dict[str, list[Workload]]:
        """Workloads grouped by service, in spec order."""
        out: dict[str, list[Workload]] = {}
        for w in self.workloads:
            out.setdefault(w.service, []).append(w)
        return out


def load_spec(path: str | Path | None = None) -> MeshSpec:
    """Read a mesh spec file; None reads the packaged default (Online Boutique, v1 and v2)."""
    p = Path(path) if path is not None else DEFAULT_SPEC
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the spec ({e.strerror}); check the --spec path") from e
    return parse_spec(load_yaml(text, str(p)), str(p))


def parse_spec(doc: Any, source: str = "<spec>") -> MeshSpec:
    """Build a MeshSpec from already parsed YAML; `source` names it in error messages."""
    if not isinstance(doc, dict):
        _fail(source, "(top level)", "must be a mapping with seed, namespace and workloads")
    _no_unknown(source, "", doc, _TOP_FIELDS)
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        _fail(source, "seed", "must be an integer >= 0")
    namespace = _name(source, "namespace", doc.get("namespace", "default"))
    defaults_doc = doc.get("defaults") or {}
    base = _profile(source, "defaults", defaults_doc, Profile())
    raw = doc.get("workloads")
    if not isinstance(raw, list) or not raw:
        _fail(source, "workloads", "must be a non-empty list of workloads")
    workloads: list[Workload] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        w = _workload(source, f"workloads[{i}]", item, namespace, base)
        if w.name in seen:
            _fail(
                source,
                f"workloads[{i}].name",
                f"duplicate workload name {w.name!r}; give every workload a unique name",
            )
        seen.add(w.name)
        workloads.append(w)
    services = sorted({w.service for w in workloads})
    _known_services(source, "defaults", defaults_doc, services)
    for i, item in enumerate(raw):
        _known_services(source, f"workloads[{i}].profile", item.get("profile") or {}, services)
    extra = _selector_services(source, doc.get("services") or [], namespace, workloads)
    return MeshSpec(
        seed=seed, namespace=namespace, workloads=tuple(workloads), selector_services=extra
    )


def _selector_services(
    source: str, raw: Any, namespace: str, workloads: list[Workload]
) -> tuple[SelectorService, ...]:
    if not isinstance(raw, list):
        _fail(source, "services", "must be a list of {name, selector} Services")
    taken = {w.service for w in workloads}
    out: list[SelectorService] = []
    for i, doc in enumerate(raw):
        at = f"services[{i}]"
        if not isinstance(doc, dict):
            _fail(source, at, "must be a mapping with name and selector")
        _no_unknown(source, at, doc, ("name", "namespace", "selector"))
        name = _name(source, f"{at}.name", doc.get("name"))
        if name in taken:
            _fail(source, f"{at}.name", f"{name!r} is already a Service; give a new name")
        taken.add(name)
        selector = doc.get("selector")
        if (
            not isinstance(selector, dict)
            or not selector
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in selector.items())
        ):
            _fail(source, f"{at}.selector", "must map label names to string values")
        ns = _name(source, f"{at}.namespace", doc.get("namespace", namespace))
        svc = SelectorService(name, ns, MappingProxyType(dict(selector)))
        if not any(svc.selects(w) for w in workloads):
            _fail(source, f"{at}.selector", "selects no workload; match a workload's labels")
        out.append(svc)
    return tuple(out)


def _known_services(source: str, at: str, profile_doc: dict[str, Any], services: list[str]) -> None:
    """A factor for a service no workload serves is a typo that would silently do nothing."""
    for svc in profile_doc.get("outbound_latency_factor") or {}:
        if svc not in services:
            _fail(
                source,
                f"{at}.outbound_latency_factor.{svc}",
                f"no workload serves {svc!r}; use one of {', '.join(services)}",
            )


def _workload(source: str, at: str, doc: Any, namespace: str, base: Profile) -> Workload:
    if not isinstance(doc, dict):
        _fail(source, at, "must be a mapping with name, service, labels and profile")
    _no_unknown(source, at, doc, _WORKLOAD_FIELDS)
    for key in ("name", "service"):
        if key not in doc:
            _fail(source, f"{at}.{key}", "missing; every workload needs a name and a service")
    name = _name(source, f"{at}.name", doc["name"])
    service = _name(source, f"{at}.service", doc["service"])
    ns = _name(source, f"{at}.namespace", doc.get("namespace", namespace))
    labels_doc = doc.get("labels", {"app": service})
    if not isinstance(labels_doc, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels_doc.items()
    ):
        _fail(source, f"{at}.labels", "must map label names to string values (quote v1 etc.)")
    profile = _profile(source, f"{at}.profile", doc.get("profile") or {}, base)
    return Workload(name, service, ns, MappingProxyType(dict(labels_doc)), profile)


def _profile(source: str, at: str, doc: Any, base: Profile) -> Profile:
    if not isinstance(doc, dict):
        _fail(source, at, f"must be a mapping of {', '.join(_PROFILE_FIELDS)}")
    _no_unknown(source, at, doc, _PROFILE_FIELDS)
    latency = base.latency
    if "latency_ms" in doc:
        latency = _latency(source, f"{at}.latency_ms", doc["latency_ms"])
    operations = dict(base.operations)
    ops_doc = doc.get("operations") or {}
    if not isinstance(ops_doc, dict):
        _fail(source, f"{at}.operations", "must map operation names to {median, p99}")
    for op, lat in ops_doc.items():
        operations[str(op)] = _latency(source, f"{at}.operations.{op}", lat)
    error_rate = base.error_rate
    if "error_rate" in doc:
        error_rate = _number(source, f"{at}.error_rate", doc["error_rate"])
        if not 0.0 <= error_rate <= 1.0:
            _fail(
                source,
                f"{at}.error_rate",
                f"{error_rate} is outside [0, 1]; give a share such as 0.005 for 0.5 %",
            )
    factors = dict(base.outbound_latency_factor)
    out_doc = doc.get("outbound_latency_factor") or {}
    if not isinstance(out_doc, dict):
        _fail(source, f"{at}.outbound_latency_factor", "must map service names to factors")
    for svc, f in out_doc.items():
        factor = _number(source, f"{at}.outbound_latency_factor.{svc}", f)
        if factor < 0:
            _fail(source, f"{at}.outbound_latency_factor.{svc}", "must be >= 0 (1.2 = 20 % slower)")
        factors[str(svc)] = factor
    message = base.message
    if "message" in doc:
        message = doc["message"]
        if message is not None and not isinstance(message, str):
            _fail(source, f"{at}.message", "must be a string (the banner a frontend shows)")
    return Profile(
        latency, MappingProxyType(operations), error_rate, MappingProxyType(factors), message
    )


def _latency(source: str, at: str, doc: Any) -> Latency:
    if not isinstance(doc, dict):
        _fail(source, at, "must be a mapping {median: MS, p99: MS}")
    _no_unknown(source, at, doc, _LATENCY_FIELDS)
    if "median" not in doc:
        _fail(source, f"{at}.median", "missing; give the median latency in ms")
    median = _number(source, f"{at}.median", doc["median"])
    p99 = _number(source, f"{at}.p99", doc.get("p99", median))
    for key, value in (("median", median), ("p99", p99)):
        if value < 0:
            _fail(source, f"{at}.{key}", f"negative latency {value}; give milliseconds >= 0")
    if p99 < median:
        _fail(source, f"{at}.p99", f"{p99} is below the median {median}; p99 must be >= median")
    if median == 0 and p99 > 0:
        _fail(source, f"{at}.median", "0 with a p99 above 0; give a median above 0")
    return Latency(median, p99)


def _number(source: str, at: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        _fail(source, at, f"{value!r} is not a number")
    return float(value)


def _name(source: str, at: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        _fail(source, at, f"{value!r} is not a valid name; use lowercase letters, digits and '-'")
    return value


def _no_unknown(source: str, at: str, doc: dict[str, Any], known: tuple[str, ...]) -> None:
    for key in doc:
        if key not in known:
            where = f"{at}.{key}" if at else str(key)
            _fail(source, where, f"unknown field; use one of {', '.join(known)}")


def _fail(source: str, at: str, problem: str) -> NoReturn:
    raise ConfigError(f"{source}: {at}: {problem}")
