"""Server-side apply (`application/apply-patch+yaml`) of a custom object, and the ownership
bookkeeping of every other write.

An apply is merged into the live object along the schema (`managed_fields` says which nodes are
fields), the applier then owns exactly the fields it sent, fields it owned before and no longer
sends are removed unless another manager owns them, and a changed field that another manager
owns is a 409 Conflict unless the request says `force=true`, which moves the field to the
applier. This follows structured-merge-diff's `Updater.Apply`; see docs/design.md for the parts
left out.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import yaml

from meshsim.kubeapi import managed_fields as mf
from meshsim.kubeapi import status
from meshsim.kubeapi.crds import ResourceType
from meshsim.kubeapi.managed_fields import Entry, Path

MANAGER_LIMIT = 128  # the API server refuses longer fieldManager values


def manager_of(query: Any, user_agent: str) -> str:
    """`fieldManager`, else the User-Agent up to its first `/`, as the API server names writers."""
    return str(query.get("fieldManager") or user_agent.split("/")[0])[:MANAGER_LIMIT]


def parse(raw: bytes, query: Any, name: str) -> tuple[dict[str, Any], str, bool]:
    """The applied configuration, its manager and `force`; 400/422 as the API server answers."""
    manager = str(query.get("fieldManager") or "")
    if not manager:
        raise status.invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            [("fieldManager", "Required value: is required for apply patch")],
        )
    if len(manager) > MANAGER_LIMIT:
        raise status.invalid(
            "PatchOptions",
            "meta.k8s.io",
            "",
            [("fieldManager", f"Too long: may not be more than {MANAGER_LIMIT} bytes")],
        )
    try:
        config = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise status.bad_request(f"error decoding YAML: {exc}") from None
    if not isinstance(config, dict):
        raise status.bad_request("the applied configuration must be a YAML or JSON object")
    meta = config.setdefault("metadata", {})
    if isinstance(meta, dict) and meta.get("managedFields") is not None:
        raise status.bad_request("metadata.managedFields must be nil")
    if isinstance(meta, dict) and meta.setdefault("name", name) != name:
        raise status.bad_request(
            f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
        )
    return _without_nulls(config), manager, query.get("force") == "true"


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def merge(live: Any, config: Any, schema: dict[str, Any]) -> Any:
    """`config` merged into `live`: objects key by key, list-maps by key, sets by value; every
    other list and every scalar is replaced."""
    if isinstance(live, dict) and isinstance(config, dict) and mf.is_granular(live, schema):
        out = copy.deepcopy(live)
        for key, value in config.items():
            out[key] = merge(live.get(key), value, mf.child_schema(schema, key))
        return out
    if isinstance(live, list) and isinstance(config, list) and mf.is_granular(live, schema):
        keys = mf.list_keys(schema)
        if keys is None:
            return copy.deepcopy(live) + [copy.deepcopy(v) for v in config if v not in live]
        items = dict(schema.get("items") or {})
        merged = copy.deepcopy(live)
        where = {mf.item_key(v, keys): i for i, v in enumerate(merged)}
        for value in config:
            at = where.get(mf.item_key(value, keys))
            if at is None:
                where[mf.item_key(value, keys)] = len(merged)
                merged.append(copy.deepcopy(value))
            else:
                merged[at] = merge(merged[at], value, items)
        return merged
    return copy.deepcopy(config)


def remove(obj: dict[str, Any], path: Path) -> None:
    """Delete the node at `path`, if it is still there."""
    node: Any = obj
    for key in path[:-1]:
        node = _step(node, key)
        if node is None:
            return
    last = path[-1]
    if isinstance(node, dict) and last.startswith("f:"):
        node.pop(last[2:], None)
    elif isinstance(node, list):
        node[:] = [v for v in node if not _matches(v, last)]


def _step(node: Any, key: str) -> Any:
    if isinstance(node, dict) and key.startswith("f:"):
        return node.get(key[2:])
    if isinstance(node, list):
        return next((v for v in node if _matches(v, key)), None)
    return None


def _matches(item: Any, key: str) -> bool:
    if key.startswith("v:"):
        return mf.value_key(item) == key
    if key.startswith("k:") and isinstance(item, dict):
        return mf.item_key(item, list(json.loads(key[2:]))) == key
    return False


def conflict_error(conflicts: list[tuple[Entry, Path]]) -> status.ApiError:
    """409 worded as the API server's `NewConflictError`, one cause per field."""
    ordered = sorted(conflicts, key=lambda c: (c[0].who(), c[1]))
    causes = [
        {
            "type": "FieldManagerConflict",
            "message": f"conflict with {e.who()}",
            "field": mf.path_text(p),
        }
        for e, p in ordered
    ]
    if len(ordered) == 1:
        e, p = ordered[0]
        message = f"Apply failed with 1 conflict: conflict with {e.who()}: {mf.path_text(p)}"
    else:
        lines: list[str] = []
        for who in sorted({e.who() for e, _ in ordered}):
            lines.append(f"conflicts with {who}:")
            lines.extend(f"- {mf.path_text(p)}" for e, p in ordered if e.who() == who)
        message = f"Apply failed with {len(ordered)} conflicts: " + "\n".join(lines)
    return status.ApiError(409, "Conflict", message, {"causes": causes})


def apply(
    rtype: ResourceType,
    version: str,
    live: dict[str, Any] | None,
    config: dict[str, Any],
    *,
    manager: str,
    force: bool,
    now: str,
) -> dict[str, Any]:
    """The object an apply of `config` by `manager` leaves, managedFields included; raises the
    409 Conflict when it would change another manager's field and `force` is false."""
    schema = mf.object_schema(rtype.schemas[version])
    config = {k: v for k, v in config.items() if k != "status"}
    base = live or {"metadata": {}}
    entries = mf.read_entries(base["metadata"].get("managedFields"))
    mine = Entry(manager, mf.APPLY, rtype.api_version(version), now, frozenset())
    previous = next((e.fields for e in entries if e.ident == mine.ident), frozenset())
    sent = frozenset(mf.values(config, schema))
    merged = merge(base, config, schema)
    others = [e for e in entries if e.ident != mine.ident]
    still_owned = sent.union(*(e.fields for e in others))
    for path in sorted(previous - still_owned, key=len):
        remove(merged, path)
    added, modified, removed = mf.compare(mf.values(live, schema), mf.values(merged, schema))
    changed = added | modified
    conflicts = [(e, p) for e in others for p in sorted(e.fields & changed)]
    if conflicts and not force:
        raise conflict_error(conflicts)
    kept = [replace(e, fields=e.fields - changed - removed) for e in others]
    if merged == base and sent == previous:
        return merged  # a no-op apply leaves managedFields, times included, as they were
    merged["metadata"]["managedFields"] = mf.write_entries([*kept, replace(mine, fields=sent)])
    return merged


def updated(
    rtype: ResourceType,
    version: str,
    live: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    now: str,
) -> list[dict[str, Any]]:
    """The managedFields after a create, replace or patch by `manager` (operation Update).

    A writer may send managedFields to reset them; an empty or absent list keeps the live
    ones, so clients that do not know the field cannot erase it.
    """
    schema = mf.object_schema(rtype.schemas[version])
    sent = (new.get("metadata") or {}).get("managedFields")
    if not (isinstance(sent, list) and sent):
        sent = ((live or {}).get("metadata") or {}).get("managedFields")
    entries = mf.record_update(
        mf.read_entries(sent),
        mf.values(live, schema),
        mf.values(new, schema),
        manager,
        rtype.api_version(version),
        now,
    )
    return mf.write_entries(entries)
