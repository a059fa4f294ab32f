"""Rollout plans: parsing, validation messages, and the shipped plans."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.plan import Plan, Step, load_plan, parse_plan
from meshcore.errors import ConfigError

PLANS = Path(__file__).resolve().parent.parent / "scenarios" / "plans"


def test_full_plan_round_trips_through_json() -> None:
    plan = parse_plan(
        """
        description: test
        virtual_service: frontend
        namespace: shop
        route: primary
        users: 12
        spawn_rate: 4
        steps:
          - {weights: {v1: 100, v2: 0}, hold_s: 2.5}
          - {weights: {v1: 90, v2: 10}, hold_s: 3, users: 30, arrival_rate: 50}
        """,
        "p.yaml",
    )
    assert plan.steps == (
        Step({"v1": 100, "v2": 0}, 2.5),
        Step({"v1": 90, "v2": 10}, 3.0, users=30, arrival_rate=50.0),
    )
    assert (plan.virtual_service, plan.namespace, plan.route) == ("frontend", "shop", "primary")
    assert (plan.users, plan.spawn_rate, plan.duration_s) == (12, 4.0, 5.5)
    assert plan.subsets() == ["v1", "v2"]
    assert plan.to_json()["steps"][1] == {
        "weights": {"v1": 90, "v2": 10},
        "hold_s": 3.0,
        "users": 30,
        "arrival_rate": 50.0,
    }


def test_a_bare_list_is_the_steps() -> None:
    plan = parse_plan("- {weights: {v1: 1}, hold_s: 1}\n")
    assert plan.steps == (Step({"v1": 1}, 1.0),)


def test_step_at_follows_the_hold_durations() -> None:
    plan = Plan(steps=(Step({"a": 1}, 2), Step({"a": 1}, 3)))
    assert [plan.step_at(t) for t in (0, 1.99, 2.0, 4.99, 5.0)] == [0, 0, 1, 1, None]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: [ {weights: \n", "p.yaml: line 2: "),
        ("42\n", "p.yaml: (top level): is not a mapping"),
        ("steps: []\n", "p.yaml: steps: is missing or empty"),
        ("stepz: []\n", "unknown key 'stepz'"),
        ("steps:\n  - {weights: {v1: 0, v2: 0}, hold_s: 1}\n", "step 0: weights: sum to 0"),
        ("steps:\n  - {weights: {v1: -1, v2: 2}, hold_s: 1}\n", "step 0: weights.v1: is -1"),
        ("steps:\n  - {weights: {v1: 1.5}, hold_s: 1}\n", "weights.v1: is 1.5"),
        ("steps:\n  - {weights: {v1: 1}, hold_s: -3}\n", "step 0: hold_s: is -3"),
        ("steps:\n  - {weights: {v1: 1}, hold_s: 0}\n", "it must be > 0"),
        ("steps:\n  - {weights: {v1: 1}}\n", "step 0: hold_s: is missing"),
        ("steps:\n  - {weights: {v1: 1}, hold_s: 1, hold: 2}\n", "unknown key 'hold'"),
        ("steps:\n  - {hold_s: 1}\n", "step 0: weights: is missing"),
        ("steps:\n  - {weights: {v1: 1}, hold_s: 1, users: -2}\n", "users: is -2"),
        ("steps:\n  - {weights: {v1: 1}, hold_s: 1, arrival_rate: -1}\n", "arrival_rate"),
        ("route: [1]\nsteps:\n  - {weights: {v1: 1}, hold_s: 1}\n", "route: must be"),
        ("canary: v9\nsteps:\n  - {weights: {v1: 1}, hold_s: 1}\n", "canary: 'v9' is not"),
    ],
)
def test_bad_plans_give_one_line_naming_file_place_and_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_plan(text, "p.yaml")
    line = str(err.value)
    assert "\n" not in line and line.startswith("p.yaml: ")
    assert message in line


def test_missing_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--plan"):
        load_plan(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["canary.yaml", "baseline.yaml"])
def test_shipped_plans_load(name: str) -> None:
    plan = load_plan(PLANS / name)
    assert plan.steps[0].weights == {"v1": 100, "v2": 0}
    assert plan.virtual_service == "frontend" and plan.route == "primary"


def test_canary_plan_is_the_issues_rollout() -> None:
    plan = load_plan(PLANS / "canary.yaml")
    assert [s.weights["v2"] / sum(s.weights.values()) for s in plan.steps] == [
        0,
        0.05,
        0.10,
        0.25,
        0.50,
        1.0,
    ]
    assert 100 <= plan.duration_s <= 140


STEPS = "steps:\n  - weights: {frontend-v1: 95, frontend-v2: 5}\n    hold_s: 1\n"


def test_the_route_mapping_names_an_httproute_rule() -> None:
    plan = parse_plan(
        "route: {kind: HTTPRoute, name: shop, namespace: web, rule: canary}\n" + STEPS, "p.yaml"
    )
    assert (plan.route_kind, plan.http_route, plan.namespace) == ("HTTPRoute", "shop", "web")
    assert plan.route == "canary" and plan.virtual_service is None
    assert plan.subsets() == ["frontend-v1", "frontend-v2"]
    assert plan.to_json()["route"] == {
        "kind": "HTTPRoute", "name": "shop", "namespace": "web", "rule": "canary"
    }  # fmt: skip
    assert "namespace" not in plan.to_json() and "virtual_service" not in plan.to_json()
    by_index = parse_plan("route: {kind: HTTPRoute, rule: 1}\nnamespace: web\n" + STEPS)
    assert (by_index.route, by_index.http_route, by_index.namespace) == (1, None, "web")


def test_the_route_mapping_defaults_to_a_virtual_service_and_old_keys_still_work() -> None:
    plan = parse_plan("route: {name: frontend, rule: primary}\n" + STEPS)
    assert (plan.route_kind, plan.virtual_service, plan.route) == (
        "VirtualService", "frontend", "primary"
    )  # fmt: skip
    old = parse_plan("virtual_service: frontend\nnamespace: shop\nroute: 1\n" + STEPS)
    assert (old.route_kind, old.virtual_service, old.namespace, old.route) == (
        "VirtualService", "frontend", "shop", 1
    )  # fmt: skip
    assert old.to_json()["route"] == 1 and old.http_route is None


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ("route: {kind: Ingress}", "p.yaml: route.kind: is 'Ingress'; give VirtualService or"),
        ("route: {kind: HTTPRoute, host: x}", "p.yaml: route: unknown key 'host'; known keys:"),
        ("route: {kind: HTTPRoute, rule: [0]}", "p.yaml: route.rule: is [0]; give a rule's name"),
        ("route: {kind: HTTPRoute, name: 3}", "p.yaml: route.name: is 3; give a name"),
        ("virtual_service: a\nroute: {kind: HTTPRoute, name: b}",
         "p.yaml: route.name: is 'b' but `virtual_service` says 'a'; give it once, in `route`"),
        ("virtual_service: a\nroute: {kind: HTTPRoute}",
         "p.yaml: virtual_service: names a VirtualService, but route.kind is HTTPRoute"),
        ("namespace: a\nroute: {namespace: b}", "p.yaml: route.namespace: is 'b' but `namespace`"),
        ("route: true", "p.yaml: route: must be a route name, a 0-based index or {kind, name"),
    ],
)  # fmt: skip
def test_bad_route_mappings_name_the_field_and_the_fix(head: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_plan(head + "\n" + STEPS, "p.yaml")
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
