"""The v1 query API and the receiver against an in-process trace store: Jaeger's own formats
against the real fixtures, and the search parameters against a plain computation."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshsim.serving import Served
from meshsim.tracestore import SpanStore, serve

pytestmark = pytest.mark.integration  # every test serves a store on 127.0.0.1
FIXTURES = Path(__file__).parent / "fixtures" / "jaeger"
T0 = 1_790_000_000_000_000_000
PB = "application/x-protobuf"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def istio_request(
    seed: int, n_traces: int
) -> tuple[ExportTraceServiceRequest, list[dict[str, Any]]]:
    """Gateway SERVER span -> frontend SERVER span per trace, Istio-style string attributes."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    by_service = {}
    for service in ("istio-ingressgateway", "frontend"):
        rs = request.resource_spans.add()
        for key, value in (("service.name", service), ("k8s.pod.name", f"{service}-0")):
            kv = rs.resource.attributes.add()
            kv.key, kv.value.string_value = key, value
        scope = rs.scope_spans.add()
        scope.scope.name = "envoy"
        by_service[service] = scope
    truth = []
    for t in range(n_traces):
        trace_id = rng.randbytes(16)
        revision = rng.choice(("v1", "v2"))
        status = rng.choice(("200", "200", "503"))
        start = T0 + t * 10_000_000
        duration = rng.randrange(100_000, 5_000_000)
        gw = by_service["istio-ingressgateway"].spans.add()
        gw.trace_id, gw.span_id, gw.name, gw.kind = trace_id, rng.randbytes(8), "ingress", 2
        gw.start_time_unix_nano, gw.end_time_unix_nano = start, start + duration
        app = by_service["frontend"].spans.add()
        app.trace_id, app.span_id, app.parent_span_id = trace_id, rng.randbytes(8), gw.span_id
        app.name, app.kind = "GET /product", 2
        app.start_time_unix_nano = start + 50_000
        app.end_time_unix_nano = start + duration - 50_000
        for span in (gw, app):
            for key, value in (
                ("istio.canonical_service", "frontend"),
                ("istio.canonical_revision", revision),
                ("upstream_cluster", f"outbound|80|{revision}|frontend"),
                ("http.status_code", status),
                ("component", "proxy"),
            ):
                kv = span.attributes.add()
                kv.key, kv.value.string_value = key, value
            if status == "503":
                span.status.code, span.status.message = 2, "upstream failure"
        event = app.events.add()
        event.time_unix_nano, event.name = start + 60_000, "cache miss"
        kv = event.attributes.add()
        kv.key, kv.value.int_value = "attempt", 1
        truth.append(
            {
                "trace_id": trace_id.hex(),
                "revision": revision,
                "status": status,
                "start_us": start // 1000,
                "duration_ns": duration,
            }
        )
    return request, truth


Client = Callable[[str], Awaitable[tuple[int, str, Any]]]
Running = Served[SpanStore]


def with_store(
    test: Callable[[Running, Client, list[dict[str, Any]]], Awaitable[None]],
    max_spans: int = 10_000,
) -> None:
    async def main() -> None:
        running = await serve(max_spans=max_spans)
        request, truth = istio_request(seed=3, n_traces=30)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(
                    f"{running.url()}/v1/traces",
                    data=request.SerializeToString(),
                    headers={"Content-Type": PB},
                ) as resp:
                    assert resp.status == 200
                await running.state.wait_spilled()

                async def get(path: str) -> tuple[int, str, Any]:
                    async with session.get(running.url() + path) as resp:
                        text = await resp.text()
                        return resp.status, resp.content_type, json.loads(text)

                await test(running, get, truth)
        finally:
            await running.close()

    asyncio.run(main())


def assert_tag(tag: dict[str, Any]) -> None:
    assert set(tag) == {"key", "type", "value"}
    expected = {
        "string": (str,),
        "bool": (bool,),
        "int64": (int, str),
        "float64": (float, int),
        "binary": (str,),
    }[tag["type"]]
    assert isinstance(tag["value"], expected) and (tag["type"] == "bool") == isinstance(
        tag["value"], bool
    ), tag


