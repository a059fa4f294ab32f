"""OTLP/HTTP trace decoding: a request body (protobuf or JSON, maybe compressed) -> span rows.

Every span becomes one `Row` tuple holding only what the store indexes, plus the span, its
resource and its scope as serialized protobuf. Attributes stay encoded until a query needs
them: the embedded mesh traces every request, and decoding each attribute into Python objects
on the way in would cost more than everything else together.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from collections.abc import Sequence
from itertools import repeat
from operator import attrgetter
from typing import Any, Final, NoReturn

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshcore.errors import ConfigError

# The serviceName Jaeger's OTLP translator gives a resource without `service.name`.
NO_SERVICE_NAME = "OTLPResourceNoServiceName"

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# Row fields, in tuple order. A plain tuple keeps ingestion at C speed.
TRACE_ID: Final = 0
SPAN_ID: Final = 1
START_NS: Final = 2
END_NS: Final = 3
SERVICE: Final = 4
NAME: Final = 5
KIND: Final = 6
STATUS: Final = 7
RESOURCE: Final = 8
SCOPE: Final = 9
SPAN: Final = 10
Row = tuple[bytes, bytes, int, int, str, str, int, int, bytes, bytes, bytes]

_ID_KEYS = {
    "traceId": 16,
    "spanId": 8,
    "parentSpanId": 8,
    "trace_id": 16,
    "span_id": 8,
    "parent_span_id": 8,
}


class DecodeFailure(ConfigError):
    """A request body that is not a valid OTLP trace export."""


class UnsupportedMediaType(DecodeFailure):
    """A Content-Type that is neither OTLP protobuf nor OTLP/JSON."""


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header value, lower case."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def decompress(body: bytes, content_encoding: str | None) -> bytes:
    encoding = (content_encoding or "identity").strip().lower()
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, EOFError, zlib.error) as exc:
        raise DecodeFailure(
            f"body is not valid {encoding} data ({exc}); send it uncompressed "
            "or fix the Content-Encoding header"
        ) from exc
    if encoding != "identity":
        raise DecodeFailure(f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    return body


def parse_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """Decode an ExportTraceServiceRequest from protobuf or OTLP/JSON bytes."""
    if content_type == PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except DecodeError as exc:
            raise DecodeFailure(
                f"body is not a protobuf ExportTraceServiceRequest ({exc})"
            ) from exc
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeFailure(f"body is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise DecodeFailure('body is JSON but not an object; send {"resourceSpans": [...]}')
    _normalize_json_ids(doc)
    try:
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise DecodeFailure(f"body is not an OTLP/JSON trace export ({exc})") from exc


def _normalize_json_ids(node: Any) -> None:
    """Rewrite hex ids (the OTLP/JSON spec) as base64 (protobuf's JSON mapping) in place.

    Stores that follow the generic protobuf mapping (Tempo) already send base64; the two are
    told apart by length, which cannot collide for 8- and 16-byte ids.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            size = _ID_KEYS.get(key)
            if size is not None and isinstance(value, str):
                node[key] = _id_to_base64(value, size)
            elif isinstance(value, dict | list):
                _normalize_json_ids(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _normalize_json_ids(item)


def _id_to_base64(value: str, size: int) -> str:
    if len(value) == 2 * size:
        try:
            return base64.b64encode(bytes.fromhex(value)).decode("ascii")
        except ValueError:
            pass
    if value == "":
        return value
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeFailure(f"id {value!r} is neither {2 * size} hex digits nor base64") from exc
    if len(raw) != size:
        raise DecodeFailure(f"id {value!r} holds {len(raw)} bytes, expected {size}")
    return value


def service_name(resource: Any) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return str(kv.value.string_value)
    return NO_SERVICE_NAME


# What a row takes from a span, fetched in one C call per span.
_SPAN_FIELDS = attrgetter(
    "trace_id",
    "span_id",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "name",
    "kind",
    "status.code",
)


def rows_from_request(
    request: ExportTraceServiceRequest, raw_spans: list[bytes] | None = None
) -> list[Row]:
    """Flatten a request into rows; resource and scope bytes are shared between their spans.

    `raw_spans` (from `span_slices` of the request's own bytes, in order) saves serializing
    every span again, the bulk of the decoding cost otherwise. Rows are built a scope at a
    time from columns (`zip` in C), with no Python-level step per span.
    """
    rows: list[Row] = []
    taken = 0
    for resource_spans in request.resource_spans:
        resource = resource_spans.resource
        service = service_name(resource)
        resource_bytes = resource.SerializeToString(deterministic=True)
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            n = len(spans)
            if not n:
                continue
            scope_bytes = scope_spans.scope.SerializeToString(deterministic=True)
            trace_ids, span_ids, starts, ends, names, kinds, statuses = zip(
                *map(_SPAN_FIELDS, spans), strict=True
            )
            if {*map(len, trace_ids)} != {16} or {*map(len, span_ids)} != {8}:
                _reject_ids(trace_ids, span_ids, names)
            if raw_spans is None:
                serialized: list[bytes] = list(map(Span.SerializeToString, spans))
            else:
                serialized = raw_spans[taken : taken + n]
                taken += n
            rows += zip(
                trace_ids,
                span_ids,
                starts,
                ends,
                repeat(service, n),
                names,
                kinds,
                statuses,
                repeat(resource_bytes, n),
                repeat(scope_bytes, n),
                serialized,
                strict=True,
            )
    if raw_spans is not None and taken != len(raw_spans):
        raise ValueError(f"{len(raw_spans)} raw spans for a request of {taken}")
    return rows


def _reject_ids(
    trace_ids: Sequence[bytes], span_ids: Sequence[bytes], names: Sequence[str]
) -> NoReturn:
    for trace_id, span_id, name in zip(trace_ids, span_ids, names, strict=True):
        if len(trace_id) != 16 or len(span_id) != 8:
            raise DecodeFailure(
                f"span {name!r} has a {len(trace_id)}-byte trace id and a "
                f"{len(span_id)}-byte span id; OTLP needs 16 and 8"
            )
    raise AssertionError("no span has a wrong id length")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _field(data: bytes, pos: int) -> tuple[int, int, int]:
    """The field at `pos`: (tag, where its payload starts, where the field ends); for a
    length-delimited field the payload is data[start:end]. ValueError on a group."""
    tag = data[pos]
    if tag < 0x80:
        pos += 1
    else:
        tag, pos = _varint(data, pos)
    wire = tag & 7
    if wire == 2:
        size = data[pos]
        if size < 0x80:
            pos += 1
        else:
            size, pos = _varint(data, pos)
        return tag, pos, pos + size
    if wire == 0:
        return tag, pos, _varint(data, pos)[1]
    if wire == 1:
        return tag, pos, pos + 8
    if wire == 5:
        return tag, pos, pos + 4
    raise ValueError(f"wire type {wire}")


def _embedded(data: bytes, start: int, end: int, number: int) -> list[tuple[int, int]]:
    """(start, end) of every length-delimited field `number` in data[start:end], in order;
    other fields are skipped. ValueError on what a plain walk cannot skip (groups)."""
    out = []
    pos = start
    wanted = number << 3 | 2
    while pos < end:
        tag, at, pos = _field(data, pos)
        if tag == wanted:
            out.append((at, pos))
    if pos != end:
        raise ValueError("field runs past its message")
    return out


_SPANS_TAG = 2 << 3 | 2  # ScopeSpans.spans: field 2, length-delimited


def _spans(data: bytes, pos: int, end: int, out: list[bytes]) -> None:
    """Append the bytes of every span in the ScopeSpans data[pos:end] to `out`.

    The walk of `_embedded` with its common case inlined: a span tag and a length of one or
    two bytes (a span under 16 kB) cost a few byte reads, no call."""
    append = out.append
    while pos < end:
        if data[pos] == _SPANS_TAG:
            size = data[pos + 1]
            if size < 0x80:
                pos += 2
            elif data[pos + 2] < 0x80:
                size = (size & 0x7F) | data[pos + 2] << 7
                pos += 3
            else:
                size, pos = _varint(data, pos + 1)
            append(data[pos : pos + size])
            pos += size
        else:
            tag, at, pos = _field(data, pos)
            if tag == _SPANS_TAG:  # a tag written in more bytes than it needs
                append(data[at:pos])
    if pos != end:
        raise ValueError("field runs past its message")


def span_slices(body: bytes) -> list[bytes] | None:
    """Every span of a protobuf ExportTraceServiceRequest as its own bytes, in order.

    Only for a body protobuf already parsed (it is not validated here); None when the walk
    meets what it does not handle, and the caller serializes the parsed spans instead.
    Encoders write a message's fields once each in field order (the OTLP exporters, Envoy,
    meshsim.telemetry), so a span's bytes are what serializing it again would give.
    """
    spans: list[bytes] = []
    try:
        for rs_start, rs_end in _embedded(body, 0, len(body), 1):  # resource_spans
            for ss_start, ss_end in _embedded(body, rs_start, rs_end, 2):  # scope_spans
                _spans(body, ss_start, ss_end, spans)
    except (ValueError, IndexError):
        return None
    return spans


def decode(body: bytes, content_type: str | None, content_encoding: str | None = None) -> list[Row]:
    """One POST /v1/traces body -> rows. Raises DecodeFailure on anything unreadable."""
    kind = media_type(content_type)
    if kind not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}; send {PROTOBUF} or {JSON}"
        )
    data = decompress(body, content_encoding)
    request = parse_request(data, kind)
    raw = span_slices(data) if kind == PROTOBUF else None
    if raw is not None and len(raw) != sum(
        len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans
    ):
        raw = None
    return rows_from_request(request, raw)
