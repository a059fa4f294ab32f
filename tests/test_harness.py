"""loadgen.harness.install: a locustfile's paths are its own folder's, its scenario is named
after it, and importing RolloutShape is the whole of its shape (each scenario file, loaded by
Locust's own loader, offers Locust exactly one shape and its users)."""

from __future__ import annotations

from pathlib import Path

import locust
import pytest
from locust.event import Events
from locust.util.load_locustfile import load_locustfile

from loadgen import harness

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.py"))


@pytest.fixture
def fresh_events(monkeypatch: pytest.MonkeyPatch) -> Events:
    """Locust's module-level events replaced by a new set, so the scenarios' listeners stay
    out of every other test; the harness the scenario installs is dropped afterwards."""
    events = Events()
    monkeypatch.setattr(locust, "events", events)
    monkeypatch.setattr(harness, "_current", None)
    return events


def test_paths_are_the_locustfiles_and_the_scenario_its_name(
    tmp_path: Path, fresh_events: Events
) -> None:
    locustfile = tmp_path / "deep" / "my_canary.py"
    h = harness.install(
        locustfile, plan="plans/p.yaml", manifests="m.yaml", spec=tmp_path / "spec.yaml"
    )
    assert h.scenario == "my-canary"
    assert h.default_plan == tmp_path / "deep" / "plans" / "p.yaml"
    assert h.manifests == tmp_path / "deep" / "m.yaml"
    assert h.spec == tmp_path / "spec.yaml"  # an absolute path stays as given
    assert harness.current() is h
    assert fresh_events.test_start._handlers  # attached to the events it was given
    named = harness.install(locustfile, plan="p.yaml", scenario="release-7", events=Events())
    assert named.scenario == "release-7"
    assert named.manifests is None and named.spec is None


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_each_scenario_offers_one_shape_and_its_files(path: Path, fresh_events: Events) -> None:
    users, shapes = load_locustfile(str(path))
    assert [type(s).__name__ for s in shapes] == ["RolloutShape"]
    assert users, f"{path.name} offers Locust no user class"
    h = harness.current()
    assert h is not None
    assert h.scenario == path.stem.replace("_", "-")
    for f in (h.default_plan, h.manifests, h.spec):
        assert f is None or f.is_file(), f"{path.name} names {f}, which does not exist"
