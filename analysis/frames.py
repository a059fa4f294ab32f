"""The tidy frames of a run: their columns and dtypes follow `meshcore.schemas`.

Every reader (run folder, trace backends, Prometheus) produces these frames through
`from_arrow` / `from_columns`, so the figures built on top can rely on exact names and dtypes
whatever the source. Repeated strings (service, endpoint, label sets) are categorical to keep a
run of millions of rows small in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from meshcore.schemas import METRIC_SCHEMA, OPEN_MODEL_FIELDS, REQUEST_SCHEMA, SPAN_SCHEMA


def dtypes(fields: Iterable[pa.Field]) -> dict[str, str]:
    """The pandas dtype of each schema field: "category" (a repeated string), "str", "int64"
    (never null; a missing value is filled), "Int64" and "boolean" (nullable), "float64" (NaN
    for missing), "bool"."""
    return {f.name: _dtype(f) for f in fields}


def _dtype(f: pa.Field) -> str:
    t = f.type
    if pa.types.is_dictionary(t):
        return "category"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "str"
    if pa.types.is_integer(t):
        return "Int64" if f.nullable else "int64"
    if pa.types.is_floating(t):
        return "float64"
    if pa.types.is_boolean(t):
        return "boolean" if f.nullable else "bool"
    raise TypeError(f"schema field {f.name}: no frame dtype for {t}")


REQUEST_COLUMNS = dtypes(REQUEST_SCHEMA)
# Only open-model runs carry these; they are kept when present, never invented.
REQUEST_OPTIONAL_COLUMNS = dtypes(OPEN_MODEL_FIELDS)
SPAN_COLUMNS = dtypes(SPAN_SCHEMA)
METRIC_COLUMNS = dtypes(METRIC_SCHEMA)

# What a null becomes in a column that cannot hold nulls (else 0); `status` 0 is "no response".
_FILL: dict[str, Any] = {"ok": False, "step": -1}

_ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.large_string(),
    "category": pa.large_string(),
    "int64": pa.int64(),
    "Int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "boolean": pa.bool_(),
}


def empty_frame(columns: Mapping[str, str]) -> pd.DataFrame:
    """A frame with no rows and exactly the declared columns and dtypes."""
    return from_columns({name: [] for name in columns}, columns)


def from_columns(data: Mapping[str, Sequence[Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    """Build a frame from plain Python column lists (None for missing values)."""
    return from_arrow(table_from_columns(data, columns), columns)[0]


def table_from_columns(data: Mapping[str, Sequence[Any]], columns: Mapping[str, str]) -> pa.Table:
    """Plain Python column lists as an arrow table of the declared types (absent: nulls)."""
    arrays = {
        name: pa.array(list(data.get(name, [])), type=_ARROW_TYPES[dtype])
        for name, dtype in columns.items()
    }
    n = max((len(a) for a in arrays.values()), default=0)
    for name, arr in arrays.items():
        if len(arr) != n:
            arrays[name] = pa.nulls(n, type=arr.type)
    return pa.table(arrays)


def from_arrow(
    table: pa.Table,
    columns: Mapping[str, str],
    optional: Mapping[str, str] | None = None,
    order: pa.Array | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Convert an arrow table to the declared frame (its rows taken in `order` when given:
    column by column, so a sorted copy of the whole table never exists).

    Returns the frame and the names of declared columns the table lacked (filled with nulls).
    Columns beyond the declared ones are kept as they come: the run folder allows new columns.
    """
    n = table.num_rows
    # Each column is let go once converted: a caller that hands over its only reference to the
    # table (`from_arrow(read(...))`) never holds the whole table and the whole frame at once.
    given = dict(zip(table.column_names, table.columns, strict=True))
    del table

    def pop(name: str) -> pa.ChunkedArray:
        arr = given.pop(name)
        return arr.take(order) if order is not None else arr

    out: dict[str, pd.Series] = {}
    missing: list[str] = []
    for name, dtype in columns.items():
        if name in given:
            arr = pop(name)
        else:
            missing.append(name)
            arr = pa.chunked_array([pa.nulls(n, type=_ARROW_TYPES[dtype])])
        out[name] = _to_series(arr, dtype, name)
        del arr
    for name, dtype in (optional or {}).items():
        if name in given:
            out[name] = _to_series(pop(name), dtype, name)
    for name in list(given):
        out[name] = pop(name).to_pandas()
    # copy=False: the columns stay as converted, not consolidated into 2-D blocks (a copy of
    # every number column, and seconds at 10 M rows)
    frame = pd.DataFrame(out, copy=False)
    frame.index = pd.RangeIndex(n)
    return frame, missing


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """The frame as an arrow table of `schema`'s fields and types, then any other columns."""
    arrays: list[pa.Array] = []
    for f in schema:
        series = frame[f.name]
        if pa.types.is_dictionary(f.type):
            values = series.astype("object").where(series.notna(), None)
            arrays.append(pa.array(values, type=f.type.value_type).dictionary_encode())
        else:
            arrays.append(pa.array(series, type=f.type, from_pandas=True))
    extra = [name for name in frame.columns if name not in schema.names]
    table = pa.Table.from_arrays(arrays, schema=schema)
    for name in extra:
        table = table.append_column(name, pa.array(frame[name], from_pandas=True))
    return table


