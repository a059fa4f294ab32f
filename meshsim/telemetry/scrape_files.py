"""The files between the mesh and its scraper child: the targets it scrapes, the rounds done.

Kept apart from `scrape` so the mesh never imports pyarrow to start or wait for a scraper.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

from meshcore.files import write_json
from meshsim.procs import Child
from meshsim.prometheus import Target


def write_targets(path: str | os.PathLike[str], targets: Sequence[Target]) -> None:
    doc = {"targets": [{"url": t.url, "job": t.job, "labels": dict(t.labels)} for t in targets]}
    write_json(path, doc)


def read_targets(path: str | os.PathLike[str]) -> list[Target]:
    doc = json.loads(Path(path).read_text())
    return [Target(t["url"], t["job"], dict(t.get("labels", {}))) for t in doc["targets"]]


def write_status(path: Path, scrapes: int, failures: int, written: int) -> None:
    """`scrapes` rounds done, `written` of them in parts of the run folder."""
    write_json(path, {"scrapes": scrapes, "failures": failures, "written": written})


def read_rounds(path: Path, key: str = "scrapes") -> int:
    try:
        return int(json.loads(path.read_text())[key])
    except (OSError, ValueError, KeyError):
        return 0


def wait_scraper_rounds(path: Path, child: Child, rounds: int, timeout_s: float) -> bool:
    """Wait until the scraper finished `rounds` more rounds (2: one whole round began after
    this call) and wrote them into the run folder. False when it died or the time ran out:
    telemetry never blocks for long."""
    want = read_rounds(path) + rounds
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if read_rounds(path, "written") >= want:
            return True
        if not child.alive():
            return False
        time.sleep(0.05)
    return False
