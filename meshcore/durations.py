"""Go's duration syntax (`time.ParseDuration`), the one duration parser of the project.

Istio's CRDs validate durations with CEL's `duration()` (Go's syntax), Jaeger's query APIs
parse `minDuration` with `time.ParseDuration`, and Istio's manifests write `250ms`, `1.5s`,
`1m30s`: one grammar for all. Values are exact integers of nanoseconds.
"""

from __future__ import annotations

import re

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


class DurationError(ValueError):
    """Not a Go duration; str(e) is the message Go's time.ParseDuration gives."""


def parse_duration_ns(text: str) -> int:
    """Nanoseconds of a Go duration ("1.2ms" -> 1_200_000, "-5s", "1h30m", "0")."""
    original = text
    sign = 1
    if text[:1] in "+-" and text:
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise DurationError(f'time: invalid duration "{original}"')
    total = 0
    pos = 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None or (not match.group(1) and not match.group(2)):
            if match is None and re.match(r"[\d.]+$", text[pos:]):
                raise DurationError(f'time: missing unit in duration "{original}"')
            raise DurationError(f'time: invalid duration "{original}"')
        whole, frac, unit = match.group(1), match.group(2) or "", match.group(3)
        scale = _UNIT_NS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = match.end()
    return sign * total


def duration_s(text: str) -> float:
    """Seconds of a Go duration, as a float."""
    return parse_duration_ns(text) / 1e9
