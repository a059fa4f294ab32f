"""The embedded mesh records a run's telemetry into its folder as it goes (`Mesh.record`):
every span the trace store received, also when the store is SIGKILLed mid-run, and a report
that reads them without fetching and says what happened."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.report import build_report
from analysis.runfolder import load_run
from analysis.spans import load_spans
from meshcore.errors import BackendError
from meshcore.runfolder import METRICS_DIR, SPANS_DIR, RunFolder
from meshsim.mesh import Mesh
from tests.support import hammer

pytestmark = pytest.mark.integration

FLUSH_S = 2.0  # the trace store's recording flush, as the mesh starts it


def run_folder(path: Path) -> RunFolder:
    folder = RunFolder.create(path, "canary-20260101-000000-abcd")
    folder.write_run(
        {"run_id": folder.path.name, "scenario": "canary", "started_ns": time.time_ns()}
    )
    return folder


def stored_span_ids(url: str, settle_s: float = 1.5, timeout_s: float = 20.0) -> set[str]:
    """Every span the store answers for the last hour, once no more arrive (the exporters
    flush every second)."""
    seen: set[str] = set()
    quiet_since = time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            now = set(load_spans(url, progress=False)["span_id"])
        except BackendError:  # no service known until the first span arrives
            now = set()
        if now != seen:
            seen, quiet_since = now, time.monotonic()
        elif seen and time.monotonic() - quiet_since >= settle_s:
            return seen
        time.sleep(0.3)
    raise AssertionError(f"spans still arriving after {timeout_s} s")


def recorded_span_ids(folder: RunFolder) -> set[str]:
    parts = [p for p in folder.span_parts() if p.parent.name == SPANS_DIR]
    return set(pd.concat([pd.read_parquet(p, columns=["span_id"]) for p in parts])["span_id"])


def test_a_run_folder_gets_every_span_and_sample_and_the_report_reads_them(tmp_path: Path) -> None:
    folder = run_folder(tmp_path)
    with Mesh(prometheus=False) as mesh:
        assert mesh.jaeger_url is not None
        mesh.record(folder.path)
        tally = hammer(mesh.gateway_url + "/", 200)
        assert tally.statuses == {200: 200}
        stored = stored_span_ids(mesh.jaeger_url)
        started = time.perf_counter()
        mesh.stop_recording()
        assert time.perf_counter() - started < 10
        assert recorded_span_ids(folder) == stored  # all of them, once each
        [spans_state] = folder.recordings(SPANS_DIR)
        [metrics_state] = folder.recordings(METRICS_DIR)
        assert spans_state["done"] and metrics_state["done"]
        assert spans_state["rows"] == len(stored) and metrics_state["rows"] > 0
        url = mesh.jaeger_url
        # As a run's conductor calls it: with the trace store's URL, which is not fetched.
        result = build_report(folder.path, jaeger_url=url, progress=False)
    notes = " | ".join(result.notes)
    assert f"spans recorded during the run: {len(stored):,} spans" in notes
    assert "metrics recorded during the run" in notes
    assert "stopped" not in notes and "--jaeger-url" not in notes
    assert len(load_run(folder.path).spans) == len(stored)


def test_sigkilled_trace_store_leaves_its_spans_and_the_report_says_so(tmp_path: Path) -> None:
    folder = run_folder(tmp_path)
    with Mesh(prometheus=False) as mesh:
        assert mesh.jaeger_url is not None
        url = mesh.jaeger_url
        mesh.record(folder.path)
        hammer(mesh.gateway_url + "/", 150)
        before = stored_span_ids(url)
        time.sleep(FLUSH_S * 1.5)  # more than one flush since the last span arrived
        store = next(c for c in mesh.children if c.name == "tracestore")
        os.kill(store.pid, signal.SIGKILL)
        store.proc.wait(10)
        # The mesh goes on serving; its exporters drop what they cannot send.
        assert hammer(mesh.gateway_url + "/", 100).statuses == {200: 100}
        started = time.perf_counter()
        mesh.stop_recording()  # the store is gone: logged, not raised, not waited for
        assert time.perf_counter() - started < 10
    recorded = recorded_span_ids(folder)
    assert before <= recorded
    [state] = folder.recordings(SPANS_DIR)
    assert state["done"] is False and state["rows"] == len(recorded)

    # The conductor's report passes the (dead) store's URL; a later `meshload report` none.
    meta = json.loads(folder.run_json.read_text())
    folder.write_run({**meta, "telemetry": {"jaeger_url": url, "prometheus_url": None}})
    for kwargs in ({"jaeger_url": url}, {}):
        notes = " | ".join(build_report(folder.path, progress=False, **kwargs).notes)
        assert f"the trace store stopped before the run ended: {len(recorded)} spans" in notes
        assert "--jaeger-url" not in notes and "traces not fetched" not in notes
        if kwargs:  # asked to fetch: says why it did not
            assert "spans recorded during the run" in notes
    assert len(load_run(folder.path).spans) == len(recorded)
