"""Per-user version consistency (session affinity) and A/B cohort reach, on the requests frame.

With consistent-hash routing (a cookie or a user header) every user should see exactly one
version; with plain weights a user hops between versions. With a header-matched A/B route the
cohort should reach the new version and nobody else should. The figures are
`meshcore.figures.stickiness` and `cohort_reach`, the rules the end-of-run checks follow; this
module only turns frame columns into their users and versions.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd

from meshcore import figures
from meshcore.errors import ConfigError


def user_keys(requests: pd.DataFrame, user_col: str) -> np.ndarray:
    """The user of each request, None where unknown. loadgen numbers its users from 1 in each
    worker, so a `user_id` is only a user together with its `worker`."""
    users = _column(requests, user_col)
    keys = users.astype(str)
    if user_col == "user_id" and "worker" in requests.columns:
        keys = requests["worker"].astype(str) + "/" + keys
    return keys.where(users.notna()).to_numpy(dtype=object, na_value=None)


def _versions(requests: pd.DataFrame) -> np.ndarray:
    return requests["version"].to_numpy(dtype=object, na_value=None)


def user_versions(requests: pd.DataFrame, *, user_col: str = "user") -> pd.DataFrame:
    """user | requests | versions (how many distinct) | version (the one seen, or 'mixed')."""
    frame = pd.DataFrame(
        {"user": user_keys(requests, user_col), "version": _versions(requests)}
    ).dropna()
    grouped = frame.groupby("user", sort=True)["version"]
    out = pd.DataFrame({"requests": grouped.size(), "versions": grouped.nunique()})
    out["version"] = np.where(out["versions"] == 1, grouped.first(), "mixed")
    return out.reset_index()


def stickiness(requests: pd.DataFrame, *, user_col: str = "user") -> dict[str, Any]:
    """users, single_version_users, their share (None without users), users_by_first_version."""
    start_ns = requests["start_ns"].to_numpy() if "start_ns" in requests.columns else None
    codes, names = pd.factorize(requests["version"])
    names = np.asarray(names, dtype=object).astype(str)
    return figures.stickiness_of_codes(user_codes(requests, user_col), codes, names, start_ns)


def user_codes(requests: pd.DataFrame, user_col: str) -> np.ndarray:
    """`user_keys` as dense integer codes (-1: no user), without a string per request: equal
    codes are equal keys."""
    users = _column(requests, user_col)
    codes = _str_codes(users)
    if user_col == "user_id" and "worker" in requests.columns:
        worker = _str_codes(requests["worker"], null="nan")
        codes = np.where(codes >= 0, worker * (int(codes.max(initial=0)) + 1) + codes, -1)
        codes = np.where(codes >= 0, pd.factorize(codes)[0], -1)
    return codes


def _str_codes(values: pd.Series, null: str | None = None) -> np.ndarray:
    """Codes of values by their text (`astype(str)`: 1 and "1" are one key); a null is -1, or
    the text `null` when given."""
    codes, uniques = pd.factorize(values)
    texts = [str(x) for x in uniques]
    if null is not None:
        codes = np.where(codes < 0, len(texts), codes)
        texts.append(null)
    if not texts:
        return codes.astype(np.int64)
    by_text = pd.factorize(pd.Index(texts, dtype=object))[0]
    return np.where(codes >= 0, by_text[np.maximum(codes, 0)], -1).astype(np.int64)


def _column(requests: pd.DataFrame, user_col: str) -> pd.Series:
    if user_col not in requests.columns:
        raise ConfigError(
            f"requests have no {user_col!r} column; pass the column that names the user or cookie"
        )
    return requests[user_col]


def cohort_reach(
    requests: pd.DataFrame,
    cohort: Collection[str] | str,
    *,
    version: str = "v2",
    user_col: str = "user",
) -> dict[str, Any]:
    """Share of the cohort's users who reached `version`, and of everyone else.

    `cohort` is a collection of user ids, or the name of a boolean column marking cohort requests.
    """
    if isinstance(cohort, str):
        if cohort not in requests.columns:
            raise ConfigError(f"requests have no cohort column {cohort!r}; name a boolean column")
        marked = requests[cohort].fillna(False).astype(bool).to_numpy()
    else:
        marked = requests[user_col].astype(str).isin({str(u) for u in cohort}).to_numpy()
    return figures.cohort_reach(user_keys(requests, user_col), marked, _versions(requests), version)
