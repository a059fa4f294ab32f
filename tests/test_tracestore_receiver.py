"""OTLP decoding (protobuf and JSON, hex and base64 ids, kinds, typed values) and the
parameter grammars Jaeger uses (Go durations, RFC 3339 times, trace ids)."""

from __future__ import annotations

import base64
import gzip
import json
import random

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshsim.tracestore.jaeger_v1 import tag, trace_id_string
from meshsim.tracestore.params import parse_rfc3339_ns, parse_trace_id
from meshsim.tracestore.query import QueryError
from meshsim.tracestore.receiver import (
    KIND,
    NAME,
    NO_SERVICE_NAME,
    SERVICE,
    SPAN,
    SPAN_ID,
    START_NS,
    TRACE_ID,
    DecodeFailure,
    UnsupportedMediaType,
    decode,
)

TRACE = bytes(range(1, 17))
SPAN_A = bytes(range(17, 25))
PARENT = bytes(range(25, 33))


def _json_doc(ids: str, kind: object) -> dict[str, object]:
    enc = (lambda b: b.hex()) if ids == "hex" else (lambda b: base64.b64encode(b).decode())
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "frontend"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "envoy"},
                        "spans": [
                            {
                                "traceId": enc(TRACE),
                                "spanId": enc(SPAN_A),
                                "parentSpanId": enc(PARENT),
                                "name": "ingress",
                                "kind": kind,
                                "startTimeUnixNano": "1700000000000000123",
                                "endTimeUnixNano": 1700000000002000123,
                                "attributes": [
                                    {"key": "http.status_code", "value": {"stringValue": "200"}},
                                    {"key": "retries", "value": {"intValue": "3"}},
                                    {"key": "bytes", "value": {"intValue": 42}},
                                    {"key": "ratio", "value": {"doubleValue": 0.25}},
                                    {"key": "sampled", "value": {"boolValue": True}},
                                    {"key": "blob", "value": {"bytesValue": "AAAwOQ=="}},
                                    {
                                        "key": "list",
                                        "value": {"arrayValue": {"values": [{"stringValue": "a"}]}},
                                    },
                                ],
                                "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
                            }
                        ],
                    }
                ],
            }
        ]
    }


@pytest.mark.parametrize("ids", ["hex", "base64"])
@pytest.mark.parametrize("kind", [2, "SPAN_KIND_SERVER"])
def test_json_ids_and_kinds_decode_the_same(ids: str, kind: object) -> None:
    rows = decode(json.dumps(_json_doc(ids, kind)).encode(), "application/json; charset=utf-8")
    assert len(rows) == 1
    row = rows[0]
    assert (row[TRACE_ID], row[SPAN_ID]) == (TRACE, SPAN_A)
    assert (row[SERVICE], row[NAME], row[KIND]) == ("frontend", "ingress", 2)
    assert row[START_NS] == 1700000000000000123
    span = Span.FromString(row[SPAN])
    assert span.parent_span_id == PARENT
    assert span.status.code == 2 and span.status.message == "boom"
    assert span.end_time_unix_nano - span.start_time_unix_nano == 2_000_000


def test_json_typed_attributes_become_jaeger_typed_tags() -> None:
    rows = decode(json.dumps(_json_doc("hex", 2)).encode(), "application/json")
    span = Span.FromString(rows[0][SPAN])
    tags = {kv.key: tag(kv.key, kv.value) for kv in span.attributes}
    assert tags["http.status_code"] == {"key": "http.status_code", "type": "string", "value": "200"}
    assert tags["retries"]["type"] == "int64" and tags["retries"]["value"] == 3
    assert tags["bytes"]["value"] == 42
    assert tags["ratio"] == {"key": "ratio", "type": "float64", "value": 0.25}
    assert tags["sampled"] == {"key": "sampled", "type": "bool", "value": True}
    assert tags["blob"] == {"key": "blob", "type": "binary", "value": "AAAwOQ=="}
    assert tags["list"] == {"key": "list", "type": "string", "value": '["a"]'}


