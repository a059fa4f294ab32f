"""loadgen.gates: the live gates over the canary's last window of records."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadgen.gates import Gates
from loadgen.options import Settings
from meshcore.runfolder import RunFolder
from tests.records import request_table


def write_part(folder: RunFolder, seq: int, rows: list[tuple[int, float, bool, str]]) -> None:
    start_ns, latency_ms, ok, version = (list(c) for c in zip(*rows, strict=True))
    table = request_table(
        len(rows), start_ns=start_ns, latency_ms=latency_ms, ok=ok, version=version
    )
    folder.write_part(table, "w", 1, seq)


def test_error_gate_trips_on_the_canary_only(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "run")
    rng = random.Random(3)
    now = 100 * 10**9
    # v1 fails a lot (not the canary); v2 fails 10 % in the last window, 0 % before it
    rows = [(now - 30 * 10**9 + i, 1.0, True, "v2") for i in range(100)]
    rows += [(now - rng.randrange(5 * 10**9), 1.0, i % 10 != 0, "v2") for i in range(200)]
    rows += [(now - rng.randrange(5 * 10**9), 1.0, False, "v1") for i in range(200)]
    write_part(folder, 0, rows)
    settings = Settings(gate_error_rate=0.05, gate_window_s=10)
    trips: list[dict[str, Any]] = []
    gates = Gates.from_settings(settings, "v2", folder, trips.append)
    assert gates is not None and gates.canary == "v2"
    event = gates.check(now)
    assert event is not None and event["gate"] == "error_rate"
    assert event["n"] == 200 and event["value"] == pytest.approx(0.1)
    strict = Gates(folder=folder, canary="v2", on_fail=trips.append, error_rate=0.2)
    assert strict.check(now) is None


def test_p99_gate_uses_the_window(tmp_path: Path) -> None:
    folder = RunFolder.create(tmp_path, "run")
    now = 50 * 10**9
    lat = [float(i) for i in range(1, 101)]
    write_part(folder, 0, [(now - 10**9, x, True, "v2") for x in lat])
    gates = Gates(folder=folder, canary="v2", on_fail=lambda e: None, p99_ms=98.5)
    event = gates.check(now)
    # the report's percentile (linear between ranks), not a nearest rank
    assert event is not None and event["value"] == float(np.percentile(lat, 99)) == 99.01
    assert (
        Gates(folder=folder, canary="v2", on_fail=lambda e: None, p99_ms=99.01).check(now) is None
    )
    assert Gates.from_settings(Settings(), "v2", folder, lambda e: None) is None
