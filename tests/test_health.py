"""analysis.health: the report's first line says how the run really ended."""

from __future__ import annotations

from analysis.health import CUT_SHORT_AFTER_S, run_health

NOW = 1_800_000_000 * 10**9


def test_a_completed_run_is_measured() -> None:
    h = run_health({"status": "completed", "requests": {"rows": 900, "locust": 900}}, now_ns=NOW)
    assert h["ok"] and h["line"] == "Measured as planned" and h["reasons"] == []


def test_a_failed_run_says_why_first() -> None:
    meta = {"status": "failed", "failure": ["the embedded mesh's envoy exited (code -9) at step 1"],
            "exit_code": 4}  # fmt: skip
    h = run_health(meta, now_ns=NOW)
    assert not h["ok"] and h["exit_code"] == 4
    assert (
        h["line"] == "NOT MEASURED AS PLANNED: the embedded mesh's envoy exited (code -9) at step 1"
    )


def test_a_run_left_running_was_cut_short_at_its_last_heartbeat() -> None:
    beat = NOW - int((CUT_SHORT_AFTER_S + 1) * 1e9)
    h = run_health({"status": "running", "updated_ns": beat}, now_ns=NOW)
    assert not h["ok"] and h["status"] == "cut short"
    assert h["line"].startswith("CUT SHORT: the run did not finish: the run was cut short")
    assert "2027-01-15 07:59:29 UTC" in h["line"]
    fresh = run_health({"status": "running", "updated_ns": NOW - 10**9}, now_ns=NOW)
    assert fresh["status"] == "running" and not fresh["ok"]


def test_interruptions_telemetry_losses_and_count_mismatches_are_said() -> None:
    meta = {
        "status": "interrupted",
        "events": [
            {"kind": "interrupted", "signal": "SIGTERM"},
            {"kind": "mesh_child_exited", "child": "tracestore", "telemetry": True, "step": 2},
        ],
        "requests": {"rows": 120, "locust": 118},
    }
    h = run_health(meta, now_ns=NOW)
    assert not h["ok"] and h["line"].startswith("Interrupted (SIGTERM)")
    assert any("tracestore exited at step 2" in r for r in h["reasons"])
    assert "120 request records on disk, Locust counted 118" in h["reasons"]
    telemetry_only = {"status": "completed", "events": meta["events"][1:]}
    assert run_health(telemetry_only, now_ns=NOW)["ok"], "telemetry loss does not break the run"


def test_a_folder_of_another_tool_is_not_held_against_it() -> None:
    assert run_health({}, now_ns=NOW)["ok"]


def test_a_run_whose_master_process_is_gone_was_cut_short_at_once() -> None:
    import os
    import socket

    here = socket.gethostname()
    gone = {"status": "running", "updated_ns": NOW, "master": {"host": here, "pid": 2**22 + 7}}
    assert run_health(gone, now_ns=NOW)["status"] == "cut short"
    alive = {**gone, "master": {"host": here, "pid": os.getpid()}}
    assert run_health(alive, now_ns=NOW)["status"] == "running"
    elsewhere = {**gone, "master": {"host": here + "-other", "pid": 2**22 + 7}}
    assert run_health(elsewhere, now_ns=NOW)["status"] == "running"


def test_a_lost_workers_records_are_reconciled_with_what_locust_could_count() -> None:
    workers = {
        "worker0": {"on_disk": 400, "locust": 400, "closed": True},
        "worker1": {"on_disk": 130, "locust": 71, "closed": False},  # its last report, stale
        "worker2": {"on_disk": 50, "locust": 58, "closed": False},  # its last part never came
    }
    meta = {"status": "failed", "failure": ["worker(s) lost: worker1, worker2"],
            "requests": {"rows": 580, "locust": 529, "by_worker": workers}}  # fmt: skip
    reasons = run_health(meta, now_ns=NOW)["reasons"]
    assert (
        "worker1: 130 on disk, Locust counted 71 (a lost worker: its last 59 landed after its last "
        "stats report)" in reasons
    )
    assert (
        "worker2: 50 on disk, Locust counted 58 (a lost worker: 8 that Locust counted never landed)"
        in reasons
    )
    assert not any(r.startswith("worker0") for r in reasons)
