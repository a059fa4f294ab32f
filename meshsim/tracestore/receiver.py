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
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshload.errors import ConfigError

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


def rows_from_request(request: ExportTraceServiceRequest) -> list[Row]:
    """Flatten a request into rows; resource and scope bytes are shared between their spans."""
    rows: list[Row] = []
    append = rows.append
    for resource_spans in request.resource_spans:
        resource = resource_spans.resource
        service = service_name(resource)
        resource_bytes = resource.SerializeToString(deterministic=True)
        for scope_spans in resource_spans.scope_spans:
            scope_bytes = scope_spans.scope.SerializeToString(deterministic=True)
            for span in scope_spans.spans:
                trace_id = span.trace_id
                if len(trace_id) != 16 or len(span.span_id) != 8:
                    raise DecodeFailure(
                        f"span {span.name!r} has a {len(trace_id)}-byte trace id and a "
                        f"{len(span.span_id)}-byte span id; OTLP needs 16 and 8"
                    )
                append(
                    (
                        trace_id,
                        span.span_id,
                        span.start_time_unix_nano,
                        span.end_time_unix_nano,
                        service,
                        span.name,
                        span.kind,
                        span.status.code,
                        resource_bytes,
                        scope_bytes,
                        span.SerializeToString(),
                    )
                )
    return rows


def decode(body: bytes, content_type: str | None, content_encoding: str | None = None) -> list[Row]:
    """One POST /v1/traces body -> rows. Raises DecodeFailure on anything unreadable."""
    kind = media_type(content_type)
    if kind not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(
            f"unsupported Content-Type {content_type!r}; send {PROTOBUF} or {JSON}"
        )
    return rows_from_request(parse_request(decompress(body, content_encoding), kind))
