"""Trace files -> the spans frame: every fixture, OTLP spelling variants and Zipkin.

Expected values are computed here from the raw JSON with plain code, not with the parser.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.frames import SPAN_COLUMNS
from analysis.spans import load_spans
from meshcore.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "jaeger"
OTLP_KIND_NAMES = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _read(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def _assert_schema(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(SPAN_COLUMNS)
    for name, dtype in SPAN_COLUMNS.items():
        assert str(frame[name].dtype) == dtype, name
    assert frame["trace_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert frame["span_id"].str.fullmatch(r"[0-9a-f]{16}").all()


def test_jaeger_v1_bare_trace_ui_01() -> None:
    doc = _read("ui_01.json")
    frame = load_spans(FIXTURES / "ui_01.json")
    _assert_schema(frame)
    assert len(frame) == len(doc["spans"]) == 5
    services = {pid: p["serviceName"] for pid, p in doc["processes"].items()}
    for row, span in zip(frame.itertuples(), doc["spans"], strict=True):
        assert row.trace_id == "0" * 16 + span["traceID"]
        assert row.operation == span["operationName"]
        assert row.service == services[span["processID"]]
        assert row.start_ns == span["startTime"] * 1000
        assert row.duration_ms == span["duration"] / 1000
        assert row.kind == "internal"  # no span.kind tag in this file
    # Parents by Jaeger's rule: the first CHILD_OF in the same trace (span 4's first
    # reference points into trace 0xff and is skipped; FOLLOWS_FROM never wins over CHILD_OF).
    by_span = frame.set_index(frame["span_id"] + "/" + frame["operation"].astype(str))
    assert pd.isna(by_span.loc["0000000000000002/test-general-conversion", "parent_id"])
    assert by_span.loc["0000000000000003/some-operation", "parent_id"] == "0000000000000002"
    assert by_span.loc["0000000000000004/reference-test", "parent_id"] == "0000000000000002"
    assert by_span.loc["0000000000000005/preserveParentID-test", "parent_id"] == "0000000000000004"
    typed = json.loads(by_span.loc["0000000000000002/some-operation", "attributes"])
    assert typed["peer.ipv4"] == 23456 and typed["error"] is True
    assert typed["temperature"] == 72.5 and typed["javascript_limit"] == 9223372036854775222
    assert typed["blob"] == "AAAwOQ=="


def test_jaeger_v1_envelope_counts_a_repeated_span_once() -> None:
    doc = _read("otlp2jaeger-out.json")
    spans = doc["data"][0]["spans"]
    assert len(spans) == 2 and spans[0] == spans[1]  # the file repeats one span
    frame = load_spans(FIXTURES / "otlp2jaeger-out.json")
    _assert_schema(frame)
    assert len(frame) == 1
    row = frame.iloc[0]
    ref = spans[0]["references"][0]
    assert row["trace_id"] == spans[0]["traceID"] and row["span_id"] == spans[0]["spanID"]
    assert row["parent_id"] == ref["spanID"]
    assert row["service"] == "telemetrygen" and row["kind"] == "server"
    assert row["duration_ms"] == pytest.approx(spans[0]["duration"] / 1000)


def _plain_otlp_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for rs in doc["result"]["resourceSpans"]:
        attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
        service = attrs["service.name"]["stringValue"]
        for scope in rs["scopeSpans"]:
            for s in scope["spans"]:
                status = None
                for a in s.get("attributes", []):
                    if a["key"] in ("http.status_code", "http.response.status_code"):
                        status = int(a["value"]["intValue"])
                start, end = int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"])
                rows.append(
                    {
                        "span_id": s["spanId"],
                        "parent_id": s.get("parentSpanId") or None,
                        "service": service,
                        "kind": OTLP_KIND_NAMES[s["kind"]],
                        "start_ns": start,
                        "duration_ms": (end - start) / 1e6,
                        "status_code": status,
                    }
                )
    return rows


def test_jaeger_v2_get_trace_response() -> None:
    doc = _read("getTrace-response.json")
    expected = _plain_otlp_rows(doc)
    frame = load_spans(FIXTURES / "getTrace-response.json")
    _assert_schema(frame)
    assert len(frame) == len(expected) == 40
    assert frame["trace_id"].nunique() == 1
    for row, want in zip(frame.to_dict("records"), expected, strict=True):
        for key, value in want.items():
            got = row[key]
            if value is None:
                assert pd.isna(got), key
            else:
                assert got == pytest.approx(value) if key == "duration_ms" else got == value, key
    # The tree holds together: one root, every other parent is a span of the trace.
    assert frame["parent_id"].isna().sum() == 1
    assert set(frame["parent_id"].dropna()) <= set(frame["span_id"])
    errors = frame["attributes"].map(lambda a: json.loads(a).get("otel.status_code"))
    assert (errors == "ERROR").sum() == 3  # three redis spans carry status code 2


def _as_otlp_variant(doc: dict[str, Any]) -> dict[str, Any]:
    """The same trace as Tempo/the protobuf JSON mapping writes it: base64 ids, kind names,
    integer times, plain attributes, no `result` wrapper."""
    out = copy.deepcopy(doc["result"])
    for rs in out["resourceSpans"]:
        for scope in rs["scopeSpans"]:
            for s in scope["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if s.get(key):
                        s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
                s["kind"] = "SPAN_KIND_" + OTLP_KIND_NAMES[s["kind"]].upper()
                s["startTimeUnixNano"] = int(s["startTimeUnixNano"])
                s["endTimeUnixNano"] = int(s["endTimeUnixNano"])
                s["attributes"] = {
                    a["key"]: int(a["value"]["intValue"])
                    if "intValue" in a["value"]
                    else a["value"]["stringValue"]
                    for a in s.get("attributes", [])
                }
                if s.get("status", {}).get("code") == 2:
                    s["status"]["code"] = "STATUS_CODE_ERROR"
    return out


def test_otlp_base64_and_kind_names_give_the_identical_frame(tmp_path: Path) -> None:
    doc = _read("getTrace-response.json")
    variant = _as_otlp_variant(doc)
    assert any(
        len(s["traceId"]) == 24 for s in variant["resourceSpans"][0]["scopeSpans"][0]["spans"]
    )
    path = tmp_path / "tempo.json"
    path.write_text(json.dumps(variant))
    pd.testing.assert_frame_equal(load_spans(path), load_spans(FIXTURES / "getTrace-response.json"))
    # an already-decoded document is accepted too
    pd.testing.assert_frame_equal(load_spans(variant), load_spans(doc))


ZIPKIN_TRACE = [
    {
        "traceId": "463ac35c9f6413ad",
        "id": "a2fb4a1d1a96d312",
        "name": "/productpage",
        "kind": "SERVER",
        "timestamp": 1_700_000_000_000_000,
        "duration": 12_500,
        "localEndpoint": {"serviceName": "istio-ingressgateway"},
        "tags": {"http.status_code": "200", "istio.canonical_revision": "latest"},
    },
    {
        "traceId": "463ac35c9f6413ad",
        "parentId": "a2fb4a1d1a96d312",
        "id": "b7ad6b7169203331",
        "name": "reviews.default.svc.cluster.local:9080/*",
        "kind": "CLIENT",
        "timestamp": 1_700_000_000_001_000,
        "duration": 9_000,
        "localEndpoint": {"serviceName": "productpage"},
        "tags": {"http.status_code": "503", "upstream_cluster": "outbound|9080|v2|reviews"},
    },
    {
        "traceId": "463ac35c9f6413ad",
        "parentId": "b7ad6b7169203331",
        "id": "c0ffee0000000001",
        "name": "load-ratings",
        "timestamp": 1_700_000_000_002_000,
        "duration": 3_250,
        "localEndpoint": {"serviceName": "reviews"},
        "tags": {"istio.canonical_revision": "v2"},
    },
]


def _as_jaeger_v1(spans: list[dict[str, Any]]) -> dict[str, Any]:
    processes: dict[str, dict[str, Any]] = {}
    out = []
    for s in spans:
        pid = f"p{len(processes) + 1}"
        processes[pid] = {"serviceName": s["localEndpoint"]["serviceName"], "tags": []}
        tags = [{"key": k, "type": "string", "value": v} for k, v in s["tags"].items()]
        if "kind" in s:
            tags.append({"key": "span.kind", "type": "string", "value": s["kind"].lower()})
        parent = s.get("parentId")
        refs = [{"refType": "CHILD_OF", "traceID": s["traceId"], "spanID": parent}]
        out.append(
            {
                "traceID": s["traceId"],
                "spanID": s["id"],
                "operationName": s["name"],
                "references": refs if parent else [],
                "startTime": s["timestamp"],
                "duration": s["duration"],
                "tags": tags,
                "processID": pid,
            }
        )
    return {"data": [{"traceID": spans[0]["traceId"], "spans": out, "processes": processes}]}


def test_zipkin_v2_trace_and_its_jaeger_twin() -> None:
    zipkin = load_spans([ZIPKIN_TRACE])  # /api/v2/traces answers a list of traces
    _assert_schema(zipkin)
    assert list(zipkin["trace_id"].unique()) == ["0" * 16 + "463ac35c9f6413ad"]
    assert list(zipkin["kind"]) == ["server", "client", "internal"]
    assert [None if pd.isna(p) else p for p in zipkin["parent_id"]] == [
        None,
        "a2fb4a1d1a96d312",
        "b7ad6b7169203331",
    ]
    assert list(zipkin["duration_ms"]) == [s["duration"] / 1000 for s in ZIPKIN_TRACE]
    assert list(zipkin["status_code"].astype("float").fillna(-1)) == [200, 503, -1]
    assert [None if pd.isna(v) else v for v in zipkin["version"]] == ["latest", None, "v2"]
    jaeger = load_spans(_as_jaeger_v1(ZIPKIN_TRACE))
    columns = [c for c in SPAN_COLUMNS if c != "attributes"]
    pd.testing.assert_frame_equal(zipkin[columns], jaeger[columns])
    assert load_spans(ZIPKIN_TRACE).equals(zipkin)  # one trace: a bare list of spans


def test_version_falls_back_to_the_service_version() -> None:
    doc = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "reviews"}},
                        {"key": "service.version", "value": {"stringValue": "v3"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "ab" * 16,
                                "spanId": "cd" * 8,
                                "parentSpanId": "",
                                "name": "GET",
                                "kind": 0,
                                "startTimeUnixNano": "1000",
                                "endTimeUnixNano": "2501000",
                                "attributes": [
                                    {"key": "http.status_code", "value": {"stringValue": "x"}}
                                ],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    row = load_spans(doc).iloc[0]
    assert row["version"] == "v3" and row["kind"] == "internal"
    assert pd.isna(row["parent_id"]) and pd.isna(row["status_code"])
    assert row["duration_ms"] == 2.5


def test_file_filters_json_lines_and_bad_input(tmp_path: Path) -> None:
    lines = tmp_path / "spans.jsonl"
    lines.write_text(
        json.dumps(_read("getTrace-response.json")) + "\n" + json.dumps(_read("ui_01.json")) + "\n"
    )
    both = load_spans(lines)
    assert both["trace_id"].nunique() == 2 and len(both) == 45
    only = load_spans(lines, service="service-y")
    assert set(only["trace_id"]) == {"0" * 31 + "1"} and len(only) == 5  # whole trace kept
    start = int(
        _read("getTrace-response.json")["result"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0][
            "startTimeUnixNano"
        ]
    )
    assert load_spans(lines, start_ns=start - 10**9)["trace_id"].nunique() == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(ConfigError) as err:
        load_spans(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no such trace file"):
        load_spans(tmp_path / "missing.json")


def test_rows_moved_to_arrow_in_chunks_give_the_same_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = load_spans(FIXTURES / "getTrace-response.json")
    monkeypatch.setattr("analysis.spans_formats._FLUSH_ROWS", 7)
    pd.testing.assert_frame_equal(load_spans(FIXTURES / "getTrace-response.json"), whole)
