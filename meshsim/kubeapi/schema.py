"""Validation of custom objects against the openAPIV3Schema of their CRD version.

The CRD schemas are structural OpenAPI v3; jsonschema checks them once the Kubernetes
extensions are translated: `nullable` adds "null" to the type, `x-kubernetes-int-or-string`
allows both, and every object node that neither preserves unknown fields nor declares
`additionalProperties` refuses undeclared keys. The real API server prunes such keys silently
unless the client asks for strict field validation (kubectl does); the embedded API refuses them
by default, so a misspelt field in a canary manifest never vanishes unnoticed. Clients that ask
for `fieldValidation=Warn` or `Ignore` get the server's pruning instead (see `prune_unknown`).
`x-kubernetes-validations` (CEL) rules are evaluated for the rule texts Istio uses (see `cel`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import Any

import jsonschema

from meshsim.kubeapi.cel import check_rules
from meshsim.kubeapi.crds import ResourceType

Cause = tuple[str, str]
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DROPPED = {"description", "format", "example", "nullable", "default"}


def field_path(parts: Sequence[str | int]) -> str:
    """`spec.http[0].route[1].weight`, as the API server names fields."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def to_jsonschema(node: dict[str, Any], structural: bool = True) -> dict[str, Any]:
    """An OpenAPI v3 CRD schema node as a Draft 4 JSON schema (see module docstring)."""
    out: dict[str, Any] = {
        k: v for k, v in node.items() if k not in _DROPPED and not k.startswith("x-kubernetes-")
    }
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if "properties" in node:
        out["properties"] = {k: to_jsonschema(v) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        out["items"] = to_jsonschema(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_jsonschema(node["additionalProperties"])
    for key in ("oneOf", "anyOf", "allOf"):
        if key in node:
            out[key] = [to_jsonschema(s, structural=False) for s in node[key]]
    if "not" in node:
        out["not"] = to_jsonschema(node["not"], structural=False)
    is_object = node.get("type") == "object" or "properties" in node
    if (
        structural
        and is_object
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _describe(value: Any) -> str:
    """How the API server quotes a bad value: strings quoted, containers by their type name."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value)


def _json_type(value: Any) -> str:
    for name, types in (
        ("boolean", bool),
        ("integer", int),
        ("number", float),
        ("string", str),
        ("array", list),
        ("object", dict),
    ):
        if isinstance(value, types):
            return name
    return "null"


def _causes(err: jsonschema.ValidationError, kind: str, api_version: str) -> list[Cause]:
    path = list(err.absolute_path)
    field = field_path(path)
    v = err.validator
    if v == "additionalProperties" and isinstance(err.instance, dict):
        known = set(err.schema.get("properties", {}))
        return [
            (
                field_path([*path, k]),
                f"Forbidden: unknown field, not declared in the "
                f"{kind} {api_version} schema; remove it or fix its spelling",
            )
            for k in sorted(err.instance)
            if k not in known
        ]
    if v == "required":
        missing = err.validator_value
        names = (
            [k for k in missing if k not in err.instance]
            if isinstance(err.instance, dict)
            else list(missing)
        )
        return [(field_path([*path, k]), "Required value") for k in names]
    if v == "type":
        expected = err.validator_value
        want = " or ".join(expected) if isinstance(expected, list) else str(expected)
        got = _json_type(err.instance)
        return [(field, f'Invalid value: "{got}": {field} in body must be of type {want}: "{got}"')]
    if v == "enum":
        allowed = ", ".join(json.dumps(a) for a in err.validator_value)
        return [
            (field, f"Unsupported value: {_describe(err.instance)}: supported values: {allowed}")
        ]
    if v == "oneOf":
        exclusive = sorted({k for s in err.validator_value for k in s.get("required", [])})
        if exclusive:
            return [(field, f'Invalid value: "object": set at most one of {", ".join(exclusive)}')]
        return [
            (
                field,
                f'Invalid value: "object": {field} in body should match exactly one '
                "schema in oneOf",
            )
        ]
    if v in ("minimum", "maximum"):
        rel = "greater" if v == "minimum" else "less"
        return [
            (
                field,
                f"Invalid value: {_describe(err.instance)}: {field} in body should be "
                f"{rel} than or equal to {err.validator_value}",
            )
        ]
    if v == "pattern":
        return [
            (
                field,
                f"Invalid value: {_describe(err.instance)}: {field} in body should "
                f"match '{err.validator_value}'",
            )
        ]
    return [(field, f"Invalid value: {_describe(err.instance)}: {err.message}")]


@functools.lru_cache(maxsize=64)
def _validator(rtype: ResourceType, version: str) -> jsonschema.Draft4Validator:
    top = to_jsonschema(rtype.schemas[version])
    top["properties"] = {
        **top.get("properties", {}),
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
    }
    return jsonschema.Draft4Validator(top)


def check_object(rtype: ResourceType, version: str, obj: dict[str, Any]) -> list[Cause]:
    """Every schema problem of `obj` as (field, message); empty when it is valid."""
    causes: list[Cause] = []
    errors = sorted(
        _validator(rtype, version).iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]
    )
    for err in errors:
        causes.extend(_causes(err, rtype.kind, rtype.api_version(version)))
    if not causes:
        schema = rtype.schemas[version]
        for name in ("spec", "status"):
            if name in obj and name in schema.get("properties", {}):
                causes.extend(check_rules(schema["properties"][name], obj[name], [name]))
    return causes


def check_metadata(obj: dict[str, Any]) -> list[Cause]:
    """The ObjectMeta rules a custom object's name and labels must follow."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return [("metadata", "Required value")]
    name = meta.get("name")
    causes: list[Cause] = []
    if not isinstance(name, str) or not name:
        causes.append(("metadata.name", "Required value: name or generateName is required"))
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        causes.append(
            (
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 '
                "subdomain must consist of lower case alphanumeric characters, '-' or "
                "'.', and must start and end with an alphanumeric character",
            )
        )
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and (
            not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())
        ):
            causes.append((f"metadata.{key}", "Invalid value: must be a map of strings"))
    return causes


def prune_unknown(schema: dict[str, Any], value: Any, path: list[str | int]) -> list[str]:
    """Drop undeclared keys in place, as the API server prunes; returns the dropped fields."""
    dropped: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        keep_all = schema.get("x-kubernetes-preserve-unknown-fields")
        for key in list(value):
            if props is not None and key in props:
                dropped.extend(prune_unknown(props[key], value[key], [*path, key]))
            elif isinstance(extra, dict):
                dropped.extend(prune_unknown(extra, value[key], [*path, key]))
            elif not keep_all and extra is not True:
                dropped.append(field_path([*path, key]))
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            dropped.extend(prune_unknown(schema["items"], item, [*path, i]))
    return dropped


def drop_nulls(schema: dict[str, Any], value: Any) -> None:
    """Remove nulls the schema does not allow, in place: the API server drops them silently."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key in list(value):
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if value[key] is None and not (sub or {}).get("nullable"):
                del value[key]
            elif isinstance(sub, dict):
                drop_nulls(sub, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            drop_nulls(schema["items"], item)


def prune_object(rtype: ResourceType, version: str, obj: dict[str, Any]) -> list[str]:
    schema = rtype.schemas[version]
    dropped: list[str] = []
    for name, sub in schema.get("properties", {}).items():
        if name in obj:
            dropped.extend(prune_unknown(sub, obj[name], [name]))
    known = {"apiVersion", "kind", "metadata", *schema.get("properties", {})}
    for key in [k for k in obj if k not in known]:
        dropped.append(key)
        del obj[key]
    return dropped
