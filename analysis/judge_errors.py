"""How the judge compares the two versions' error rates: step by step, as it compares latency.

Pooled over the run, the baseline's requests come mostly from the early steps and the canary's
from the late ones, so errors that drift over the run read as a version difference: a warm-up
whose first requests fail (step 0 serves the baseline alone) lifts the baseline's rate and hides
a worse canary; errors that grow with the load fail a healthy one. So:

- step-matched (any step that served both versions): the rates are compared within those steps
  and combined with Mantel-Haenszel's weights n_b n_c / (n_b + n_c); the difference is the
  weighted mean of the steps' differences, and the test is the exact stratified one (the
  canary's errors summed over the steps, each step's table conditioned on its margins: the
  convolution of the steps' hypergeometric distributions; for one step, Fisher's exact test);
- the steps the canary served alone (a canary plan's last step at 100 %): nothing of the
  baseline's ran then, so their errors are compared with the baseline's in the nearest step
  before them that both served (Fisher's exact test), and a canary that fails only under all
  the traffic still fails; a drift of errors between those two steps cannot be told from the
  canary, and the reason names both steps;
- pooled (no step served both: a blue/green plan, or requests without steps): Fisher's exact
  test over every request, and the result says so (`error_method`).

Steps the baseline served alone (a plan's step 0) take no part. A canary fails on errors when
an increase is both significant (p < alpha, one-sided) and material (above the allowance).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

STRATIFIED_TEST = "exact stratified"
FISHER_TEST = "Fisher exact"


def stratified_exact_p(tables: Sequence[tuple[int, int, int, int]]) -> float:
    """One-sided p of the canary failing more often, over steps given as (canary errors,
    canary requests, baseline errors, baseline requests): P(S >= observed) for S the canary's
    errors summed over the steps, each step's count hypergeometric given its margins."""
    dist, offset, observed = np.ones(1), 0, 0
    for e_c, n_c, e_b, n_b in tables:
        m = e_c + e_b
        lo = max(0, m - n_b)
        pmf = stats.hypergeom.pmf(np.arange(lo, min(m, n_c) + 1), n_c + n_b, m, n_c)
        kept = np.flatnonzero(pmf > 0)  # the far tails underflow; what is left is contiguous
        dist = np.convolve(dist, pmf[kept[0] : kept[-1] + 1])
        offset, observed = offset + lo + int(kept[0]), observed + e_c
    return float(min(1.0, dist[max(observed - offset, 0) :].sum()))


def _fisher_p(e_c: int, n_c: int, e_b: int, n_b: int) -> float:
    table = [[e_c, n_c - e_c], [e_b, n_b - e_b]]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


def steps_text(steps: Sequence[int]) -> str:
    """`step 5`, `steps 1–4` for a run of steps, else `steps 1, 3`."""
    if len(steps) == 1:
        return f"step {steps[0]}"
    if list(steps) == list(range(steps[0], steps[-1] + 1)):
        return f"steps {steps[0]}–{steps[-1]}"
    return "steps " + ", ".join(map(str, steps))


def _alone(
    steps: Sequence[tuple[int, int, int, int, int]],
    shared: Sequence[tuple[int, int, int, int, int]],
    names: tuple[str, str],
    judged: Callable[[float, float, str, str], None],
) -> dict[str, Any]:
    """The steps the canary served alone, against the baseline in the step nearest before them
    that both served (else the first that both served): the closest in time to them."""
    b_name, c_name = names
    first = steps[0][0]
    ref = ([s for s in shared if s[0] < first] or shared[:1])[-1]
    ref_e, ref_n = ref[3], ref[4]
    e, n = sum(s[1] for s in steps), sum(s[2] for s in steps)
    rate, ref_rate = e / n, ref_e / ref_n
    diff, p = 100.0 * (rate - ref_rate), _fisher_p(e, n, ref_e, ref_n)
    which = [s[0] for s in steps]
    what = (
        f"in {steps_text(which)}, which {c_name} served alone ({rate:.1%} of {n:,}), on "
        f"{b_name}'s {ref_rate:.1%} of {ref_n:,} in step {ref[0]}, the nearest both served"
    )
    judged(diff, p, FISHER_TEST, what)
    return {
        "steps": which,
        "n": n,
        "errors": e,
        "rate": rate,
        "baseline_step": ref[0],
        "baseline_rate": ref_rate,
        "diff_pp": diff,
        "p": p,
    }


