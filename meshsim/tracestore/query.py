"""What a trace search asks for, shared by both Jaeger APIs, and Go's duration syntax.

Jaeger parses `minDuration`, `maxDuration` (v1) and `query.duration_min/max` (v3) with Go's
`time.ParseDuration`, so "1.2ms", "100us", "1h30m" and "-5s" are all valid; this module
accepts exactly that grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from meshload.errors import ConfigError

_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


class QueryError(ConfigError):
    """A query parameter that cannot be read; str(e) is the message Jaeger would give."""


def parse_go_duration_ns(text: str) -> int:
    """Nanoseconds in a Go duration string ("1.2ms" -> 1_200_000). Raises QueryError."""
    original = text
    sign = 1
    if text[:1] in "+-" and text:
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise QueryError(f'time: invalid duration "{original}"')
    total = 0
    pos = 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None or (not match.group(1) and not match.group(2)):
            if match is None and re.match(r"[\d.]+$", text[pos:]):
                raise QueryError(f'time: missing unit in duration "{original}"')
            raise QueryError(f'time: invalid duration "{original}"')
        whole, frac, unit = match.group(1), match.group(2) or "", match.group(3)
        scale = _UNIT_NS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = match.end()
    return sign * total


@dataclass(frozen=True)
class TraceQuery:
    """A search: a trace matches when one of its spans satisfies every given condition."""

    service: str | None = None
    operation: str | None = None
    span_kind: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    start_min_ns: int | None = None
    start_max_ns: int | None = None
    duration_min_ns: int | None = None
    duration_max_ns: int | None = None
    limit: int = 100
