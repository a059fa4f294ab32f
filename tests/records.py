"""Tests: request records as the capture writes them, for tests that need only some columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from meshcore.schemas import REQUEST_SCHEMA

_FILL = {"name": "/", "method": "GET", "worker": "local"}


def request_table(n: int, schema: pa.Schema = REQUEST_SCHEMA, **columns: Sequence[Any]) -> pa.Table:
    """`n` records with the given columns; other columns null, or a plain value where the
    schema forbids null (0, False, "GET" ...)."""
    data: dict[str, list[Any]] = {}
    for f in schema:
        if f.name in columns:
            data[f.name] = list(columns[f.name])
        elif f.nullable:
            data[f.name] = [None] * n
        elif f.name in _FILL:
            data[f.name] = [_FILL[f.name]] * n
        else:
            data[f.name] = [False if pa.types.is_boolean(f.type) else 0] * n
    return pa.Table.from_pydict(data, schema=schema)