def compare_errors(
    steps: np.ndarray | None,
    failed: np.ndarray,
    base: np.ndarray,
    canary: np.ndarray,
    *,
    names: tuple[str, str],
    alpha: float,
    allowed_pp: float,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(summary.json's error fields of `judge`, fail reasons, doubt reasons) for requests whose
    `steps` (float, NaN for none; None: no step column), `failed`, and baseline / canary
    membership (`base`, `canary`) are given as arrays."""
    b_name, c_name = names
    per_step: list[tuple[int, int, int, int, int]] = []  # step, e_c, n_c, e_b, n_b
    if steps is not None:
        for k in np.unique(steps[~np.isnan(steps)]):
            here = steps == k
            c, b = canary & here, base & here
            per_step.append((int(k), int((c & failed).sum()), int(c.sum()),
                             int((b & failed).sum()), int(b.sum())))  # fmt: skip
    shared = [s for s in per_step if s[2] and s[4]]
    fails: list[str] = []
    doubts: list[str] = []

    def judged(diff_pp: float, p: float, test: str, what: str) -> None:
        if diff_pp <= allowed_pp:
            return
        msg = f"error rate up {diff_pp:.2f} pp {what}, allowed {allowed_pp:g} pp"
        if p < alpha:
            fails.append(f"{msg} ({test} p={p:.2g})")
        else:
            doubts.append(f"{msg}, not significant ({test} p={p:.2g})")

    if not shared:
        all_c, all_b = int(canary.sum()), int(base.sum())
        err_c, err_b = int((canary & failed).sum()), int((base & failed).sum())
        pooled_c, pooled_b = err_c / max(all_c, 1), err_b / max(all_b, 1)
        pooled_diff = 100.0 * (pooled_c - pooled_b)
        pooled_p = _fisher_p(err_c, all_c, err_b, all_b)
        shown = f"({c_name} {pooled_c:.1%} of {all_c:,}, {b_name} {pooled_b:.1%} of {all_b:,})"
        judged(pooled_diff, pooled_p, FISHER_TEST, shown)
        pooled: dict[str, Any] = {"error_method": "pooled", "error_steps": None,
                                  "error_test": FISHER_TEST, "error_rate_diff_pp": pooled_diff,
                                  "error_p": pooled_p}  # fmt: skip
        return pooled, fails, doubts

    e_c, n_c, e_b, n_b = np.array([s[1:] for s in shared], dtype=float).T
    w = n_b * n_c / (n_b + n_c)
    rate_c = float(np.average(e_c / n_c, weights=w))
    rate_b = float(np.average(e_b / n_b, weights=w))
    diff = 100.0 * (rate_c - rate_b)
    p = stratified_exact_p([s[1:] for s in shared])
    matched = [s[0] for s in shared]
    what = (
        f"step-matched over {steps_text(matched)} ({c_name} {rate_c:.1%} of "
        f"{int(n_c.sum()):,}, {b_name} {rate_b:.1%} of {int(n_b.sum()):,})"
    )
    judged(diff, p, STRATIFIED_TEST, what)
    fields = {
        "error_method": "step-matched",
        "error_steps": matched,
        "error_test": STRATIFIED_TEST,
        "error_rate_matched": {b_name: rate_b, c_name: rate_c},
        "error_rate_diff_pp": diff,
        "error_p": p,
    }
    if alone := [s for s in per_step if s[2] and not s[4]]:
        fields["canary_alone"] = _alone(alone, shared, names, judged)
    return fields, fails, doubts


def error_method_line(result: Mapping[str, Any]) -> str:
    """How a verdict's error rates were compared, for a person; "" for a summary of an older
    meshload, which does not say."""
    if result.get("error_method") == "step-matched":
        line = (
            f"Errors step-matched too ({steps_text(result.get('error_steps') or [])}, the rates "
            f"weighted alike, {STRATIFIED_TEST} test)"
        )
        if alone := result.get("canary_alone"):
            line += (
                f"; {steps_text(alone['steps'])}, which {result.get('canary')} served alone, "
                f"against {result.get('baseline')} in step {alone['baseline_step']}"
            )
        return line + "."
    if result.get("error_method") == "pooled":
        return "Errors pooled over every request (no step served both versions; Fisher exact)."
    return ""
