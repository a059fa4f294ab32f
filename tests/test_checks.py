"""loadgen.checks: the end-of-run checks on the recorded requests."""

from __future__ import annotations

import random

from tests.records import request_table


def test_cohort_check_counts_leaks_per_cohort() -> None:
    from loadgen.checks import cohort_only

    table = request_table(
        5,
        cohort=["beta", "beta", "regular", "regular", "regular"],
        version=["v2", "v2", "v1", "v1", None],
        user_id=[1, 1, 2, 3, 3],
    )
    event = cohort_only("beta", "v2")(table)
    assert event["passed"] and event["cohort_requests_on_version"] == 2
    assert (event["cohort_users"], event["cohort_reached"], event["others_reached"]) == (1, 1, 0)
    leaky = request_table(2, cohort=["beta", "regular"], version=["v2", "v2"])
    assert cohort_only("beta", "v2")(leaky)["other_requests_on_version"] == 1
    assert not cohort_only("beta", "v2")(leaky)["passed"]
    never = request_table(1, cohort=["beta"], version=["v1"])
    assert not cohort_only("beta", "v2")(never)["passed"]


def test_sticky_check_counts_users_that_switched() -> None:
    from loadgen.checks import sticky_users

    rng = random.Random(5)
    rows = []
    truth = {}
    for user in range(1, 41):
        first = rng.choice(["v1", "v2"])
        switch = user % 10 == 0
        truth[user] = switch
        for i in range(6):
            v = first if not (switch and i == 5) else ("v2" if first == "v1" else "v1")
            rows.append(("w0", user, 1000 * user + i, v))
    rng.shuffle(rows)
    names = ["worker", "user_id", "start_ns", "version"]
    table = request_table(len(rows), **{k: [r[j] for r in rows] for j, k in enumerate(names)})
    event = sticky_users(table)
    assert event["users"] == 40
    assert event["users_switched"] == sum(truth.values()) == 4
    assert not event["passed"]
    first = {
        u: next(v for w, uu, t, v in sorted(rows, key=lambda r: r[2]) if uu == u) for u in truth
    }
    assert event["users_by_first_version"] == {
        v: sum(1 for f in first.values() if f == v) for v in ("v1", "v2")
    }


def test_users_of_different_workers_are_different_users() -> None:
    from loadgen.checks import sticky_users

    table = request_table(
        4, worker=["w0", "w0", "w1", "w1"], user_id=[1, 1, 1, 1], version=["v1", "v1", "v2", "v2"]
    )
    event = sticky_users(table)
    assert (event["users"], event["users_switched"], event["passed"]) == (2, 0, True)
