"""Live gates, Flagger-style: the canary's error share and p99 over the last N seconds.

The master reads the request parts that workers have already written to the run folder (they
flush every couple of seconds), so the gates see every process's records without a channel of
their own; the price is a lag of one flush interval. A tripped gate calls `on_fail` with the
event to log; the harness rolls the canary back to step 0 and ends the run with exit code 3.
The canary is the run's (`meshcore.figures.choose_roles`, recorded in run.json) and the p99 is
computed by the report's rule (`meshcore.figures.percentile`), so the live gate and the report
judge the same version by the same figure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from loadgen.options import Settings
from meshcore.figures import percentile
from meshcore.runfolder import RunFolder

log = logging.getLogger(__name__)

_COLUMNS = ["start_ns", "latency_ms", "ok", "version"]


def _empty(dtype: type) -> Callable[[], np.ndarray]:
    return lambda: np.empty(0, dtype=dtype)


@dataclass(kw_only=True)
class Gates:
    """The canary's records of the last `window_s`, checked every `interval_s`."""

    folder: RunFolder
    canary: str
    on_fail: Callable[[dict[str, Any]], None]
    error_rate: float = 0.0  # 0: off
    p99_ms: float = 0.0  # 0: off
    window_s: float = 10.0
    min_requests: int = 20
    interval_s: float = 1.0
    tripped: dict[str, Any] | None = field(default=None, init=False)
    _read: set[str] = field(default_factory=set, init=False, repr=False)
    _start_ns: np.ndarray = field(default_factory=_empty(np.int64), init=False, repr=False)
    _latency_ms: np.ndarray = field(default_factory=_empty(np.float64), init=False, repr=False)
    _ok: np.ndarray = field(default_factory=_empty(bool), init=False, repr=False)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        canary: str,
        folder: RunFolder,
        on_fail: Callable[[dict[str, Any]], None],
    ) -> Gates | None:
        if settings.gate_error_rate <= 0 and settings.gate_p99_ms <= 0:
            return None
        return cls(
            folder=folder,
            canary=canary,
            on_fail=on_fail,
            error_rate=settings.gate_error_rate,
            p99_ms=settings.gate_p99_ms,
            window_s=settings.gate_window_s,
        )

    def _ingest(self) -> None:
        for part in self.folder.parts():
            if part.name in self._read:
                continue
            self._read.add(part.name)
            try:
                t = pq.read_table(part, columns=_COLUMNS)
            except Exception as e:  # a gate that cannot read data stays quiet, never trips
                log.warning("gate: cannot read %s: %s", part, e)
                continue
            mask = np.asarray(t["version"].to_pylist(), dtype=object) == self.canary
            self._start_ns = np.concatenate([self._start_ns, t["start_ns"].to_numpy()[mask]])
            lat = t["latency_ms"].to_numpy(zero_copy_only=False)[mask]
            self._latency_ms = np.concatenate([self._latency_ms, lat])
            ok = t["ok"].to_numpy(zero_copy_only=False)[mask]
            self._ok = np.concatenate([self._ok, ok.astype(bool)])

    def check(self, now_ns: int | None = None) -> dict[str, Any] | None:
        """The gate event if a threshold is crossed over the last window, else None."""
        self._ingest()
        now_ns = time.time_ns() if now_ns is None else now_ns
        keep = self._start_ns >= now_ns - int(self.window_s * 1e9)
        self._start_ns, self._latency_ms, self._ok = (
            self._start_ns[keep],
            self._latency_ms[keep],
            self._ok[keep],
        )
        n = int(self._ok.size)
        if n < self.min_requests:
            return None
        errors = float(np.count_nonzero(~self._ok)) / n
        p99 = percentile(self._latency_ms, 99.0)  # the report's rule, meshcore.figures
        for gate, value, threshold in (
            ("error_rate", errors, self.error_rate),
            ("p99_ms", p99, self.p99_ms),
        ):
            if threshold > 0 and value > threshold:
                return {
                    "kind": "gate",
                    "subset": self.canary,
                    "window_s": self.window_s,
                    "n": n,
                    "gate": gate,
                    "value": value,
                    "threshold": threshold,
                    "t_ns": now_ns,
                }
        return None

    def run(self, sleep: Callable[[float], Any] = time.sleep) -> None:
        """Check once per interval until a gate trips (then report it once and return)."""
        while self.tripped is None:
            sleep(self.interval_s)
            event = self.check()
            if event is not None:
                self.tripped = event
                log.error(
                    "gate %s tripped for %s: %.4g > %.4g over %.0f s; rolling back",
                    event["gate"],
                    self.canary,
                    event["value"],
                    event["threshold"],
                    self.window_s,
                )
                self.on_fail(event)
