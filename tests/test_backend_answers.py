"""Telemetry answers as real backends give them (issue 14, item 7), from recorded answers.

Prometheus: answers recorded from the Debian Prometheus 2.42 binary (a `warnings` list from
an unreachable remote-read endpoint, native histograms pushed through its remote-write
receiver) and Cortex's copy of a Prometheus answer with `infos`; Jaeger: its own
`/api/transform` answer that holds one span twice. tests/fixtures/RECORDED.md says how each
was made. The notes checked are the ones `fetch_telemetry` hands to the report.
"""

from __future__ import annotations

import copy
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.fetch import fetch_telemetry
from analysis.prometheus import PrometheusClient, parse_response
from analysis.runfolder import load_run
from analysis.spans import load_spans
from analysis.spans_formats import SpanRows, parse_document
from meshsim.prometheus import Prometheus, free_port

FIXTURES = Path(__file__).parent / "fixtures"
PROM = FIXTURES / "prometheus"
WARNINGS = PROM / "prometheus-2.42-warnings-matrix.json"
MIXED = PROM / "prometheus-2.42-mixed-vector.json"
HIST_MATRIX = PROM / "prometheus-2.42-histograms-matrix.json"
HIST_RANGE = PROM / "prometheus-2.42-histograms-range.json"
INFOS = PROM / "cortex-infos-matrix.json"
TWICE = FIXTURES / "jaeger" / "otlp2jaeger-out.json"  # Jaeger's answer, one span held twice
UI_01 = FIXTURES / "jaeger" / "ui_01.json"
WARNED = "Prometheus answered with a warning (its data kept): "


