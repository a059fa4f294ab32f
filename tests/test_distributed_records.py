"""Records of workers on other machines reach the master's run folder over Locust's messages.

A master and two workers run as separate process trees, each in a working directory of its
own with a `--results-dir` of its own; each worker runs in a mount namespace of its own in
which the master's directory is hidden under an empty tmpfs (`unshare -m`), so nothing but the
network reaches the master's folder, as between machines. Run clean, every request is recorded
once: run.json, Locust's own `--json-file` and the report agree, in total and per worker. Then
one worker is SIGKILLed mid-run.
The master's folder must hold every part either worker knows was acknowledged (each notes the
acknowledgements in its own results dir), the surviving worker's records must equal Locust's
count of it, and run.json must say what the lost worker sent, what landed and what is missing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from analysis.report import build_report
from meshsim.prometheus import free_port
from tests.support import REPO, finish_in_session, start_in_session

pytestmark = pytest.mark.integration

SCENARIO = REPO / "scenarios" / "canary.py"
PLAN = """users: 20
steps:
  - {weights: {v1: 100, v2: 0}, hold_s: 6}
  - {weights: {v1: 90, v2: 10}, hold_s: 6}
  - {weights: {v1: 50, v2: 50}, hold_s: 6}
"""


def parts_of(folder: Path, worker: str) -> dict[int, int]:
    """{seq: rows} of a worker's parts in the master's folder."""
    out = {}
    for p in (folder / "requests").glob(f"{worker}-*-*.parquet"):
        out[int(p.stem.rsplit("-", 1)[1])] = pq.ParquetFile(p).metadata.num_rows
    return out


def acknowledged(results: Path) -> dict[int, int]:
    """{seq: rows} a worker noted as acknowledged, in its own results dir."""
    out = {}
    for ledger in results.glob("*/acked/*.jsonl"):
        for line in ledger.read_text().splitlines():
            entry = json.loads(line)
            out[int(entry["seq"])] = int(entry["rows"])
    return out


class Cluster:
    """A master and two workers as separate process trees, each worker in a mount namespace
    where the master's directory is an empty tmpfs."""

    def __init__(self, tmp_path: Path) -> None:
        self.master_dir, port = tmp_path / "master", free_port()
        self.master_dir.mkdir()
        (self.master_dir / "plan.yaml").write_text(PLAN)
        self.master = start_in_session(
            [sys.executable, "-m", "locust", "-f", str(SCENARIO), "--headless", "--master",
             "--expect-workers", "2", "--master-bind-host", "127.0.0.1",
             "--master-bind-port", str(port), "--plan", "plan.yaml", "--results-dir", "results",
             "--json-file", "stats", "--run-time", "90"],
            self.master_dir / "master.log", cwd=self.master_dir,
        )  # fmt: skip
        self.workers = []
        for i in range(2):
            own = tmp_path / f"worker{i}"
            own.mkdir()
            hide = f'mount -t tmpfs tmpfs {self.master_dir} && exec "$@"'
            cmd = ["unshare", "-m", "sh", "-c", hide, "sh",
                   sys.executable, "-m", "locust", "-f", str(SCENARIO), "--worker",
                   "--master-host", "127.0.0.1", "--master-port", str(port),
                   "--results-dir", str(own / "results")]  # fmt: skip
            self.workers.append((own, start_in_session(cmd, own / "worker.log", cwd=own)))

    def finish(self) -> int:
        code = finish_in_session(self.master, 150)
        for _, w in self.workers:
            if w.poll() is None:
                finish_in_session(w, 30)
        return code

    def stop(self) -> None:
        for p in [self.master, *(w for _, w in self.workers)]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)

    def log(self) -> str:
        return (self.master_dir / "master.log").read_text(errors="replace")

    def locust_total(self) -> int:
        """Locust's own count of every request, from its --json-file."""
        stats = json.loads((self.master_dir / "stats.json").read_text())
        return sum(int(e["num_requests"]) for e in stats)


