"""W3C trace context (`traceparent`, version 00) that meshload injects into every request.

Kept free of Locust imports: importing Locust monkey-patches the whole process (gevent).
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")

# Trace ids must differ between processes that forked from one parent (`--processes`), so the
# generator is seeded from the OS on first use in each process rather than at import.
_rng: random.Random | None = None
_rng_pid = -1


@dataclass(frozen=True)
class TraceContext:
    trace_id: str
    span_id: str
    sampled: bool

    @property
    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


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
    trace = rng.getrandbits(128) or 1  # all-zero ids are invalid in W3C trace context
    span = rng.getrandbits(64) or 1
    sampled = sampling >= 1.0 or (sampling > 0.0 and rng.random() < sampling)
    return TraceContext(f"{trace:032x}", f"{span:016x}", sampled)


def parse_traceparent(value: str) -> TraceContext | None:
    m = TRACEPARENT.match(value.strip().lower())
    if m is None:
        return None
    return TraceContext(m.group(1), m.group(2), m.group(3) == "01")
