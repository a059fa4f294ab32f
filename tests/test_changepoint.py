"""Change points against brute force and against synthetic switches."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
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


# -- stamped runs: exact, per replica ------------------------------------------------------------
CANARY = ({"v1": 100, "v2": 0}, {"v1": 95, "v2": 5}, {"v1": 75, "v2": 25}, {"v1": 50, "v2": 50})


def plain_switches(requests, step: int, accepted: int, requested: int) -> dict:
    """Per replica, by a loop over the records: first new, last old, the bound below the switch."""
    out: dict = {}
    for r in requests.sort_values("start_ns").to_dict("records"):
        if pd.isna(r["config_step"]):
            continue
        mine = out.setdefault(r["replica"], {"first_new": None, "last_old": None, "bound": None})
        if r["config_step"] >= step:
            mine["first_new"] = mine["first_new"] or r["start_ns"]
        else:
            mine["last_old"] = r["start_ns"]
            if mine["first_new"] is None:
                mine["bound"] = r["start_ns"]
    for mine in out.values():
        mine["bound"] = max(mine["bound"] or requested, requested)
    return out


def test_stamped_delays_per_replica_equal_a_plain_loop_and_bracket_the_truth() -> None:
    from analysis.stamped import propagation as stamped_propagation

    synth = make_run(n_requests=4000, seed=21, rps=40.0, propagation_ms=7.0, steps=CANARY,
                     stamped=True, replicas=3, replica_delay_ms=[0.0, 2.0, 1500.0],
                     with_spans=False)  # fmt: skip
    frame = stamped_propagation(synth.requests, synth.run)
    assert frame["method"].tolist() == ["stamped"] * 4
    assert not frame.loc[0, "detected"] and frame.loc[0, "by_replica"] == []
    pods = synth.run["replica_pods"]
    for k in (1, 2, 3):
        ev = synth.run["events"][k]
        row = frame.loc[k]
        plain = plain_switches(synth.requests, k, ev["accepted_ns"], ev["requested_ns"])
        first_new = min(p["first_new"] for p in plain.values() if p["first_new"])
        assert row["detected"] and row["delay_ms"] == (first_new - ev["accepted_ns"]) / 1e6
        assert (
            row["stale_ms"]
            == (max(p["last_old"] for p in plain.values() if p["last_old"]) - ev["accepted_ns"])
            / 1e6
        )
        by = {r["replica"]: r for r in row["by_replica"]}
        assert set(by) == set(plain) == set(synth.replica_effective_ns)
        for rid, mine in by.items():
            p = plain[rid]
            assert mine["pod"] == pods[rid]
            assert mine["first_new_ns"] == p["first_new"] and mine["last_old_ns"] == p["last_old"]
            assert mine["delay_ms"] == (p["first_new"] - ev["accepted_ns"]) / 1e6
            assert mine["resolution_ms"] == (p["first_new"] - p["bound"]) / 1e6
            # the replica really switched inside (first_new - resolution, first_new]
            truth = synth.replica_effective_ns[rid][k]
            assert p["bound"] <= truth <= p["first_new"]
        # the overall switch: after the lowest replica bound, by the first new response
        assert row["delay_lo_ms"] <= 7.0 <= row["delay_ms"]
        assert row["resolution_ms"] == pytest.approx(row["delay_ms"] - row["delay_lo_ms"])
        # the stale replica shows as a long tail
        slow = max(by.values(), key=lambda r: r["delay_ms"])
        assert slow["delay_ms"] >= 1500.0 and slow["stale_ms"] > 1000.0


def test_a_replica_that_never_switched_and_an_unstamped_run() -> None:
    from analysis.stamped import propagation as stamped_propagation

    synth = make_run(n_requests=3000, seed=22, rps=100.0, steps=CANARY[:2], stamped=True,
                     replicas=2, replica_delay_ms=[0.0, 60_000.0], with_spans=False)  # fmt: skip
    row = stamped_propagation(synth.requests, synth.run).loc[1]
    never = [r for r in row["by_replica"] if r["first_new_ns"] is None]
    assert len(never) == 1 and math.isnan(never[0]["delay_ms"])
    last = synth.requests.loc[synth.requests["replica"] == never[0]["replica"], "start_ns"].max()
    assert never[0]["last_old_ns"] == last  # still serving the old routes when the run ended
    # the same records without stamps: an estimate, labelled so
    plain = {k: v for k, v in synth.run.items() if k not in ("stamps", "replica_pods")}
    bare = synth.requests.drop(columns=["config_step", "replica"])
    frame = stamped_propagation(bare, plain)
    assert frame["method"].tolist() == ["estimate", "estimate"]
    assert frame["by_replica"].tolist() == [[], []]
    # stamps that stopped (refused at step 1): the step without any stamp is estimated
    early = synth.requests.assign(config_step=synth.requests["config_step"].where(
        synth.requests["config_step"] < 1))  # fmt: skip
    refused = {**plain, "stamps": None, "stamping": "refused: the API said no"}
    assert stamped_propagation(early, refused)["method"].tolist() == ["stamped", "estimate"]


def test_at_40_requests_a_second_the_estimate_is_not_the_delay() -> None:
    """The brief's case: a 7 ms delay, 40 req/s, shifts of 5 points. The stamps bracket the
    true delay within their resolution; the change point of the same versions cannot."""
    from analysis.stamped import propagation as stamped_propagation

    steps = ({"v1": 100, "v2": 0}, {"v1": 95, "v2": 5}, {"v1": 90, "v2": 10}, {"v1": 85, "v2": 15})
    synth = make_run(n_requests=3200, seed=23, rps=40.0, propagation_ms=7.0, steps=steps,
                     stamped=True, with_spans=False)  # fmt: skip
    stamped = stamped_propagation(synth.requests, synth.run)
    for k in (1, 2, 3):
        row = stamped.loc[k]
        assert row["delay_lo_ms"] <= 7.0 <= row["delay_ms"] <= 7.0 + row["resolution_ms"]
        assert row["resolution_ms"] < 500  # tens of ms at 40 req/s, from one gap between requests
    # 95 -> 90 and 90 -> 85 %: the estimate's support spans seconds, the stamps tens of ms
    estimate = propagation(synth.requests, synth.run)
    for k in (2, 3):
        width = estimate.loc[k, "delay_hi_ms"] - estimate.loc[k, "delay_lo_ms"]
        assert width > 10 * stamped.loc[k, "resolution_ms"]