def test_a_master_and_two_workers_on_other_machines_record_every_request_once(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path)
    try:
        code = cluster.finish()
    finally:
        cluster.stop()
    log = cluster.log()
    assert code == 0, log[-3000:]
    (folder,) = (cluster.master_dir / "results").iterdir()
    info = json.loads((folder / "run.json").read_text())
    req = info["requests"]
    rows = {w: sum(parts_of(folder, w).values()) for w in ("worker0", "worker1")}
    assert info["status"] == "completed" and req["workers"] == ["worker0", "worker1"]
    assert req["rows"] == sum(rows.values()) == req["locust"] == cluster.locust_total() > 100
    for w, r in req["by_worker"].items():
        assert r["closed"] and r["on_disk"] == r["sent"] == r["locust"] == rows[w] > 0, (w, r)
    last = f"meshload: exit 0 (measured): completed; {req['rows']:,} requests on disk = Locust's"
    assert last in log
    html = (folder / "report.html").read_text()
    counted = "; ".join(f"{w} {rows[w]:,} = Locust&#x27;s" for w in sorted(rows))
    assert f"{req['rows']:,} = Locust&#x27;s ({counted})" in html


def test_workers_that_cannot_see_the_masters_folder_land_every_acknowledged_record(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path)
    master_dir, workers = cluster.master_dir, cluster.workers
    try:
        results = master_dir / "results"
        deadline = time.monotonic() + 60
        folder = None
        while time.monotonic() < deadline:  # the victim has landed parts: kill it mid-run
            found = list(results.glob("*/requests")) if results.is_dir() else []
            if found and len(parts_of(found[0].parent, "worker1")) >= 3:
                folder = found[0].parent
                break
            time.sleep(0.2)
        assert folder is not None, (master_dir / "master.log").read_text()[-3000:]
        # the master numbers its workers: worker1 is whoever notes its acks as worker1
        victim_dir, victim = next(
            (d, p) for d, p in workers if list(d.glob("results/*/acked/worker1-*.jsonl"))
        )
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        code = cluster.finish()
    finally:
        cluster.stop()
    log = cluster.log()
    assert code == 4, log[-3000:]  # a lost worker: not measured as planned
    info = json.loads((folder / "run.json").read_text())
    # nothing of the master's folder was written by a worker: each saw an empty tmpfs there
    for own, _ in workers:
        assert not (own / "results" / folder.name / "requests").exists()
    # which worker index each process got, from the ledgers it wrote in its own folder
    ledgers = {own.name: sorted(own.glob("results/*/acked/*.jsonl")) for own, _ in workers}
    index_of = {name: found[0].stem.split("-")[0] for name, found in ledgers.items() if found}
    killed, survivor = (
        index_of[victim_dir.name],
        next(v for k, v in index_of.items() if k != victim_dir.name),
    )
    by_worker = info["requests"]["by_worker"]
    for own, _ in workers:
        name = index_of[own.name]
        acked, landed = acknowledged(own / "results"), parts_of(folder, name)
        assert acked and all(landed.get(seq) == rows for seq, rows in acked.items()), (
            name, acked, landed,
        )  # fmt: skip
        assert len(set(landed) - set(acked)) <= 1, (name, acked, landed)  # one ack in flight
    alive = by_worker[survivor]
    assert alive["closed"] and alive["on_disk"] == alive["written"] == alive["sent"]
    assert alive["on_disk"] == alive["locust"] > 100, alive
    gone = by_worker[killed]
    assert not gone["closed"] and gone["on_disk"] == sum(parts_of(folder, killed).values())
    assert gone["sent"] is not None and gone["sent"] >= sum(
        acknowledged(victim_dir / "results").values()
    )
    assert gone["missing"] == max(gone["locust"] - gone["on_disk"], 0), gone
    assert any(f.startswith(f"worker(s) lost: {killed}") for f in info["failure"]), info["failure"]
    assert info["requests"]["rows"] == gone["on_disk"] + alive["on_disk"]
    health = build_report(folder, progress=False).summary["run_health"]
    assert health["line"].startswith("NOT MEASURED AS PLANNED: worker(s) lost: ")
    assert health["requests"]["rows"] == info["requests"]["rows"]
    print("by worker:", json.dumps(by_worker))
