"""Split intervals of requests that cluster by user: coverage on simulated sticky and
per-request routing, the design effect against a plain loop, and the verdicts it leads to."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.clustering import clustering
from analysis.verdicts import record_verdict, step_verdict, wilson_interval


def sticky_step(rng: np.random.Generator, users: int, share: float, sticky: bool):
    """(version codes, user codes) of one step: each user sends 40-160 requests; sticky, each
    user's first draw decides all of them; else every request draws."""
    sizes = rng.integers(40, 161, users)
    who = np.repeat(np.arange(users), sizes)
    if sticky:
        versions = (rng.random(users) < share).astype(int)[who]
    else:
        versions = (rng.random(len(who)) < share).astype(int)
    return versions, who


def covers(versions: np.ndarray, n: float, share: float, worth: float = 1.0) -> bool:
    lo, hi = wilson_interval(np.count_nonzero(versions == 1) * worth, n * worth)
    return bool(lo <= share <= hi)


def test_sticky_users_get_intervals_that_cover_the_true_share() -> None:
    """30 sticky users, v2 at 20 %: the requests' Wilson interval (3,000 requests, ±1.4 pp)
    covered the true share in about a quarter of the runs; counted as n_effective, in 95 %."""
    rng = np.random.default_rng(11)
    old = new = 0
    runs = 400
    for _ in range(runs):
        versions, who = sticky_step(rng, 30, 0.2, sticky=True)
        worth = clustering(versions, who, [0.8, 0.2])
        assert 10 <= worth.n_effective <= 50 and worth.users == 30  # about the users
        old += covers(versions, len(versions), 0.2)
        new += covers(versions, len(versions), 0.2, worth.n_effective / len(versions))
    assert old / runs < 0.4
    assert new / runs >= 0.9  # 0.925: the sandwich estimate of 30 users is itself noisy


def test_per_request_routing_keeps_the_binomial_interval() -> None:
    """Users that draw every request afresh: the users' splits are alike, the design effect
    stays 1 (in at least 399 of 400 runs) and the coverage is the binomial one."""
    rng = np.random.default_rng(12)
    effects, covered = [], 0
    for _ in range(400):
        versions, who = sticky_step(rng, 30, 0.2, sticky=False)
        worth = clustering(versions, who, [0.8, 0.2])
        effects.append(worth.design_effect)
        covered += covers(versions, len(versions), 0.2, worth.n_effective / len(versions))
    assert sum(e == 1.0 for e in effects) >= 399
    assert 0.92 <= covered / 400 <= 0.98


def test_the_design_effect_against_a_plain_loop() -> None:
    rng = np.random.default_rng(13)
    versions, who = sticky_step(rng, 12, 0.3, sticky=True)
    versions[:25] = 1 - versions[:25]  # a user that hopped once: not wholly sticky
    worth = clustering(versions, who, [0.7, 0.3])
    n, users = len(versions), sorted(set(who.tolist()))
    p = float(np.mean(versions == 1))
    total = 0.0
    for u in users:
        mine = versions[who == u]
        total += (float(np.sum(mine == 1)) - p * len(mine)) ** 2
    robust = len(users) / (len(users) - 1) * total / n**2
    bound = sum(float(np.sum(who == u)) ** 2 for u in users) / n  # every user on one version
    assert worth.design_effect == pytest.approx(min(robust / (p * (1 - p) / n), bound))
    hopping = np.where(np.arange(n) % 2 == 0, versions, 1 - versions)  # each user half and half
    assert clustering(hopping, who, [0.7, 0.3]).design_effect == 1.0


def test_requests_without_users_count_as_independent() -> None:
    rng = np.random.default_rng(14)
    versions, _ = sticky_step(rng, 30, 0.2, sticky=True)
    assert clustering(versions, None, [0.8, 0.2]).design_effect == 1.0
    none = np.full(len(versions), -1)
    assert clustering(versions, none, [0.8, 0.2]).design_effect == 1.0


def test_a_few_sticky_users_on_one_version_are_inconclusive_a_misroute_still_fails() -> None:
    # 3 users, 1,000 requests each, all on v1 at 80/20: three draws, not 3,000
    versions, who = np.zeros(3000, dtype=int), np.repeat(np.arange(3), 1000)
    worth = clustering(versions, who, [0.8, 0.2])
    result = step_verdict({"v1": 0.8, "v2": 0.2}, {"v1": 3000}, n=3000, tolerance_pp=2.0,
                          n_effective=worth.n_effective)  # fmt: skip
    assert worth.n_effective < 10 and result.verdict == "inconclusive"
    assert "count as" in result.reasons[0] and "cluster by user" in result.reasons[0]
    # 20 users routed request by request, every request to v1: still a clear fail
    who = np.repeat(np.arange(20), 50)
    worth = clustering(np.zeros(1000, dtype=int), who, [0.8, 0.2])
    result = step_verdict({"v1": 0.8, "v2": 0.2}, {"v1": 1000}, n=1000, tolerance_pp=2.0,
                          n_effective=worth.n_effective)  # fmt: skip
    assert result.verdict == "fail"


def test_the_split_of_a_sticky_run_counts_users_and_its_gates_agree() -> None:
    from analysis.split import split_accuracy, split_records

    rng = np.random.default_rng(15)
    versions, who = sticky_step(rng, 30, 0.2, sticky=True)
    n = len(versions)
    requests = pd.DataFrame({"start_ns": np.arange(n, dtype=np.int64) * 1_000_000 + 10**9,
                             "version": np.where(versions == 1, "v2", "v1"), "step": 0,
                             "status": 200, "ok": True, "user_id": who + 1,
                             "worker": "local"})  # fmt: skip
    run = {"events": [{"kind": "weights", "step": 0, "weights": {"v1": 80, "v2": 20},
                       "requested_ns": 0, "accepted_ns": 0}]}  # fmt: skip
    plain = split_records(split_accuracy(requests, run))[0]
    clustered = split_records(split_accuracy(requests, run, user_col="user_id"))[0]
    assert plain["n_effective"] == n and plain["users"] == n  # no users: as before
    assert clustered["users"] == 30 and clustered["n_effective"] < 31
    assert clustered["ci95"]["v2"][1] - clustered["ci95"]["v2"][0] > 0.15  # about ±14 pp
    assert clustered["verdict"] == "inconclusive"
    # `meshload check` recomputes the verdict from the record, at its own tolerance
    assert record_verdict(clustered, 8.0).verdict == "inconclusive"
    assert record_verdict({**clustered, "n_effective": None}, 8.0).verdict == "pass"
