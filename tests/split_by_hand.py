"""Tests: the split verdict of docs/design.md computed by hand, independent of analysis.split."""

from __future__ import annotations

import math
from collections.abc import Mapping

Z = 1.959963984540054  # the 97.5 % normal quantile


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson score interval by its textbook formula (0 and 1 exactly at the ends)."""
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return (0.0 if k <= 0 else centre - half), (1.0 if k >= n else centre + half)


def verdict(
    configured: Mapping[str, float],
    counts: Mapping[str, int],
    n: int,
    tolerance_pp: float,
    unknown: int = 0,
) -> str:
    """Each version's interval, from its own count's low end to the high end with every
    request of unknown version added, against its weight ± tolerance; a weight-0 version that
    served a request fails."""
    t = tolerance_pp / 100
    outcomes = set()
    for v, share in configured.items():
        k = counts.get(v, 0)
        lo, hi = wilson(k, n)[0], wilson(k + unknown, n)[1]
        if share == 0 and k:
            outcomes.add("fail")
        elif share - t - 1e-12 <= lo and hi <= share + t + 1e-12:
            outcomes.add("pass")
        elif lo > share + t + 1e-12 or hi < share - t - 1e-12:
            outcomes.add("fail")
        else:
            outcomes.add("inconclusive")
    return "fail" if "fail" in outcomes else "pass" if outcomes == {"pass"} else "inconclusive"