def test_int64_beyond_javascript_precision_is_a_string() -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id = TRACE, SPAN_A
    kv = span.attributes.add()
    kv.key, kv.value.int_value = "javascript_limit", 9223372036854775222
    rows = decode(request.SerializeToString(), "application/x-protobuf")
    decoded = Span.FromString(rows[0][SPAN]).attributes[0]
    assert tag(decoded.key, decoded.value)["value"] == "9223372036854775222"
    assert rows[0][SERVICE] == NO_SERVICE_NAME


def test_protobuf_batch_round_trips_every_span_in_order() -> None:
    rng = random.Random(7)
    request = ExportTraceServiceRequest()
    expected = []
    for service in ("frontend", "cartservice"):
        rs = request.resource_spans.add()
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", service
        scope = rs.scope_spans.add()
        for i in range(50):
            span = scope.spans.add()
            span.trace_id = rng.randbytes(16)
            span.span_id = rng.randbytes(8)
            span.name = f"op{i % 3}"
            span.kind = rng.choice([1, 2, 3])
            span.start_time_unix_nano = rng.randrange(1, 2**62)
            expected.append(
                (
                    span.trace_id,
                    span.span_id,
                    service,
                    span.name,
                    span.kind,
                    span.start_time_unix_nano,
                )
            )
    body = request.SerializeToString()
    for encoding, payload in (("identity", body), ("gzip", gzip.compress(body))):
        rows = decode(payload, "application/x-protobuf", encoding)
        got = [(r[TRACE_ID], r[SPAN_ID], r[SERVICE], r[NAME], r[KIND], r[START_NS]) for r in rows]
        assert got == expected


@pytest.mark.parametrize(
    ("body", "ctype", "encoding"),
    [
        (b"\xff\xff\xff garbage", "application/x-protobuf", None),
        (b"{not json", "application/json", None),
        (b"[1, 2]", "application/json", None),
        (b'{"resourceSpans": 5}', "application/json", None),
        (b"plain", "application/json", "gzip"),
        (
            json.dumps(
                {
                    "resourceSpans": [
                        {
                            "scopeSpans": [
                                {"spans": [{"traceId": "zz", "spanId": "0102030405060708"}]}
                            ]
                        }
                    ]
                }
            ).encode(),
            "application/json",
            None,
        ),
    ],
)
def test_garbage_is_a_decode_failure(body: bytes, ctype: str, encoding: str | None) -> None:
    with pytest.raises(DecodeFailure) as info:
        decode(body, ctype, encoding)
    assert not isinstance(info.value, UnsupportedMediaType)
    assert "\n" not in str(info.value)


def test_unknown_content_type_is_its_own_failure() -> None:
    with pytest.raises(UnsupportedMediaType, match="text/plain"):
        decode(b"{}", "text/plain")


def test_rfc3339_nanoseconds_and_offsets() -> None:
    assert parse_rfc3339_ns("p", "1970-01-01T00:00:01Z") == 1_000_000_000
    assert parse_rfc3339_ns("p", "2026-11-25T18:00:00.123456789Z") == 1795629600_123456789
    assert parse_rfc3339_ns("p", "2026-11-25T19:00:00.5+01:00") == 1795629600_500000000
    with pytest.raises(QueryError, match="malformed parameter p"):
        parse_rfc3339_ns("p", "2026-11-25 18:00:00")


def test_trace_ids_print_and_parse_like_jaeger() -> None:
    short = bytes(8) + bytes.fromhex("0000000000000001")
    assert trace_id_string(short) == "0000000000000001"
    assert trace_id_string(TRACE) == TRACE.hex()
    assert parse_trace_id("1") == short
    assert parse_trace_id(TRACE.hex().upper()) == TRACE
    for bad in ("", "xyz", "1" * 33):
        with pytest.raises(QueryError):
            parse_trace_id(bad)
