"""The one span -> SPAN_SCHEMA row rule: each column checked against its plain definition."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

from meshcore.schemas import SPAN_SCHEMA
from meshcore.spanrows import SpanColumns, kind_name, otlp_tags


def _row(**overrides: object) -> dict[str, object]:
    span: dict[str, Any] = {
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "parent_id": None,
        "service_name": "reviews",
        "operation": "GET /reviews",
        "kind": 2,
        "start_ns": 1_700_000_000_000_000_123,
        "duration_ms": 2.5,
        "tags": {},
        "resource": {},
    }
    span.update(overrides)
    columns = SpanColumns()
    columns.add(**span)
    table = columns.table()
    assert table.schema.equals(SPAN_SCHEMA) and len(columns) == 0  # taken out
    row: dict[str, object] = table.to_pylist()[0]
    return row


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (0, "internal"),
        (2, "server"),
        (5, "consumer"),
        (9, "internal"),
        ("SPAN_KIND_CLIENT", "client"),
        ("producer", "producer"),
        ("SERVER", "server"),
        ("", "internal"),
        (None, "internal"),
        ("weird", "internal"),
    ],
)
def test_kind_names(value: object, name: str) -> None:
    assert kind_name(value) == name


def test_service_is_istios_canonical_service_else_the_given_name() -> None:
    assert _row()["service"] == "reviews"
    assert _row(tags={"istio.canonical_service": "ratings"})["service"] == "ratings"
    resource = {"istio.canonical_service": "details"}
    assert _row(resource=resource)["service"] == "details"
    assert _row(tags={"istio.canonical_service": ""}, resource=resource)["service"] == "details"
    assert _row(service_name=None)["service"] is None


def test_version_from_the_revision_else_the_services_version() -> None:
    assert _row()["version"] is None
    assert _row(tags={"istio.canonical_revision": "v2"})["version"] == "v2"
    both = _row(tags={"istio.canonical_revision": "v2"}, resource={"service.version": "v9"})
    assert both["version"] == "v2"
    assert _row(resource={"istio.canonical_revision": "v3"})["version"] == "v3"
    assert _row(resource={"service.version": "v4"})["version"] == "v4"
    assert _row(resource={"version": 5})["version"] == "5"
    assert _row(tags={"service.version": "v6"})["version"] is None  # a span's is not its service's


@pytest.mark.parametrize(
    ("tags", "code"),
    [
        ({"http.status_code": "503"}, 503),
        ({"http.status_code": 200}, 200),
        ({"http.response.status_code": 404}, 404),
        ({"http.status_code": "x"}, None),
        ({"http.status_code": True}, None),
        ({}, None),
    ],
)
def test_status_code(tags: dict[str, object], code: int | None) -> None:
    assert _row(tags=tags)["status_code"] == code


def test_attributes_are_every_tag_as_sorted_json() -> None:
    tags = {"b": 1, "a": "x", "c": [1, 2], "d": 2.5, "e": True}
    text = _row(tags=tags)["attributes"]
    assert isinstance(text, str) and json.loads(text) == tags
    assert list(json.loads(text)) == sorted(tags)


def test_otlp_tags_are_what_jaegers_translator_shows() -> None:
    plain = otlp_tags({"k": "v"}, kind=0, status_code=0)
    assert plain == {"k": "v"}  # unspecified kind, unset status: nothing derived
    full = otlp_tags(
        {"k": "v", "span.kind": "mine", "error": False},
        kind=3,
        status_code=2,
        status_message="boom",
        scope_name="envoy",
        scope_version="1.2",
        trace_state="a=b",
    )
    assert full == {
        "otel.scope.name": "envoy",
        "otel.scope.version": "1.2",
        "k": "v",
        "span.kind": "client",  # derived tags come later and win, as in Jaeger's list
        "otel.status_code": "ERROR",
        "error": True,
        "otel.status_description": "boom",
        "w3c.tracestate": "a=b",
    }
    assert otlp_tags({}, kind=1, status_code=1) == {
        "span.kind": "internal",
        "otel.status_code": "OK",
    }


def test_nulls_and_dictionaries_in_the_table() -> None:
    columns = SpanColumns()
    for i in range(3):
        columns.add(
            trace_id=f"{i:032x}",
            span_id=f"{i:016x}",
            parent_id=None if i == 0 else f"{i - 1:016x}",
            service_name="gw" if i < 2 else None,
            operation="op",
            kind=2,
            start_ns=i,
            duration_ms=float(i),
            tags={},
            resource={},
        )
    table = columns.table()
    assert pa.types.is_dictionary(table.schema.field("service").type)
    assert table.column("service").to_pylist() == ["gw", "gw", None]
    assert table.column("parent_id").to_pylist() == [None, f"{0:016x}", f"{1:016x}"]
    assert columns.table().num_rows == 0
