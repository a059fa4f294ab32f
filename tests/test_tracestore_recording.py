"""The trace store's recording into a run folder: every span received lands in a part, the
rows are the ones analysis reads back through Jaeger's APIs, a failing write loses nothing it
can keep, and a store killed with SIGKILL leaves what it received up to one flush before."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from analysis.frames import SPAN_COLUMNS, from_arrow
from analysis.runfolder import load_run
from analysis.spans import load_spans
from meshcore.runfolder import SPANS_DIR, RunFolder
from meshcore.schemas import SPAN_SCHEMA
from meshsim.tracestore import serve
from meshsim.tracestore.receiver import Row, decode
from meshsim.tracestore.recording import Recording, span_table
from tests.tracestore_child import start_store

T0_US = 1_790_000_000_000_000
PB = "application/x-protobuf"


def export(seed: int, n_traces: int) -> tuple[bytes, set[str]]:
    """An export of gateway -> frontend traces: typed attributes, an error status with a
    message, events, scopes and resources as Istio's Envoy and an SDK write them. Times are
    whole microseconds, so Jaeger v1 (which answers in µs) loses nothing of them."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    scopes = {}
    for service, version in (("istio-ingressgateway", ""), ("frontend", "v2")):
        rs = request.resource_spans.add()
        resource = {"service.name": service, "k8s.pod.name": f"{service}-0"}
        if version:
            resource["service.version"] = version
        for key, value in resource.items():
            kv = rs.resource.attributes.add()
            kv.key, kv.value.string_value = key, value
        scope = rs.scope_spans.add()
        scope.scope.name, scope.scope.version = "envoy", "1.31"
        scopes[service] = scope
    span_ids = set()
    for t in range(n_traces):
        trace_id = rng.randbytes(16)
        start = (T0_US + t * 10_000) * 1000
        gw = scopes["istio-ingressgateway"].spans.add()
        gw.trace_id, gw.span_id, gw.name, gw.kind = trace_id, rng.randbytes(8), "ingress", 2
        gw.start_time_unix_nano, gw.end_time_unix_nano = (
            start,
            start + rng.randrange(100, 5000) * 1000,
        )
        app = scopes["frontend"].spans.add()
        app.trace_id, app.span_id, app.parent_span_id = trace_id, rng.randbytes(8), gw.span_id
        app.name, app.kind = "GET /product", rng.choice((1, 2, 3))
        app.start_time_unix_nano = start + 50_000
        app.end_time_unix_nano = gw.end_time_unix_nano - 50_000
        status = rng.choice(("200", "503"))
        for span in (gw, app):
            for key, value in (
                ("istio.canonical_service", "frontend"),
                ("istio.canonical_revision", rng.choice(("v1", "v2"))),
                ("http.status_code", status),
            ):
                kv = span.attributes.add()
                kv.key, kv.value.string_value = key, value
            kv = span.attributes.add()
            kv.key, kv.value.int_value = "retries", rng.randrange(3)
            kv = span.attributes.add()
            kv.key, kv.value.bool_value = "cached", rng.random() < 0.5
            kv = span.attributes.add()
            kv.key, kv.value.double_value = "ratio", rng.choice((0.25, 1.5))
            if status == "503":
                span.status.code, span.status.message = 2, "upstream failure"
            else:
                span.status.code = rng.choice((0, 1))
            span_ids.add(span.span_id.hex())
        event = app.events.add()
        event.time_unix_nano, event.name = start + 60_000, "cache miss"
    return request.SerializeToString(), span_ids


def rows_of(body: bytes) -> list[Row]:
    return decode(body, PB)


def frame_of_parts(folder: RunFolder) -> pd.DataFrame:
    tables = [pq.read_table(p) for p in folder.span_parts() if p.parent.name == SPANS_DIR]
    for table in tables:
        assert table.schema.equals(SPAN_SCHEMA)
    return from_arrow(pa.concat_tables(tables, schema=SPAN_SCHEMA), SPAN_COLUMNS)[0]


