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
