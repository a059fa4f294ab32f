"""Jaeger v1 trace answers written straight to JSON text, byte for byte what
`json.dumps(jaeger_v1.envelope(...), separators=(",", ":"))` writes for the same traces.

A search answer holds hundreds of thousands of tags; building a dict for each and walking them
all again in `json.dumps` cost seconds per page. Here the common case (a string attribute) is
one cached prefix plus one C-level string escape; anything rarer (typed tags, references,
logs, warnings) goes through the dict builders of `jaeger_v1` and `json.dumps`, so both paths
share one definition of the format.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from json.encoder import encode_basestring_ascii as _quote  # what json.dumps uses by default
from operator import attrgetter
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshsim.tracestore.jaeger_v1 import (
    WARNINGS_ATTRIBUTE,
    logs,
    process_of,
    references,
    tag,
    trace_id_string,
    warnings,
)
from meshsim.tracestore.otlp import KIND_NAMES, STATUS_ERROR, STATUS_OK, group_rows
from meshsim.tracestore.receiver import Row

_KEY = attrgetter("key")
_NO_SPAN = b"\x00" * 8
_ENVELOPE_TAIL = '],"total":0,"limit":0,"offset":0,"errors":'


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@lru_cache(maxsize=65536)
def _string_tag_prefix(key: str) -> str:
    return '{"key":' + _quote(key) + ',"type":"string","value":'


def _string_tag(key: str, value: str) -> str:
    return _string_tag_prefix(key) + _quote(value) + "}"


_ERROR_TAGS = (
    _string_tag("otel.status_code", "ERROR") + ',{"key":"error","type":"bool","value":true}'
)
_OK_TAG = _string_tag("otel.status_code", "OK")
_KIND_TAGS = {kind: _string_tag("span.kind", name) for kind, name in KIND_NAMES.items()}


def span_tags_text(span: Span, scope_name: str, scope_version: str) -> tuple[str, bool]:
    """`jaeger_v1.span_tags` as JSON text, and whether the span carries Jaeger warnings."""
    has_warnings = False
    parts: list[str] = []
    append = parts.append
    if scope_name:
        append(_string_tag("otel.scope.name", scope_name))
    if scope_version:
        append(_string_tag("otel.scope.version", scope_version))
    for kv in sorted(span.attributes, key=_KEY):
        key, value = kv.key, kv.value
        if value.WhichOneof("value") == "string_value":
            if key != WARNINGS_ATTRIBUTE:
                append(_string_tag_prefix(key) + _quote(value.string_value) + "}")
        elif key != WARNINGS_ATTRIBUTE:
            append(_dumps(tag(key, value)))
        else:
            has_warnings = True
    if span.kind in _KIND_TAGS:
        append(_KIND_TAGS[span.kind])
    status = span.status
    if status.code == STATUS_ERROR:
        append(_ERROR_TAGS)
    elif status.code == STATUS_OK:
        append(_OK_TAG)
    if status.message:
        append(_string_tag("otel.status_description", status.message))
    if span.trace_state:
        append(_string_tag("w3c.tracestate", span.trace_state))
    return "[" + ",".join(parts) + "]", has_warnings


def span_text(span: Span, process_id_text: str, scope_name: str, scope_version: str) -> str:
    """`jaeger_v1.span_to_v1` as JSON text; `process_id_text` is the already quoted id."""
    start_ns = span.start_time_unix_nano
    trace_id = trace_id_string(span.trace_id)
    parent = span.parent_span_id
    if span.links:
        refs = _dumps(references(span))
    elif not parent or parent == _NO_SPAN:
        refs = "[]"
    else:
        refs = f'[{{"refType":"CHILD_OF","traceID":"{trace_id}","spanID":"{parent.hex()}"}}]'
    span_logs = _dumps(logs(span)) if span.events else "[]"
    tags, has_warnings = span_tags_text(span, scope_name, scope_version)
    span_warnings = _dumps(warnings(span)) if has_warnings else "null"
    return (
        '{"traceID":"'
        + trace_id
        + '","spanID":"'
        + span.span_id.hex()
        + '","operationName":'
        + _quote(span.name)
        + ',"references":'
        + refs
        + ',"startTime":'
        + str(start_ns // 1000)
        + ',"duration":'
        + str(max(0, span.end_time_unix_nano - start_ns) // 1000)
        + ',"tags":'
        + tags
        + ',"logs":'
        + span_logs
        + ',"processID":'
        + process_id_text
        + ',"warnings":'
        + span_warnings
        + "}"
    )


def trace_text(rows: Sequence[Row]) -> str:
    """`jaeger_v1.trace_to_v1` as JSON text; rows must be non-empty and share one trace id."""
    spans: list[str] = []
    processes: list[str] = []
    keys: dict[tuple[str, str], str] = {}
    trace_id = ""
    for group in group_rows(rows):
        identity = process_of(group.raw_resource)[2]
        process_id = keys.get(identity)
        if process_id is None:
            process_id = keys[identity] = f"p{len(keys) + 1}"
            processes.append(_quote(process_id) + _process_text(group.raw_resource))
        quoted_id = _quote(process_id)
        for scope_group in group.scopes.values():
            scope = scope_group.scope
            for span in scope_group.spans:
                if not trace_id:
                    trace_id = trace_id_string(span.trace_id)
                spans.append(span_text(span, quoted_id, scope.name, scope.version))
    return (
        '{"traceID":"'
        + trace_id
        + '","spans":['
        + ",".join(spans)
        + '],"processes":{'
        + ",".join(processes)
        + '},"warnings":null}'
    )


@lru_cache(maxsize=4096)
def _process_text(raw_resource: bytes) -> str:
    service, process_tags, _ = process_of(raw_resource)
    return ':{"serviceName":' + _quote(service) + ',"tags":' + _dumps(process_tags) + "}"


def traces_envelope_text(traces: Iterable[str], errors: list[dict[str, Any]] | None = None) -> str:
    """`jaeger_v1.envelope(traces, errors=...)` as JSON text, from traces as JSON text."""
    return '{"data":[' + ",".join(traces) + _ENVELOPE_TAIL + _dumps(errors) + "}"
