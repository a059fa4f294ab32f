"""Jaeger's tag search (`tags=` in v1, `query.attributes` in v3) over stored spans.

A tag `key=value` matches a span when the span, one of its events or its resource has that
attribute printing as `value`, or when Jaeger would derive that tag from the span (`error`,
`otel.status_code`, `span.kind`, `otel.scope.name`). Checking that needs the span decoded,
which is the costliest thing a search does, so each tag first yields *hints*: byte strings
that any matching span's protobuf encoding must contain (the attribute's key and value exactly
as protobuf writes a KeyValue), or the status, kind or scope that would match instead. Spans
failing every hint are refused without decoding, in pyarrow for spilled segments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from meshsim.tracestore.otlp import (
    KIND_BY_NAME,
    KIND_NAMES,
    STATUS_ERROR,
    STATUS_OK,
    attribute_strings,
    format_double,
    resource_of,
    scope_of,
    value_as_string,
)
from meshsim.tracestore.receiver import KIND, RESOURCE, SCOPE, SPAN, STATUS, Row


@dataclass(frozen=True)
class TagHint:
    """A span can match the tag only if one of these holds."""

    needles: tuple[str, ...]  # occurs in the encoded span or resource
    status: int | None = None  # the span's status code is this
    kind: int | None = None  # the span's kind is this
    scope_needle: str | None = None  # occurs in the encoded scope


def _len_byte(n: int) -> str | None:
    return chr(n) if n < 128 else None


def _kv_prefix(key: str) -> str:
    """A KeyValue's encoding up to its value: field 1 (key) then field 2's tag."""
    size = _len_byte(len(key.encode()))
    return f"\x0a{size}{key}\x12" if size else key


def _int_value_head(number: int) -> str:
    """The leading ASCII bytes of AnyValue{int_value}: length, field tag, and the varint
    itself when it is one byte (longer varints hold bytes pyarrow patterns cannot express)."""
    unsigned = number & (2**64 - 1)
    size = max(1, (unsigned.bit_length() + 6) // 7)
    return f"{chr(1 + size)}\x18{chr(unsigned) if size == 1 else ''}"


def tag_hint(key: str, wanted: str) -> TagHint:
    prefix = _kv_prefix(key)
    raw = wanted.encode()
    needles = []
    inner, outer = _len_byte(len(raw)), _len_byte(len(raw) + 2)
    # AnyValue{string_value}: field 1, length-delimited.
    needles.append(f"{prefix}{outer}\x0a{inner}{wanted}" if inner and outer else prefix)
    if re.fullmatch(r"-?\d+", wanted) and -(2**63) <= int(wanted) < 2**63:
        needles.append(f"{prefix}{_int_value_head(int(wanted))}")
    if wanted in ("true", "false"):
        needles.append(f"{prefix}\x02\x10{chr(wanted == 'true')}")
    try:
        number = float(wanted)
    except ValueError:
        pass
    else:
        if format_double(number) == wanted:
            needles.append(f"{prefix}\x09\x21")
    if wanted == "" or wanted[:1] in "[{":
        needles.append(prefix)  # empty, array, map and bytes values print differently
    status = kind = scope_needle = None
    if key == "error" and wanted == "true":
        status = STATUS_ERROR
    elif key == "otel.status_code":
        status = {"ERROR": STATUS_ERROR, "OK": STATUS_OK}.get(wanted)
    elif key == "span.kind":
        kind = KIND_BY_NAME.get(wanted)
    elif key == "otel.scope.name" and _len_byte(len(raw)):
        scope_needle = f"\x0a{_len_byte(len(raw))}{wanted}"
    return TagHint(tuple(dict.fromkeys(needles)), status, kind, scope_needle)


def _may_match(row: Row, hint: TagHint) -> bool:
    span_raw, resource_raw = row[SPAN], row[RESOURCE]
    for needle in hint.needles:
        encoded = needle.encode()
        if encoded in span_raw or encoded in resource_raw:
            return True
    if hint.status is not None and row[STATUS] == hint.status:
        return True
    if hint.kind is not None and row[KIND] == hint.kind:
        return True
    return hint.scope_needle is not None and hint.scope_needle.encode() in row[SCOPE]


@lru_cache(maxsize=4096)
def _resource_strings(raw: bytes) -> dict[str, str]:
    return attribute_strings(resource_of(raw).attributes)


def _derived(span: Span, row: Row, key: str) -> str | None:
    if key == "span.kind":
        return KIND_NAMES.get(span.kind)
    if key == "error":
        return "true" if span.status.code == STATUS_ERROR else None
    if key == "otel.status_code":
        return {STATUS_OK: "OK", STATUS_ERROR: "ERROR"}.get(span.status.code)
    if key == "otel.scope.name":
        return scope_of(row[SCOPE]).name or None
    return None


class TagSearch:
    """The tags of one search: hints for cheap refusal, and the exact check."""

    def __init__(self, tags: dict[str, str]) -> None:
        self.tags = dict(tags)
        self.hints = tuple(tag_hint(key, wanted) for key, wanted in self.tags.items())

    def matches(self, row: Row) -> bool:
        if not all(_may_match(row, hint) for hint in self.hints):
            return False
        span = Span.FromString(row[SPAN])
        own = {kv.key: kv.value for kv in span.attributes if kv.key in self.tags}
        resource = _resource_strings(row[RESOURCE])
        for key, wanted in self.tags.items():
            if key in own and value_as_string(own[key]) == wanted:
                continue
            if resource.get(key) == wanted or _derived(span, row, key) == wanted:
                continue
            if any(
                kv.key == key and value_as_string(kv.value) == wanted
                for event in span.events
                for kv in event.attributes
            ):
                continue
            return False
        return True


def tag_search(tags: dict[str, str]) -> TagSearch | None:
    return TagSearch(tags) if tags else None