def assert_v1_like(ours: Any, ref: Any, path: str = "") -> None:
    """Same keys and same JSON types as the fixture, recursively (tags checked by type)."""
    if isinstance(ref, dict) and not (ref and set(ref) == {"key", "type", "value"}):
        assert isinstance(ours, dict) and set(ours) == set(ref), (path, ours, ref)
        for key in ref:
            if key == "processes":
                for pid, proc in ours[key].items():
                    assert pid.startswith("p")
                    assert_v1_like(proc, next(iter(ref[key].values())), f"{path}.{key}")
            else:
                assert_v1_like(ours[key], ref[key], f"{path}.{key}")
    elif isinstance(ref, dict):
        assert_tag(ours)
    elif isinstance(ref, list):
        assert isinstance(ours, list) or ours is None, path
        for item in ours or []:
            if ref:
                assert_v1_like(item, ref[0], f"{path}[]")
            elif isinstance(item, dict) and set(item) == {"key", "type", "value"}:
                assert_tag(item)
    elif ref is None:
        assert ours is None or isinstance(ours, list), path
    else:
        assert type(ours) is type(ref), (path, ours, ref)


def test_v1_trace_matches_the_jaeger_fixtures_key_for_key() -> None:
    async def check(running: Running, get: Client, truth: list[dict[str, Any]]) -> None:
        status, ctype, body = await get(f"/api/traces/{truth[0]['trace_id']}")
        assert (status, ctype) == (200, "application/json")
        envelope_ref = fixture("otlp2jaeger-out.json")
        assert_v1_like(body, envelope_ref)
        assert_v1_like(body["data"][0], fixture("ui_01.json"))
        trace = body["data"][0]
        assert trace["traceID"] == truth[0]["trace_id"]
        assert [p["serviceName"] for p in trace["processes"].values()] == [
            "istio-ingressgateway",
            "frontend",
        ]
        gw, app = trace["spans"]
        assert gw["references"] == []
        assert app["references"] == [
            {"refType": "CHILD_OF", "traceID": trace["traceID"], "spanID": gw["spanID"]}
        ]
        assert gw["startTime"] == truth[0]["start_us"]
        assert gw["duration"] == truth[0]["duration_ns"] // 1000
        tags = {t["key"]: t for t in app["tags"]}
        assert tags["otel.scope.name"]["value"] == "envoy"
        assert tags["span.kind"] == {"key": "span.kind", "type": "string", "value": "server"}
        for key in ("istio.canonical_revision", "http.status_code", "upstream_cluster"):
            assert tags[key]["type"] == "string", "Istio attributes stay strings"
        if truth[0]["status"] == "503":
            assert tags["error"] == {"key": "error", "type": "bool", "value": True}
            assert tags["otel.status_code"]["value"] == "ERROR"
        else:
            assert "error" not in tags
        assert app["logs"][0]["fields"] == [
            {"key": "event", "type": "string", "value": "cache miss"},
            {"key": "attempt", "type": "int64", "value": 1},
        ]
        assert app["processID"] == "p2" and gw["processID"] == "p1"
        assert trace["processes"]["p1"]["tags"] == [
            {"key": "k8s.pod.name", "type": "string", "value": "istio-ingressgateway-0"}
        ]

        status, ctype, body = await get("/api/traces/" + "ab" * 16)
        assert status == 404 and ctype == "text/plain"
        assert body == {
            "data": None,
            "total": 0,
            "limit": 0,
            "offset": 0,
            "errors": [{"code": 404, "msg": "trace not found"}],
        }

    with_store(check)


def test_v1_services_operations_and_errors() -> None:
    async def check(running: Running, get: Client, truth: list[dict[str, Any]]) -> None:
        _, _, body = await get("/api/services")
        assert body == {
            "data": ["frontend", "istio-ingressgateway"],
            "total": 2,
            "limit": 0,
            "offset": 0,
            "errors": None,
        }
        _, _, body = await get("/api/services/frontend/operations")
        assert body["data"] == ["GET /product"] and body["total"] == 1
        _, _, body = await get("/api/operations?service=frontend&spanKind=server")
        assert body["data"] == [{"name": "GET /product", "spanKind": "server"}]
        status, _, body = await get("/api/traces?lookback=1h")
        assert status == 400
        assert body["errors"] == [{"code": 400, "msg": "parameter 'service' is required"}]
        assert body["data"] is None
        for bad in (
            "minDuration=abc",
            "limit=0",
            "tags=notjson",
            "tag=novalue",
            "start=2&end=1",
            "minDuration=2ms&maxDuration=1ms",
        ):
            status, _, body = await get(f"/api/traces?service=frontend&{bad}")
            assert status == 400 and body["errors"][0]["code"] == 400, bad

    with_store(check)


