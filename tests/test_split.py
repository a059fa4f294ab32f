"""Split accuracy against closed forms and plain counting."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.split import chi2_gof_p, mark_steps, split_accuracy, split_records
from analysis.synthetic import make_run
from analysis.verdicts import record_verdict, step_verdict, wilson_interval
from meshcore.figures import step_requests_to_pass
from tests import split_by_hand as by_hand

Z = 1.959963984540054


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    p = k / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return max(centre - half, 0.0), min(centre + half, 1.0)


def test_wilson_equals_closed_form() -> None:
    cases = [(0, 10), (1, 10), (5, 10), (10, 10), (37, 1000), (999, 1000), (3, 7)]
    lo, hi = wilson_interval(np.array([k for k, _ in cases]), np.array([n for _, n in cases]))
    for i, (k, n) in enumerate(cases):
        assert (lo[i], hi[i]) == pytest.approx(wilson_by_hand(k, n), abs=1e-12)
    assert np.isnan(wilson_interval(0, 0)[0])


def test_wilson_covers_95_percent_over_1000_steps() -> None:
    # 1,000 steps of ~200 requests at 70/30 through the whole pipeline (change points included)
    steps = [{"v1": 70, "v2": 30}] * 1000
    run = make_run(n_requests=200_000, seed=11, steps=steps, rps=20.0, with_spans=False)
    frame = split_accuracy(run.requests, run.run, margin_ms=1000.0)
    v2 = frame[frame["version"] == "v2"]
    assert len(v2) == 1000 and (v2["n"] > 100).all()
    coverage = np.mean((v2["ci_lo"] <= 0.3) & (v2["ci_hi"] >= 0.3))
    assert 0.935 <= coverage <= 0.965


def test_chi2_p_equals_hand_computation() -> None:
    # one degree of freedom: p = erfc(sqrt(x / 2)); two: p = exp(-x / 2)
    counts = {"v1": 880, "v2": 120}
    x = (880 - 900) ** 2 / 900 + (120 - 100) ** 2 / 100
    assert chi2_gof_p(counts, {"v1": 0.9, "v2": 0.1}) == pytest.approx(
        math.erfc(math.sqrt(x / 2)), rel=1e-10
    )
    counts3 = {"a": 340, "b": 310, "c": 350}
    e = 1000 / 3
    x3 = sum((o - e) ** 2 / e for o in counts3.values())
    shares = {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    assert chi2_gof_p(counts3, shares) == pytest.approx(math.exp(-x3 / 2), rel=1e-10)
    # a weight-0 version has no category: the test runs over the others only
    assert chi2_gof_p({**counts, "v3": 4}, {"v1": 0.9, "v2": 0.1, "v3": 0.0}) == pytest.approx(
        math.erfc(math.sqrt(x / 2)), rel=1e-10
    )
    assert math.isnan(chi2_gof_p({"v1": 10}, {"v1": 1.0, "v2": 0.0}))


def hand_made(versions: list[str | None], weights: dict[str, int]) -> tuple[dict, pd.DataFrame]:
    n = len(versions)
    run = {
        "events": [
            {"kind": "weights", "step": 0, "weights": weights, "requested_ns": 0, "accepted_ns": 0}
        ]
    }
    requests = pd.DataFrame(
        {
            "start_ns": np.arange(n, dtype=np.int64) * 1_000_000 + 10,
            "version": pd.Series(versions, dtype="str"),
            "step": np.zeros(n, dtype=np.int64),
        }
    )
    return run, requests


def test_weight_zero_version_serving_fails_the_step() -> None:
    run, requests = hand_made(["v1"] * 995 + ["v2"] * 5, {"v1": 100, "v2": 0})
    frame = split_accuracy(requests, run, margin_ms=0.0)
    assert not frame["passed"].iloc[0]
    assert "weight-0 version(s) served requests: v2" in frame["reason"].iloc[0]
    row = frame.set_index("version").loc["v2"]
    assert row["count"] == 5 and row["error_pp"] == pytest.approx(0.5)


def test_unknown_versions_count_in_n_and_never_fail_a_step() -> None:
    run, requests = hand_made(["v1", "v2"] * 4500 + [None] * 1000, {"v1": 50, "v2": 50})
    frame = split_accuracy(requests, run, margin_ms=0.0, tolerance_pp=2.0)
    by = frame.set_index("version")
    assert by.loc["unknown", "count"] == 1000 and by.loc["v1", "n"] == 10_000
    assert by.loc["v1", "observed_share"] == pytest.approx(0.45)
    assert by.loc["v1", "error_pp"] == pytest.approx(-5.0)
    # 0.45 +- 1 pp lies below 50 % +- 2 pp, but the 1,000 without a version could be v1's
    assert by.loc["v1", "ci_hi"] < 0.48
    assert not by.loc["v1", "passed"] and by.loc["v1", "verdict"] == "inconclusive"
    record = split_records(frame)[0]
    assert record["n_unknown"] == 1000 and record["observed"]["unknown"] == pytest.approx(0.1)
    assert set(record["configured"]) == {"v1", "v2"}
    assert record["reason"] == (
        "inconclusive: 10.0 % of responses carry no version "
        "(set --version-header or allow stamping)"
    )
    assert record["needs_requests"] is None  # more requests would not help
    # a version that never sends the header: v2 vanishes, the step is inconclusive, not failed
    run, requests = hand_made(["v1", None] * 5000, {"v1": 50, "v2": 50})
    record = split_records(split_accuracy(requests, run, margin_ms=0.0))[0]
    assert record["verdict"] == "inconclusive" and "50.0 % of responses" in record["reason"]


def test_requests_without_a_response_are_said_so() -> None:
    run, requests = hand_made(["v1", "v2"] * 4500 + [None] * 1000, {"v1": 50, "v2": 50})
    requests["status"] = np.where(requests["version"].isna(), 0, 200)
    record = split_records(split_accuracy(requests, run, margin_ms=0.0))[0]
    assert record["n_no_response"] == 1000
    assert record["reason"] == "inconclusive: 1,000 requests got no response, so no version"


def test_tolerance_passes_a_small_but_significant_error() -> None:
    run, requests = hand_made(["v1"] * 91_000 + ["v2"] * 9_000, {"v1": 90, "v2": 10})
    strict = split_accuracy(requests, run, margin_ms=0.0, tolerance_pp=0.5)
    loose = split_accuracy(requests, run, margin_ms=0.0, tolerance_pp=2.0)
    assert strict["verdict"].iloc[0] == "fail" and not strict["passed"].iloc[0]
    assert "share off by more than 0.5 pp (its whole 95 % interval): v1, v2" in strict["reason"][0]
    assert loose["verdict"].iloc[0] == "pass" and loose["passed"].iloc[0]


def test_few_requests_are_inconclusive_and_say_what_they_need() -> None:
    run, requests = hand_made(["v1", "v2"] * 400, {"v1": 50, "v2": 50})
    record = split_records(split_accuracy(requests, run, margin_ms=0.0))[0]
    # exactly 50/50, yet +-3.5 pp cannot show the split within 2 pp
    assert record["verdict"] == "inconclusive" and not record["passed"]
    assert record["needs_requests"] == step_requests_to_pass([0.5, 0.5], 2.0) == 9604
    assert record["reason"] == "inconclusive: needs 9,604 requests (has 800)"
    assert record["precision_pp"] == pytest.approx(
        (wilson_by_hand(400, 800)[1] - wilson_by_hand(400, 800)[0]) / 2 * 100
    )
    # with those requests, the same split passes; 5 pp off, it fails
    run, requests = hand_made(["v1", "v2"] * 4802, {"v1": 50, "v2": 50})
    assert split_records(split_accuracy(requests, run, margin_ms=0.0))[0]["verdict"] == "pass"
    run, requests = hand_made(["v1"] * 5282 + ["v2"] * 4322, {"v1": 50, "v2": 50})
    assert split_records(split_accuracy(requests, run, margin_ms=0.0))[0]["verdict"] == "fail"
    # already that many, but the share sits near the edge: what its interval needs to decide
    counts = {"v1": 5150, "v2": 4850}
    near = step_verdict({"v1": 0.5, "v2": 0.5}, counts, n=10_000, tolerance_pp=2.0)
    assert near.verdict == "inconclusive"  # [50.5 %, 52.5 %] crosses 52 %
    d = 2.0 - 1.5  # pp from the observed 51.5 % to the edge at 52 %
    assert near.needs_requests == math.ceil((Z * 100) ** 2 * 0.515 * 0.485 / d**2)
    nothing = step_verdict({"v1": 1.0, "v2": 0.0}, {}, n=0, tolerance_pp=2.0)
    assert nothing.verdict == "inconclusive" and nothing.needs_requests == 189
    assert step_verdict({"v1": 1.0}, {"v1": 10}, n=10, tolerance_pp=0.0).needs_requests is None


def test_step_verdict_equals_a_plain_rule() -> None:
    """Random steps of three versions, some requests without a version: the interval of each
    version runs from its own count's low end to the high end with every unknown added."""
    rng = np.random.default_rng(13)
    for _ in range(500):
        weights = rng.dirichlet([1.0, 1.0, 1.0]) * (rng.random(3) > 0.2)
        if weights.sum() == 0:
            continue
        configured = dict(zip(("a", "b", "c"), weights / weights.sum(), strict=True))
        n = int(rng.integers(1, 6000))
        drawn = rng.multinomial(n, [*(weights / weights.sum() * 0.97), 0.03])
        counts = {v: int(c) for v, c in zip(("a", "b", "c"), drawn[:3], strict=True) if c}
        unknown = int(drawn[3])
        got = step_verdict(configured, counts, n=n, tolerance_pp=2.0, unknown=unknown)
        expected = by_hand.verdict(configured, counts, n, 2.0, unknown)
        assert got.verdict == expected, (configured, counts, n, unknown)
        record = {"configured": configured, "counts": {**counts, "unknown": unknown}, "n": n,
                  "n_unknown": unknown}  # fmt: skip
        assert record_verdict(record, 2.0) == got


