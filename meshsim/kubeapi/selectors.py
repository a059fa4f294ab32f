"""Label and field selectors of list and watch requests, with Kubernetes' grammar.

Label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, comma-joined.
Field selectors: `metadata.name` and `metadata.namespace` with `=`, `==`, `!=` (all that custom
resources support on a real server).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from meshsim.kubeapi import status

Matcher = Callable[[dict[str, Any]], bool]
_SET_TERM = re.compile(r"^\s*([^\s!=(),]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*([^\s!=(),]+)\s*(==|=|!=)\s*([^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^\s!=(),]+)\s*$")
_FIELDS = ("metadata.name", "metadata.namespace")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside `( ... )`."""
    terms, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    terms.append(current)
    return [t for t in terms if t.strip()]


def _label_term(term: str) -> Callable[[Mapping[str, str]], bool]:
    m = _SET_TERM.match(term)
    if m:
        key, op = m.group(1), m.group(2)
        values = {v.strip() for v in m.group(3).split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    m = _EQ_TERM.match(term)
    if m:
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    m = _EXISTS.match(term)
    if m:
        negate, key = m.group(1) == "!", m.group(2)
        return lambda labels: (key in labels) != negate
    raise status.bad_request(f'unable to parse requirement: invalid label selector "{term}"')


def label_matcher(selector: str | None) -> Matcher:
    """A predicate on objects for a labelSelector; BadRequest (400) when it does not parse."""
    if not selector or not selector.strip():
        return lambda obj: True
    terms = [_label_term(t) for t in _split_terms(selector)]

    def match(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(t(labels) for t in terms)

    return match


def field_matcher(selector: str | None) -> Matcher:
    if not selector or not selector.strip():
        return lambda obj: True
    checks: list[tuple[str, bool, str]] = []
    for term in _split_terms(selector):
        m = _EQ_TERM.match(term)
        if m is None or m.group(1) not in _FIELDS:
            raise status.bad_request(
                f'field label not supported: "{term.strip()}"; use '
                "metadata.name or metadata.namespace"
            )
        checks.append((m.group(1).split(".")[1], m.group(2) == "!=", m.group(3)))

    def match(obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        return all((meta.get(f) == v) != neg for f, neg, v in checks)

    return match


def matcher(label_selector: str | None, field_selector: str | None) -> Matcher:
    by_label, by_field = label_matcher(label_selector), field_matcher(field_selector)
    return lambda obj: by_label(obj) and by_field(obj)
