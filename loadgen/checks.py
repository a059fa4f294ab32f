"""End-of-run checks a scenario asks for, computed from the recorded requests.

Each check takes the run's request table and returns a run.json event
`{"kind": "check", "check": NAME, "passed": bool, ...}`; a failed check makes the run's exit
code non-zero, as a tripped gate does. The figures are `meshcore.figures`', the report's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from meshcore.figures import cohort_reach, stickiness

Check = Callable[[pa.Table], dict[str, Any]]


def _users(table: pa.Table) -> list[str | None]:
    """A key per request naming its user: worker and user id (each worker counts from 1)."""
    cols = table.select(["worker", "user_id"]).to_pydict()
    return [
        None if u is None else f"{w}/{u}"
        for w, u in zip(cols["worker"], cols["user_id"], strict=True)
    ]


def cohort_only(cohort: str, version: str) -> Check:
    """Only requests of `cohort` may be served by `version` (and that cohort must reach it)."""

    def check(table: pa.Table) -> dict[str, Any]:
        cohorts = table.column("cohort").to_pylist()
        reach = cohort_reach(
            _users(table),
            [c == cohort for c in cohorts],
            table.column("version").to_pylist(),
            version,
        )
        return {
            "kind": "check",
            "check": "cohort_only",
            "cohort": cohort,
            "passed": reach["other_requests_on_version"] == 0
            and reach["cohort_requests_on_version"] > 0,
            **reach,
        }

    return check


def sticky_users(table: pa.Table) -> dict[str, Any]:
    """Every user stays on the first version that served it (responses without a version skip)."""
    found = stickiness(
        _users(table), table.column("version").to_pylist(), table.column("start_ns").to_pylist()
    )
    return {
        "kind": "check",
        "check": "sticky_users",
        "passed": found["users"] > 0 and found["single_version_users"] == found["users"],
        "users_switched": found["users"] - found["single_version_users"],
        **found,
    }