def test_a_stamped_run_counts_each_steps_own_configuration() -> None:
    """Requests by their stamp, wherever they started; unstamped ones after the first new one."""
    synth = make_run(
        n_requests=6000,
        seed=14,
        rps=40.0,
        stamped=True,
        replicas=3,
        replica_delay_ms=[0, 30, 3000],
        unknown_rate=0.01,
        with_spans=False,
    )
    frame = split_accuracy(synth.requests, synth.run)
    assert set(frame["method"]) == {"stamped"}
    rows = [
        (r["step"], None if pd.isna(r["config_step"]) else int(r["config_step"]), r["start_ns"],
         r["version"] if isinstance(r["version"], str) else "unknown")
        for r in synth.requests.to_dict("records")
    ]  # fmt: skip
    for step, g in frame.groupby("step"):
        eff = g["effective_ns"].iloc[0]
        mine = [
            r for r in rows
            if r[1] == step or (r[1] is None and r[0] == step and r[2] >= eff)
        ]  # fmt: skip
        for version, row in g.set_index("version").iterrows():
            assert row["count"] == sum(r[3] == version for r in mine), (step, version)
        assert g["n"].iloc[0] == len(mine)
        if step > 0:  # the slow replica's old-configuration requests stay in the old step
            late = [r for r in rows if r[0] == step and r[1] is not None and r[1] < step]
            assert late and not set(late) & set(mine)