def by_span(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as plain values (None for missing), ordered by span id."""
    assert list(frame.columns) == list(SPAN_COLUMNS)
    plain = frame.astype(object).where(frame.notna(), None)
    return sorted(plain.to_dict("records"), key=lambda row: row["span_id"])


# -- the recorder on its own ----------------------------------------------------------------
def test_every_row_lands_in_a_part_and_the_state_says_done(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    recording = Recording(folder, flush_s=0.05)
    assert folder.recordings(SPANS_DIR)[0]["done"] is False  # visible from the start
    expected: set[str] = set()
    for seed in range(4):
        body, ids = export(seed, 25)
        recording.add(rows_of(body))
        expected |= ids
        time.sleep(0.12)  # a flush in between: several parts
    counts = recording.close()
    parts = [p for p in folder.span_parts() if p.parent.name == SPANS_DIR]
    assert len(parts) == counts["parts"] >= 2
    frame = frame_of_parts(folder)
    assert set(frame["span_id"]) == expected and len(frame) == len(expected) == counts["rows"]
    [state] = folder.recordings(SPANS_DIR)
    assert state == {
        "writer": "tracestore",
        "pid": os.getpid(),
        "rows": len(expected),
        "parts": len(parts),
        "lost": 0,
        "done": True,
    }
    assert recording.close() == counts  # closing twice changes nothing


def test_a_failing_write_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = RunFolder(tmp_path)
    recording = Recording(folder, flush_s=3600)  # flushed by hand here
    body, ids = export(1, 20)
    blocker = tmp_path / SPANS_DIR
    shutil.rmtree(blocker)  # the state marker went there already
    blocker.write_text("a file where the parts folder was")
    with caplog.at_level(logging.ERROR, logger="meshsim.tracestore.recording"):
        recording.add(rows_of(body))
        recording.flush()
        recording.flush()
    assert recording.pending == len(ids) and recording.write_error is not None
    assert len([r for r in caplog.records if "cannot record spans" in r.message]) == 1
    blocker.unlink()  # the disk is back: nothing was lost
    counts = recording.close()
    assert counts == {"rows": len(ids), "parts": 1, "lost": 0}
    assert set(frame_of_parts(folder)["span_id"]) == ids


def test_rows_beyond_the_pending_limit_are_dropped_and_counted(tmp_path: Path) -> None:
    (tmp_path / SPANS_DIR).write_text("never a folder")
    recording = Recording(RunFolder(tmp_path), flush_s=3600, max_pending=30)
    body, ids = export(2, 25)  # 50 spans
    recording.add(rows_of(body))
    recording.flush()
    assert recording.pending == 30 and recording.state.lost == 20
    assert recording.close() == {"rows": 0, "parts": 0, "lost": 50}


def test_a_span_that_cannot_become_a_row_is_left_out_not_retried(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    recording = Recording(folder, flush_s=3600)
    body, ids = export(4, 10)
    rows = rows_of(body)
    broken = rows[0][:10] + (b"\xff\xff",)  # span bytes protobuf cannot read
    recording.add([*rows[:5], broken, *rows[5:]])
    recording.flush()
    assert recording.pending == 0 and recording.state.lost == 1
    assert recording.close() == {"rows": len(ids), "parts": 1, "lost": 1}
    assert set(frame_of_parts(folder)["span_id"]) == ids


def test_the_receive_path_only_keeps_references(tmp_path: Path) -> None:
    recording = Recording(RunFolder(tmp_path), flush_s=3600)
    rows = rows_of(export(3, 5)[0])
    recording.add(rows)
    assert all(a is b for a, b in zip(recording._pending, rows, strict=True))
    recording.close()


# -- the same spans through Jaeger's APIs ---------------------------------------------------
@pytest.mark.integration
def test_recorded_rows_equal_what_analysis_reads_through_jaeger_v1_and_v3(tmp_path: Path) -> None:
    body, ids = export(7, 40)
    trace_ids = sorted({r[0].hex() for r in rows_of(body)})

    async def main() -> tuple[list[Any], list[Any]]:
        running = await serve(record_dir=tmp_path, record_flush_s=0.05)
        try:
            async with aiohttp.ClientSession() as session:
                url = running.url()
                async with session.post(
                    f"{url}/v1/traces", data=body, headers={"Content-Type": PB}
                ) as resp:
                    assert resp.status == 200
                v1, v3 = [], []
                for trace_id in trace_ids:
                    for path, out in (
                        (f"/api/traces/{trace_id}", v1),
                        (f"/api/v3/traces/{trace_id}", v3),
                    ):
                        async with session.get(url + path) as resp:
                            out.append(json.loads(await resp.text()))
                async with session.delete(f"{url}/_meshload/recording?quiet_s=0.05") as resp:
                    assert resp.status == 200
                    assert await resp.json() == {"rows": len(ids), "parts": 1, "lost": 0}
                return v1, v3
        finally:
            await running.close()

    v1_docs, v3_docs = asyncio.run(main())
    recorded = by_span(load_run_spans(tmp_path))
    assert {row["span_id"] for row in recorded} == ids
    for docs in (v1_docs, v3_docs):
        read = by_span(pd.concat([load_spans(doc) for doc in docs], ignore_index=True))
        assert read == recorded
    # The rule reached every column: errors, versions, statuses, typed attributes.
    assert {row["version"] for row in recorded} == {"v1", "v2"}
    assert {row["status_code"] for row in recorded} == {200, 503}
    attributes = [json.loads(row["attributes"]) for row in recorded]
    assert any(a.get("error") is True for a in attributes)
    assert {type(a["retries"]) for a in attributes} == {int}
    assert all(a["otel.scope.name"] == "envoy" for a in attributes)


def load_run_spans(path: Path) -> pd.DataFrame:
    (path / "run.json").write_text(json.dumps({"schema_version": 1, "run_id": "r"}))
    return load_run(path).spans


def test_span_table_of_no_rows_is_an_empty_table() -> None:
    assert span_table([]).num_rows == 0 and span_table([]).schema.equals(SPAN_SCHEMA)


@pytest.mark.integration
def test_recording_endpoints_refuse_what_they_cannot_do(tmp_path: Path) -> None:
    async def main() -> None:
        running = await serve()
        try:
            async with aiohttp.ClientSession() as session:
                url = f"{running.url()}/_meshload/recording"
                async with session.delete(url) as resp:
                    assert resp.status == 404  # not recording
                async with session.put(url, json={"dir": str(tmp_path / "missing")}) as resp:
                    assert resp.status == 400 and "not a folder" in (await resp.json())["error"]
                async with session.put(url, data=b"{") as resp:
                    assert resp.status == 400
                async with session.put(url, json={"dir": str(tmp_path)}) as resp:
                    assert resp.status == 200
                assert running.state.recording is not None
        finally:
            await running.close()  # SIGTERM's path: the recording is written and done

    asyncio.run(main())
    assert RunFolder(tmp_path).recordings(SPANS_DIR)[0]["done"] is True


# -- the real process, killed ---------------------------------------------------------------
@pytest.fixture
def store_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    run = tmp_path / "run"
    run.mkdir()
    proc, url = start_store(tmp_path, "--record-dir", str(run), "--record-flush-s", "0.5")
    try:
        yield proc, url, run
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(f"{url}/v1/traces", data=body, headers={"Content-Type": PB})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


@pytest.mark.integration
def test_sigkill_keeps_every_span_received_one_flush_before(
    store_process: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    proc, url, run = store_process
    before: set[str] = set()
    for seed in range(3):
        body, ids = export(seed, 30)
        _post(url, body)
        before |= ids
    time.sleep(1.2)  # more than two flush intervals (0.5 s) since the last of them
    late_body, late = export(99, 30)
    _post(url, late_body)  # received, but maybe not yet written: the kill may lose these
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    folder = RunFolder(run)
    recorded = set(frame_of_parts(folder)["span_id"])
    assert before <= recorded <= before | late
    [state] = folder.recordings(SPANS_DIR)
    assert state["done"] is False and state["pid"] == proc.pid
    assert state["rows"] == len(recorded)
    # A write the kill cut short is a hidden temporary, never a part.
    assert all(p.name.endswith(".tmp") for p in (run / SPANS_DIR).glob(".*"))
