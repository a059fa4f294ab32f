"""Server-side `Table` output, which `kubectl get` asks for in its Accept header.

Columns are the CRD's additionalPrinterColumns (Name first, Age when none are declared), cells
evaluated from their simple JSONPath, dates shown as ages, as the API server does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "priority": 0,
    "description": "Name must be unique within a namespace.",
}
AGE_COLUMN = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
    "description": "CreationTimestamp is the time the object was created.",
}


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def human_age(timestamp: str, now: datetime | None = None) -> str:
    """Kubernetes' short age form: 45s, 3m12s, 2h5m, 3d."""
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return "<unknown>"
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    return f"{days}d{hours % 24}h" if days < 8 and hours % 24 else f"{days}d"


_STEP = re.compile(r"\.([^.\[]+)|\[(\*|\d+)\]|\[\?\(@\.([^=!\s]+)\s*==\s*[\"']([^\"']*)[\"']\)\]")


def _json_path(obj: Any, path: str) -> Any:
    """The first value a printer column's JSONPath finds, as the API server prints it (it takes
    the first result): fields, `[N]`, `[*]` and `[?(@.field=="value")]` filters. None when
    nothing matches or the path has other syntax."""
    text = path.strip()
    nodes, at = [obj], 0
    while at < len(text):
        m = _STEP.match(text, at)
        if m is None:
            return None
        at = m.end()
        field, index, key, wanted = m.groups()
        if field is not None:
            nodes = [n[field] for n in nodes if isinstance(n, dict) and field in n]
        elif index == "*":
            nodes = [x for n in nodes if isinstance(n, list) for x in n]
        elif index is not None:
            nodes = [n[int(index)] for n in nodes if isinstance(n, list) and int(index) < len(n)]
        else:
            lists = (n for n in nodes if isinstance(n, list))
            nodes = [
                x for n in lists for x in n if isinstance(x, dict) and str(x.get(key)) == wanted
            ]
    return nodes[0] if nodes else None


def _cell(obj: dict[str, Any], column: dict[str, Any]) -> Any:
    value = _json_path(obj, column.get("jsonPath", ""))
    if value is None:
        return None
    if column.get("type") == "date":
        return human_age(value) if isinstance(value, str) else None
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return value


def _partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def table(
    objects: Sequence[dict[str, Any]],
    columns: Sequence[dict[str, Any]],
    resource_version: str,
    include_object: str = "PartialObjectMetadata",
) -> dict[str, Any]:
    """The Table of `objects`; `columns` are printer columns without the Name column."""
    cols = list(columns) or [AGE_COLUMN]
    definitions = [NAME_COLUMN] + [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in cols
    ]
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [obj["metadata"]["name"]] + [_cell(obj, c) for c in cols]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = _partial(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }


def pod_columns() -> list[dict[str, Any]]:
    """A short pod table: phase and age (kubectl's READY column needs pod status counting)."""
    return [{"name": "Status", "type": "string", "jsonPath": ".status.phase"}, AGE_COLUMN]