def _v1_search(params: dict[str, str]) -> str:
    return "/api/traces?" + urlencode(
        {"start": str(T0 // 1000 - 1), "end": str(T0 // 1000 + 10**9), **params}
    )


def test_v1_search_filters_agree_with_plain_computation() -> None:
    async def check(running: Running, get: Client, truth: list[dict[str, Any]]) -> None:
        def ids(body: dict[str, Any]) -> set[str]:
            return {t["traceID"] for t in body["data"]}

        def want(pred: Callable[[dict[str, Any]], bool]) -> set[str]:
            return {t["trace_id"] for t in truth if pred(t)}

        _, _, body = await get(_v1_search({"service": "frontend", "limit": "1000"}))
        assert ids(body) == want(lambda t: True) and body["total"] == 0
        _, _, body = await get(
            _v1_search(
                {
                    "service": "frontend",
                    "limit": "1000",
                    "tags": '{"istio.canonical_revision": "v2"}',
                }
            )
        )
        assert ids(body) == want(lambda t: t["revision"] == "v2") != set()
        _, _, by_tag = await get(
            _v1_search(
                {"service": "frontend", "limit": "1000", "tag": "istio.canonical_revision:v2"}
            )
        )
        assert ids(by_tag) == ids(body)
        _, _, body = await get(
            _v1_search(
                {"service": "istio-ingressgateway", "limit": "1000", "tags": '{"error": "true"}'}
            )
        )
        assert ids(body) == want(lambda t: t["status"] == "503")
        _, _, body = await get(
            _v1_search({"service": "istio-ingressgateway", "limit": "1000", "minDuration": "2.5ms"})
        )
        assert ids(body) == want(lambda t: t["duration_ns"] >= 2_500_000)
        _, _, body = await get(
            _v1_search({"service": "istio-ingressgateway", "limit": "1000", "maxDuration": "1ms"})
        )
        assert ids(body) == want(lambda t: t["duration_ns"] <= 1_000_000)
        window = {"start": str(truth[10]["start_us"]), "end": str(truth[19]["start_us"])}
        _, _, body = await get(
            "/api/traces?"
            + urlencode({"service": "istio-ingressgateway", "limit": "1000", **window})
        )
        assert ids(body) == {t["trace_id"] for t in truth[10:20]}
        _, _, body = await get(_v1_search({"service": "istio-ingressgateway", "limit": "3"}))
        assert [t["traceID"] for t in body["data"]] == [t["trace_id"] for t in truth[::-1][:3]]
        _, _, body = await get(_v1_search({"service": "frontend", "operation": "ingress"}))
        assert body["data"] == []

    with_store(check)


def test_receiver_answers_as_the_otlp_spec_says() -> None:
    async def check(running: Running, get: Client, truth: list[dict[str, Any]]) -> None:
        url = f"{running.url()}/v1/traces"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=b"", headers={"Content-Type": PB}) as resp:
                assert (resp.status, resp.content_type, await resp.read()) == (200, PB, b"")
            doc: dict[str, list[Any]] = {"resourceSpans": []}
            async with session.post(url, json=doc) as resp:
                assert resp.status == 200 and await resp.json() == {}
            async with session.post(
                url, data=b"\xff\x00junk", headers={"Content-Type": PB}
            ) as resp:
                assert resp.status == 400 and resp.content_type == PB
                status = status_pb2.Status.FromString(await resp.read())
                assert status.code == 3 and "protobuf" in status.message
            async with session.post(
                url, data=b"{", headers={"Content-Type": "application/json"}
            ) as resp:
                assert resp.status == 400 and (await resp.json())["code"] == 3
            async with session.post(url, data=b"x", headers={"Content-Type": "text/csv"}) as resp:
                assert resp.status == 415
        assert running.state.received == 60

    with_store(check)


@pytest.mark.parametrize("max_spans", [8])
def test_answers_are_the_same_after_spilling(max_spans: int) -> None:
    seen: dict[int, Any] = {}

    def record(limit: int) -> Callable[[Running, Client, list[dict[str, Any]]], Awaitable[None]]:
        async def check(running: Running, get: Client, truth: list[dict[str, Any]]) -> None:
            _, _, body = await get(_v1_search({"service": "frontend", "limit": "1000"}))
            seen[limit] = (body, running.state.segment_count)

        return check

    with_store(record(max_spans), max_spans=max_spans)
    with_store(record(10_000), max_spans=10_000)
    assert seen[max_spans][1] > 0 and seen[10_000][1] == 0
    assert seen[max_spans][0] == seen[10_000][0]
