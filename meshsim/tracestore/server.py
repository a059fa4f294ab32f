"""The trace store's HTTP face: OTLP/HTTP receiver and Jaeger query APIs on one port.

Real deployments split these (Jaeger takes OTLP/HTTP on 4318 and answers queries on 16686);
the embedded mesh serves both on one port so there is one process and one ports file.
`/_meshload/recording` is the mesh's own: `PUT {"dir": RUN_FOLDER}` starts recording every
span received into that run folder, `DELETE` (once no span arrived for `quiet_s`, 1.5 s by
default: the exporters flush every second) writes the rest and answers the recording's
counts `{"rows", "parts", "lost"}`. `GET /_meshload/stats` answers the store's own counts
`{"received_spans", "memory_spans", "segments"}` (what a benchmark checks its sender against).
Error bodies are written as Jaeger's Go handlers write them (`http.Error`: text/plain, a
trailing newline), so a client tested here copes with the real thing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from google.rpc import status_pb2

from meshcore.runfolder import RunFolder
from meshsim.serving import Served, serve_sites
from meshsim.tracestore import jaeger_v1, jaeger_v2
from meshsim.tracestore.jaeger_v1_text import trace_text, traces_envelope_text
from meshsim.tracestore.otlp import KIND_BY_NAME, KIND_NAMES
from meshsim.tracestore.params import parse_trace_id, v1_search, v3_search
from meshsim.tracestore.query import QueryError
from meshsim.tracestore.receiver import PROTOBUF, DecodeFailure, UnsupportedMediaType, decode
from meshsim.tracestore.recording import DEFAULT_FLUSH_S
from meshsim.tracestore.store import DEFAULT_MAX_SPANS, SpanStore
from meshsim.tracestore.tags import tag_search

log = logging.getLogger(__name__)

STORE_KEY = web.AppKey("store", SpanStore)
_MAX_BODY_BYTES = 64 * 1024 * 1024
_INVALID_ARGUMENT = 3  # google.rpc.Code
DEFAULT_QUIET_S = 1.5


routes = web.RouteTableDef()


def _json(body: Any, status: int = 200) -> web.Response:
    """Compact JSON, as Go's encoders write it."""
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
    )


def _json_text(text: str) -> web.Response:
    """JSON already written as (ASCII) text, e.g. by jaeger_v1_text."""
    return web.Response(body=text.encode(), content_type="application/json")


def _v3_json(body: Any) -> web.Response:
    """Jaeger's v3 gateway writes JSON without a Content-Type, so Go's sniffing calls it
    text/plain; clients of the real thing must not rely on the header, nor here."""
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="text/plain",
        charset="utf-8",
    )


