"""What a step's requests are worth when they cluster by user: the design effect of its split.

A split's 95 % interval counts requests as independent draws. They are when the mesh routes
each request by weight alone; they are not when it keeps a user on a version (a cookie, a
user header, consistent hashing): then the weights pick a version per user, every later
request of that user follows, and 3,000 requests from 30 users tell about as much as 30. Over
the step's users u, with m_u requests of which y_u went to a version of share p, the
cluster-robust variance of the share is k/(k-1) Σ_u (y_u - p m_u)² / n² (k users, n requests);
over the binomial p(1-p)/n it is the design effect. The step's requests count as
n / design effect (`n_effective`) in the interval and the verdict: about the users' count
when every user kept one version, about n when users hopped between versions.

- only when the users' splits differ beyond chance (the chi-square test of homogeneity over
  users x versions, p < 0.001): under per-request routing the estimate is noise around 1, and
  it would widen a fair step's interval by chance;
- p is the observed share; when one version served all of the step's requests there is no
  spread to test, so the configured shares stand in (the spread they would have had);
- the largest design effect over the versions counts, never below 1 (the interval is never
  narrower than the binomial one) nor above its bound Σ m_u² / n (every user on one version);
- a request without a user is a user of its own (independent), so records without users are
  counted exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CLUSTERED_P = 0.001  # the users' splits differ beyond chance: their requests cluster


@dataclass(frozen=True)
class Clustering:
    """How a step's n requests cluster: `users` (clusters), `design_effect` (>= 1) and
    `n_effective` = n / design_effect."""

    n: int
    users: int
    design_effect: float

    @property
    def n_effective(self) -> float:
        return self.n / self.design_effect


def clustering(
    versions: np.ndarray, users: np.ndarray | None, configured: Sequence[float]
) -> Clustering:
    """The clustering of one step's requests: `versions` are their version codes (0..V-1,
    -1 for none), `users` their user codes (-1 for none; None: no user column) and
    `configured[j]` the configured share of code j."""
    n = len(versions)
    if users is None or n < 2:
        return Clustering(n, n, 1.0)
    users = np.asarray(users)
    alone = users < 0  # no user: a cluster of its own
    cluster = np.where(alone, users.max(initial=0) + 1 + np.cumsum(alone), users)
    cluster = np.unique(cluster, return_inverse=True)[1]
    k = int(cluster.max()) + 1
    if k < 2:  # one user: as many independent draws as users
        return Clustering(n, 1, float(n))
    m = np.bincount(cluster, minlength=k).astype(float)
    per_version = [np.bincount(cluster[versions == j], minlength=k).astype(float)
                   for j in range(len(configured))]  # fmt: skip
    observed = [y.sum() / n for y in per_version]
    spread = [j for j, p in enumerate(observed) if 0.0 < p < 1.0]
    if spread:
        if _homogeneity_p(m, [per_version[j] for j in spread], n) >= CLUSTERED_P:
            return Clustering(n, k, 1.0)  # users alike: the requests are independent draws
        shares = [(per_version[j], observed[j]) for j in spread]
    else:  # one version served all: its configured split stands in
        shares = [(y, float(c)) for y, c in zip(per_version, configured, strict=True)
                  if 0.0 < c < 1.0]  # fmt: skip
    worst = 1.0
    for y, p in shares:
        robust = k / (k - 1) * float(((y - p * m) ** 2).sum()) / (n * n)
        worst = max(worst, robust / (p * (1.0 - p) / n))
    bound = float((m * m).sum() / n)
    return Clustering(n, k, max(1.0, min(worst, bound)))


def _homogeneity_p(m: np.ndarray, counts: Sequence[np.ndarray], n: int) -> float:
    """p of the chi-square test that every user's requests split alike (users x versions),
    over the versions that served some but not all of the step's requests."""
    rest = m - np.sum(counts, axis=0)
    columns = [*counts, rest] if rest.sum() > 0 else list(counts)
    if len(columns) < 2:
        return 1.0
    x = 0.0
    for y in columns:
        expected = m * y.sum() / n
        x += float(((y - expected) ** 2 / expected).sum())
    df = (len(m) - 1) * (len(columns) - 1)
    return float(stats.chi2.sf(x, df))