def test_counts_equal_a_plain_loop() -> None:
    run = make_run(n_requests=8_000, seed=12, unknown_rate=0.005, with_spans=False)
    frame = split_accuracy(run.requests, run.run)
    rows = run.requests.to_dict("records")
    for (step, version), row in frame.set_index(["step", "version"]).iterrows():
        eff = row["effective_ns"]
        expected = sum(
            1
            for r in rows
            if r["step"] == step
            and r["start_ns"] >= eff
            and (r["version"] if isinstance(r["version"], str) else "unknown") == version
        )
        assert row["count"] == expected
    assert (frame.groupby("step")["count"].sum() == frame.groupby("step")["n"].first()).all()


def test_steps_not_applied_or_broken_say_so_in_the_table() -> None:
    synth = make_run(n_requests=4000, seed=7, with_spans=False)
    requests = synth.requests.copy()
    steps = sorted(requests["step"].unique())
    broken_step = int(steps[1])
    mine = requests["step"] == broken_step
    requests.loc[mine, "ok"] = np.arange(mine.sum()) % 10 < 7  # 30 % failed: not broken
    run = {**synth.run, "events": [*synth.run["events"], {"kind": "weights_failed", "step": 9,
           "weights": {"v1": 0, "v2": 100}, "reason": "Kubernetes API unreachable"}]}  # fmt: skip
    records = mark_steps(split_records(split_accuracy(requests, run)), run, requests)
    assert [r["step"] for r in records] == [*map(int, steps), 9]
    assert not any(r.get("broken") for r in records)
    failed = records[-1]
    assert failed["applied"] is False and failed["passed"] is False and failed["n"] == 0
    assert failed["reason"] == "not applied: Kubernetes API unreachable"
    assert failed["verdict"] == "fail" and failed["needs_requests"] is None
    assert failed["configured"] == {"v1": 0.0, "v2": 1.0}
    requests.loc[mine, "ok"] = np.arange(mine.sum()) % 10 < 3  # 70 % failed: broken at 50 %
    records = mark_steps(split_records(split_accuracy(requests, run)), run, requests)
    broken = next(r for r in records if r["step"] == broken_step)
    assert broken["broken"] and not broken["passed"] and broken["verdict"] == "fail"
    assert broken["reason"].startswith("broken: 70% of")
    strict = {**run, "broken_step_error_rate": 0.8}
    records = mark_steps(split_records(split_accuracy(requests, strict)), strict, requests)
    assert not any(r.get("broken") for r in records)