def _go_error(body: Any, status: int) -> web.Response:
    """Go's http.Error: the JSON text as text/plain plus a newline, nosniff."""
    return web.Response(
        status=status,
        text=json.dumps(body, separators=(",", ":")) + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def _v1_error(status: int, message: str) -> web.Response:
    return _go_error(jaeger_v1.error_body(status, message), status)


def _v3_error(status: int, message: str) -> web.Response:
    return _go_error(jaeger_v2.error_body(status, message), status)


# -- OTLP receiver -----------------------------------------------------------------------
@routes.post("/v1/traces")
async def receive(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    is_protobuf = request.content_type == PROTOBUF
    try:
        rows = decode(
            await request.read(),
            request.headers.get("Content-Type"),
            request.headers.get("Content-Encoding"),
        )
    except DecodeFailure as exc:
        status = 415 if isinstance(exc, UnsupportedMediaType) else 400
        if is_protobuf:
            body = status_pb2.Status(code=_INVALID_ARGUMENT, message=str(exc))
            return web.Response(status=status, body=body.SerializeToString(), content_type=PROTOBUF)
        return _json({"code": _INVALID_ARGUMENT, "message": str(exc)}, status)
    await store.add_async(rows)
    # An empty ExportTraceServiceResponse, in the encoding the request came in.
    if is_protobuf:
        return web.Response(body=b"", content_type=PROTOBUF)
    return _json({})


# -- Jaeger v1 (/api) --------------------------------------------------------------------
@routes.get("/api/services")
async def v1_services(request: web.Request) -> web.Response:
    services = request.app[STORE_KEY].services()
    return _json(jaeger_v1.envelope(services or None, total=len(services)))


@routes.get("/api/services/{service}/operations")
async def v1_operations_legacy(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    names = sorted({name for name, _ in store.operations(request.match_info["service"])})
    # Go's nil slice: no operations is `null`, like no services.
    return _json(jaeger_v1.envelope(names or None, total=len(names)))


@routes.get("/api/operations")
async def v1_operations(request: web.Request) -> web.Response:
    service = request.query.get("service", "")
    if not service:
        return _v1_error(400, "parameter 'service' is required")
    kind_name = request.query.get("spanKind", "")
    kind = KIND_BY_NAME.get(kind_name, -1) if kind_name else None
    ops = request.app[STORE_KEY].operations(service, kind)
    data = [{"name": name, "spanKind": KIND_NAMES.get(k, "")} for name, k in ops]
    return _json(jaeger_v1.envelope(data, total=len(data)))


@routes.get("/api/traces")
async def v1_search_traces(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    ids_text = request.query.getall("traceID", [])
    if ids_text:
        return _v1_traces_by_id(store, ids_text)
    try:
        query = v1_search(
            request.query, request.query.getall("tag", []), request.query.getall("tags", [])
        )
    except QueryError as exc:
        return _v1_error(400, str(exc))
    ids = store.find_trace_ids(query, tag_search(query.tags))
    return _json_text(traces_envelope_text(trace_text(rows) for rows in store.traces(ids)))


def _v1_traces_by_id(store: SpanStore, ids_text: list[str]) -> web.Response:
    traces: list[str] = []
    errors: list[dict[str, str]] = []
    for text in ids_text:
        try:
            trace_id = parse_trace_id(text)
        except QueryError as exc:
            return _v1_error(400, f"cannot parse traceID param: {exc}")
        rows = store.trace(trace_id)
        if rows:
            traces.append(trace_text(rows))
        else:
            errors.append(
                {"msg": "trace not found", "traceID": jaeger_v1.trace_id_string(trace_id)}
            )
    return _json_text(traces_envelope_text(traces, errors or None))


@routes.get("/api/traces/{trace_id}")
async def v1_get_trace(request: web.Request) -> web.Response:
    try:
        trace_id = parse_trace_id(request.match_info["trace_id"])
    except QueryError as exc:
        return _v1_error(400, str(exc))
    rows = request.app[STORE_KEY].trace(trace_id)
    if not rows:
        return _v1_error(404, "trace not found")
    return _json_text(traces_envelope_text([trace_text(rows)]))


# -- Jaeger v2 (/api/v3) -----------------------------------------------------------------
@routes.get("/api/v3/services")
async def v3_services(request: web.Request) -> web.Response:
    services = request.app[STORE_KEY].services()
    # gogo jsonpb leaves an empty repeated field out: no services is `{}`.
    return _v3_json({"services": services} if services else {})


@routes.get("/api/v3/operations")
async def v3_operations(request: web.Request) -> web.Response:
    query = request.query
    kind_name = query.get("spanKind") or query.get("span_kind") or ""
    kind = KIND_BY_NAME.get(kind_name, -1) if kind_name else None
    ops = request.app[STORE_KEY].operations(query.get("service", ""), kind)
    data = [{"name": name, "spanKind": KIND_NAMES.get(k, "internal")} for name, k in ops]
    return _v3_json({"operations": data} if data else {})


@routes.get("/api/v3/traces")
async def v3_find_traces(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    try:
        query = v3_search(request.query)
    except QueryError as exc:
        return _v3_error(400, str(exc))
    ids = store.find_trace_ids(query, tag_search(query.tags))
    if not ids:
        return _v3_error(404, jaeger_v2.NO_TRACES_FOUND)
    return _v3_json(jaeger_v2.traces_body(store.traces(ids)))


@routes.get("/api/v3/traces/{trace_id}")
async def v3_get_trace(request: web.Request) -> web.Response:
    try:
        trace_id = parse_trace_id(request.match_info["trace_id"])
    except QueryError as exc:
        return _v3_error(400, f"malformed parameter trace_id: {exc}")
    rows = request.app[STORE_KEY].trace(trace_id)
    if not rows:
        return _v3_error(404, jaeger_v2.NO_TRACES_FOUND)
    return _v3_json(jaeger_v2.traces_body([rows]))


# -- recording into a run folder (the mesh's own) -----------------------------------------
@routes.put("/_meshload/recording")
async def start_recording(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        folder = Path(body["dir"])
        flush_s = float(body.get("flush_s", DEFAULT_FLUSH_S))
    except (ValueError, KeyError, TypeError) as exc:
        return _json({"error": f'send {{"dir": RUN_FOLDER}} ({exc!r})'}, 400)
    if not folder.is_dir():
        return _json({"error": f"{folder}: not a folder; create the run folder first"}, 400)
    if flush_s <= 0:
        return _json({"error": f"flush_s {flush_s}: give a positive number of seconds"}, 400)
    request.app[STORE_KEY].record(RunFolder(folder), flush_s=flush_s)
    return _json({"dir": str(folder)})


@routes.delete("/_meshload/recording")
async def stop_recording(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    try:
        quiet_s = float(request.query.get("quiet_s", DEFAULT_QUIET_S))
    except ValueError:
        return _json({"error": "quiet_s is not a number of seconds"}, 400)
    recording = store.recording
    if recording is None:
        return _json({"error": "not recording"}, 404)
    # Spans of the last requests are still in the exporters' buffers: wait for a quiet spell.
    deadline = time.monotonic() + 4 * quiet_s
    while time.monotonic() - recording.last_received < quiet_s and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    ended = store.end_recording()
    if ended is None:  # another DELETE ended it meanwhile
        return _json({"error": "not recording"}, 404)
    return _json(await asyncio.to_thread(ended.close))


@routes.get("/_meshload/stats")
async def stats(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    return _json(
        {
            "received_spans": store.received,
            "memory_spans": store.memory_count,
            "segments": store.segment_count,
        }
    )


def make_app(store: SpanStore) -> web.Application:
    app = web.Application(client_max_size=_MAX_BODY_BYTES)
    app[STORE_KEY] = store
    app.add_routes(routes)
    return app


async def serve(
    *,
    port: int = 0,
    max_spans: int = DEFAULT_MAX_SPANS,
    spill_dir: Path | None = None,
    record_dir: Path | None = None,
    record_flush_s: float = DEFAULT_FLUSH_S,
) -> Served[SpanStore]:
    """Serve on 127.0.0.1 (port 0: a free one) in the running event loop; `state` is the store.

    Its one site takes OTLP at /v1/traces and Jaeger queries at /api. With `record_dir` (a run
    folder), every span received is also recorded there from the start."""
    store = SpanStore(max_spans=max_spans, spill_dir=spill_dir)
    if record_dir is not None:
        store.record(RunFolder(record_dir), flush_s=record_flush_s)
    return await serve_sites(
        store,
        {"tracestore": make_app(store)},
        port=port,
        close_after=[store.wait_spilled, store.close],
    )
