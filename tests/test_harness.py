"""loadgen.harness.install: a locustfile's paths are its own folder's, its scenario is named
after it, and importing RolloutShape is the whole of its shape (each scenario file, loaded by
Locust's own loader, offers Locust exactly one shape and its users).

Importing Locust monkey-patches the process (gevent), so the harness is installed in a child
Python that imports Locust first, as `locust -f` does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.py"))

_PROBE = """
import json, sys
import locust
from locust.event import Events
from locust.util.load_locustfile import load_locustfile
from loadgen import harness

def described(h):
    files = [h.default_plan, h.manifests, h.spec]
    return {"scenario": h.scenario, "files": [str(f) if f else None for f in files]}

out = {}
if sys.argv[1] == "install":
    kw = json.loads(sys.argv[3])
    events = Events()
    h = harness.install(sys.argv[2], events=events, **kw)
    out = described(h)
    out["current"] = harness.current() is h
    out["attached"] = len(events.test_start._handlers)
else:
    users, shapes = load_locustfile(sys.argv[2])
    out = described(harness.current())
    out["users"] = sorted(users)
    out["shapes"] = [type(s).__name__ for s in shapes]
print(json.dumps(out))
"""


def probe(*args: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def test_paths_are_the_locustfiles_and_the_scenario_its_name(tmp_path: Path) -> None:
    locustfile = tmp_path / "deep" / "my_canary.py"
    kw = {"plan": "plans/p.yaml", "manifests": "m.yaml", "spec": str(tmp_path / "spec.yaml")}
    got = probe("install", str(locustfile), json.dumps(kw))
    assert got["scenario"] == "my-canary"
    assert got["files"] == [
        str(tmp_path / "deep" / "plans" / "p.yaml"),
        str(tmp_path / "deep" / "m.yaml"),
        str(tmp_path / "spec.yaml"),  # an absolute path stays as given
    ]
    assert got["current"] is True
    assert got["attached"] >= 1  # listens to the events it was given
    named = probe("install", str(locustfile), json.dumps({"plan": "p", "scenario": "release-7"}))
    assert named["scenario"] == "release-7"
    assert named["files"][1:] == [None, None]


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_each_scenario_offers_one_shape_and_its_files(path: Path) -> None:
    got = probe("load", str(path))
    assert got["shapes"] == ["RolloutShape"]
    assert got["users"], f"{path.name} offers Locust no user class"
    assert got["scenario"] == path.stem.replace("_", "-")
    for f in got["files"]:
        assert f is None or Path(f).is_file(), f"{path.name} names {f}, which does not exist"
