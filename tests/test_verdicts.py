"""The three-valued split verdict, simulated: it seldom fails a true split, and it catches a
5 pp error at the requests it says it needs.

Each simulated step draws its requests from a binomial at the true share of v2 and is judged
by `analysis.verdicts.step_verdict` at 2 pp. The measured rates print with `pytest -s`; the
exact rates (binomial sums over every count, no simulation) back them per configured share.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analysis.verdicts import step_verdict
from meshcore.figures import step_requests_needed, step_requests_to_pass
from tests import split_by_hand as by_hand

TOLERANCE_PP = 2.0
ERROR = 0.05  # 2.5 tolerances
STEPS = 1000
# v2's share in the scenarios' plans (canary, ci, abtest): 0, 5, 10, 25, 50, 75, 90, 100 %
SHARES = (0.0, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 1.0)


def verdict(v2_share: float, n: int, v2_count: int) -> str:
    configured = {"v1": 1.0 - v2_share, "v2": v2_share}
    counts = {"v1": n - v2_count, "v2": v2_count}
    return step_verdict(configured, counts, n=n, tolerance_pp=TOLERANCE_PP).verdict


def off_by_error(share: float, i: int) -> float:
    """The true share 5 pp from the configured one, alternately above and below (inside 0..1)."""
    up = share + ERROR <= 1.0 and (i % 2 == 0 or share - ERROR < 0.0)
    return share + ERROR if up else share - ERROR


def plain_verdict(v2_share: float, n: int, v2_count: int) -> str:
    configured = {"v1": 1.0 - v2_share, "v2": v2_share}
    return by_hand.verdict(configured, {"v1": n - v2_count, "v2": v2_count}, n, TOLERANCE_PP)


def test_the_verdict_is_the_documented_rule() -> None:
    rng = np.random.default_rng(7)
    for _ in range(2000):
        share = float(rng.choice(SHARES))
        n = int(rng.integers(1, 5000))
        k = int(rng.binomial(n, min(max(share + rng.normal(0, 0.03), 0.0), 1.0)))
        assert verdict(share, n, k) == plain_verdict(share, n, k), (share, n, k)


def test_false_fails_and_power_over_1000_simulated_steps() -> None:
    rng = np.random.default_rng(2026)
    # true splits, at every length from 20 to 20,000 requests (log-uniform)
    true_verdicts = []
    for i in range(STEPS):
        share = SHARES[i % len(SHARES)]
        n = int(np.exp(rng.uniform(np.log(20), np.log(20_000))))
        true_verdicts.append(verdict(share, n, int(rng.binomial(n, share))))
    false_fail = true_verdicts.count("fail") / STEPS
    passed_true = true_verdicts.count("pass") / STEPS
    # 5 pp off, at the requests `meshload plan` says the tolerance needs
    caught: dict[float, list[bool]] = {s: [] for s in SHARES}
    for i in range(STEPS):
        share = SHARES[i % len(SHARES)]
        n = step_requests_needed([1.0 - share, share], TOLERANCE_PP)
        k = int(rng.binomial(n, off_by_error(share, i // len(SHARES))))
        caught[share].append(verdict(share, n, k) == "fail")
    power = float(np.mean([x for xs in caught.values() for x in xs]))
    # true splits at the requests the verdict says an inconclusive step needs to pass
    at_pass = []
    for i in range(STEPS):
        share = SHARES[i % len(SHARES)]
        n = step_requests_to_pass([1.0 - share, share], TOLERANCE_PP)
        at_pass.append(verdict(share, n, int(rng.binomial(n, share))) == "pass")
    pass_rate = float(np.mean(at_pass))
    print(
        f"\n{STEPS} simulated steps each, tolerance {TOLERANCE_PP:g} pp:"
        f"\n  true splits, 20..20,000 requests: false fails {false_fail:.1%}, "
        f"passed {passed_true:.1%}, the rest inconclusive"
        f"\n  5 pp off at step_requests_needed: failed {power:.1%} ("
        + ", ".join(f"{s:.0%} {np.mean(c):.0%}" for s, c in caught.items())
        + f")\n  true splits at step_requests_to_pass: passed {pass_rate:.1%}"
    )
    assert false_fail <= 0.05
    assert power >= 0.80
    assert pass_rate >= 0.90


@pytest.mark.parametrize("share", SHARES)
def test_exact_power_and_false_fails_per_share(share: float) -> None:
    """Binomial sums over every count: no share is left below the simulated average."""
    n = step_requests_needed([1.0 - share, share], TOLERANCE_PP)
    counts = np.arange(n + 1)
    fails = np.array([verdict(share, n, int(k)) == "fail" for k in counts])
    for true in (share - ERROR, share + ERROR):
        if 0.0 <= true <= 1.0:
            power = float(stats.binom.pmf(counts, n, true)[fails].sum())
            assert power >= 0.80, (share, true, n, power)
    false_fail = float(stats.binom.pmf(counts, n, share)[fails].sum())
    assert false_fail <= 0.05, (share, n, false_fail)
