"""The one rule from a span to a row of `meshcore.schemas.SPAN_SCHEMA`, for every span writer.

Analysis reads spans from Jaeger, OTLP-JSON and Zipkin documents; the embedded trace store
records what it receives into the run folder. Both describe a span with the same few values
and hand them to `SpanColumns.add`, which applies the rule:

- `service`: the span's `istio.canonical_service` (else its resource's), else the service
  name the source gives (the resource's `service.name`, the process's `serviceName`);
- `version`: `istio.canonical_revision` on the span or its resource, else the resource's
  `service.version` or `version`;
- `status_code`: `http.status_code` (or `http.response.status_code`) as an integer;
- `kind`: the OTel kind's lowercase name; unspecified or unknown is `internal`;
- `attributes`: every tag, as one JSON object with sorted keys.

An OTLP span's tags are what Jaeger's OTLP translator makes of it (`otlp_tags`): its
attributes plus `otel.scope.*`, `span.kind`, `otel.status_code`, `error`,
`otel.status_description` and `w3c.tracestate`, so a span gives the same row whether it was
read through Jaeger v1, Jaeger v3 or recorded by the store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from meshcore.schemas import SPAN_SCHEMA

KIND_NAMES = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_KINDS = frozenset(KIND_NAMES.values())
STATUS_OK, STATUS_ERROR = 1, 2
_STATUS_KEYS = ("http.status_code", "http.response.status_code")
_VERSION_KEYS = ("service.version", "version")


def kind_name(value: Any) -> str:
    """An OTLP kind (int, `SPAN_KIND_SERVER`) or a Jaeger/Zipkin one (`server`, `SERVER`)."""
    if value is None or value == "":
        return "internal"  # OTel: an unspecified kind may be taken as internal
    if isinstance(value, int):
        return KIND_NAMES.get(value, "internal")
    text = str(value).lower().removeprefix("span_kind_")
    return text if text in _KINDS else "internal"


def otlp_tags(
    attributes: Mapping[str, Any],
    *,
    kind: int,
    status_code: int,
    status_message: str = "",
    scope_name: str = "",
    scope_version: str = "",
    trace_state: str = "",
) -> dict[str, Any]:
    """An OTLP span's tags as Jaeger shows them (a later tag of the same key wins)."""
    tags: dict[str, Any] = {}
    if scope_name:
        tags["otel.scope.name"] = scope_name
    if scope_version:
        tags["otel.scope.version"] = scope_version
    tags.update(attributes)
    if kind in KIND_NAMES:
        tags["span.kind"] = KIND_NAMES[kind]
    if status_code == STATUS_ERROR:
        tags["otel.status_code"] = "ERROR"
        tags["error"] = True
    elif status_code == STATUS_OK:
        tags["otel.status_code"] = "OK"
    if status_message:
        tags["otel.status_description"] = status_message
    if trace_state:
        tags["w3c.tracestate"] = trace_state
    return tags


def status_code(tags: Mapping[str, Any]) -> int | None:
    for key in _STATUS_KEYS:
        value = tags.get(key)
        if value is None or isinstance(value, bool):
            continue
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return None


def version(tags: Mapping[str, Any], resource: Mapping[str, Any]) -> str | None:
    for source in (tags, resource):
        value = source.get("istio.canonical_revision")
        if value not in (None, ""):
            return str(value)
    for key in _VERSION_KEYS:
        value = resource.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def service(tags: Mapping[str, Any], resource: Mapping[str, Any], named: str | None) -> str | None:
    for source in (tags, resource):
        value = source.get("istio.canonical_service")
        if value not in (None, ""):
            return str(value)
    return named


class SpanColumns:
    """Column lists of SPAN_SCHEMA rows, filled span by span; `table()` takes them out."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in SPAN_SCHEMA.names}

    def __len__(self) -> int:
        return len(self.columns["trace_id"])

    def add(
        self,
        *,
        trace_id: str,
        span_id: str,
        parent_id: str | None,
        service_name: str | None,
        operation: str | None,
        kind: Any,
        start_ns: int,
        duration_ms: float,
        tags: Mapping[str, Any],
        resource: Mapping[str, Any],
    ) -> None:
        """One span: ids as lower hex (trace 32 chars, span 16), its tags and resource."""
        c = self.columns
        c["trace_id"].append(trace_id)
        c["span_id"].append(span_id)
        c["parent_id"].append(parent_id)
        c["service"].append(service(tags, resource, service_name))
        c["operation"].append(operation)
        c["kind"].append(kind_name(kind))
        c["start_ns"].append(start_ns)
        c["duration_ms"].append(duration_ms)
        c["version"].append(version(tags, resource))
        c["status_code"].append(status_code(tags))
        c["attributes"].append(json.dumps(tags, sort_keys=True, default=str))

    def table(self) -> pa.Table:
        """The rows so far as a SPAN_SCHEMA table; the lists start empty again."""
        columns, self.columns = self.columns, {name: [] for name in SPAN_SCHEMA.names}
        return pa.Table.from_arrays(
            [_array(columns[f.name], f.type) for f in SPAN_SCHEMA], schema=SPAN_SCHEMA
        )


def _array(values: list[Any], type_: pa.DataType) -> pa.Array:
    if pa.types.is_dictionary(type_):
        # Encoding plain strings is ~30 times faster than building a dictionary from Python.
        return pa.array(values, type=type_.value_type).dictionary_encode()
    return pa.array(values, type=type_)
