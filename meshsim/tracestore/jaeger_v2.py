"""Jaeger v2's `/api/v3` answers: OTLP/JSON as the collector's pdata marshaler writes it.

That marshaler writes ids as hex, 64-bit integers and `*UnixNano` times as strings, kind and
status code as integers, and leaves out every empty or zero field except `status` (always an
object, `{}` when unset) and `resource` / `scope`.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshsim.tracestore.otlp import (
    group_rows,
    resource_of,
    scope_of,
    sorted_attributes,
    sorted_events,
)
from meshsim.tracestore.receiver import Row

NO_TRACES_FOUND = "No traces found"


def error_body(http_code: int, message: str) -> dict[str, Any]:
    """api_v3.GRPCGatewayError as Jaeger's HTTP gateway writes it."""
    return {"error": {"httpCode": http_code, "message": message}}


def any_value(value: AnyValue) -> dict[str, Any]:
    which = value.WhichOneof("value")
    if which == "string_value":
        return {"stringValue": value.string_value}
    if which == "bool_value":
        return {"boolValue": value.bool_value}
    if which == "int_value":
        return {"intValue": str(value.int_value)}
    if which == "double_value":
        return {"doubleValue": value.double_value}
    if which == "bytes_value":
        return {"bytesValue": base64.b64encode(value.bytes_value).decode("ascii")}
    if which == "array_value":
        return {"arrayValue": {"values": [any_value(v) for v in value.array_value.values]}}
    if which == "kvlist_value":
        return {"kvlistValue": {"values": attributes(value.kvlist_value.values, sort=False)}}
    return {}


def attributes(kvs: Iterable[KeyValue], *, sort: bool = True) -> list[dict[str, Any]]:
    ordered = sorted_attributes(list(kvs)) if sort else kvs
    out = []
    for kv in ordered:
        value = kv.value
        # Inlined string case: an answer holds hundreds of thousands of attributes.
        if value.WhichOneof("value") == "string_value":
            out.append({"key": kv.key, "value": {"stringValue": value.string_value}})
        else:
            out.append({"key": kv.key, "value": any_value(value)})
    return out


def _put(out: dict[str, Any], **fields: Any) -> None:
    """Adds the fields that are not empty or zero, in order: the marshaler leaves those out."""
    for key, value in fields.items():
        if value:
            out[key] = value


def _nanos(t: int) -> str:
    """A `*UnixNano` time as the marshaler writes it: a decimal string, "" (left out) for 0."""
    return str(t) if t else ""


def _put_attributes(out: dict[str, Any], kvs: Sequence[KeyValue], dropped: int) -> None:
    _put(out, attributes=attributes(kvs) if kvs else None, droppedAttributesCount=dropped)


def resource_json(resource: Resource) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put_attributes(out, resource.attributes, resource.dropped_attributes_count)
    return out


def scope_json(scope: InstrumentationScope) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, name=scope.name, version=scope.version)
    _put_attributes(out, scope.attributes, scope.dropped_attributes_count)
    return out


def span_json(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": span.trace_id.hex(), "spanId": span.span_id.hex()}
    _put(
        out,
        traceState=span.trace_state,
        parentSpanId=span.parent_span_id.hex(),
        flags=span.flags,
        name=span.name,
        kind=span.kind,
        startTimeUnixNano=_nanos(span.start_time_unix_nano),
        endTimeUnixNano=_nanos(span.end_time_unix_nano),
    )
    _put_attributes(out, span.attributes, span.dropped_attributes_count)
    if span.events or span.links or span.dropped_events_count or span.dropped_links_count:
        _put(
            out,
            events=[_event_json(event) for event in sorted_events(span)],
            droppedEventsCount=span.dropped_events_count,
            links=[_link_json(link) for link in span.links],
            droppedLinksCount=span.dropped_links_count,
        )
    status: dict[str, Any] = {}
    _put(status, message=span.status.message, code=span.status.code)
    out["status"] = status
    return out


def _event_json(event: Span.Event) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, timeUnixNano=_nanos(event.time_unix_nano), name=event.name)
    _put_attributes(out, event.attributes, event.dropped_attributes_count)
    return out


def _link_json(link: Span.Link) -> dict[str, Any]:
    out: dict[str, Any] = {"traceId": link.trace_id.hex(), "spanId": link.span_id.hex()}
    _put(out, traceState=link.trace_state)
    _put_attributes(out, link.attributes, link.dropped_attributes_count)
    _put(out, flags=link.flags)
    return out


def resource_spans(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """One trace's spans as OTLP/JSON resourceSpans."""
    out = []
    for group in group_rows(rows):
        scope_spans = [
            {"scope": _scope_json(raw), "spans": [span_json(s) for s in sg.spans]}
            for raw, sg in group.scopes.items()
        ]
        out.append({"resource": _resource_json(group.raw_resource), "scopeSpans": scope_spans})
    return out


@lru_cache(maxsize=4096)
def _resource_json(raw: bytes) -> dict[str, Any]:
    """A mesh has few resources, shared by every trace (answers are only serialized)."""
    return resource_json(resource_of(raw))


@lru_cache(maxsize=4096)
def _scope_json(raw: bytes) -> dict[str, Any]:
    return scope_json(scope_of(raw))


def traces_body(traces: Iterable[Sequence[Row]]) -> dict[str, Any]:
    """GRPCGatewayWrapper: every trace's resourceSpans concatenated under `result`."""
    combined: list[dict[str, Any]] = []
    for rows in traces:
        combined.extend(resource_spans(rows))
    return {"result": {"resourceSpans": combined}}
