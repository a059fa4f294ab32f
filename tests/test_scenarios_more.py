"""The other scenarios, live gates and the open model, each in one short Locust run.

All runs share one embedded mesh reached as a cluster (`--mesh kubernetes`); a scenario whose
routing differs applies its own manifests to that mesh first, as a user would with kubectl.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from meshsim.mesh import Mesh
from tests.support import finish_in_session, start_in_session

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "scenarios"
ONE_STEP = "route: primary\nusers: 12\nsteps:\n  - {weights: {v1: %d, v2: %d}, hold_s: %d}\n"


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with Mesh() as m:
        yield m


def run(tmp: Path, mesh: Mesh, scenario: str, plan: str, *args: str) -> tuple[int, Path]:
    """One headless run to its end; the exit code and the run folder."""
    (tmp / "plan.yaml").write_text(plan)
    cmd = [
        sys.executable, "-m", "locust", "-f", str(SCENARIOS / f"{scenario}.py"), "--headless",
        "--plan", str(tmp / "plan.yaml"), "--results-dir", str(tmp / "results"),
        "--run-time", "45", "--exit-code-on-error", "0",
        "--mesh", "kubernetes", "--host", mesh.gateway_url, "--kubeconfig", str(mesh.kubeconfig),
        *args,
    ]  # fmt: skip
    code = finish_in_session(start_in_session(cmd, tmp / "locust.log"), 75)
    folders = sorted((tmp / "results").iterdir())
    assert len(folders) == 1, (tmp / "locust.log").read_text()[-2000:]
    return code, folders[0]


def events(folder: Path, kind: str) -> list[dict[str, object]]:
    info = json.loads((folder / "run.json").read_text())
    return [e for e in info["events"] if e["kind"] == kind]


def test_abtest_keeps_v2_to_the_beta_cohort(tmp_path: Path, mesh: Mesh) -> None:
    mesh.apply(SCENARIOS / "manifests" / "abtest.yaml")
    try:
        code, folder = run(tmp_path, mesh, "abtest", ONE_STEP % (100, 0, 6))
    finally:
        mesh.apply(SCENARIOS / "manifests" / "canary.yaml")
    assert code == 0
    rows = ds.dataset(folder / "requests").to_table(columns=["cohort", "version"]).to_pylist()
    by = {(r["cohort"], r["version"]) for r in rows}
    assert ("beta", "v2") in by and ("regular", "v1") in by
    assert ("regular", "v2") not in by and ("beta", "v1") not in by
    (check,) = events(folder, "check")
    assert check["passed"] is True
    # the beta cohort's responses came from its own route: not the weighted route's split
    (step,) = json.loads((folder / "summary.json").read_text())["split"]
    starts = ds.dataset(folder / "requests").to_table(columns=["cohort", "start_ns"]).to_pylist()
    beta = sum(r["cohort"] == "beta" and r["start_ns"] >= step["effective_ns"] for r in starts)
    assert step["verdict"] != "fail" and step["counts"] == {"v1": step["n"], "v2": 0}
    assert step["n_elsewhere"] == beta > 0  # those after the step's first stamped response


def test_sticky_users_stay_on_their_first_version(tmp_path: Path, mesh: Mesh) -> None:
    mesh.apply(SCENARIOS / "manifests" / "sticky.yaml")
    try:
        # 24 users at 50/50: all on one version once in 8 million (12 users: once in 2,048)
        plan = ONE_STEP.replace("users: 12", "users: 24") % (50, 50, 6)
        code, folder = run(tmp_path, mesh, "sticky", plan)
    finally:
        mesh.apply(SCENARIOS / "manifests" / "canary.yaml")
    assert code == 0
    rows = ds.dataset(folder / "requests").to_table(columns=["user_id", "version"]).to_pylist()
    seen: dict[int, set[str]] = {}
    for r in rows:
        seen.setdefault(r["user_id"], set()).add(r["version"])
    assert len(seen) == 24 and all(len(v) == 1 for v in seen.values())
    assert {next(iter(v)) for v in seen.values()} == {"v1", "v2"}
    (check,) = events(folder, "check")
    assert check["passed"] is True and check["users_switched"] == 0
    # a step of sticky users is measured by its users, not by its requests
    said = (tmp_path / "locust.log").read_text()
    assert "step 0: users keep their version, so it counts about its 24 users, not its " \
           "requests: ±" in said  # fmt: skip
    # the weighted route served each user's first request; the cookie routes the rest
    (step,) = json.loads((folder / "summary.json").read_text())["split"]
    assert step["n"] == step["users"] == 24 and step["n_elsewhere"] == len(rows) - 24
    assert step["ci95"]["v2"][1] - step["ci95"]["v2"][0] > 0.2  # 24 draws: about ±20 pp


def test_a_tripped_gate_rolls_back_and_exits_3(tmp_path: Path, mesh: Mesh) -> None:
    plan = "route: primary\nusers: 12\nsteps:\n  - {weights: {v1: 0, v2: 100}, hold_s: 20}\n"
    # any v2 latency exceeds 0.001 ms: the gate trips once 20 v2 requests are on disk
    code, folder = run(tmp_path, mesh, "canary", plan, "--gate-p99-ms", "0.001",
                       "--gate-window-s", "10")  # fmt: skip
    assert code == 3
    (gate,) = events(folder, "gate")
    assert gate["gate"] == "p99_ms" and gate["subset"] == "v2"
    rollback = events(folder, "weights")[-1]
    assert rollback["weights"] == {"v1": 0, "v2": 100}  # step 0's weights: nothing to undo here
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "rolled back"


def test_open_model_keeps_the_arrival_rate(tmp_path: Path, mesh: Mesh) -> None:
    code, folder = run(tmp_path, mesh, "canary", ONE_STEP % (100, 0, 8), "--arrival-rate", "30")
    assert code == 0
    table = ds.dataset(folder / "requests").to_table()
    assert {"intended_ns", "co_latency_ms"} <= set(table.column_names)
    intended = sorted(v for v in table["intended_ns"].to_pylist() if v is not None)
    span_s = (intended[-1] - intended[0]) / 1e9
    rate = (len(intended) - 1) / span_s
    assert 24 <= rate <= 36, rate  # 30/s planned; sleep granularity and a busy box
    rows = table.to_pylist()
    for r in rows:
        if r["intended_ns"] is not None:
            expected = (r["start_ns"] - r["intended_ns"]) / 1e6 + r["latency_ms"]
            assert r["co_latency_ms"] == pytest.approx(expected)


def test_users_given_with_u_hold_past_the_first_step(tmp_path: Path, mesh: Mesh) -> None:
    """-u overrides the plan's `users` for every step that names none, not only the first (the
    rollout used to fall back to the plan's 2 once it began)."""
    plan = "route: primary\nusers: 2\nsteps:\n  - {weights: {v1: 100, v2: 0}, hold_s: 3}\n" \
           "  - {weights: {v1: 50, v2: 50}, hold_s: 5}\n"  # fmt: skip
    code, folder = run(tmp_path, mesh, "canary", plan, "-u", "7")
    assert code == 0
    table = ds.dataset(folder / "requests").to_table(columns=["step", "user_id"]).to_pylist()
    late = {r["user_id"] for r in table if r["step"] == 1}
    assert len(late) == 7, sorted(late)


