"""Stored rows -> decoded OTLP objects, grouped the way Jaeger returns a trace.

Both Jaeger APIs answer from the same grouping: one entry per distinct resource (in order of
first appearance), inside it one per scope, inside that the spans in arrival order. Jaeger's
query service sorts attributes by key and events by time before answering (its
SortCollections adjuster); `sorted_attributes` and `sorted_events` do the same here.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

# OTLP SpanKind -> the name Jaeger uses in `span.kind` tags and operation listings, and the
# status codes: the rule of the run folder's span rows defines them (re-exported here).
from meshcore.spanrows import KIND_NAMES as KIND_NAMES
from meshcore.spanrows import STATUS_ERROR as STATUS_ERROR
from meshcore.spanrows import STATUS_OK as STATUS_OK
from meshsim.tracestore.receiver import RESOURCE, SCOPE, SPAN, Row

KIND_BY_NAME = {name: kind for kind, name in KIND_NAMES.items()}


@lru_cache(maxsize=4096)
def resource_of(raw: bytes) -> Resource:
    return Resource.FromString(raw)


@lru_cache(maxsize=4096)
def scope_of(raw: bytes) -> InstrumentationScope:
    return InstrumentationScope.FromString(raw)


@dataclass
class ScopeGroup:
    scope: InstrumentationScope
    spans: list[Span] = field(default_factory=list)


@dataclass
class ResourceGroup:
    resource: Resource
    raw_resource: bytes
    scopes: dict[bytes, ScopeGroup] = field(default_factory=dict)


def group_rows(rows: Iterable[Row]) -> list[ResourceGroup]:
    groups: dict[bytes, ResourceGroup] = {}
    for row in rows:
        group = groups.get(row[RESOURCE])
        if group is None:
            group = groups[row[RESOURCE]] = ResourceGroup(resource_of(row[RESOURCE]), row[RESOURCE])
        scope = group.scopes.get(row[SCOPE])
        if scope is None:
            scope = group.scopes[row[SCOPE]] = ScopeGroup(scope_of(row[SCOPE]))
        scope.spans.append(Span.FromString(row[SPAN]))
    return list(groups.values())


def sorted_attributes(attributes: Sequence[KeyValue]) -> list[KeyValue]:
    return sorted(attributes, key=lambda kv: kv.key)


def sorted_events(span: Span) -> list[Span.Event]:
    return sorted(span.events, key=lambda event: event.time_unix_nano)


def value_as_string(value: AnyValue) -> str:
    """pdata's Value.AsString: how Jaeger shows and matches a non-string attribute as text."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return "true" if value.bool_value else "false"
    if which == "int_value":
        return str(value.int_value)
    if which == "double_value":
        return format_double(value.double_value)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which in ("array_value", "kvlist_value"):
        return json.dumps(value_to_raw(value), separators=(",", ":"))
    return ""


def format_double(number: float) -> str:
    if math.isinf(number) or math.isnan(number):
        return f"json: unsupported value: {number}"
    if number == int(number) and abs(number) < 1e21:
        return str(int(number))
    return repr(number)


def value_to_raw(value: AnyValue) -> Any:
    """A plain Python value (lists and dicts for arrays and maps)."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return [value_to_raw(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: value_to_raw(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if which is None:
        return None
    return getattr(value, which)


def attribute_strings(attributes: Iterable[KeyValue]) -> dict[str, str]:
    return {kv.key: value_as_string(kv.value) for kv in attributes}
