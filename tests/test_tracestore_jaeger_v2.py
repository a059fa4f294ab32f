"""The v3 (Jaeger v2) query API against an in-process trace store: the real fixture's
shape, field by field, and the search parameters against a plain computation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.test_tracestore_server import T0, Client, Running, fixture, with_store

pytestmark = pytest.mark.integration  # every test serves a store on 127.0.0.1


def _v3_like(ours: dict[str, Any], ref_spans: list[dict[str, Any]]) -> None:
    allowed = set().union(*(s.keys() for s in ref_spans))
    assert (
        {"traceId", "spanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano", "status"}
        <= set(ours)
        <= allowed | {"links", "traceState"}
    )
    for key in ("startTimeUnixNano", "endTimeUnixNano"):
        assert isinstance(ours[key], str) and ours[key].isdigit()
    assert isinstance(ours["kind"], int) and len(ours["traceId"]) == 32
    assert len(ours["spanId"]) == 16 and int(ours["spanId"], 16) >= 0
    keys = [a["key"] for a in ours.get("attributes", [])]
    assert keys == sorted(keys), "Jaeger sorts attributes by key"
    for attr in ours.get("attributes", []) + [
        a for e in ours.get("events", []) for a in e["attributes"]
    ]:
        assert set(attr) == {"key", "value"} and len(attr["value"]) == 1
        if "intValue" in attr["value"]:
            assert isinstance(attr["value"]["intValue"], str)
    assert isinstance(ours["status"], dict)


def test_v3_trace_matches_the_jaeger_ui_fixture() -> None:
    ref = fixture("getTrace-response.json")
    ref_rs = ref["result"]["resourceSpans"]
    ref_spans = [s for rs in ref_rs for ss in rs["scopeSpans"] for s in ss["spans"]]

    async def check(running: Running, get: Client, truth: list[dict[str, Any]]) -> None:
        err = next(t for t in truth if t["status"] == "503")
        status, _, body = await get(f"/api/v3/traces/{err['trace_id']}")
        assert (
            status == 200 and set(body) == {"result"} and set(body["result"]) == {"resourceSpans"}
        )
        rs_list = body["result"]["resourceSpans"]
        assert len(rs_list) == 2
        for rs in rs_list:
            assert set(rs) == set(ref_rs[0]) and set(rs["resource"]) == {"attributes"}
            for ss in rs["scopeSpans"]:
                assert set(ss) == set(ref_rs[0]["scopeSpans"][0])
                assert ss["scope"] == {"name": "envoy"}
                for span in ss["spans"]:
                    _v3_like(span, ref_spans)
                    assert span["traceId"] == err["trace_id"]
                    assert span["status"] == {"message": "upstream failure", "code": 2}
        app = rs_list[1]["scopeSpans"][0]["spans"][0]
        assert app["parentSpanId"] == rs_list[0]["scopeSpans"][0]["spans"][0]["spanId"]
        assert app["events"][0]["attributes"] == [{"key": "attempt", "value": {"intValue": "1"}}]
        status, _, body = await get("/api/v3/traces/" + "cd" * 16)
        assert status == 404
        assert body == {"error": {"httpCode": 404, "message": "No traces found"}}
        status, _, body = await get("/api/v3/traces/nothex")
        assert status == 400 and body["error"]["httpCode"] == 400

    with_store(check)


def test_v3_search_services_and_operations() -> None:
    day = datetime.fromtimestamp(T0 // 10**9, tz=UTC).date()
    lo, hi = f"{day}T00:00:00Z", f"{day + timedelta(days=1)}T00:00:00.000000001+00:00"

    async def check(running: Running, get: Client, truth: list[dict[str, Any]]) -> None:
        _, ctype, body = await get("/api/v3/services")
        assert body == {"services": ["frontend", "istio-ingressgateway"]}
        assert ctype == "text/plain", "Jaeger's v3 gateway sets no type; Go sniffs text/plain"
        _, _, body = await get("/api/v3/operations?service=frontend&span_kind=server")
        assert body == {"operations": [{"name": "GET /product", "spanKind": "server"}]}
        _, _, body = await get("/api/v3/operations?service=frontend&span_kind=client")
        assert body == {}
        base = {
            "query.service_name": "frontend",
            "query.start_time_min": lo,
            "query.start_time_max": hi,
            "query.search_depth": "100",
        }
        status, _, body = await get(
            "/api/v3/traces?"
            + urlencode(
                {
                    **base,
                    "query.attributes": '{"istio.canonical_revision": "v1"}',
                    "query.duration_min": "1ms",
                }
            )
        )
        want = {
            t["trace_id"]
            for t in truth
            if t["revision"] == "v1" and t["duration_ns"] - 100_000 >= 1_000_000
        }
        got = {
            s["traceId"]
            for rs in body["result"]["resourceSpans"]
            for ss in rs["scopeSpans"]
            for s in ss["spans"]
        }
        assert status == 200 and got == want != set()
        status, ctype, body = await get(
            "/api/v3/traces?" + urlencode({**base, "query.service_name": "nope"})
        )
        assert (status, ctype) == (404, "text/plain")
        assert body == {"error": {"httpCode": 404, "message": "No traces found"}}
        status, _, body = await get("/api/v3/traces?query.service_name=frontend")
        assert status == 400 and body == {
            "error": {
                "httpCode": 400,
                "message": "query.start_time_min and query.start_time_max are required",
            }
        }

    with_store(check)
