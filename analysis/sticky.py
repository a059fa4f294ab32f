"""Per-user version consistency (session affinity) and A/B cohort reach.

With consistent-hash routing (a cookie or a user header) every user should see exactly one
version; with plain weights a user hops between versions. With a header-matched A/B route the
cohort should reach the new version and nobody else should. Requests without a version say
nothing about routing and are left out.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
import pandas as pd

from analysis.changepoint import UNKNOWN, label_codes, version_labels
from meshcore.errors import ConfigError


def _require(requests: pd.DataFrame, user_col: str) -> None:
    if user_col not in requests.columns:
        raise ConfigError(
            f"requests have no {user_col!r} column; pass the column that names the user or cookie"
        )


def _known(requests: pd.DataFrame, user_col: str) -> tuple[np.ndarray, np.ndarray]:
    _require(requests, user_col)
    users = requests[user_col]
    versions = version_labels(requests["version"])
    keep = (versions != UNKNOWN) & users.notna().to_numpy()
    user_codes, _ = label_codes(users[keep])
    return user_codes, versions[keep]


def user_versions(requests: pd.DataFrame, *, user_col: str = "user") -> pd.DataFrame:
    """user | requests | versions (how many distinct) | version (the one seen, or 'mixed')."""
    _require(requests, user_col)
    users = requests[user_col]
    versions = version_labels(requests["version"])
    frame = pd.DataFrame({"user": users.to_numpy(), "version": versions})
    frame = frame[(versions != UNKNOWN) & users.notna().to_numpy()]
    grouped = frame.groupby("user", sort=True, observed=True)["version"]
    out = pd.DataFrame({"requests": grouped.size(), "versions": grouped.nunique()})
    out["version"] = np.where(out["versions"] == 1, grouped.first(), "mixed")
    return out.reset_index()


def stickiness(requests: pd.DataFrame, *, user_col: str = "user") -> dict[str, Any]:
    """users, single_version_users and their share (None without users)."""
    user_codes, versions = _known(requests, user_col)
    if len(user_codes) == 0:
        return {"users": 0, "single_version_users": 0, "share_single_version": None}
    v_codes, _ = label_codes(pd.Series(versions))
    pairs = np.unique(np.stack([user_codes, v_codes]), axis=1)
    per_user = np.bincount(pairs[0], minlength=int(user_codes.max()) + 1)
    seen = per_user > 0
    single = int((per_user[seen] == 1).sum())
    return {
        "users": int(seen.sum()),
        "single_version_users": single,
        "share_single_version": single / int(seen.sum()),
    }


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
        members = set(requests.loc[requests[cohort].fillna(False).astype(bool), user_col])
    else:
        members = {str(u) for u in cohort}
    table = user_versions(requests, user_col=user_col)
    reached = _reached(requests, version, user_col)
    in_cohort = table["user"].astype(str).isin(members).to_numpy()
    hit = table["user"].astype(str).isin(reached).to_numpy()

    def share(mask: np.ndarray) -> float | None:
        return float(hit[mask].mean()) if mask.any() else None

    return {
        "version": version,
        "cohort_users": int(in_cohort.sum()),
        "cohort_reached": int((hit & in_cohort).sum()),
        "cohort_share": share(in_cohort),
        "others_users": int((~in_cohort).sum()),
        "others_reached": int((hit & ~in_cohort).sum()),
        "others_share": share(~in_cohort),
    }


def _reached(requests: pd.DataFrame, version: str, user_col: str) -> set[str]:
    mask = version_labels(requests["version"]) == version
    return {str(u) for u in requests.loc[mask, user_col].dropna().unique()}
