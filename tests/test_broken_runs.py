"""A broken run never looks like a clean one: each fault injected into a real embedded run.

Real Locust, real Envoy, the mesh's real children; the fault is the real one (SIGKILL of a
process by its PID, a run folder remounted read-only). Each test checks the exit code, the
one line that names the fault, run.json's status, that the folder loads and reports with the
fault as its first line, and that the records on disk equal Locust's own count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from analysis.report import build_report
from loadgen.watch import HEARTBEAT_S
from meshsim.tracestore.recording import DEFAULT_FLUSH_S as FLUSH_S
from tests.support import local_processes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
PLAN = """users: 20
steps:
  - {weights: {v1: 100, v2: 0}, hold_s: 5}
  - {weights: {v1: 50, v2: 50}, hold_s: 5}
  - {weights: {v1: 0, v2: 100}, hold_s: 5}
"""


class Run:
    """A headless canary in a process of its own, and its run folder once it has one."""

    def __init__(self, tmp_path: Path, *args: str, results: Path | None = None) -> None:
        plan = tmp_path / "plan.yaml"
        plan.write_text(PLAN)
        self.results = results or tmp_path / "results"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", "scenarios/canary.py", "--headless",
             "--plan", str(plan), "--results-dir", str(self.results), *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        self.out = self.err = ""

    @property
    def folder(self) -> Path:
        found = [p for p in self.results.iterdir() if p.is_dir()] if self.results.is_dir() else []
        assert len(found) == 1, found
        return found[0]

    def info(self) -> dict[str, Any]:
        return dict(json.loads((self.folder / "run.json").read_text()))

    def wait_for(self, what: Callable[[dict[str, Any]], bool], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if what(self.info()):
                    return
            except (AssertionError, OSError, ValueError):
                pass
            assert self.proc.poll() is None, self.proc.communicate()[1][-3000:]
            time.sleep(0.1)
        raise AssertionError("the run never got there")

    def in_step(self, step: int) -> dict[str, Any]:
        self.wait_for(lambda i: any(e.get("step") == step for e in i["events"]))
        return self.info()

    def finish(self, timeout_s: float = 120) -> int:
        try:
            self.out, self.err = self.proc.communicate(timeout=timeout_s)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def last_line(self) -> str:
        return self.err.strip().splitlines()[-1]

    def lines(self, text: str) -> list[str]:
        return [line for line in self.err.splitlines() if text in line]


def reported(folder: Path) -> dict[str, Any]:
    """The folder loads and reports; the summary's first line is the run's health."""
    result = build_report(folder, progress=False)
    html = result.html_path.read_text()
    health = result.summary["run_health"]
    assert html.index(health["line"].split(":")[0]) < html.index("<h1>")
    return dict(result.summary)


def assert_counted(info: dict[str, Any]) -> None:
    req = info["requests"]
    assert req["lost"] == 0 and req["rows"] == req["locust"] > 0, req


@pytest.mark.parametrize("child", ["envoy", "workloads", "controlplane"])
def test_a_dead_traffic_process_ends_the_run_with_4(tmp_path: Path, child: str) -> None:
    run = Run(tmp_path)
    pid = run.in_step(1)["mesh_pids"][child]
    os.kill(pid, signal.SIGKILL)
    assert run.finish() == 4
    said = run.lines(f"the embedded mesh's {child} exited (code -9) at step 1")
    [line] = [s for s in said if s.endswith("ending the run")]  # once, at once; then the last
    assert line.startswith("meshload: ") and len(said) == 2
    assert run.last_line().startswith("meshload: exit 4 (not measured as planned): failed: ")
    info = run.info()
    assert info["status"] == "failed" and info["exit_code"] == 4
    assert info["failure"][0] == f"the embedded mesh's {child} exited (code -9) at step 1"
    assert [e["kind"] for e in info["events"]].count("mesh_child_exited") == 1
    assert_counted(info)
    summary = reported(run.folder)
    assert summary["run_health"]["line"].startswith("NOT MEASURED AS PLANNED: the embedded")
    assert "Traceback" not in run.err


def test_a_dead_trace_store_fails_the_run_but_not_the_load_and_keeps_its_spans(
    tmp_path: Path,
) -> None:
    run = Run(tmp_path)
    info = run.in_step(1)
    run.wait_for(lambda i: any((run.folder / "spans").glob("*.parquet")))
    stats = f"{info['telemetry']['jaeger_url']}/_meshload/stats"
    received = json.loads(urllib.request.urlopen(stats, timeout=5).read())["received_spans"]
    time.sleep(FLUSH_S + 1.0)  # the spans received by then are in the folder's parts
    os.kill(info["mesh_pids"]["tracestore"], signal.SIGKILL)
    assert run.finish() == 4, "a dead mesh child: not measured as planned"
    said = run.lines("the embedded mesh's tracestore exited (code -9) at step 1; its telemetry")
    assert len(said) == 2 and said[0].endswith("; the load goes on"), said  # at once, then last
    assert run.last_line().startswith("meshload: exit 4 (not measured as planned): failed: ")
    info = run.info()
    assert info["status"] == "failed" and "tracestore exited" in info["failure"][0]
    assert any(e["kind"] == "weights" and e["step"] == 2 for e in info["events"]), "to its end"
    assert_counted(info)  # the load went on to the plan's end, every record kept
    summary = reported(run.folder)
    assert summary["run_health"]["line"].startswith("NOT MEASURED AS PLANNED: the embedded")
    assert sum("tracestore exited" in r for r in summary["run_health"]["reasons"]) == 1
    notes = " ".join(summary["notes"])
    assert "the trace store stopped before the run ended" in notes and "--jaeger-url" not in notes
    kept = sum(pq.read_metadata(p).num_rows for p in (run.folder / "spans").glob("*.parquet"))
    assert kept >= received > 0, "every span the store had before the kill is kept"


def test_a_dead_control_plane_fails_the_next_weight_change(tmp_path: Path) -> None:
    run = Run(tmp_path, "--keep-going")  # so the plan reaches the change it cannot make
    os.kill(run.in_step(0)["mesh_pids"]["controlplane"], signal.SIGKILL)
    assert run.finish() == 4
    info = run.info()
    failed = [e for e in info["events"] if e["kind"] == "weights_failed"]
    assert failed and failed[0]["step"] == 1 and "unreachable" in failed[0]["reason"]
    assert info["status"] == "failed" and info["exit_code"] == 4
    assert "step 1: weight change failed" in "; ".join(info["failure"])
    assert run.lines("going on (--keep-going)")
    # the stamp route could not be removed either, but it goes with the mesh: no kubectl line
    [stamp] = run.lines("meshload: the stamp route ")
    assert stamp.endswith("; it goes when the embedded mesh stops"), stamp
    assert "kubectl edit" not in run.err
    last = run.last_line()
    assert last.startswith("meshload: exit 4 (not measured as planned): failed: ") and (
        "step 1: weight change failed" in last
    )
    assert "Traceback" not in run.err
    split = {s["step"]: s for s in reported(run.folder)["split"]}
    assert split[1]["applied"] is False and split[1]["reason"].startswith("not applied: ")
    assert_counted(info)


# Ctrl-C in a terminal reaches the whole foreground process group; `kill` and Kubernetes send
# SIGTERM to the process
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_end_the_run_in_order_with_130(tmp_path: Path, signum: int) -> None:
    run = Run(tmp_path)
    run.in_step(1)
    if signum == signal.SIGINT:
        os.killpg(run.proc.pid, signum)
    else:
        run.proc.send_signal(signum)
    assert run.finish() == 130
    name = signal.Signals(signum).name
    assert run.lines(f"meshload: {name}: ending the run; what was measured is kept")
    assert run.last_line().startswith("meshload: exit 130 (interrupted): interrupted; ")
    assert "Traceback" not in run.err and "KeyboardInterrupt" not in run.err
    info = run.info()
    assert info["status"] == "interrupted" and info["events"][-1]["signal"] == name
    assert_counted(info)
    assert reported(run.folder)["run_health"]["line"].startswith(f"Interrupted ({name})")


def test_a_killed_locust_leaves_a_run_the_report_calls_cut_short(tmp_path: Path) -> None:
    run = Run(tmp_path)
    before = run.in_step(1)
    time.sleep(HEARTBEAT_S + 1.5)  # a heartbeat after the first one
    killed_ns = time.time_ns()
    os.killpg(run.proc.pid, signal.SIGKILL)
    run.finish()
    info = run.info()
    beat = info["updated_ns"]
    assert info["status"] == "running"
    assert before["started_ns"] + HEARTBEAT_S * 1e9 <= beat <= killed_ns, "the heartbeat goes on"
    pids = before["mesh_pids"].values()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "the mesh's children die with their parent"
    done = subprocess.run(
        [sys.executable, "-m", "meshload", "report", str(run.folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("CUT SHORT: the run did not finish")
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(beat / 1e9))
    assert f"the run was cut short: its last heartbeat was at {at}" in first


def test_a_lost_worker_is_counted_and_fails_the_run(tmp_path: Path) -> None:
    run = Run(tmp_path, *local_processes(2))
    run.in_step(1)
    workers = _children(run.proc.pid, "locust")
    assert len(workers) == 2, workers
    os.kill(workers[-1], signal.SIGKILL)
    assert run.finish(timeout_s=180) == 4
    info = run.info()
    lost = [f for f in info["failure"] if f.startswith("worker(s) lost: ")]
    assert lost, info["failure"]
    assert info["status"] == "failed" and info["exit_code"] == 4
    req = info["requests"]
    by_worker = req["by_worker"]
    [gone] = [w for w, r in by_worker.items() if not r["closed"]]
    lost = by_worker[gone]
    parts = {w: sum(pq.read_metadata(p).num_rows for p in run.folder.glob(f"requests/{w}-*"))
             for w in by_worker}  # fmt: skip
    assert req["rows"] == sum(parts.values()) and lost["on_disk"] == parts[gone] > 0
    # Locust counts a worker's requests at its stats reports: a lost one's last were not
    assert lost["missing"] == max(lost["locust"] - lost["on_disk"], 0)
    alive = next(r for w, r in by_worker.items() if r["closed"])
    assert alive["on_disk"] == alive["written"] == alive["locust"] > 0
    last = run.last_line()
    assert last.startswith("meshload: exit 4 (not measured as planned): failed: ")
    assert f"worker(s) lost: {gone}; {lost['on_disk']:,} of their records reached the" in last
    assert f"{req['rows']:,} requests on disk" in last
    line = reported(run.folder)["run_health"]["line"]
    said = (
        f"{gone}: {lost['on_disk']:,} on disk, Locust counted {lost['locust']:,} (a lost worker: "
    )
    assert said in line or lost["on_disk"] == lost["locust"], line
    assert "Traceback" not in run.err


def test_a_run_folder_unwritable_for_a_while_loses_nothing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "tmpfs", str(results)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        run = Run(tmp_path, results=results)
        run.in_step(1)
        _remount(results, "ro")
        time.sleep(4)  # two flush intervals of records that cannot be written
        _remount(results, "rw")
        assert run.finish() == 0
        assert len(run.lines("cannot write request records")) == 1
        assert run.lines("request records written to")
        info = run.info()
        rows = info["requests"]["rows"]
        assert run.last_line() == (
            f"meshload: exit 0 (measured): completed; {rows:,} requests on disk = Locust's count"
        )
        assert info["status"] == "completed"
        assert_counted(info)
        assert reported(run.folder)["run_health"]["ok"]
    finally:
        subprocess.run(["umount", "-l", str(results)], capture_output=True)


def _remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and "zombie" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return {"Z": "zombie"}.get(Path(f"/proc/{pid}/stat").read_text().split()[2], "")
    except OSError:
        return "zombie"


def _children(parent: int, name: str) -> list[int]:
    """PIDs of `parent`'s children whose command line mentions `name`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == parent and name in cmdline:
            found.append(int(stat.parent.name))
    return sorted(found)
