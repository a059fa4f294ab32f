"""Latency percentiles against numpy.percentile on the raw values of each group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.latency import (
    PERCENTILE_COLUMNS,
    PERCENTILES,
    latency_by_version,
    latency_over_time,
    latency_percentiles,
)
from analysis.synthetic import make_run
from meshcore.errors import ConfigError


@pytest.fixture(scope="module")
def requests() -> pd.DataFrame:
    run = make_run(
        n_requests=12_000,
        seed=21,
        slowdown={"v2": 1.3},
        unknown_rate=0.01,
        open_model=True,
        with_spans=False,
    )
    return run.requests


def plain_groups(requests: pd.DataFrame, by: list[str], column: str) -> dict[tuple, list[float]]:
    groups: dict[tuple, list[float]] = {}
    for row in requests.to_dict("records"):
        key = tuple(
            row[c] if not (c == "version" and not isinstance(row[c], str)) else "unknown"
            for c in by
        )
        groups.setdefault(key, []).append(row[column])
    return groups


@pytest.mark.parametrize("by", [["version"], ["version", "step"], ["version", "name"]])
@pytest.mark.parametrize("column", ["latency_ms", "co_latency_ms"])
def test_percentiles_equal_numpy(requests: pd.DataFrame, by: list[str], column: str) -> None:
    frame = latency_percentiles(requests, by, column=column)
    expected = plain_groups(requests, by, column)
    assert len(frame) == len(expected)
    for row in frame.to_dict("records"):
        values = np.array(expected[tuple(row[c] for c in by)])
        assert row["n"] == len(values)
        got = [row[c] for c in PERCENTILE_COLUMNS]
        np.testing.assert_array_equal(got, np.percentile(values, PERCENTILES))
        assert row["max_ms"] == values.max()
        assert row["mean_ms"] == pytest.approx(values.mean(), rel=1e-12)


def test_tiny_groups_and_ties() -> None:
    frame = pd.DataFrame(
        {
            "version": ["a", "b", "b", "c", "c", "c", "c"],
            "latency_ms": [5.0, 1.0, 3.0, 2.0, 2.0, 2.0, 9.0],
        }
    )
    out = latency_percentiles(frame).set_index("version")
    for v, values in frame.groupby("version")["latency_ms"]:
        got = out.loc[v, list(PERCENTILE_COLUMNS)].to_numpy(dtype=float)
        np.testing.assert_array_equal(got, np.percentile(values.to_numpy(), PERCENTILES))


def test_ok_only_drops_failures(requests: pd.DataFrame) -> None:
    out = latency_percentiles(requests, ok_only=True)
    assert "unknown" not in set(out["version"])  # every request without a version failed
    assert out["n"].sum() == int(requests["ok"].sum())


def test_over_time_buckets(requests: pd.DataFrame) -> None:
    out = latency_over_time(requests, bucket_s=20.0)
    t0 = int(requests["start_ns"].min())
    bucket = (requests["start_ns"] - t0) // 20_000_000_000
    assert set(out["t_s"]) == set(bucket.unique() * 20.0)
    row = out[(out["t_s"] == 40.0) & (out["version"] == "v1")].iloc[0]
    mine = requests[(bucket == 2) & (requests["version"] == "v1")]["latency_ms"].to_numpy()
    assert row["n"] == len(mine) and row["p99_ms"] == np.percentile(mine, 99)
    with pytest.raises(ConfigError):
        latency_over_time(requests, bucket_s=0)


def test_summary_shape(requests: pd.DataFrame) -> None:
    table = latency_by_version(latency_percentiles(requests))
    assert set(table) == {"v1", "v2", "unknown"}
    assert list(table["v1"]) == ["n", *PERCENTILE_COLUMNS, "max_ms", "mean_ms"]
