"""Change points against brute force and against synthetic switches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.changepoint import change_point, log_likelihood_profile, propagation, weight_events
from analysis.synthetic import make_run
from meshcore.errors import RunFolderError


def brute_force_profile(seq: list[int]) -> list[float]:
    def segment_ll(part: list[int]) -> float:
        m = len(part)
        return sum(c * math.log(c / m) for c in (part.count(v) for v in set(part)))

    return [segment_ll(seq[:t]) + segment_ll(seq[t:]) for t in range(1, len(seq))]


def switch(rng: np.random.Generator, before: float, after: float, n: int = 2000) -> np.ndarray:
    return np.concatenate([rng.random(n) < before, rng.random(n) < after]).astype(np.int64)


def test_profile_equals_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        seq = rng.integers(0, 3, 120)
        expected = brute_force_profile(seq.tolist())
        np.testing.assert_allclose(log_likelihood_profile(seq, 3), expected, rtol=1e-12, atol=1e-9)
        assert change_point(seq, penalty=0).index == int(np.argmax(expected)) + 1


@pytest.mark.parametrize("categories", [2, 3])
def test_clean_switch_is_exact(categories: int) -> None:
    seq = np.repeat([0, categories - 1], [700, 300])
    cp = change_point(seq)
    assert cp.detected and cp.index == 700 and cp.lo == cp.hi == 700


def test_no_change_is_not_detected() -> None:
    rng = np.random.default_rng(2)
    found = sum(change_point((rng.random(4000) < 0.3).astype(int)).detected for _ in range(100))
    assert found <= 3


@pytest.mark.parametrize(("before", "after"), [(0.5, 1.0), (0.0, 0.5), (0.9, 0.1)])
def test_strong_switch_within_two_requests(before: float, after: float) -> None:
    rng = np.random.default_rng(3)
    errors = np.array([change_point(switch(rng, before, after)).index - 2000 for _ in range(200)])
    # 50 -> 100 %: the last requests before the switch are all v2 with probability 1/2 each, so
    # even a perfect estimator is off by 3 or more one time in eight
    assert np.mean(np.abs(errors) <= 2) >= 0.8
    assert abs(np.median(errors)) <= 1


def test_rare_new_version_lands_on_its_first_request() -> None:
    # 0 -> 5 %: nothing distinguishes the two regimes until the first v2 request after the
    # switch, so that request is where any estimator must put the change
    rng = np.random.default_rng(4)
    hits = 0
    for _ in range(200):
        seq = switch(rng, 0.0, 0.05)
        first_new = 2000 + int(np.argmax(seq[2000:]))
        hits += abs(change_point(seq).index - first_new) <= 2
    assert hits >= 190


@pytest.mark.parametrize(("before", "after"), [(0.0, 0.05), (0.1, 0.25), (0.5, 1.0)])
def test_support_interval_covers_the_switch(before: float, after: float) -> None:
    rng = np.random.default_rng(5)
    cps = [change_point(switch(rng, before, after)) for _ in range(200)]
    assert all(cp.detected for cp in cps)
    covered = np.mean([cp.lo <= 2000 <= cp.hi for cp in cps])
    assert covered >= 0.92
    errors = np.array([cp.index - 2000 for cp in cps])
    assert abs(np.median(errors)) <= 15  # 10 -> 25 %: ~0.09 nats per request, tens of requests


def test_propagation_recovers_synthetic_delay() -> None:
    run = make_run(n_requests=40_000, seed=6, rps=1000.0, propagation_ms=300.0, with_spans=False)
    frame = propagation(run.requests, run.run)
    assert frame["step"].tolist() == [0, 1, 2, 3]
    assert not frame.loc[0, "detected"]  # the initial weights were set before any traffic
    start_ns = run.requests["start_ns"].to_numpy()
    for k in (1, 2, 3):
        row = frame.loc[k]
        assert row["detected"]
        found = int(np.searchsorted(start_ns, row["effective_ns"]))
        assert found == row["change_index"]
        assert row["delay_lo_ms"] <= row["delay_ms"] <= row["delay_hi_ms"]
        true_delay_ms = (run.effective_ns[k] - run.run["events"][k]["accepted_ns"]) / 1e6
        assert true_delay_ms == pytest.approx(300.0)
        assert row["delay_lo_ms"] - 1 <= true_delay_ms <= row["delay_hi_ms"] + 1
    # 50 -> 100 %: the strong contrast pins the switch to within 2 requests
    assert abs(frame.loc[3, "change_index"] - run.switch_index[3]) <= 2


def test_unchanged_weights_fall_back_to_margin() -> None:
    steps = ({"v1": 80, "v2": 20}, {"v1": 80, "v2": 20})
    run = make_run(n_requests=4000, seed=7, steps=steps, with_spans=False)
    row = propagation(run.requests, run.run, margin_ms=250.0).loc[1]
    assert not row["detected"] and row["reason"] == "weights unchanged"
    assert row["effective_ns"] == run.run["events"][1]["accepted_ns"] + 250_000_000
    assert math.isnan(row["delay_ms"])


def test_weight_events_shares_and_bad_weights() -> None:
    run = {"events": [{"kind": "weights", "step": 0, "weights": {"v1": 3, "v2": 1}}]}
    assert weight_events(run).loc[0, "configured"] == {"v1": 0.75, "v2": 0.25}
    bad = {"events": [{"kind": "weights", "step": 0, "weights": {"v1": 0, "v2": 0}}]}
    with pytest.raises(RunFolderError, match="sum to more than 0"):
        weight_events(bad)


def test_known_change_point_lands_on_the_first_rare_request_and_never_before_accept() -> None:
    from analysis.changepoint import known_change_point

    rng = np.random.default_rng(11)
    old, new = np.array([1.0, 0.0]), np.array([0.95, 0.05])
    hits = 0
    for _ in range(200):
        codes = np.concatenate(
            [np.zeros(500, dtype=np.int64), (rng.random(1500) < 0.05).astype(np.int64)]
        )
        cp = known_change_point(codes, old, new, first=400)
        first_v2 = 500 + int(np.argmax(codes[500:]))
        hits += cp.detected and cp.index == first_v2
    assert hits >= 195
    # 50 -> 100 %: old-regime v2 requests just before the switch are ambiguous (a run of k has
    # probability 2**-k), so "within two requests" holds in about 7 of 8 switches
    close = 0
    for _ in range(200):
        codes = np.concatenate([(rng.random(800) < 0.5).astype(np.int64), np.ones(800, np.int64)])
        cp = known_change_point(codes, np.array([0.5, 0.5]), np.array([0.0, 1.0]))
        close += abs(cp.index - 800) <= 2
    assert close >= 160
    # A switch that the data place before the API accepted the change is not allowed there.
    codes = np.concatenate([np.zeros(100, np.int64), np.ones(300, np.int64)])
    cp = known_change_point(codes, np.array([1.0, 0.0]), np.array([0.0, 1.0]), first=250)
    assert cp.index == 250 and cp.lo >= 250


def test_known_change_point_sees_no_change_when_weights_hold() -> None:
    from analysis.changepoint import known_change_point

    rng = np.random.default_rng(3)
    codes = (rng.random(2000) < 0.10).astype(np.int64)
    cp = known_change_point(codes, np.array([0.9, 0.1]), np.array([0.75, 0.25]))
    assert not cp.detected
