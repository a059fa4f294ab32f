"""What a trace search asks for, shared by both Jaeger APIs.

Jaeger parses `minDuration`, `maxDuration` (v1) and `query.duration_min/max` (v3) with Go's
`time.ParseDuration` (`meshcore.durations`), so "1.2ms", "100us", "1h30m" and "-5s" are valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshcore.durations import DurationError, parse_duration_ns
from meshcore.errors import ConfigError


class QueryError(ConfigError):
    """A query parameter that cannot be read; str(e) is the message Jaeger would give."""


def parse_go_duration_ns(text: str) -> int:
    """Nanoseconds in a Go duration string ("1.2ms" -> 1_200_000). Raises QueryError."""
    try:
        return parse_duration_ns(text)
    except DurationError as exc:
        raise QueryError(str(exc)) from None


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
