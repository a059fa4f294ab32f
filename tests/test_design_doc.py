"""docs/design.md states the run folder's columns; they must be the schemas the code writes."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from meshcore import runfolder
from meshcore.schemas import METRIC_SCHEMA, OPEN_MODEL_FIELDS, REQUEST_SCHEMA, SPAN_SCHEMA

DESIGN = Path(__file__).resolve().parent.parent / "docs" / "design.md"


def documented(table: str) -> list[tuple[str, str, bool]]:
    """(column, type, nullable) of the table between `<!-- NAME -->` markers."""
    text = DESIGN.read_text(encoding="utf-8")
    body = re.search(rf"<!-- {table} -->\n(.*?)<!-- /{table} -->", text, flags=re.S)
    assert body is not None, f"docs/design.md has no {table} table"
    rows = [line.split("|")[1:4] for line in body.group(1).splitlines()[2:] if line.strip()]
    return [(c.strip().strip("`"), t.strip(), n.strip() == "yes") for c, t, n in rows]


def type_name(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return "dictionary"
    return {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64"}.get(
        t, "bool" if pa.types.is_boolean(t) else str(t)
    )


@pytest.mark.parametrize(
    ("table", "schema"),
    [
        ("request-columns", REQUEST_SCHEMA),
        ("span-columns", SPAN_SCHEMA),
        ("metric-columns", METRIC_SCHEMA),
    ],
)
def test_documented_columns_are_the_schema(table: str, schema: pa.Schema) -> None:
    assert documented(table) == [(f.name, type_name(f.type), f.nullable) for f in schema]


def test_the_open_model_columns_and_the_file_names_are_documented() -> None:
    text = DESIGN.read_text(encoding="utf-8")
    for f in OPEN_MODEL_FIELDS:
        assert f"`{f.name}`" in text
    for name in ("RUN_JSON", "REQUESTS_DIR", "REQUESTS_FILE", "SPANS_FILE", "METRICS_FILE",
                 "SUMMARY_FILE", "REPORT_FILE"):  # fmt: skip
        assert f"`{getattr(runfolder, name)}" in text, name
    for name in ("SPANS_DIR", "METRICS_DIR"):  # folders of parts
        assert f"`{getattr(runfolder, name)}/" in text, name