def labels_json(labels: Mapping[str, str]) -> str:
    """The one spelling of a label set, so equal sets compare equal as strings."""
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"))


def _to_series(arr: pa.ChunkedArray, dtype: str, name: str) -> pd.Series:
    if dtype == "category" and _string_dictionary(arr.type):
        return _categorical(arr)
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    target = _ARROW_TYPES[dtype]
    if arr.type != target:
        arr = arr.cast(target)
    if dtype == "category":
        series = arr.dictionary_encode().to_pandas()
        if len(series.cat.categories) == 0:  # all null: keep string categories, not object
            series = series.cat.set_categories(pd.Index([], dtype="str"))
        return series
    if dtype in ("Int64", "boolean"):
        return _masked(arr, dtype)
    if dtype in ("int64", "bool") and arr.null_count:
        arr = pc.fill_null(arr, pa.scalar(_FILL.get(name, 0), type=target))
    return arr.to_pandas()


def _string_dictionary(t: pa.DataType) -> bool:
    return pa.types.is_dictionary(t) and (
        pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)
    )


def _categorical(arr: pa.ChunkedArray) -> pd.Series:
    """A dictionary column as a categorical straight from its indices, no string per row:
    the categories in order of first appearance, as dictionary-encoding its strings gives."""
    texts: dict[str, int] = {}
    codes = np.empty(len(arr), dtype=np.int32)
    at = 0
    for chunk in arr.chunks:
        index = chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
        words = chunk.dictionary.to_pylist()
        remap = np.full(len(words) + 1, -1, dtype=np.int32)  # the last entry: a null index
        for i in pd.unique(index[index >= 0]).tolist():
            if words[i] is not None:
                remap[i] = texts.setdefault(words[i], len(texts))
        codes[at : at + len(index)] = remap[index]
        at += len(index)
    categories = pd.Index(list(texts), dtype="str")
    return pd.Series(pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(categories)))


def _masked(arr: pa.ChunkedArray, dtype: str) -> pd.Series:
    """A nullable integer or boolean column from its values and validity, without a Python
    object per row."""
    kind = np.int64 if dtype == "Int64" else np.bool_
    values = pc.fill_null(arr, pa.scalar(0 if dtype == "Int64" else False, type=arr.type))
    data = values.to_numpy().astype(kind, copy=False)
    mask = arr.is_null().to_numpy()
    array_type = pd.arrays.IntegerArray if dtype == "Int64" else pd.arrays.BooleanArray
    return pd.Series(array_type(data, mask))
