"""How a run ended, told truthfully: its status, why it was not measured as planned, its
records reconciled with Locust's own count, its exit code and the last line it prints.

A run is **not measured as planned** (exit code 4) when a process of the embedded mesh that
carries traffic exited, a weight change failed, the plan did not reach its last step (other
than by a live gate's rollback or an interruption), a step's failed requests exceed the
broken-step share, a worker was lost, or records were lost. An interruption (Ctrl-C, SIGTERM)
is 130, a tripped gate or a failed check 3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from meshcore import figures
from meshcore.exitcodes import ExitCode
from meshcore.runfolder import RunFolder


@dataclass
class Outcome:
    """What the master knows at the end of a run; `resolve` turns it into run.json's verdict."""

    plan_done: bool = False
    interrupted: str | None = None  # the signal's name
    rolled_back: bool = False
    check_failed: bool = False
    failures: list[str] = field(default_factory=list)  # why not measured as planned

    def fail(self, reason: str) -> None:
        if reason not in self.failures:
            self.failures.append(reason)

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.failures:
            return "failed"
        if self.rolled_back:
            return "rolled back"
        return "completed" if self.plan_done else "failed"

    @property
    def exit_code(self) -> ExitCode | None:
        """None when Locust's own rule applies (0, or 1 with --exit-code-on-error)."""
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.failures or not (self.plan_done or self.rolled_back):
            return ExitCode.NOT_MEASURED
        if self.rolled_back or self.check_failed:
            return ExitCode.GATE_FAILED
        return None


def on_disk(folder: RunFolder) -> dict[str, int]:
    """Rows on disk per worker label (the first field of a part's name), from parquet footers."""
    out: dict[str, int] = {}
    for part in folder.parts():
        try:
            rows = pq.read_metadata(part).num_rows
        except Exception:  # a broken part is counted as nothing; the report says which
            continue
        worker = part.name.split("-", 1)[0] if part.parent == folder.requests_dir else "file"
        out[worker] = out.get(worker, 0) + rows
    return out


def reconcile(
    folder: RunFolder,
    markers: Sequence[Mapping[str, Any]],
    locust: Mapping[str, int] | None,
    expected: int,
    sent_reported: Mapping[str, int] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """run.json's `requests`: what is on disk per worker against what each capture wrote
    (or sent to the master) and lost and what Locust counted; and the failures they show
    (lost records, lost workers). A worker that never closed its capture counts as sent
    what it last reported (at least what landed), and as missing what Locust counted of it
    beyond what landed."""
    disk = on_disk(folder)
    closed = {str(m.get("worker")): m for m in markers}
    names = sorted(set(disk) | set(closed) | set(locust or {}))
    by_worker: dict[str, dict[str, Any]] = {}
    for w in names:
        m = closed.get(w, {})
        counted = (locust or {}).get(w)
        landed = disk.get(w, 0)
        short = max((counted or 0) - landed, 0) if w not in closed else 0
        by_worker[w] = {
            "on_disk": landed,
            "written": m.get("rows"),
            "sent": m["sent"] if "sent" in m else _at_least((sent_reported or {}).get(w), landed),
            "lost": int(m.get("lost") or 0),
            "locust": counted,
            "closed": w in closed,
            "missing": short,
        }
    lost = sum(int(r["lost"] or 0) for r in by_worker.values())
    failures = []
    if lost:
        failures.append(f"{lost:,} request records could not be written to the run folder")
    missing = [w for w, r in by_worker.items() if not r["closed"] and w != "file"]
    if len(markers) < expected:
        gone = ", ".join(missing) or f"{expected - len(markers)} of {expected}"
        held = sum(int(by_worker[w]["on_disk"] or 0) for w in missing)
        unseen = sum(int(by_worker[w]["missing"] or 0) for w in missing)
        never = f", {unseen:,} that Locust counted did not" if unseen else ""
        failures.append(
            f"worker(s) lost: {gone}; {held:,} of their records reached the folder{never}"
        )
    total_locust = sum(locust.values()) if locust else None
    requests = {
        "rows": sum(disk.values()),
        "parts": len(folder.parts()),
        "workers": sorted(closed),
        "locust": total_locust,
        "lost": lost,
        "by_worker": by_worker,
    }
    return requests, failures


def _at_least(reported: int | None, landed: int) -> int | None:
    """What a worker that never closed sent: what it last reported (every 3 s), and at least
    what landed."""
    return None if reported is None else max(reported, landed)


def broken_steps(table: pa.Table, threshold: float) -> list[dict[str, Any]]:
    """`meshcore.figures.broken_steps` of the recorded requests."""
    if table.num_rows == 0 or "step" not in table.column_names:
        return []
    steps = table.column("step").to_numpy(zero_copy_only=False)
    return figures.broken_steps(steps, table.column("ok").to_numpy(zero_copy_only=False), threshold)


def last_line(info: Mapping[str, Any], code: int) -> str:
    """The run's final line: the exit code, how it ended and why, and the records counted."""
    req = info.get("requests") or {}
    disk, counted = req.get("rows"), req.get("locust")
    records = f"{disk:,} requests on disk" if isinstance(disk, int) else "records not counted"
    if isinstance(counted, int) and isinstance(disk, int):
        records += " = Locust's count" if counted == disk else f", Locust counted {counted:,}"
    status = str(info.get("status"))
    why = "; ".join(info.get("failure") or [])
    meaning = (
        {
            ExitCode.OK: "measured",
            ExitCode.FAILED: "measured; requests failed (--exit-code-on-error)",
            ExitCode.GATE_FAILED: "a gate or check failed",
            ExitCode.NOT_MEASURED: "not measured as planned",
            ExitCode.INTERRUPTED: "interrupted",
        }.get(ExitCode(code), "")
        if code in ExitCode._value2member_map_
        else ""
    )
    text = f"exit {code} ({meaning}): {status}"
    return f"{text}: {why}; {records}" if why else f"{text}; {records}"