def test_sigterm_mid_run_finishes_the_folder(tmp_path: Path, mesh: Mesh) -> None:
    """SIGTERM (a container stop) before the plan ends: the same orderly end as Ctrl-C."""
    import time

    plan = "route: primary\nusers: 12\nsteps:\n  - {weights: {v1: 100, v2: 0}, hold_s: 4}\n" \
           "  - {weights: {v1: 50, v2: 50}, hold_s: 30}\n"  # fmt: skip
    (tmp_path / "plan.yaml").write_text(plan)
    cmd = [
        sys.executable, "-m", "locust", "-f", str(SCENARIOS / "canary.py"), "--headless",
        "--plan", str(tmp_path / "plan.yaml"), "--results-dir", str(tmp_path / "results"),
        "--json-file", str(tmp_path / "stats"), "--run-time", "45", "--exit-code-on-error", "0",
        "--mesh", "kubernetes", "--host", mesh.gateway_url, "--kubeconfig", str(mesh.kubeconfig),
    ]  # fmt: skip
    with open(tmp_path / "locust.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        found = list((tmp_path / "results").glob("*/run.json"))
        if found and len(events(found[0].parent, "weights")) >= 2:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=40) == 130  # interrupted: what was measured is kept
    (folder,) = (tmp_path / "results").iterdir()
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "interrupted" and info["ended_ns"] is not None
    rows = ds.dataset(folder / "requests").count_rows()
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert rows == info["requests"]["rows"] == sum(e["num_requests"] for e in stats) > 0
