"""Trace and metric backends over HTTP, served for real by aiohttp on 127.0.0.1.

Each server answers the documented query API (Jaeger v1 `/api/traces`, Jaeger v2
`/api/v3/traces`, Zipkin `/api/v2/traces`, Prometheus `/api/v1/query`) with the fixture
documents or with synthetic traces filtered by the requested window, and records every query
string, so the tests check what the client sends as well as what it makes of the answers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from analysis.fetch import fetch_telemetry
from analysis.runfolder import load_run
from analysis.spans import load_spans
from meshcore.errors import BackendError
from meshcore.runfolder import METRICS_DIR, SPANS_DIR, RecorderState, RunFolder
from meshcore.schemas import METRIC_SCHEMA, SPAN_SCHEMA

FIXTURES = Path(__file__).parent / "fixtures" / "jaeger"
T0_US = 1_780_000_000_000_000
N_TRACES = 23
GATEWAY = "istio-ingressgateway"

pytestmark = pytest.mark.integration

Calls = list[tuple[str, dict[str, str]]]


class Servers:
    """aiohttp apps on one event loop in a thread; each bound to 127.0.0.1, port 0."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def start(self, app: web.Application) -> str:
        async def go() -> str:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.runners.append(runner)
            return f"http://127.0.0.1:{runner.addresses[0][1]}"

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)

    def close(self) -> None:
        for runner in self.runners:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    s = Servers()
    yield s
    s.close()


def _recording(calls: Calls, handler: Callable[[web.Request], Any]) -> Any:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        calls.append((request.path, dict(request.query)))
        return handler(request)

    return wrapped