def test_responses_another_route_served_are_not_the_steps() -> None:
    """A header-matched cohort's route answers without the step's stamp (its requests never
    reach the stamped route): those responses are left out and counted, so a weight-0 v2 that
    only the cohort reaches does not fail the step; a request that got no response still
    counts (it could not carry a stamp)."""
    synth = make_run(n_requests=4000, seed=15, rps=40.0, stamped=True, with_spans=False)
    before = split_records(split_accuracy(synth.requests, synth.run))
    step0 = synth.requests[synth.requests["step"] == 0]
    cohort = step0.iloc[-300:].copy()  # as late as the step's own: after its change
    cohort["version"], cohort["config_step"], cohort["status"] = "v2", pd.NA, 200
    silent = step0.iloc[-5:].copy()
    silent["version"], silent["config_step"], silent["status"] = None, pd.NA, 0
    requests = pd.concat([synth.requests, cohort, silent], ignore_index=True)
    after = split_records(split_accuracy(requests, synth.run))
    assert before[0]["configured"]["v2"] == 0.0 and before[0]["verdict"] != "fail"
    assert after[0]["n_elsewhere"] == 300 and after[0]["counts"].get("v2", 0) == 0
    assert after[0]["n"] == before[0]["n"] + 5 and after[0]["n_no_response"] == 5
    assert after[0]["verdict"] == before[0]["verdict"]
    assert [r["n_elsewhere"] for r in after[1:]] == [0] * (len(after) - 1)
