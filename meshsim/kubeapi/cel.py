"""The `x-kubernetes-validations` (CEL) rules of Istio's CRDs, evaluated without a CEL engine.

Istio's schemas use a handful of rule texts (durations of at least 1ms, mutually exclusive
fields, wildcard-free label selectors). Each known text maps to a Python check; a rule text not
in the table is skipped, which is the one place the embedded API is more lenient than a real
one (the table covers every rule of VirtualService, DestinationRule, Gateway and Telemetry).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from meshcore.durations import DurationError, parse_duration_ns

Check = Callable[[Any], bool]

_HAS = re.compile(r"has\(self\.(\w+)\)")


def _at_least_1ms(value: Any) -> bool:
    try:
        return isinstance(value, str) and parse_duration_ns(value) >= 1_000_000
    except DurationError:
        return False


def _tag_override(op: str, need_value: bool) -> Check:
    def check(v: Any) -> bool:
        if not isinstance(v, dict) or v.get("operation", "") != op:
            return True
        return v.get("value", "") != "" if need_value else "value" not in v

    return check


_UPSERT_RULE = (
    '((has(self.operation) ? self.operation : "") == "UPSERT") ? (self.value != "") : true'
)
_REMOVE_RULE = '((has(self.operation) ? self.operation : "") == "REMOVE") ? !has(self.value) : true'
_FIXED: dict[str, Check] = {
    "duration(self) >= duration('1ms')": _at_least_1ms,
    'self.all(key, !key.contains("*"))': lambda v: all("*" not in k for k in v),
    "self.all(key, key.size() != 0)": lambda v: all(len(k) != 0 for k in v),
    '!self.contains("*")': lambda v: "*" not in v,
    "self.size() == 0": lambda v: len(v) == 0,
    _UPSERT_RULE: _tag_override("UPSERT", need_value=True),
    _REMOVE_RULE: _tag_override("REMOVE", need_value=False),
}


def rule_check(rule: str) -> Check | None:
    """The Python form of a CEL rule text, or None for a text outside the table."""
    if rule in _FIXED:
        return _FIXED[rule]
    fields = _HAS.findall(rule)
    # `(has(self.a) ? 1 : 0) + (has(self.b) ? 1 : 0) <= 1`: at most one of the fields is set.
    if fields and rule.replace(" ", "").endswith("<=1") and "?1:0" in rule.replace(" ", ""):
        return lambda v: not isinstance(v, dict) or sum(f in v for f in fields) <= 1
    return None


def _path(parts: list[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return f'"{value}"' if isinstance(value, str) else str(value)


def check_rules(schema: dict[str, Any], value: Any, path: list[str | int]) -> list[tuple[str, str]]:
    """(field, message) for every rule of `schema` and its children that `value` breaks."""
    causes: list[tuple[str, str]] = []
    for rule in schema.get("x-kubernetes-validations") or ():
        check = rule_check(rule.get("rule", ""))
        if check is None:
            continue
        try:
            ok = check(value)
        except (TypeError, AttributeError):
            ok = False
        if not ok:
            message = rule.get("message") or f"failed rule: {rule.get('rule')}"
            causes.append((_path(path), f"Invalid value: {_describe(value)}: {message}"))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, sub in value.items():
            child = props.get(key) if key in props else extra
            if isinstance(child, dict):
                causes.extend(check_rules(child, sub, [*path, key]))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            causes.extend(check_rules(schema["items"], item, [*path, i]))
    return causes
