"""`locust -f scenarios/canary.py --headless` as a user runs it.

Each test starts Locust as a subprocess (its own session, stopped by PID) with a short plan,
bounded by --run-time as a safety net, and checks the run folder against Locust's own counts
and the plan's weights. The first test lets the scenario start its own embedded mesh; the
others share one mesh and reach it as a cluster (`--mesh kubernetes --host --kubeconfig`),
which also exercises the production path and saves a mesh start per test.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from meshsim.mesh import Mesh
from tests.support import finish_in_session, local_processes, start_in_session

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
CANARY = REPO / "scenarios" / "canary.py"
SHORT_PLAN = """\
route: primary
users: 20
steps:
  - {weights: {v1: 100, v2: 0}, hold_s: 4}
  - {weights: {v1: 75, v2: 25}, hold_s: 4}
  - {weights: {v1: 50, v2: 50}, hold_s: 4}
  - {weights: {v1: 0, v2: 100}, hold_s: 4}
"""


def locust(tmp: Path, *args: str) -> subprocess.Popen[bytes]:
    plan = tmp / "plan.yaml"
    if not plan.exists():
        plan.write_text(SHORT_PLAN)
    cmd = [
        sys.executable, "-m", "locust", "-f", str(CANARY), "--headless",
        "--plan", str(plan), "--results-dir", str(tmp / "results"),
        "--json-file", str(tmp / "stats"), "--run-time", "60", "--exit-code-on-error", "0",
        *args,
    ]  # fmt: skip
    return start_in_session(cmd, tmp / "locust.log")


def finish(proc: subprocess.Popen[bytes], timeout_s: float = 75) -> int:
    return finish_in_session(proc, timeout_s)


def run_folder(tmp: Path) -> Path:
    folders = sorted((tmp / "results").iterdir())
    assert len(folders) == 1, folders
    return folders[0]


def records(folder: Path) -> pa.Table:
    return ds.dataset(folder / "requests", format="parquet").to_table()


def locust_count(tmp: Path) -> int:
    return sum(e["num_requests"] for e in json.loads((tmp / "stats.json").read_text()))


def wait_for_step(folder_parent: Path, step: int, timeout_s: float = 40) -> Path:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run_json in folder_parent.glob("*/run.json"):
            events = json.loads(run_json.read_text()).get("events", [])
            if any(e.get("step") == step for e in events):
                return run_json.parent
        time.sleep(0.2)
    raise AssertionError(f"step {step} never started")


def check_split(folder: Path) -> None:
    """Per step, the versions served under the step's configuration (its stamp) match the
    weights within 4 SE (a true split fails 1 step in 16,000)."""
    info = json.loads((folder / "run.json").read_text())
    table = records(folder).to_pydict()
    changes = [e for e in info["events"] if e["kind"] == "weights"]
    assert [e["step"] for e in changes] == list(range(len(info["plan"]["steps"])))
    for e in changes:
        weights = e["weights"]
        share_v2 = weights["v2"] / sum(weights.values())
        served = [
            v for v, c in zip(table["version"], table["config_step"], strict=True) if c == e["step"]
        ]
        n = len(served)
        assert n >= 30, f"step {e['step']}: only {n} requests"
        observed = served.count("v2") / n
        se = math.sqrt(share_v2 * (1 - share_v2) / n)
        assert abs(observed - share_v2) <= 4 * se, (e["step"], observed, share_v2, n)


@pytest.fixture()
def tmp(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, ...]]:
    """Arguments that point a run at one shared embedded mesh, as at a cluster."""
    with Mesh() as mesh:
        yield ("--mesh", "kubernetes", "--host", mesh.gateway_url,
               "--kubeconfig", str(mesh.kubeconfig))  # fmt: skip


def test_headless_run_writes_a_complete_folder(tmp: Path) -> None:
    assert finish(locust(tmp)) == 0, (tmp / "locust.log").read_text()[-3000:]
    folder = run_folder(tmp)
    info = json.loads((folder / "run.json").read_text())
    assert info["schema_version"] == 1
    assert info["mesh"] == "embedded" and info["status"] == "completed"
    assert info["started_ns"] < info["ended_ns"]
    assert info["target"].startswith("http://127.0.0.1:")
    table = records(folder)
    assert table.num_rows == locust_count(tmp) == info["requests"]["rows"]
    trace_ids = table["trace_id"].to_pylist()
    assert len(set(trace_ids)) == len(trace_ids)
    assert all(len(t) == 32 and int(t, 16) > 0 for t in trace_ids)
    assert set(table["name"].to_pylist()) >= {"/", "/product/[id]", "/cart"}
    assert not any("/product/" in n and n != "/product/[id]" for n in table["name"].to_pylist())
    check_split(folder)


@pytest.mark.parametrize("processes", [0, 2], ids=["local", "processes2"])
def test_ctrl_c_mid_run_leaves_a_loadable_folder(
    tmp: Path, cluster: tuple[str, ...], processes: int
) -> None:
    extra = local_processes(processes) if processes else ()
    proc = locust(tmp, *cluster, *extra)
    try:
        folder = wait_for_step(tmp / "results", 1)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
        finish(proc, 30)
    finally:  # a run that never reached step 1 is stopped too
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "interrupted" and info["mesh"] == "kubernetes"
    assert info["ended_ns"] is not None
    table = records(folder)
    assert table.num_rows == info["requests"]["rows"] > 0
    assert set(table["step"].to_pylist()) == {0, 1}
    assert not list((folder / "requests").glob(".*.tmp"))


def test_four_processes_record_every_request_once(tmp: Path, cluster: tuple[str, ...]) -> None:
    """Four workers send their records to the master: the records equal Locust's count, in
    total and per worker, in run.json and in the report."""
    proc = locust(tmp, *cluster, *local_processes(4))
    assert finish(proc) == 0, (tmp / "locust.log").read_text()[-3000:]
    folder = run_folder(tmp)
    info = json.loads((folder / "run.json").read_text())
    table = records(folder)
    assert table.num_rows == locust_count(tmp) == info["requests"]["rows"]
    workers = [f"worker{i}" for i in range(4)]
    assert sorted(set(table["worker"].to_pylist())) == workers
    by_worker = info["requests"]["by_worker"]
    assert sorted(by_worker) == workers
    for w, r in by_worker.items():
        mine = table.filter(pc.equal(table["worker"], w)).num_rows
        assert r["closed"] and r["on_disk"] == r["sent"] == r["locust"] == mine > 0, (w, r)
    trace_ids = table["trace_id"].to_pylist()
    assert len(set(trace_ids)) == len(trace_ids)
    check_split(folder)
    html = (folder / "report.html").read_text()
    for w, r in by_worker.items():
        assert (
            f"{w} {r['on_disk']:,} = Locust&#x27;s" in html
            or f"{w} {r['on_disk']:,} = Locust's" in html
        )


BAD_PLANS = {
    "zero-weights": ("steps:\n  - {weights: {v1: 0, v2: 0}, hold_s: 3}\n", "sum to 0"),
    "negative-hold": ("steps:\n  - {weights: {v1: 100}, hold_s: -3}\n", "hold_s: is -3"),
    "broken-yaml": ("steps: [ {weights: \n", "fix the YAML syntax"),
}


@pytest.mark.parametrize("case", sorted(BAD_PLANS))
def test_bad_plan_ends_the_run_at_start_with_one_line(tmp: Path, case: str) -> None:
    plan, needle = BAD_PLANS[case]
    (tmp / "plan.yaml").write_text(plan)
    assert_one_line_exit(tmp, locust(tmp), needle)


@pytest.mark.parametrize(
    ("case", "args", "needle"),
    [
        ("unknown-subset", (), "subset 'v3' is not a destination"),
        ("unknown-vs", ("--virtual-service", "nope"), "VirtualService default/nope not found"),
        ("unreachable-host", ("--host", "http://127.0.0.1:9"), "unreachable"),
    ],
)
def test_bad_target_ends_the_run_at_start_with_one_line(
    tmp: Path, cluster: tuple[str, ...], case: str, args: tuple[str, ...], needle: str
) -> None:
    if case == "unknown-subset":
        (tmp / "plan.yaml").write_text("steps:\n  - {weights: {v1: 50, v3: 50}, hold_s: 3}\n")
    # later flags win: --host and --virtual-service override the shared mesh's
    assert_one_line_exit(tmp, locust(tmp, *cluster, *args), needle)


def assert_one_line_exit(tmp: Path, proc: subprocess.Popen[bytes], needle: str) -> None:
    assert finish(proc, 60) == 2
    out = (tmp / "locust.log").read_text()
    lines = [line for line in out.splitlines() if line.startswith("meshload: ")]
    assert len(lines) == 1 and needle in lines[0], out[-2000:]
    assert "Traceback" not in out
    assert not (tmp / "results").exists()
