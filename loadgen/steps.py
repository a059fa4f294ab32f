"""Which rollout step was in effect at a given instant, on every process that sends load.

The master appends `(step, since_ns)` when it asks for a weight change and sends the whole
timeline to the workers (a Locust custom message; the local runner calls the same listener).
A record's step is looked up by the request's start time, so a request that started just
before a change keeps the old step even if its event fires after the message arrived.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Sequence
from typing import Any

MESSAGE = "meshload_steps"


class StepClock:
    """The step timeline: step k is in effect from since_ns[k] until since_ns[k + 1]."""

    def __init__(self) -> None:
        self._since_ns: list[int] = []
        self._steps: list[int] = []
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._since_ns = []
            self._steps = []

    def begin(self, step: int, since_ns: int) -> None:
        with self._lock:
            if self._since_ns and since_ns < self._since_ns[-1]:
                since_ns = self._since_ns[-1]
            self._since_ns.append(since_ns)
            self._steps.append(step)

    def replace(self, timeline: Iterable[Sequence[int]]) -> None:
        pairs = sorted((int(t), int(k)) for k, t in timeline)
        with self._lock:
            self._since_ns = [t for t, _ in pairs]
            self._steps = [k for _, k in pairs]

    def timeline(self) -> list[list[int]]:
        with self._lock:
            return [[k, t] for k, t in zip(self._steps, self._since_ns, strict=True)]

    def step_at(self, t_ns: int) -> int:
        """The step in effect at t_ns; the first step before the first change, -1 if none."""
        with self._lock:
            if not self._steps:
                return -1
            i = bisect.bisect_right(self._since_ns, t_ns) - 1
            return self._steps[max(i, 0)]

    @property
    def current(self) -> int:
        with self._lock:
            return self._steps[-1] if self._steps else -1

    # -- Locust custom messages ----------------------------------------------------------
    def on_message(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        data = getattr(msg, "data", None) or {}
        self.replace(data.get("timeline", []))

    def message(self) -> dict[str, Any]:
        return {"timeline": self.timeline()}
