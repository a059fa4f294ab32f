"""Open-model load: tasks start on a fixed schedule, and latency counts from the intended start.

With an arrival rate R and U users, each user starts a task every U / R seconds (staggered),
whatever the previous one took, as wrk2 does per connection. When a task starts late (its user
was still busy), its first request records `intended_ns`, and `co_latency_ms` = lateness +
latency: the latency that the coordinated-omission-free view would have seen. Arrivals the
generator could not start on time are the records with `start_ns - intended_ns` above a
tolerance (`late_arrivals`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

Rate = Callable[[], tuple[float, int]]  # (total arrivals per second, total users) now

# Set by the harness on each process: where the current rate and user count come from.
_rate_source: Rate | None = None


def set_rate_source(source: Rate | None) -> None:
    global _rate_source
    _rate_source = source


def pacer_for(user: Any) -> Pacer | None:
    if _rate_source is None:
        return None
    rate, _ = _rate_source()
    if rate <= 0:
        return None
    return Pacer(_rate_source)


class Pacer:
    """One user's schedule of intended task starts."""

    def __init__(self, source: Rate, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.source = source
        self.clock_ns = clock_ns
        self.next_ns: int | None = None
        self._pending: int | None = None
        self.rng = random.Random()

    def interval_ns(self) -> int:
        rate, users = self.source()
        if rate <= 0:
            return 0
        return int(max(users, 1) / rate * 1e9)

    def wait_time(self) -> float:
        """Seconds until this user's next intended start (0 when already late)."""
        now = self.clock_ns()
        interval = self.interval_ns()
        if interval == 0:
            self._pending = None
            return 0.0
        if self.next_ns is None:
            self.next_ns = now + int(self.rng.uniform(0, interval))
        else:
            self.next_ns += interval
        self._pending = self.next_ns
        return max(0.0, (self.next_ns - now) / 1e9)

    def context(self) -> dict[str, Any]:
        """The intended start for the first request of a task; later ones carry none."""
        if self._pending is None:
            return {}
        intended, self._pending = self._pending, None
        return {"intended_ns": intended}


def late_arrivals(table: pa.Table, tolerance_ms: float = 1.0) -> int:
    """Records that started more than `tolerance_ms` after their intended time."""
    if "intended_ns" not in table.column_names or table.num_rows == 0:
        return 0
    lateness = pc.subtract(table["start_ns"], table["intended_ns"])
    late = pc.greater(lateness, int(tolerance_ms * 1e6))
    return int(pc.sum(pc.fill_null(late, False).cast(pa.int64())).as_py() or 0)
