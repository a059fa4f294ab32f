"""The split and the propagation as the run goes, for the web UI's meshload tab.

The master reads the request parts already in the run folder (every worker's: they land
there, `loadgen.records_link`), each part once, and keeps counts: requests per (step,
version), and per (step, gateway replica) the first request answered by that step's
configuration. A stamped run counts a request in the step of its stamp (`config_step`), an
unstamped one in the step it started in (`step`), as the report does before its change-point
correction: the live figures are a preview, the report's are the verdict. Each step gets the
report's three-valued verdict (`analysis.verdicts.step_verdict`) on what has arrived, its 95 %
interval per version, the precision it has reached and how long it still needs at the
current rate to pass at the tolerance; each change its delay per replica (accepted by the API
-> the first request start answered by the new configuration).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow.parquet as pq

from analysis.verdicts import step_verdict, wilson_interval
from meshcore.figures import step_half_width_pp, step_requests_to_pass
from meshcore.runfolder import RunFolder

log = logging.getLogger(__name__)

_COLUMNS = ["start_ns", "step", "version", "config_step", "replica"]


@dataclass
class LiveSplit:
    """Counts of the run folder's parts read so far."""

    folder: RunFolder
    stamped: bool
    counts: Counter[tuple[int, str]] = field(default_factory=Counter)
    first_new: dict[tuple[int, str], int] = field(default_factory=dict)
    rows: int = 0
    _read: set[str] = field(default_factory=set)

    def update(self) -> None:
        """Read the parts that landed since the last call."""
        for part in self.folder.parts():
            if part.name in self._read:
                continue
            try:
                t = pq.read_table(part, columns=_COLUMNS).to_pydict()
            except Exception as e:  # a part being replaced, or a folder gone: next time
                log.debug("live split: %s not read: %s", part.name, e)
                continue
            self._read.add(part.name)
            self.rows += len(t["start_ns"])
            by = t["config_step"] if self.stamped else t["step"]
            for start, step, version, replica in zip(
                t["start_ns"], by, t["version"], t["replica"], strict=True
            ):
                if step is None:
                    continue
                self.counts[(int(step), version or "unknown")] += 1
                if self.stamped and replica:
                    key = (int(step), str(replica))
                    if start < self.first_new.get(key, start + 1):
                        self.first_new[key] = int(start)

    def steps(
        self, events: list[Mapping[str, Any]], tolerance_pp: float, rate: float
    ) -> list[dict[str, str]]:
        """One row per applied weight change: what the meshload tab shows."""
        out: list[dict[str, str]] = []
        for e in events:
            if e.get("kind") != "weights":
                continue
            k, weights = int(e["step"]), dict(e.get("weights") or {})
            total = sum(weights.values()) or 1
            configured = {v: w / total for v, w in weights.items()}
            mine = {v: c for (s, v), c in self.counts.items() if s == k}
            n = sum(mine.values())
            known = {v: c for v, c in mine.items() if v != "unknown"}
            verdict = step_verdict(
                configured, known, n=n, tolerance_pp=tolerance_pp, unknown=mine.get("unknown", 0)
            )
            out.append({
                "step": str(k),
                "configured": ", ".join(f"{v} {s * 100:g} %" for v, s in configured.items()),
                "served": _served(configured, known, n),
                "requests": f"{n:,}",
                "precision": _precision(list(configured.values()), n, tolerance_pp, rate),
                "propagation": (
                    self._propagation(k, e.get("accepted_ns"))
                    if out
                    else "initial weights: users start once the gateway serves them"
                ),
                "verdict": verdict.verdict,
            })  # fmt: skip
        return out

    def _propagation(self, step: int, accepted_ns: Any) -> str:
        if not self.stamped:
            return "estimated in the report (unstamped)"
        if not isinstance(accepted_ns, int):
            return "–"
        found = sorted((r, t) for (s, r), t in self.first_new.items() if s == step)
        if not found:
            return "not served yet"
        return ", ".join(f"{r} {(t - accepted_ns) / 1e6:.0f} ms" for r, t in found)


def _served(configured: Mapping[str, float], known: Mapping[str, int], n: int) -> str:
    if n == 0:
        return "no requests yet"
    parts = []
    for v in sorted(set(configured) | set(known)):
        lo, hi = wilson_interval(known.get(v, 0), n)
        share = known.get(v, 0) / n * 100
        parts.append(f"{v} {share:.1f} % [{float(lo) * 100:.1f}, {float(hi) * 100:.1f}]")
    return "; ".join(parts)


def _precision(shares: list[float], n: int, tolerance_pp: float, rate: float) -> str:
    """How precise the step is now, and how much longer a true split needs to pass."""
    width = step_half_width_pp(shares, n) if n else math.inf
    now = f"±{width:.1f} pp" if math.isfinite(width) else "no requests"
    more = step_requests_to_pass(shares, tolerance_pp) - n
    if more <= 0:
        return f"{now}: enough to pass at ±{tolerance_pp:g} pp"
    if rate <= 0:
        return f"{now}: needs {more:,} more requests for ±{tolerance_pp:g} pp"
    return f"{now}: needs {math.ceil(more / rate):,} s more for ±{tolerance_pp:g} pp"
