"""Field ownership, as the API server keeps it in `metadata.managedFields`.

A field set is a set of paths; a path is a tuple of FieldsV1 keys (`f:spec`, `f:http`,
`k:{"name":"primary"}`, `v:"a"`). Which nodes are fields of their own follows the CRD schema as
structured-merge-diff reads it: object properties and map entries are separate fields; a list is
one (atomic) field unless `x-kubernetes-list-type` is `map` (one field per key, merged by
`x-kubernetes-list-map-keys`) or `set` (one per value); `x-kubernetes-map-type: atomic` makes an
object one field. Untyped parts (`x-kubernetes-preserve-unknown-fields`) read as SMD's deduced
type: objects granular, lists atomic. `apiVersion`, `kind`, `status` (a subresource) and the
system fields of `metadata` are never owned, as the server's strip-meta step drops them.

Writes other than apply (`record_update`) give their manager the fields they added or changed,
taking them from everyone else; an apply (`apply_patch`) owns exactly the fields it sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

APPLY, UPDATE = "Apply", "Update"
Path = tuple[str, ...]
Values = dict[Path, Any]  # path -> its value; GRANULAR for a node whose children are fields
GRANULAR = object()
_STRIPPED_META = (
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "generation",
    "managedFields",
    "resourceVersion",
)
_UNOWNED = ("apiVersion", "kind", "status")
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
META_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {}, "x-kubernetes-list-type": "set"},
        "ownerReferences": {
            "type": "array",
            "items": {},
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["uid"],
        },
    },
}


def object_schema(crd_schema: dict[str, Any]) -> dict[str, Any]:
    """The schema of a whole object: the CRD's, with ObjectMeta's list and map types."""
    props = dict(crd_schema.get("properties") or {})
    props["metadata"] = META_SCHEMA
    return {**crd_schema, "properties": props}


def child_schema(schema: dict[str, Any], key: str) -> dict[str, Any]:
    props = schema.get("properties")
    if isinstance(props, dict) and key in props:
        return dict(props[key])
    extra = schema.get("additionalProperties")
    return dict(extra) if isinstance(extra, dict) else {}


def list_keys(schema: dict[str, Any]) -> list[str] | None:
    """The map keys of a `list-type: map` list; None for any other list."""
    if schema.get("x-kubernetes-list-type") != "map":
        return None
    return list(schema.get("x-kubernetes-list-map-keys") or [])


def item_key(item: Any, keys: list[str]) -> str:
    """The FieldsV1 key of one element of a list-map: `k:{"name":"primary"}`."""
    fields = {k: item.get(k) for k in keys if k in item} if isinstance(item, dict) else {}
    return "k:" + json.dumps(fields, sort_keys=True, separators=(",", ":"))


def value_key(item: Any) -> str:
    return "v:" + json.dumps(item, sort_keys=True, separators=(",", ":"))


def is_granular(value: Any, schema: dict[str, Any]) -> bool:
    if isinstance(value, dict):
        return schema.get("x-kubernetes-map-type") != "atomic"
    if isinstance(value, list):
        return schema.get("x-kubernetes-list-type") in ("map", "set")
    return False


def values(obj: dict[str, Any] | None, schema: dict[str, Any]) -> Values:
    """Every owned path of `obj` with its value (see the module docstring for which)."""
    out: Values = {}
    if not obj:
        return out
    owned = {k: v for k, v in obj.items() if k not in _UNOWNED}
    if isinstance(owned.get("metadata"), dict):
        owned["metadata"] = {k: v for k, v in owned["metadata"].items() if k not in _STRIPPED_META}
    _children(owned, schema, (), out)
    out.pop(("f:metadata",), None)
    return out


def _visit(value: Any, schema: dict[str, Any], path: Path, out: Values) -> None:
    if not is_granular(value, schema):
        out[path] = value
        return
    out[path] = GRANULAR
    _children(value, schema, path, out)


def _children(value: Any, schema: dict[str, Any], path: Path, out: Values) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            if child is not None:
                _visit(child, child_schema(schema, key), (*path, f"f:{key}"), out)
        return
    items = dict(schema.get("items") or {})
    keys = list_keys(schema)
    for item in value:
        if keys is None:
            out[(*path, value_key(item))] = item
        else:
            _visit(item, items, (*path, item_key(item, keys)), out)


def compare(old: Values, new: Values) -> tuple[set[Path], set[Path], set[Path]]:
    """(added, modified, removed): modified are the fields present in both whose value changed."""
    added = set(new) - set(old)
    removed = set(old) - set(new)
    modified = {p for p in set(new) & set(old) if _differs(old[p], new[p])}
    return added, modified, removed


def _differs(a: Any, b: Any) -> bool:
    if a is GRANULAR or b is GRANULAR:
        return a is not b
    return bool(a != b)


def encode(paths: Iterable[Path]) -> dict[str, Any]:
    """A field set as FieldsV1: nested keys, `.` marking a member that also has members below."""
    members = set(paths)
    tree: dict[str, Any] = {}
    for path in members:
        node = tree
        for key in path:
            node = node.setdefault(key, {})
    for path in members:
        node = tree
        for key in path:
            node = node[key]
        if node:
            node["."] = {}
    return _ordered(tree)


def _ordered(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: _ordered(tree[k]) for k in sorted(tree, key=lambda k: (k != ".", k))}


def decode(tree: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(tree, dict):
        return out
    for key, sub in tree.items():
        if key == ".":
            out.add(prefix)
        elif isinstance(sub, dict) and sub:
            out |= decode(sub, (*prefix, key))
        else:
            out.add((*prefix, key))
    return out


def path_text(path: Path) -> str:
    """`.spec.http`, `.spec.ports[number=80]`, `.metadata.finalizers[="a"]`, as SMD prints."""
    out = ""
    for key in path:
        kind, text = key[:1], key[2:]
        if kind == "f":
            out += f".{text}"
        elif kind == "k":
            fields = json.loads(text)
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in fields.items()) + "]"
        elif kind == "v":
            out += f"[={text}]"
        else:
            out += f"[{text}]"
    return out


@dataclass(frozen=True)
class Entry:
    """One managedFields entry; an applier is one manager whatever apiVersion it applies."""

    manager: str
    operation: str
    api_version: str
    time: str
    fields: frozenset[Path]

    @property
    def ident(self) -> tuple[str, str, str]:
        version = "" if self.operation == APPLY else self.api_version
        return (self.manager, self.operation, version)

    def who(self) -> str:
        """The manager as conflict messages name it: `"kubectl"`, `"x" using group/v1`."""
        if self.operation == UPDATE:
            return f'"{self.manager}" using {self.api_version}'
        return f'"{self.manager}"'


def read_entries(raw: Any) -> list[Entry]:
    """The entries of a managedFields list; ones without a manager or FieldsV1 are dropped."""
    out = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict) or not item.get("manager"):
            continue
        if item.get("operation") not in (APPLY, UPDATE):
            continue
        fields = frozenset(decode(item.get("fieldsV1")))
        out.append(
            Entry(
                str(item["manager"]),
                str(item["operation"]),
                str(item.get("apiVersion") or ""),
                str(item.get("time") or ""),
                fields,
            )
        )
    return out


def write_entries(entries: Iterable[Entry]) -> list[dict[str, Any]]:
    """Non-empty entries, in the server's order: Apply before Update, then by time, manager."""
    kept = sorted(
        (e for e in entries if e.fields),
        key=lambda e: (e.operation, e.time, e.manager, e.api_version),
    )
    return [
        {
            "apiVersion": e.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": encode(e.fields),
            "manager": e.manager,
            "operation": e.operation,
            "time": e.time,
        }
        for e in kept
    ]


def record_update(
    entries: list[Entry], old: Values, new: Values, manager: str, api_version: str, now: str
) -> list[Entry]:
    """A write that is not an apply: the changed fields move to `manager` (Update)."""
    added, modified, removed = compare(old, new)
    changed = frozenset(added | modified)
    mine = Entry(manager, UPDATE, api_version, now, changed)
    out: list[Entry] = []
    for e in entries:
        kept = e.fields - changed - removed
        if e.ident == mine.ident:
            mine = replace(mine, fields=(kept | changed), time=now if changed else e.time)
        else:
            out.append(replace(e, fields=kept) if kept != e.fields else e)
    return [*out, mine]
