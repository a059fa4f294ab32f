"""Jaeger's v1 query API model (`/api/traces`, the UI JSON), built from stored OTLP spans.

The server answers with `jaeger_v1_text`, which writes the same JSON without building these
dicts; the dicts stay the readable definition it is tested against (and build its rare parts).

Follows what Jaeger v2 does for `/api/traces`: OTLP -> Jaeger model with the collector's
translator (scope tags, attributes, then `span.kind`, `otel.status_code`, `error`,
`otel.status_description`, `w3c.tracestate`), then the UI converter (ids as hex, µs times,
typed tags, processes `p1..` shared by identical resources).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshsim.tracestore.otlp import (
    KIND_NAMES,
    STATUS_ERROR,
    STATUS_OK,
    group_rows,
    resource_of,
    sorted_attributes,
    sorted_events,
    value_as_string,
)
from meshsim.tracestore.receiver import NO_SERVICE_NAME, Row

_JS_MAX_SAFE_INTEGER = (1 << 53) - 1
# jptrace.WarningsAttribute: Jaeger keeps its own span warnings in this attribute.
WARNINGS_ATTRIBUTE = "@jaeger@warnings"


def envelope(
    data: Any,
    *,
    total: int = 0,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Jaeger's structuredResponse; total is the list length for services and operations."""
    return {"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors}


def error_body(code: int, message: str) -> dict[str, Any]:
    return envelope(None, errors=[{"code": code, "msg": message}])


def trace_id_string(trace_id: bytes) -> str:
    """model.TraceID.String(): the high half is left out when it is zero."""
    if trace_id[:8] == b"\x00" * 8:
        return trace_id[8:].hex()
    return trace_id.hex()


def tag(key: str, value: AnyValue) -> dict[str, Any]:
    which = value.WhichOneof("value")
    if which == "bool_value":
        return {"key": key, "type": "bool", "value": value.bool_value}
    if which == "int_value":
        number = value.int_value
        shown: int | str = number if abs(number) <= _JS_MAX_SAFE_INTEGER else str(number)
        return {"key": key, "type": "int64", "value": shown}
    if which == "double_value":
        return {"key": key, "type": "float64", "value": value.double_value}
    if which == "bytes_value":
        encoded = base64.b64encode(value.bytes_value).decode("ascii")
        return {"key": key, "type": "binary", "value": encoded}
    return {"key": key, "type": "string", "value": value_as_string(value)}


def _string_tag(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "type": "string", "value": value}


def tags_of(attributes: Iterable[KeyValue]) -> list[dict[str, Any]]:
    return [tag(kv.key, kv.value) for kv in attributes]


def span_tags(span: Span, scope_name: str, scope_version: str) -> list[dict[str, Any]]:
    tags: list[dict[str, Any]] = []
    if scope_name:
        tags.append(_string_tag("otel.scope.name", scope_name))
    if scope_version:
        tags.append(_string_tag("otel.scope.version", scope_version))
    tags.extend(
        tag(kv.key, kv.value)
        for kv in sorted_attributes(span.attributes)
        if kv.key != WARNINGS_ATTRIBUTE
    )
    if span.kind in KIND_NAMES:
        tags.append(_string_tag("span.kind", KIND_NAMES[span.kind]))
    status = span.status
    if status.code == STATUS_ERROR:
        tags.append(_string_tag("otel.status_code", "ERROR"))
        tags.append({"key": "error", "type": "bool", "value": True})
    elif status.code == STATUS_OK:
        tags.append(_string_tag("otel.status_code", "OK"))
    if status.message:
        tags.append(_string_tag("otel.status_description", status.message))
    if span.trace_state:
        tags.append(_string_tag("w3c.tracestate", span.trace_state))
    return tags


def references(span: Span) -> list[dict[str, str]]:
    trace_id = trace_id_string(span.trace_id)
    refs: list[dict[str, str]] = []
    if span.parent_span_id and span.parent_span_id != b"\x00" * 8:
        refs.append(
            {"refType": "CHILD_OF", "traceID": trace_id, "spanID": span.parent_span_id.hex()}
        )
    for link in span.links:
        ref_type = "FOLLOWS_FROM"
        for kv in link.attributes:
            if kv.key == "opentracing.ref_type" and kv.value.string_value == "child_of":
                ref_type = "CHILD_OF"
        if refs and link.trace_id == span.trace_id and link.span_id == span.parent_span_id:
            refs[0]["refType"] = ref_type
            continue
        refs.append(
            {
                "refType": ref_type,
                "traceID": trace_id_string(link.trace_id),
                "spanID": link.span_id.hex(),
            }
        )
    return refs


def logs(span: Span) -> list[dict[str, Any]]:
    out = []
    for event in sorted_events(span):
        attributes = sorted_attributes(event.attributes)
        fields = []
        if event.name and all(kv.key != "event" for kv in attributes):
            fields.append(_string_tag("event", event.name))
        fields.extend(tags_of(attributes))
        out.append({"timestamp": event.time_unix_nano // 1000, "fields": fields})
    return out


def warnings(span: Span) -> list[str] | None:
    for kv in span.attributes:
        if kv.key == WARNINGS_ATTRIBUTE:
            return [value_as_string(v) for v in kv.value.array_value.values] or None
    return None


def span_to_v1(
    span: Span,
    process_id: str,
    scope_name: str,
    scope_version: str,
) -> dict[str, Any]:
    start_ns = span.start_time_unix_nano
    return {
        "traceID": trace_id_string(span.trace_id),
        "spanID": span.span_id.hex(),
        "operationName": span.name,
        "references": references(span),
        "startTime": start_ns // 1000,
        "duration": max(0, span.end_time_unix_nano - start_ns) // 1000,
        "tags": span_tags(span, scope_name, scope_version),
        "logs": logs(span),
        "processID": process_id,
        "warnings": warnings(span),
    }


def trace_to_v1(rows: Sequence[Row]) -> dict[str, Any]:
    """One trace in the v1 UI model; rows must be non-empty and share one trace id."""
    spans: list[dict[str, Any]] = []
    processes: dict[str, dict[str, Any]] = {}
    keys: dict[tuple[str, str], str] = {}
    for group in group_rows(rows):
        service, process_tags, identity = process_of(group.raw_resource)
        process_id = keys.get(identity)
        if process_id is None:
            process_id = keys[identity] = f"p{len(keys) + 1}"
            processes[process_id] = {"serviceName": service, "tags": process_tags}
        for scope_group in group.scopes.values():
            scope = scope_group.scope
            spans.extend(
                span_to_v1(span, process_id, scope.name, scope.version)
                for span in scope_group.spans
            )
    return {
        "traceID": spans[0]["traceID"] if spans else "",
        "spans": spans,
        "processes": processes,
        "warnings": None,
    }


@lru_cache(maxsize=4096)
def process_of(raw_resource: bytes) -> tuple[str, list[dict[str, Any]], tuple[str, str]]:
    """Service, process tags and identity of a resource; a mesh has few, shared by all traces
    (callers only serialize the tags, never change them)."""
    service = NO_SERVICE_NAME
    process_tags = []
    for kv in sorted_attributes(resource_of(raw_resource).attributes):
        if kv.key == "service.name":
            service = kv.value.string_value
        else:
            process_tags.append(tag(kv.key, kv.value))
    return service, process_tags, (service, repr(process_tags))
