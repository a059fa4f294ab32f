"""End-of-run checks a scenario asks for, computed from the recorded requests.

Each check takes the run's request table and returns a run.json event
`{"kind": "check", "check": NAME, "passed": bool, ...}`; a failed check makes the run's exit
code non-zero, as a tripped gate does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pyarrow as pa

Check = Callable[[pa.Table], dict[str, Any]]


def cohort_only(cohort: str, version: str) -> Check:
    """Only requests of `cohort` may be served by `version` (and that cohort must reach it)."""

    def check(table: pa.Table) -> dict[str, Any]:
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        cols = table.select(["cohort", "version"]).to_pydict()
        for c, v in zip(cols["cohort"], cols["version"], strict=True):
            counts[str(c)][str(v)] += 1
        leaked = sum(n.get(version, 0) for c, n in counts.items() if c != cohort)
        reached = counts.get(cohort, {}).get(version, 0)
        return {
            "kind": "check",
            "check": "cohort_only",
            "cohort": cohort,
            "version": version,
            "passed": leaked == 0 and reached > 0,
            "cohort_requests_on_version": reached,
            "other_requests_on_version": leaked,
            "counts": {c: dict(n) for c, n in counts.items()},
        }

    return check


def sticky_users(table: pa.Table) -> dict[str, Any]:
    """Every user stays on the first version that served it (responses without a version skip)."""
    cols = table.select(["worker", "user_id", "start_ns", "version"]).to_pydict()
    seen: dict[tuple[str, int], list[tuple[int, str]]] = defaultdict(list)
    for w, u, t, v in zip(cols["worker"], cols["user_id"], cols["start_ns"], cols["version"],
                          strict=True):  # fmt: skip
        if v is not None and u is not None:
            seen[(str(w), int(u))].append((int(t), str(v)))
    switched = 0
    by_first: dict[str, int] = defaultdict(int)
    for records in seen.values():
        records.sort()
        first = records[0][1]
        by_first[first] += 1
        if any(v != first for _, v in records):
            switched += 1
    return {
        "kind": "check",
        "check": "sticky_users",
        "passed": switched == 0 and bool(seen),
        "users": len(seen),
        "users_switched": switched,
        "users_by_first_version": dict(by_first),
    }
