"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), the two patch types CRDs accept.

Strategic merge patch needs Go struct tags that custom resources do not have, so the real API
server answers it with 415 for custom objects; the server module does the same. The third type
CRDs accept, server-side apply (`APPLY`), is `apply_patch`'s.
"""

from __future__ import annotations

import copy
from typing import Any

from meshsim.kubeapi import status

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise status.bad_request(f'json patch path "{path}" must start with "/"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, path: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise status.bad_request(f'json patch path "{path}": "{token}" is not an array index')
    i = int(token)
    if i > len(container) or (i == len(container) and not allow_end):
        raise status.bad_request(f'json patch path "{path}": index {i} is out of range')
    return i


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path, allow_end=False)]
        else:
            raise status.bad_request(f'json patch path "{path}": "{token}" does not exist')
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path, allow_end=False)]
    raise status.bad_request(f'json patch path "{path}" does not exist')


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise status.bad_request("json patch cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, path, allow_end=False))
    raise status.bad_request(f'json patch remove: "{path}" does not exist')


def _add(doc: Any, path: str, value: Any, replace: bool) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise status.bad_request(f'json patch replace: "{path}" does not exist')
        parent[last] = value
    elif isinstance(parent, list):
        i = _index(parent, last, path, allow_end=not replace)
        if replace:
            parent[i] = value
        else:
            parent.insert(i, value)
    else:
        raise status.bad_request(f'json patch path "{path}": parent is not a container')
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 on a copy of `target`; BadRequest (400) naming the failing operation."""
    if not isinstance(operations, list):
        raise status.bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for n, op in enumerate(operations):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise status.bad_request(f"json patch operation {n} needs 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise status.bad_request(f"json patch operation {n} ({kind}) needs 'value'")
        if kind in ("move", "copy") and "from" not in op:
            raise status.bad_request(f"json patch operation {n} ({kind}) needs 'from'")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]), replace=False)
        elif kind == "replace":
            doc = _add(doc, path, copy.deepcopy(op["value"]), replace=True)
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "move":
            doc = _add(doc, path, _remove(doc, op["from"]), replace=False)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])), replace=False)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise status.ApiError(422, "Invalid", f'json patch test failed at "{path}"')
        else:
            raise status.bad_request(f'json patch operation {n}: unknown op "{kind}"')
    return doc
