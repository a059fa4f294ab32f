"""What /proc says about a process by PID: resident memory, CPU time, its descendants."""

from __future__ import annotations

import os
from pathlib import Path


def rss_mb(pid: int) -> float | None:
    """VmRSS of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU time of a process so far, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The process's children, their children, and so on (those alive now)."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(k) for k in task.read_text().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU time of a process and all its descendants alive now (0 once all are gone)."""
    return sum(cpu_s(p) or 0.0 for p in [pid, *descendants(pid)])


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants now (0 once all are gone)."""
    return sum(rss_mb(p) or 0.0 for p in [pid, *descendants(pid)])