def _doc(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def _histogram_samples(doc: dict[str, Any]) -> int:
    result = doc["data"]["result"]
    return sum(len(s.get("histograms", [])) + ("histogram" in s) for s in result)


def test_an_answer_with_warnings_keeps_its_data_and_notes_each_warning() -> None:
    doc = _doc(WARNINGS)
    assert doc["status"] == "success" and len(doc["warnings"]) == 1
    notes: list[str] = []
    frame = parse_response(doc, notes=notes)
    points = [(float(t), float(v)) for s in doc["data"]["result"] for t, v in s["values"]]
    assert sorted(zip(frame["t"], frame["value"], strict=True)) == sorted(points)
    assert len(frame) == 10
    assert notes == [WARNED + doc["warnings"][0]]
    assert "remote_read" in notes[0]
    parse_response(doc, notes=notes)  # a second answer saying the same adds nothing
    assert len(notes) == 1


def test_infos_become_notes_too() -> None:
    doc = _doc(INFOS)
    notes: list[str] = []
    frame = parse_response(doc, notes=notes)
    assert frame["value"].tolist() == [137.0, 137.0]
    assert notes == [f"Prometheus answered with an info (its data kept): {doc['infos'][0]}"]
    assert "might not be a counter" in notes[0]


@pytest.mark.parametrize("path", [HIST_MATRIX, HIST_RANGE], ids=["query", "query_range"])
def test_native_histogram_series_are_counted_in_a_note(path: Path) -> None:
    doc = _doc(path)
    result = doc["data"]["result"]
    assert all("histograms" in s and "values" not in s for s in result)
    notes: list[str] = []
    frame = parse_response(doc, notes=notes)
    assert frame.empty
    histogram_notes = [n for n in notes if "native-histogram" in n]
    assert histogram_notes == [
        f"{len(result)} native-histogram series of istio_request_duration_milliseconds left out "
        f"({_histogram_samples(doc)} histogram samples): the metrics frame holds floats only; "
        "query histogram_count(), histogram_sum() or histogram_quantile() of them instead"
    ]
    assert len(result) == 2


def test_a_mixed_answer_keeps_its_floats_and_counts_the_histogram() -> None:
    doc = _doc(MIXED)
    floats = [s for s in doc["data"]["result"] if "value" in s]
    notes: list[str] = []
    frame = parse_response(doc, notes=notes)
    assert sorted(frame["metric"]) == sorted(s["metric"]["__name__"] for s in floats)
    assert sorted(frame["value"]) == sorted(float(s["value"][1]) for s in floats)
    assert notes[0].startswith(WARNED)
    assert notes[1].startswith("1 native-histogram series of istio_request_duration_milliseconds")
    assert "(1 histogram samples)" in notes[1]


class _Replay(ThreadingHTTPServer):
    """Answers each path with recorded bytes (the query string is ignored) and counts hits."""

    def __init__(self, routes: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _ReplayHandler)
        self.routes = routes
        self.hits: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ReplayHandler(BaseHTTPRequestHandler):
    server: _Replay

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        path = self.path.split("?", 1)[0]
        self.server.hits.append(path)
        body = self.server.routes.get(path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture
def replay() -> Iterator[Any]:
    servers: list[_Replay] = []

    def start(routes: dict[str, bytes]) -> _Replay:
        server = _Replay(routes)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_the_client_notes_each_warning_and_histogram_series_once(replay: Any) -> None:
    doc = _doc(HIST_MATRIX)
    server = replay({"/api/v1/query": HIST_MATRIX.read_bytes()})
    client = PrometheusClient(server.url, timeout_s=5)
    t_end = max(t for s in doc["data"]["result"] for t, _ in s["histograms"])
    frame = client.raw_samples("istio_request_duration_milliseconds", t_end - 60, t_end, chunk_s=30)
    assert frame.empty and server.hits == ["/api/v1/query"] * 2  # two chunks, two answers
    assert client.notes[0] == WARNED + doc["warnings"][0]
    assert len(client.notes) == 2  # the warning once, one line for the histograms
    assert client.notes[1].startswith("2 native-histogram series")  # the same two, twice


def _run_folder(tmp_path: Path, trace_id: str, started_s: float, ended_s: float) -> Path:
    run = tmp_path / "run-1"
    run.mkdir()
    started_ns, ended_ns = int(started_s * 1e9), int(ended_s * 1e9)
    meta = {"schema_version": 1, "run_id": "run-1", "started_ns": started_ns}
    (run / "run.json").write_text(json.dumps({**meta, "ended_ns": ended_ns}))
    table = pa.table(
        {
            "start_ns": [started_ns],
            "latency_ms": [1.5],
            "trace_id": [trace_id],
            "status": [200],
        }
    )
    pq.write_table(table, run / "requests.parquet")
    return run


@pytest.mark.integration
def test_fetch_hands_prometheus_warnings_to_the_report(replay: Any, tmp_path: Path) -> None:
    doc = _doc(WARNINGS)
    prometheus = replay({"/api/v1/query": WARNINGS.read_bytes()})
    times = [float(t) for s in doc["data"]["result"] for t, _ in s["values"]]
    run = _run_folder(tmp_path, "", min(times), max(times))
    notes = fetch_telemetry(
        run,
        prometheus_url=prometheus.url,
        metrics=("istio_requests_total",),
        margin_s=0,
        progress=False,
    )
    assert WARNED + doc["warnings"][0] in notes
    assert "10 samples of 1 metrics fetched" in notes
    assert len(load_run(run).metrics) == 10


@pytest.mark.integration
def test_fetch_hands_the_duplicate_span_count_to_the_report(replay: Any, tmp_path: Path) -> None:
    spans = _doc(TWICE)["data"][0]["spans"]
    jaeger = replay(
        {
            "/api/services": json.dumps({"data": ["telemetrygen"]}).encode(),
            "/api/traces": TWICE.read_bytes(),
        }
    )
    start_s = spans[0]["startTime"] / 1e6
    run = _run_folder(tmp_path, spans[0]["traceID"], start_s, start_s + 1)
    notes = fetch_telemetry(run, jaeger_url=jaeger.url, margin_s=0, progress=False)
    assert [n for n in notes if "duplicate spans" in n] == [
        "1 duplicate spans (same trace, span id and content as another span of the same "
        "answer: reported twice) kept once, as Jaeger's query service does"
    ]
    assert "1 spans of 1 traces fetched from " + jaeger.url in notes
    assert len(load_run(run).spans) == 1


def test_a_span_held_twice_in_one_answer_is_kept_once_and_counted() -> None:
    spans = _doc(TWICE)["data"][0]["spans"]
    distinct = {json.dumps(s, sort_keys=True) for s in spans}
    assert len(spans) == 2 and len(distinct) == 1
    notes: list[str] = []
    frame = load_spans(TWICE, notes=notes)
    assert len(frame) == len(distinct)
    assert len(notes) == 1 and notes[0].startswith(f"{len(spans) - len(distinct)} duplicate spans")


def test_a_trace_read_on_two_pages_is_one_trace_and_no_note() -> None:
    rows = SpanRows(notes=(notes := []))
    once = SpanRows()
    parse_document(_doc(UI_01), once)
    for _ in range(2):  # the same trace answered for two services, or two overlapping pages
        parse_document(_doc(UI_01), rows)
    assert len(rows) == 2 * len(once)
    assert rows.frame().equals(once.frame())
    assert notes == []


def test_a_duplicate_on_two_pages_is_counted_once() -> None:
    rows = SpanRows(notes=(notes := []))
    for _ in range(3):
        parse_document(_doc(TWICE), rows)
    assert len(rows.frame()) == 1
    assert len(notes) == 1 and notes[0].startswith("1 duplicate spans")


def test_spans_sharing_ids_but_not_content_are_all_kept() -> None:
    # The case Jaeger's own dedupe test keeps: "same ID as before, but different metadata".
    doc = _doc(UI_01)
    spans = doc["spans"]
    changed = copy.deepcopy(spans[0])
    changed["duration"] += 1
    spans.append(changed)
    notes: list[str] = []
    frame = load_spans(doc, notes=notes)
    same = frame[
        (frame["span_id"] == spans[0]["spanID"]) & (frame["operation"] == spans[0]["operationName"])
    ]
    assert sorted(same["duration_ms"] * 1000) == [spans[0]["duration"], changed["duration"]]
    assert len(frame) == len(spans) and notes == []


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="no prometheus binary")
def test_a_live_prometheus_warning_keeps_the_data(tmp_path: Path) -> None:
    """The recorded warning again, from the binary itself (remote read to a closed port)."""
    closed = free_port()
    remote = {"url": f"http://127.0.0.1:{closed}/api/v1/read", "read_recent": True}
    prometheus = Prometheus(tmp_path, {"remote_read": [remote]}, ready_timeout_s=15.0)
    try:
        client = PrometheusClient(prometheus.url, timeout_s=10)
        frame = client.query("absent(no_such_metric)")  # reads storage: remote read fails
        assert frame["value"].tolist() == [1.0]
        assert len(client.notes) == 1 and client.notes[0].startswith(WARNED + "remote_read: ")
    finally:
        prometheus.stop()
