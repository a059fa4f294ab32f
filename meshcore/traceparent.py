"""W3C trace context: the `traceparent` header meshload sends and the simulated mesh reads.

    traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
                 version-trace id (32 hex)-parent span id (16 hex)-flags (bit 0: sampled)

Parsing follows the W3C Recommendation (level 1): version `ff` is invalid; version 00 is exactly
four fields; a higher version may carry more fields after a dash, and its first four are read
as version 00's; all-zero ids are invalid. Free of Locust imports (importing Locust
monkey-patches the whole process with gevent).
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

HEADER = "traceparent"
_FIELDS = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

# Trace ids must differ between processes that forked from one parent (`--processes`), so the
# generator is seeded from the OS on first use in each process rather than at import.
_rng: random.Random | None = None
_rng_pid = -1


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A trace id, the id of the span that is the parent of the next one, and the sampled flag."""

    trace_id: str
    span_id: str
    sampled: bool

    @property
    def header(self) -> str:
        return format_traceparent(self.trace_id, self.span_id, self.sampled)


def format_traceparent(trace_id: str, span_id: str, sampled: bool = True) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def parse_traceparent(value: str | None) -> TraceContext | None:
    """The context a `traceparent` value carries; None when absent or invalid."""
    if not value:
        return None
    m = _FIELDS.fullmatch(value.strip().lower())
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))


def _generator() -> random.Random:
    global _rng, _rng_pid
    pid = os.getpid()
    if _rng is None or _rng_pid != pid:
        _rng = random.Random()
        _rng_pid = pid
    return _rng


def new_trace(sampling: float = 1.0) -> TraceContext:
    """A new root context; sampled with probability `sampling` (0..1)."""
    rng = _generator()
    trace = rng.getrandbits(128) or 1  # all-zero ids are invalid
    span = rng.getrandbits(64) or 1
    sampled = sampling >= 1.0 or (sampling > 0.0 and rng.random() < sampling)
    return TraceContext(f"{trace:032x}", f"{span:016x}", sampled)
