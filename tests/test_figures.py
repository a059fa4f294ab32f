"""meshcore.figures against plain independent computations on seeded data."""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np
import pytest

from meshcore.figures import (
    choose_roles,
    cohort_reach,
    grouped_percentiles,
    percentile,
    roles_from_traffic,
    sorted_percentile,
    stickiness,
    stickiness_of_codes,
)


def test_percentiles_are_numpys_linear_rule_per_group() -> None:
    rng = np.random.default_rng(4)
    values = rng.lognormal(2, 1, 20_000)
    codes = rng.integers(0, 37, values.size)
    ps = (0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0)
    counts, out, maxima = grouped_percentiles(values, codes, 40, ps)
    for g in range(40):
        mine = values[codes == g]
        assert counts[g] == mine.size
        if mine.size:
            assert out[g].tolist() == np.percentile(mine, ps).tolist()
            assert maxima[g] == mine.max()
        else:
            assert np.isnan(out[g]).all() and np.isnan(maxima[g])
    assert percentile(values, 99.0) == np.percentile(values, 99.0)
    assert np.isnan(percentile([], 50.0))


def test_many_groups_and_sorted_samples_follow_the_same_rule() -> None:
    rng = np.random.default_rng(8)
    values = rng.lognormal(2, 1, 60_000).round(2)  # ties, as recorded milliseconds have
    codes = rng.integers(0, 6_000, values.size)  # past the groups sorted one by one
    ps = (0.0, 50.0, 99.0, 99.9, 100.0)
    counts, out, maxima = grouped_percentiles(values, codes, 6_000, ps)
    for g in rng.integers(0, 6_000, 50):
        mine = values[codes == g]
        assert out[g].tolist() == np.percentile(mine, ps).tolist() and maxima[g] == mine.max()
    ordered = np.sort(values)
    assert [sorted_percentile(ordered, p) for p in ps] == np.percentile(values, ps).tolist()
    assert np.isnan(sorted_percentile(ordered[:0], 50.0))


def test_stickiness_of_codes_is_stickiness() -> None:
    rng = np.random.default_rng(9)
    n = 5_000
    users = rng.integers(0, 300, n)
    versions = rng.choice(["v1", "v2", "v3"], n, p=[0.7, 0.2, 0.1])
    start = rng.integers(0, 1_000, n)  # shared start times: the first row of them counts
    user_keys = np.where(rng.random(n) < 0.05, None, users.astype(str)).astype(object)
    version_keys = np.where(rng.random(n) < 0.05, None, versions).astype(object)
    names = np.array(["v3", "v1", "v2"])  # any order of names
    version_codes = np.array([-1 if v is None else list(names).index(v) for v in version_keys])
    for scale in (7, 1_000):  # codes with gaps, and codes sparse enough to be made dense
        user_codes = np.array([-1 if u is None else int(u) * scale for u in user_keys])
        for t in (start, np.sort(start), None):
            expected = stickiness(user_keys, version_keys, t)
            assert stickiness_of_codes(user_codes, version_codes, names, t) == expected


@pytest.mark.parametrize(
    ("steps", "canary", "expected"),
    [
        ([{"v1": 100, "v2": 0}, {"v1": 0, "v2": 100}], None, ("v1", "v2", "plan weights")),
        ([{"v1": 90, "v2": 10}], None, ("v1", "v2", "plan weights")),
        (
            [{"a": 50, "b": 30, "c": 20}, {"a": 20, "b": 30, "c": 50}],
            None,
            ("a", "c", "plan weights"),
        ),
        ([{"v1": 0, "v2": 100}], "v1", ("v2", "v1", "plan")),
        ([], None, (None, None, "none")),
    ],
)
def test_roles_come_from_the_plan(
    steps: list[dict[str, int]], canary: str | None, expected: tuple[str | None, str | None, str]
) -> None:
    r = choose_roles(steps, canary)
    assert (r.baseline, r.canary, r.source) == expected
    assert r.to_json() == dict(zip(("baseline", "canary", "source"), expected, strict=True))


def test_roles_from_traffic_only_without_a_plan() -> None:
    r = roles_from_traffic({"v1": 900, "v2": 100}, {"v1": 500, "v2": 600, "v3": 2})
    assert (r.baseline, r.canary, r.source) == ("v1", "v2", "traffic")
    assert roles_from_traffic({}, {"v1": 3}).source == "none"
    assert roles_from_traffic({"v1": 1}, {"v1": 5}).canary is None


def _plain(rows: list[tuple[str | None, str | None, int, bool]], version: str) -> dict[str, object]:
    seen: dict[str, list[tuple[int, str]]] = defaultdict(list)
    members: set[str] = set()
    for user, v, t, marked in rows:
        if user is not None and v is not None:
            seen[user].append((t, v))
            if marked:
                members.add(user)
    single = sum(len({v for _, v in s}) == 1 for s in seen.values())
    firsts: dict[str, int] = defaultdict(int)
    for s in seen.values():
        firsts[min(s)[1]] += 1
    reached = {u for u, s in seen.items() if any(v == version for _, v in s)}
    others = set(seen) - members
    return {
        "users": len(seen),
        "single": single,
        "firsts": dict(sorted(firsts.items())),
        "cohort": (len(members), len(members & reached)),
        "others": (len(others), len(others & reached)),
        "requests": (
            sum(1 for _, v, _, m in rows if m and v == version),
            sum(1 for _, v, _, m in rows if not m and v == version),
        ),
    }


@pytest.mark.parametrize("seed", range(5))
def test_affinity_equals_a_plain_count(seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for i in range(3000):
        user = None if rng.random() < 0.05 else f"w{rng.randrange(2)}/{rng.randrange(60)}"
        version = None if rng.random() < 0.05 else rng.choice(["v1", "v1", "v2"])
        rows.append((user, version, rng.randrange(10**6) * 1000 + i, rng.random() < 0.3))
    users = [r[0] for r in rows]
    versions = [r[1] for r in rows]
    truth = _plain(rows, "v2")
    got = stickiness(users, versions, [r[2] for r in rows])
    assert got["users"] == truth["users"]
    assert got["single_version_users"] == truth["single"]
    assert got["users_by_first_version"] == truth["firsts"]
    reach = cohort_reach(users, [r[3] for r in rows], versions, "v2")
    assert (reach["cohort_users"], reach["cohort_reached"]) == truth["cohort"]
    assert (reach["others_users"], reach["others_reached"]) == truth["others"]
    assert (reach["cohort_requests_on_version"], reach["other_requests_on_version"]) == truth[
        "requests"
    ]


def test_integer_user_keys_and_no_users_at_all() -> None:
    got = stickiness([3, 3, 10, 10], ["v1", "v1", "v1", "v2"], [1, 2, 3, 4])
    assert (got["users"], got["single_version_users"]) == (2, 1)
    empty = stickiness([None, None], ["v1", None])
    assert empty["users"] == 0 and empty["share_single_version"] is None
