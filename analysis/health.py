"""Was the run measured as planned? The report's first line, from run.json alone.

run.json's `status` says how the master saw the run end (completed, rolled back, interrupted,
failed with its `failure` reasons). A run left at `running` was cut short: its master died
without a word (SIGKILL, a lost machine), and its heartbeat (`updated_ns`) says when it last
lived; when it ran on this machine and its process is gone, it was cut short at once. The
records are reconciled with Locust's own count (`requests`). A broken run is said
first and loudly; a clean one in one line.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

CUT_SHORT_AFTER_S = 30.0  # a `running` run.json whose heartbeat is this old was cut short


def run_health(meta: Mapping[str, Any], *, now_ns: int | None = None) -> dict[str, Any]:
    """summary.json's `run_health`: status, ok (measured as planned), reasons, the records
    reconciliation, and `line`, the report's first line."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    status = str(meta.get("status") or "unknown")
    reasons = [str(r) for r in meta.get("failure") or []]
    beat = meta.get("updated_ns") or meta.get("started_ns")
    if status == "running":
        age_s = (now_ns - beat) / 1e9 if isinstance(beat, int) else None
        if age_s is None or age_s > CUT_SHORT_AFTER_S or _master_gone(meta):
            status = "cut short"
            reasons.insert(0, f"the run was cut short: its last heartbeat was at {_utc(beat)}")
    events = [e for e in meta.get("events") or [] if isinstance(e, Mapping)]
    for e in events:  # runs before telemetry children failed the run: said here only
        said = any(f"{e.get('child')} exited" in r for r in reasons)
        if e.get("kind") == "mesh_child_exited" and e.get("telemetry") and not said:
            reasons.append(f"telemetry: the embedded mesh's {e.get('child')} exited at step "
                           f"{e.get('step')}; its data is missing from then on")  # fmt: skip
    requests = meta.get("requests") or {}
    disk, counted = requests.get("rows"), requests.get("locust")
    if isinstance(disk, int) and isinstance(counted, int) and disk != counted:
        reasons.append(f"{disk:,} request records on disk, Locust counted {counted:,}")
        reasons += [
            f"{w}: {r['on_disk']:,} on disk, Locust counted {r['locust']:,}{_why(r)}"
            for w, r in sorted((requests.get("by_worker") or {}).items())
            if isinstance(r, Mapping) and isinstance(r.get("locust"), int)
            and r.get("on_disk") != r["locust"]
        ]  # fmt: skip
    ok = status in ("completed", "rolled back") and not meta.get("failure")
    if status == "unknown":  # a folder written by another tool: nothing to say against it
        ok = True
    line = {
        "completed": "Measured as planned",
        "rolled back": "Measured: a live gate rolled the canary back",
        "interrupted": f"Interrupted ({_signal(events)}): the figures cover the run until then",
        "failed": "NOT MEASURED AS PLANNED",
        "cut short": "CUT SHORT: the run did not finish",
    }.get(status, f"Run status {status}")
    if reasons:
        line += ": " + "; ".join(reasons)
    return {
        "status": status,
        "ok": ok,
        "reasons": reasons,
        "exit_code": meta.get("exit_code"),
        "requests": dict(requests) if isinstance(requests, Mapping) else None,
        "line": line,
    }


def _why(worker: Mapping[str, Any]) -> str:
    """Why a lost worker's records and Locust's count of it differ: Locust counts a worker's
    requests in its stats reports (every 3 s), so the requests after its last report are on
    disk and not counted; its records land in order, so what Locust counted beyond what
    landed was lost."""
    if worker.get("closed") is not False:
        return ""
    beyond = int(worker.get("on_disk") or 0) - int(worker["locust"])
    if beyond > 0:
        return f" (a lost worker: its last {beyond:,} landed after its last stats report)"
    return f" (a lost worker: {-beyond:,} that Locust counted never landed)"


def _master_gone(meta: Mapping[str, Any]) -> bool:
    """The master that writes this run.json ran on this host and its process is gone."""
    master = meta.get("master") or {}
    pid = master.get("pid")
    if master.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def _signal(events: list[Mapping[str, Any]]) -> str:
    return next((str(e.get("signal")) for e in events if e.get("kind") == "interrupted"), "signal")


def _utc(ns: Any) -> str:
    if not isinstance(ns, int):
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ns / 1e9))
