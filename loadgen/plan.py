"""Rollout plans: the weight steps a scenario walks through, read from YAML and validated.

    steps:
      - weights: {v1: 100, v2: 0}
        hold_s: 20
      - weights: {v1: 95, v2: 5}
        hold_s: 20
        users: 30            # optional: users during this step
        arrival_rate: 40     # optional: requests per second (open model)

Top-level keys beside `steps` (all optional): `description`, `virtual_service`, `namespace`,
`route` (name or index of the VirtualService's http route; default 0), `users`, `spawn_rate`,
`canary` (the subset live gates watch; default: the one the plan moves traffic to). Every problem
is one `ConfigError` line naming the file, the step, the field and the fix.

`route` may instead name the route it moves, and its kind:

    route: {kind: HTTPRoute, name: frontend, namespace: default, rule: 0}
    steps:
      - weights: {frontend-v1: 95, frontend-v2: 5}
        hold_s: 20

`kind` is VirtualService (the default) or HTTPRoute; `rule` is a route's (VirtualService) or
rule's (HTTPRoute) name or index, default 0. An HTTPRoute plan's versions are the rule's
backendRef Service names (one Service per version, as Gateway API canaries are written).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from meshcore.errors import ConfigError
from meshcore.yamldoc import load_yaml

_TOP_KEYS = (
    "description",
    "virtual_service",
    "namespace",
    "route",
    "users",
    "spawn_rate",
    "canary",
    "steps",
)
_STEP_KEYS = ("weights", "hold_s", "users", "arrival_rate")
_ROUTE_KEYS = ("kind", "name", "namespace", "rule")
ROUTE_KINDS = ("VirtualService", "HTTPRoute")


@dataclass(frozen=True)
class Step:
    """One rollout step: the weights to set, how long to hold them, the load meanwhile."""

    weights: Mapping[str, int]
    hold_s: float
    users: int | None = None
    arrival_rate: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"weights": dict(self.weights), "hold_s": self.hold_s}
        if self.users is not None:
            out["users"] = self.users
        if self.arrival_rate is not None:
            out["arrival_rate"] = self.arrival_rate
        return out


@dataclass(frozen=True)
class Plan:
    """The whole rollout; `source` names the file in messages."""

    steps: tuple[Step, ...]
    source: str = "<plan>"
    description: str = ""
    virtual_service: str | None = None
    namespace: str | None = None
    route: str | int | None = None
    users: int | None = None
    spawn_rate: float | None = None
    canary: str | None = None
    route_kind: str = "VirtualService"  # what `route:` moves: VirtualService or HTTPRoute
    http_route: str | None = None  # the HTTPRoute's name (`route: {kind: HTTPRoute, name}`)

    @property
    def duration_s(self) -> float:
        return sum(s.hold_s for s in self.steps)

    def subsets(self) -> list[str]:
        seen: dict[str, None] = {}
        for s in self.steps:
            seen.update(dict.fromkeys(s.weights))
        return list(seen)

    def users_of(self, step: int, run_users: int) -> int:
        """The users of a step: its own `users`, else the run's (the harness decides those: -u,
        else the plan's `users`, else the scenario's default)."""
        s = self.steps[min(max(step, 0), len(self.steps) - 1)]
        return s.users if s.users is not None else run_users

    def step_at(self, elapsed_s: float) -> int | None:
        """Index of the step in effect `elapsed_s` after the start; None once the plan is over."""
        end = 0.0
        for k, s in enumerate(self.steps):
            end += s.hold_s
            if elapsed_s < end:
                return k
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "steps": [s.to_json() for s in self.steps]}
        keys = ("description", "virtual_service", "namespace", "route", "users", "spawn_rate")
        for key in (*keys, "canary"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = value
        if self.route_kind == "HTTPRoute":
            given = {"name": self.http_route, "namespace": self.namespace, "rule": self.route}
            out["route"] = {
                "kind": self.route_kind,
                **{k: v for k, v in given.items() if v is not None},
            }
            out.pop("namespace", None)
        return out


def load_plan(path: str | Path) -> Plan:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(
            f"{p}: cannot read the plan ({e.strerror}); check --plan (plans live in "
            "scenarios/plans/)"
        ) from None
    return parse_plan(text, str(p))


def parse_plan(text: str, source: str = "<plan>") -> Plan:
    doc = load_yaml(text, source)
    if isinstance(doc, list):
        doc = {"steps": doc}
    if not isinstance(doc, dict):
        _fail(source, "(top level)", "is not a mapping; give a mapping with a `steps:` list")
    _no_unknown(source, "(top level)", doc, _TOP_KEYS)
    raw_steps = doc.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        _fail(
            source, "steps", "is missing or empty; list at least one step with weights and hold_s"
        )
    steps = tuple(_step(source, k, raw) for k, raw in enumerate(raw_steps))
    route = doc.get("route")
    where: dict[str, Any] = {
        "virtual_service": _opt_str(source, doc, "virtual_service"),
        "namespace": _opt_str(source, doc, "namespace"),
    }
    if isinstance(route, dict):
        route, where = _route(source, route, where)
    elif route is not None and (isinstance(route, bool) or not isinstance(route, str | int)):
        _fail(source, "route", "must be a route name, a 0-based index or {kind, name, rule}")
    return Plan(
        steps=steps,
        source=source,
        description=str(doc.get("description") or ""),
        **where,
        route=route,
        users=_opt_int(source, "users", doc.get("users")),
        spawn_rate=_opt_float(source, "spawn_rate", doc.get("spawn_rate"), positive=True),
        canary=_canary(source, doc.get("canary"), steps),
    )


def _route(
    source: str, raw: Mapping[str, Any], where: dict[str, Any]
) -> tuple[str | int | None, dict[str, Any]]:
    """The mapping form `route: {kind, name, namespace, rule}`: (the rule, the Plan's keys)."""
    _no_unknown(source, "route", raw, _ROUTE_KEYS)
    kind = raw.get("kind", "VirtualService")
    if kind not in ROUTE_KINDS:
        _fail(source, "route.kind", f"is {kind!r}; give {' or '.join(ROUTE_KINDS)}")
    name = _opt_str(source, raw, "route.name", key="name")
    namespace = _opt_str(source, raw, "route.namespace", key="namespace")
    for key, value in (("virtual_service", name), ("namespace", namespace)):
        if value is not None and where[key] not in (None, value):
            _fail(source, f"route.{key.replace('virtual_service', 'name')}", f"is {value!r} "
                  f"but `{key}` says {where[key]!r}; give it once, in `route`")  # fmt: skip
    if kind == "HTTPRoute" and where["virtual_service"] is not None:
        _fail(source, "virtual_service", "names a VirtualService, but route.kind is HTTPRoute; "
              "drop it and give route.name")  # fmt: skip
    rule = raw.get("rule")
    if rule is not None and (isinstance(rule, bool) or not isinstance(rule, str | int)):
        _fail(source, "route.rule", f"is {rule!r}; give a rule's name or a 0-based index")
    out = {"namespace": namespace or where["namespace"], "route_kind": kind}
    if kind == "HTTPRoute":
        return rule, {**out, "virtual_service": None, "http_route": name}
    return rule, {**out, "virtual_service": name or where["virtual_service"]}


def _canary(source: str, value: Any, steps: tuple[Step, ...]) -> str | None:
    if value is None:
        return None
    known = list(dict.fromkeys(s for step in steps for s in step.weights))
    if str(value) not in known:
        _fail(source, "canary", f"{value!r} is not a subset of the steps ({', '.join(known)})")
    return str(value)


def _step(source: str, k: int, raw: Any) -> Step:
    where = f"step {k}"
    if not isinstance(raw, dict):
        _fail(source, where, "is not a mapping; write `- weights: {v1: 90, v2: 10}` + `hold_s: 20`")
    _no_unknown(source, where, raw, _STEP_KEYS)
    weights = raw.get("weights")
    if not isinstance(weights, dict) or not weights:
        _fail(
            source, f"{where}: weights", "is missing; map each subset to a weight: {v1: 90, v2: 10}"
        )
    clean: dict[str, int] = {}
    for subset, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            _fail(source, f"{where}: weights.{subset}", f"is {w!r}; give a whole number >= 0")
        clean[str(subset)] = w
    if sum(clean.values()) <= 0:
        _fail(source, f"{where}: weights", "sum to 0; give at least one subset a positive weight")
    if "hold_s" not in raw:
        _fail(source, f"{where}: hold_s", "is missing; say how many seconds to hold the step")
    hold_s = _opt_float(source, f"{where}: hold_s", raw["hold_s"], positive=True)
    assert hold_s is not None
    return Step(
        weights=clean,
        hold_s=hold_s,
        users=_opt_int(source, f"{where}: users", raw.get("users")),
        arrival_rate=_opt_float(source, f"{where}: arrival_rate", raw.get("arrival_rate")),
    )


def _opt_str(
    source: str, doc: Mapping[str, Any], where: str, *, key: str | None = None
) -> str | None:
    value = doc.get(key or where)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        _fail(source, where, f"is {value!r}; give a name")
    return value


def _opt_int(source: str, where: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        _fail(source, where, f"is {value!r}; give a whole number >= 0")
    return value


def _opt_float(source: str, where: str, value: Any, *, positive: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        _fail(source, where, f"is {value!r}; give a number of seconds or a rate")
    if value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        _fail(source, where, f"is {value!r}; it must be {bound}")
    return float(value)


def _no_unknown(source: str, where: str, doc: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in doc:
        if key not in known:
            _fail(source, where, f"unknown key {key!r}; known keys: {', '.join(known)}")


def _fail(source: str, where: str, problem: str) -> NoReturn:
    raise ConfigError(f"{source}: {where}: {problem}")