def synthetic_v1_traces() -> list[dict[str, Any]]:
    """N one-second-apart traces: gateway server span -> reviews server span."""
    traces = []
    for i in range(N_TRACES):
        trace_id = f"{i + 1:032x}"
        start = T0_US + i * 1_000_000
        root = {
            "traceID": trace_id,
            "spanID": f"{2 * i + 1:016x}",
            "operationName": "/productpage",
            "references": [],
            "startTime": start,
            "duration": 1500 + i,
            "tags": [{"key": "span.kind", "type": "string", "value": "server"}],
            "processID": "p1",
        }
        child = {
            **root,
            **{"spanID": f"{2 * i + 2:016x}", "operationName": "GET /reviews", "processID": "p2"},
            "references": [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": root["spanID"]}],
            **{"startTime": start + 100, "duration": 900},
            "tags": [{"key": "istio.canonical_revision", "type": "string", "value": "v2"}],
        }
        spans = [root, child]
        processes = {"p1": {"serviceName": GATEWAY}, "p2": {"serviceName": "reviews"}}
        traces.append({"traceID": trace_id, "spans": spans, "processes": processes})
    return traces


def jaeger_v1_app(calls: Calls) -> web.Application:
    traces = synthetic_v1_traces()
    ui_01 = json.loads((FIXTURES / "ui_01.json").read_text())

    def search(request: web.Request) -> web.Response:
        q = request.query
        start, end, limit = int(q["start"]), int(q["end"]), int(q["limit"])

        def matches(t: dict[str, Any], s: dict[str, Any]) -> bool:
            service = t["processes"][s["processID"]]["serviceName"]
            return start <= s["startTime"] <= end and service == q["service"]

        hits = [t for t in traces if any(matches(t, s) for s in t["spans"])]
        hits = sorted(hits, key=lambda t: -t["spans"][0]["startTime"])[:limit]
        return web.json_response({"data": hits, "total": 0, "limit": 0, "offset": 0})

    def one(request: web.Request) -> web.Response:
        if request.match_info["id"].lstrip("0") == ui_01["traceID"].lstrip("0"):
            return web.json_response({"data": [ui_01], "total": 0, "errors": None})
        body = {"data": None, "errors": [{"code": 404, "msg": "trace not found"}]}
        return web.json_response(body, status=404)

    def services(request: web.Request) -> web.Response:
        return web.json_response({"data": [GATEWAY, "reviews"], "total": 2})

    app = web.Application()
    app.router.add_get("/api/services", _recording(calls, services))
    app.router.add_get("/api/traces", _recording(calls, search))
    app.router.add_get("/api/traces/{id}", _recording(calls, one))
    return app


def jaeger_v3_app(calls: Calls, *, camel_only: bool = False) -> web.Application:
    """Jaeger v2's HTTP gateway; `camel_only` plays a release that dropped snake_case."""
    raw = (FIXTURES / "getTrace-response.json").read_bytes()
    doc = json.loads(raw)
    first = doc["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    trace_start_ns = int(first["startTimeUnixNano"])
    names = ("query.serviceName", "query.startTimeMin", "query.startTimeMax")
    if not camel_only:
        names = ("query.service_name", "query.start_time_min", "query.start_time_max")

    def search(request: web.Request) -> web.Response:
        q = request.query
        if not all(n in q for n in names):
            return web.Response(status=400, text='{"error":{"httpCode":400,"message":"required"}}')
        lo, hi = _ns(q[names[1]]), _ns(q[names[2]])
        if q[names[0]] == "frontend" and lo <= trace_start_ns <= hi:
            return web.Response(body=raw, content_type="application/json")
        return web.Response(
            status=404, text='{"error":{"httpCode":404,"message":"No traces found"}}'
        )

    def one(request: web.Request) -> web.Response:
        return web.Response(body=raw, content_type="application/json")

    def services(request: web.Request) -> web.Response:
        return web.json_response({"services": ["frontend", "driver"]})

    app = web.Application()
    app.router.add_get("/api/v3/services", _recording(calls, services))
    app.router.add_get("/api/v3/traces", _recording(calls, search))
    app.router.add_get("/api/v3/traces/{id}", _recording(calls, one))
    return app


def _ns(text: str) -> int:
    whole, frac = text.rstrip("Z").split(".")
    seconds = int(datetime.fromisoformat(whole + "+00:00").timestamp())
    return seconds * 10**9 + int(frac.ljust(9, "0"))


_ZIPKIN_ROOT = {
    "traceId": "463ac35c9f6413ad48485a3953bb6124",
    "id": "a2fb4a1d1a96d312",
    "name": "get /productpage",
    "kind": "SERVER",
    "timestamp": T0_US,
    "duration": 4_000,
    "localEndpoint": {"serviceName": GATEWAY},
    "tags": {"http.status_code": "200"},
}
ZIPKIN_SPANS = [
    _ZIPKIN_ROOT,
    {
        **_ZIPKIN_ROOT,
        **{"parentId": "a2fb4a1d1a96d312", "id": "0000000000000abc", "name": "get /reviews"},
        **{"kind": "CLIENT", "timestamp": T0_US + 50, "duration": 2_500},
        "tags": {"http.status_code": "503"},
    },
]


def zipkin_app(calls: Calls) -> web.Application:
    def search(request: web.Request) -> web.Response:
        q = request.query
        end_ms, lookback = int(q["endTs"]), int(q["lookback"])
        inside = end_ms - lookback <= T0_US // 1000 <= end_ms
        return web.json_response([ZIPKIN_SPANS] if inside else [])

    def one(request: web.Request) -> web.Response:
        return web.json_response(ZIPKIN_SPANS)

    def services(request: web.Request) -> web.Response:
        return web.json_response([GATEWAY])

    app = web.Application()
    app.router.add_get("/api/v2/services", _recording(calls, services))
    app.router.add_get("/api/v2/traces", _recording(calls, search))
    app.router.add_get("/api/v2/trace/{id}", _recording(calls, one))
    return app


def test_jaeger_v1_search_reads_every_trace_by_splitting_full_pages(
    servers: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: Calls = []
    base = servers.start(jaeger_v1_app(calls))
    start_ns, end_ns = T0_US * 1000 - 10**9, (T0_US + 60_000_000) * 1000
    frame = load_spans(base, service=GATEWAY, start_ns=start_ns, end_ns=end_ns, limit=5)
    assert frame["trace_id"].nunique() == N_TRACES and len(frame) == 2 * N_TRACES
    searches = [q for path, q in calls if path == "/api/traces"]
    assert len(searches) > N_TRACES // 5
    for q in searches:
        assert q["service"] == GATEWAY and q["limit"] == "5"
        assert start_ns // 1000 <= int(q["start"]) <= int(q["end"]) <= end_ns // 1000 + 1
    assert searches[0]["start"] == str(start_ns // 1000)
    children = frame[frame["service"] == "reviews"]
    parents = frame.set_index("span_id")
    assert (parents.loc[children["parent_id"], "service"] == GATEWAY).all()
    assert (children["version"] == "v2").all() and (children["duration_ms"] == 0.9).all()
    assert "traces" in capsys.readouterr().err  # one progress line per page


def test_jaeger_v1_base_url_all_services_and_single_trace(servers: Servers) -> None:
    calls: Calls = []
    base = servers.start(jaeger_v1_app(calls))
    start_ns = T0_US * 1000
    frame = load_spans(base + "/", start_ns=start_ns, end_ns=start_ns + 10**11, progress=False)
    assert {q["service"] for p, q in calls if p == "/api/traces"} == {GATEWAY, "reviews"}
    assert len(frame) == 2 * N_TRACES  # each trace came twice (once per service), kept once
    one = load_spans(base + "/api/traces/0000000000000001")
    assert len(one) == 5 and set(one["service"]) == {"service-x", "service-y"}
    assert load_spans(base + "/api/traces/00000000000000000000000000000bad").empty
    url = f"{base}/api/traces?service=reviews&start={T0_US}&end={T0_US + 2_500_000}&limit=20"
    assert load_spans(url, progress=False)["trace_id"].nunique() == 3
    assert calls[-1][1] == {
        "service": "reviews",
        "start": str(T0_US),
        "end": str(T0_US + 2_500_000),
        "limit": "20",
    }


@pytest.mark.parametrize("camel_only", [False, True])
def test_jaeger_v3_search_and_get_trace(servers: Servers, camel_only: bool) -> None:
    calls: Calls = []
    base = servers.start(jaeger_v3_app(calls, camel_only=camel_only))
    expected = load_spans(FIXTURES / "getTrace-response.json")
    t = int(expected["start_ns"].min())
    frame = load_spans(base, service="frontend", start_ns=t - 10**9, end_ns=t + 10**9, limit=7)
    pd.testing.assert_frame_equal(frame, expected)
    query = calls[-1][1]
    key = "query.searchDepth" if camel_only else "query.search_depth"
    assert query[key] == "7"
    time_min = query["query.startTimeMin" if camel_only else "query.start_time_min"]
    assert _ns(time_min) == t - 10**9 and time_min.endswith("Z")
    assert [p for p, _ in calls][0] == "/api/v3/services"  # base URL probed first
    empty = load_spans(base, service="driver", start_ns=t - 10**9, end_ns=t + 10**9)
    assert empty.empty and list(empty.columns) == list(expected.columns)
    trace_id = expected["trace_id"].iloc[0]
    pd.testing.assert_frame_equal(load_spans(f"{base}/api/v3/traces/{trace_id}"), expected)


def test_zipkin_search_and_trace(servers: Servers) -> None:
    calls: Calls = []
    base = servers.start(zipkin_app(calls))
    start_ns = T0_US * 1000 - 5 * 10**9
    frame = load_spans(base, start_ns=start_ns, end_ns=start_ns + 10 * 10**9)
    assert list(frame["kind"]) == ["server", "client"]
    assert frame["parent_id"].iloc[1] == "a2fb4a1d1a96d312"
    assert list(frame["duration_ms"]) == [4.0, 2.5]
    q = [q for p, q in calls if p == "/api/v2/traces"][0]
    assert q["serviceName"] == GATEWAY and q["limit"] == "1500"
    assert int(q["endTs"]) == (start_ns + 10 * 10**9) // 10**6
    assert int(q["lookback"]) == 10_000
    single = load_spans(base + "/api/v2/trace/463ac35c9f6413ad48485a3953bb6124")
    pd.testing.assert_frame_equal(single, frame)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_backend_is_one_line() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(BackendError) as err:
        load_spans(url, service="x", timeout_s=2)
    assert url in str(err.value) and "\n" not in str(err.value)


def prometheus_app(calls: Calls, series: dict[str, list[tuple[float, float]]]) -> web.Application:
    """Answers range-vector instant queries `name[Nms]` from in-memory raw samples."""

    def query(request: web.Request) -> web.Response:
        expr, at_s = request.query["query"], float(request.query["time"])
        name, window = expr.rstrip("]").split("[")
        lo = at_s - int(window.removesuffix("ms")) / 1000
        points = [[t, str(v)] for t, v in series.get(name, []) if lo < t <= at_s]
        labels = {"__name__": name, "destination_version": "v2"}
        result = [{"metric": labels, "values": points}] if points else []
        return web.json_response(
            {"status": "success", "data": {"resultType": "matrix", "result": result}}
        )

    app = web.Application()
    app.router.add_get("/api/v1/query", _recording(calls, query))
    return app


def _run_folder(tmp_path: Path, jaeger: str, prometheus: str) -> Path:
    run = tmp_path / "run-1"
    run.mkdir()
    started_ns = T0_US * 1000
    meta = {
        "schema_version": 1,
        "run_id": "run-1",
        "started_ns": started_ns,
        "ended_ns": started_ns + 30 * 10**9,
        "telemetry": {"jaeger_url": jaeger, "prometheus_url": prometheus},
    }
    (run / "run.json").write_text(json.dumps(meta))
    table = pa.table(
        {
            "start_ns": [started_ns, started_ns + 10**9, started_ns + 2 * 10**9],
            "latency_ms": [1.5, 2.0, 3.0],
            "trace_id": [f"{1:032x}", f"{3:032x}", "f" * 32],  # the last was never traced
            "status": [200, 200, 503],
        }
    )
    pq.write_table(table, run / "requests.parquet")
    return run


def test_fetch_telemetry_saves_spans_and_metrics(servers: Servers, tmp_path: Path) -> None:
    jaeger_calls: Calls = []
    prom_calls: Calls = []
    jaeger = servers.start(jaeger_v1_app(jaeger_calls))
    t0 = T0_US / 1e6
    series = {"istio_requests_total": [(t0 + i, 10.0 * i) for i in range(40)]}
    prometheus = servers.start(prometheus_app(prom_calls, series))
    run = _run_folder(tmp_path, jaeger, prometheus)
    notes = fetch_telemetry(run, progress=False)
    assert any("2 of the run's 3 traced requests" in n for n in notes), notes
    assert any("no samples of" in n and "envoy_cluster_upstream_rq_total" in n for n in notes)
    # only the gateway is searched: Jaeger returns whole traces
    assert {q["service"] for p, q in jaeger_calls if p == "/api/traces"} == {GATEWAY}
    # the files carry meshcore's schemas exactly: types, dictionaries and non-null fields
    assert pq.read_schema(run / "spans.parquet").equals(SPAN_SCHEMA)
    assert pq.read_schema(run / "metrics.parquet").equals(METRIC_SCHEMA)
    loaded = load_run(run)
    assert set(loaded.spans["trace_id"]) == {f"{1:032x}", f"{3:032x}"}
    assert len(loaded.spans) == 4
    samples = loaded.metrics[loaded.metrics["metric"] == "istio_requests_total"]
    assert list(samples["t"]) == [t for t, _ in series["istio_requests_total"]]
    assert list(samples["value"]) == [v for _, v in series["istio_requests_total"]]
    assert json.loads(samples["labels"].iloc[0]) == {"destination_version": "v2"}
    first = [q for _, q in prom_calls if q["query"].startswith("istio_requests_total[")][0]
    assert float(first["time"]) == pytest.approx(t0 + 30 + 60, abs=1e-3)  # end + margin


def test_fetch_telemetry_with_backends_down_only_notes(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{_closed_port()}"
    run = _run_folder(tmp_path, down, down)
    notes = fetch_telemetry(run, timeout_s=2, progress=False)
    assert len(notes) == 2
    assert notes[0].startswith("traces not fetched") and notes[1].startswith("metrics not fetched")
    assert not (run / "spans.parquet").exists() and not (run / "metrics.parquet").exists()
    meta = json.loads((run / "run.json").read_text())
    meta["telemetry"] = {"jaeger_url": None, "prometheus_url": None}
    (run / "run.json").write_text(json.dumps(meta))
    assert [n.split(" (")[0] for n in fetch_telemetry(run)] == [
        "no Jaeger URL",
        "no Prometheus URL",
    ]


def test_telemetry_recorded_during_the_run_is_not_fetched_again(
    servers: Servers, tmp_path: Path
) -> None:
    jaeger_calls: Calls = []
    prom_calls: Calls = []
    jaeger = servers.start(jaeger_v1_app(jaeger_calls))
    prometheus = servers.start(prometheus_app(prom_calls, {"istio_requests_total": [(1.0, 1.0)]}))
    run = _run_folder(tmp_path, jaeger, prometheus)
    folder = RunFolder(run)
    for parts_dir, writer, rows in ((SPANS_DIR, "tracestore", 40), (METRICS_DIR, "scraper", 1200)):
        folder.write_recording(parts_dir, RecorderState(writer, 1, rows=rows, parts=3, done=True))
    notes = fetch_telemetry(run, progress=False)
    assert notes == [
        f"spans recorded during the run: 40 spans in 3 parts (spans/); not fetched from {jaeger}",
        "metrics recorded during the run: 1,200 samples in 3 parts (metrics/); not fetched "
        f"from {prometheus}",
    ]
    assert jaeger_calls == [] and prom_calls == []  # not even asked
    assert not (run / "spans.parquet").exists() and not (run / "metrics.parquet").exists()


def test_recorded_parts_without_a_state_are_not_fetched_either(
    servers: Servers, tmp_path: Path
) -> None:
    calls: Calls = []
    jaeger = servers.start(jaeger_v1_app(calls))
    run = _run_folder(tmp_path, jaeger, "")
    spans = pa.table({"trace_id": [f"{1:032x}"], "span_id": ["1" * 16]})
    RunFolder(run).write_telemetry_part(SPANS_DIR, spans, "tracestore", 1, 0)
    notes = fetch_telemetry(run, progress=False)
    assert notes[0] == f"spans recorded during the run: 1 part (spans/); not fetched from {jaeger}"
    assert calls == []
