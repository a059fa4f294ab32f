"""Client, metrics and trace counts per step and version; stickiness and cohort reach."""

from __future__ import annotations

import json
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from analysis.consistency import (
    client_counts,
    consistency_table,
    metrics_counts_from_istio,
    step_windows,
    trace_counts,
    trace_coverage,
)
from analysis.sticky import cohort_reach, stickiness, user_codes, user_keys, user_versions
from analysis.synthetic import make_run
from meshcore.errors import ConfigError


@pytest.fixture(scope="module")
def run():
    return make_run(n_requests=6000, seed=51, unknown_rate=0.01, trace_sample=0.6, n_users=300)


def test_client_counts_equal_a_plain_loop(run) -> None:
    expected = Counter(
        (r["step"], r["version"] if isinstance(r["version"], str) else "unknown")
        for r in run.requests.to_dict("records")
    )
    got = {(r.step, r.version): r.requests for r in client_counts(run.requests).itertuples()}
    assert got == dict(expected)


def test_trace_counts_equal_a_plain_loop(run) -> None:
    windows = step_windows(run.run)
    assert windows["end_ns"].iloc[-1] == run.run["ended_ns"]
    expected: Counter = Counter()
    bounds = list(zip(windows["step"], windows["start_ns"], windows["end_ns"], strict=True))
    for r in run.spans.to_dict("records"):
        if r["service"] != "frontend" or isinstance(r["parent_id"], str):
            continue
        for step, lo, hi in bounds:
            if lo <= r["start_ns"] < hi:
                expected[(step, r["version"])] += 1
    got = {(r.step, r.version): r.requests for r in trace_counts(run.spans, windows).itertuples()}
    assert got == dict(expected)


def test_a_step_starts_where_the_client_started_it() -> None:
    """The rollout tells the load generators before it sends the weights: a step whose first
    request started before its requested_ns starts there, never before the step it follows."""
    ms = 1_000_000
    events = [{"kind": "weights", "step": k, "weights": {"v1": 1}, "requested_ns": t * ms}
              for k, t in enumerate((0, 1000, 2000))]  # fmt: skip
    run = {"events": events, "ended_ns": 3000 * ms}
    requests = pd.DataFrame(
        {
            "step": [0, 0, 1, 1, 2, 2],
            # step 1 began 4 ms before its weights were sent; step 2's first request started
            # before step 1's last (another worker's clock): its requested_ns stands
            "start_ns": [5 * ms, 990 * ms, 996 * ms, 1999 * ms, 1998 * ms, 2500 * ms],
        }
    )
    windows = step_windows(run, requests)
    assert windows["start_ns"].tolist() == [0, 996 * ms, 2000 * ms]
    assert windows["end_ns"].tolist() == [996 * ms, 2000 * ms, 3000 * ms]
    assert step_windows(run)["start_ns"].tolist() == [0, 1000 * ms, 2000 * ms]


def test_trace_coverage_normalises_ids(run) -> None:
    assert trace_coverage(run.requests, run.spans) == pytest.approx(0.6 * 0.99, abs=0.03)
    requests = pd.DataFrame({"trace_id": ["00ab" + "0" * 28, "00CD" + "1" * 28, "ef" * 16]})
    spans = pd.DataFrame({"trace_id": ["ab" + "0" * 28, "cd" + "1" * 28]})
    assert trace_coverage(requests, spans) == pytest.approx(2 / 3)


def samples(rows: list[tuple[float, dict, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "t": [t for t, _, _ in rows],
            "metric": "istio_requests_total",
            "labels": [json.dumps(lb) for _, lb, _ in rows],
            "value": [v for _, _, v in rows],
        }
    )


def test_metrics_counts_are_whole_requests_between_the_nearest_scrapes() -> None:
    v1 = {"reporter": "destination", "destination_app": "frontend", "destination_version": "v1"}
    v2 = {**v1, "destination_version": "v2"}
    src = {**v1, "reporter": "source"}  # the same requests seen by the caller's sidecar
    rows = [(t, v1, 10.0 * t) for t in range(0, 21, 5)]  # 10 req/s
    rows += [(0.0, v2, 0.0), (5.0, v2, 20.0), (10.0, v2, 5.0), (20.0, v2, 25.0)]  # reset at 10 s
    rows += [(t, src, 1e6) for t in range(0, 21, 5)]
    windows = pd.DataFrame({"step": [0, 1], "start_ns": [0, 8_000_000_000], "end_ns": [8e9, 2e10]})
    # the scrape nearest 8 s is the one at 10 s: v1 0 -> 100 -> 200; v2 reset-corrected
    # 0, 20, 25, 45 at 0, 5, 10, 20 s: 25 then 20
    expected = {(0, "v1"): 100, (1, "v1"): 100, (0, "v2"): 25, (1, "v2"): 20}
    frame = samples(rows)
    out = metrics_counts_from_istio(frame, windows.astype(np.int64), started_ns=0)
    assert {(r.step, r.version): r.requests for r in out.itertuples()} == expected
    assert out["requests"].dtype == np.int64
    step1 = out[out["step"] == 1].iloc[0]
    assert (step1["scrape_start_ns"], step1["scrape_end_ns"]) == (10 * 10**9, 20 * 10**9)
    # the same samples with one column per label instead of a labels JSON string
    wide = pd.concat(
        [frame.drop(columns="labels"), pd.DataFrame([json.loads(x) for x in frame["labels"]])],
        axis=1,
    )
    out = metrics_counts_from_istio(wide, windows.astype(np.int64), started_ns=0)
    assert {(r.step, r.version): r.requests for r in out.itertuples()} == expected


def test_a_series_born_in_the_run_counts_from_zero_and_steps_add_up() -> None:
    v3 = {"reporter": "destination", "destination_app": "frontend", "destination_version": "v3"}
    v1 = {**v3, "destination_version": "v1"}
    # v1 scraped every 5 s from before the run; v3 first at 15 s with 7 requests already
    rows = [(t, v1, 1000.0 + 3 * t) for t in range(-5, 31, 5)] + [(15.0, v3, 7.0), (30.0, v3, 9.0)]
    windows = pd.DataFrame(
        {
            "step": [0, 1, 2],
            "start_ns": [0, 12 * 10**9, 21 * 10**9],
            "end_ns": [12 * 10**9, 21 * 10**9, 30 * 10**9],
        }  # fmt: skip
    )
    out = metrics_counts_from_istio(samples(rows), windows, started_ns=0)
    got = {(r.step, r.version): r.requests for r in out.itertuples()}
    # v3 was 0 at the scrape before its first (10 s): nearest 12 s, so all 7 fall in step 1
    assert got[(0, "v3")] == 0 and got[(1, "v3")] == 7 and got[(2, "v3")] == 2
    # v1 existed before the run: only its increase counts, nearest 0, 12 (10), 21 (20), 30 s
    assert [got[(k, "v1")] for k in range(3)] == [30, 30, 30]
    assert sum(got[(k, "v1")] for k in range(3)) == 3 * 30  # the steps add up to the run


def test_the_run_counts_from_the_scrape_before_its_start_to_the_one_after_its_end() -> None:
    v1 = {"reporter": "destination", "destination_app": "frontend", "destination_version": "v1"}
    rows = [(t, v1, 100.0 + 10 * t) for t in range(-2, 24, 2)]  # 10 req/s, scraped every 2 s
    # the run from 1.6 s to 20.4 s: nearest would be 2 s and 20 s, leaving out its edges
    windows = pd.DataFrame(
        {
            "step": [0, 1],
            "start_ns": [1_600_000_000, 10_900_000_000],
            "end_ns": [10_900_000_000, 20_400_000_000],
        }
    )
    out = metrics_counts_from_istio(samples(rows), windows, started_ns=1_500_000_000)
    got = {(r.step, r.version): r.requests for r in out.itertuples()}
    assert got == {(0, "v1"): 100, (1, "v1"): 120}  # 0 -> 10 (nearest 10.9 s) -> 22 s
    edges = out.set_index("step")[["scrape_start_ns", "scrape_end_ns"]]
    assert edges.loc[0].tolist() == [0, 10 * 10**9] and edges.loc[1, "scrape_end_ns"] == 22 * 10**9


def test_the_scraper_samples_at_once_when_the_weights_change(tmp_path) -> None:
    from meshcore.runfolder import RunFolder
    from meshsim.telemetry.scrape import Scraper
    from meshsim.telemetry.weight_watch import WeightChanges

    folder = RunFolder(tmp_path)
    watch = WeightChanges(tmp_path)
    assert not watch.changed()  # no run.json yet
    folder.write_run({"events": [{"kind": "weights", "step": 0}]})
    assert watch.changed() and not watch.changed()
    folder.write_run({"events": [{"kind": "weights", "step": 0}, {"kind": "gate"}]})
    assert not watch.changed()  # rewritten, but no new weight change

    scraper = Scraper([], tmp_path, interval_s=60.0)  # no targets: rounds without a request
    try:
        deadline = time.monotonic() + 5
        while scraper.scrapes < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        events = [{"kind": "weights", "step": k} for k in range(2)]
        folder.write_run({"events": events})
        while scraper.scrapes < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert scraper.scrapes == 2  # the second round came with the change, not 60 s later
    finally:
        scraper.close()


def test_disagreements_are_flagged_with_their_likely_cause(run) -> None:
    from analysis.agreement import consistency_rows

    requests = run.requests.copy()
    requests["status"] = np.where(requests["version"].isna(), 0, 200)
    requests["sampled"] = pd.array(np.arange(len(requests)) % 4 != 0, dtype="boolean")
    client = client_counts(requests)
    one = client[(client["step"] == 1) & (client["version"] == "v1")].iloc[0]
    two = client[(client["step"] == 2) & (client["version"] == "v2")].iloc[0]
    starts = requests.loc[(requests["version"] == "v1").to_numpy(), "start_ns"].to_numpy()
    windows = step_windows(run.run)
    w = windows.set_index("step").loc[1]
    edge = (int(w["start_ns"]) + 2 * 10**9, int(w["end_ns"]) + 2 * 10**9)  # scrapes 2 s late
    between = int(((starts >= edge[0]) & (starts < edge[1])).sum())
    metrics = pd.DataFrame(
        {
            "step": [1, 2],
            "version": ["v1", "v2"],
            "requests": [between, int(two["requests"] * 1.2)],
            "scrape_start_ns": [edge[0], 0],
            "scrape_end_ns": [edge[1], 0],
        }
    )
    mine = (requests["step"] == 1) & (requests["version"] == "v1")
    sampled_v1 = int((requests["sampled"] & mine).sum())
    traces = pd.DataFrame(
        {"step": [1, 2], "version": ["v1", "v2"], "requests": [sampled_v1, int(two["requests"])]}
    )
    found = consistency_rows(requests, metrics, traces, windows)
    rows = {(r["step"], r["version"]): r for r in found}
    r1, r2 = rows[(1, "v1")], rows[(2, "v2")]
    assert r1["client"] == one["requests"] and r1["client_between_scrapes"] == between
    assert r1["client_sampled"] == sampled_v1
    assert (
        "likely scrape boundaries" in r1["flags"][0] and "+2.0 s and +2.0 s off" in r1["flags"][0]
    )
    assert r1["flags"][1].startswith("traces -") and "unsampled requests" in r1["flags"][1]
    off = (metrics["requests"][1] - two["requests"]) / two["requests"] * 100
    assert len(r2["flags"]) == 1  # the traces agree: no flag
    assert r2["flags"][0].startswith(f"Prometheus +{metrics['requests'][1] - two['requests']} "
                                     f"({off:+.1f} %) against the client's")  # fmt: skip
    assert "redirects the client followed as one request" in r2["flags"][0]
    # once redirects are recorded as requests of their own, they are not the likely cause
    requests.loc[requests.index[:5], "status"] = 302
    rows = {(r["step"], r["version"]): r for r in consistency_rows(requests, metrics, traces)}
    assert "redirects" not in rows[(2, "v2")]["flags"][0]
    assert "gateway retries" in rows[(2, "v2")]["flags"][0]
    # traces short of the sampled requests: missing traces
    traces.loc[0, "requests"] = sampled_v1 // 2
    rows = {(r["step"], r["version"]): r for r in consistency_rows(requests, metrics, traces)}
    assert "missing traces" in rows[(1, "v1")]["flags"][-1]


def test_meshloads_own_probes_count_in_prometheus_not_in_records(run) -> None:
    """Step 0's first-stamp probes reach the frontend: Prometheus counts them, the records do
    not; the table adds them to the client's count of the first step only."""
    from analysis.agreement import consistency_rows

    client = client_counts(run.requests)
    known = client[client["version"] != "unknown"]
    first = int(known["step"].min())
    v1 = int(known[(known["step"] == first) & (known["version"] == "v1")]["requests"].iloc[0])
    probes = max(10, v1 // 20)  # well beyond the 1 % the table forgives
    metrics = known.assign(
        requests=np.where(
            (known["step"] == first) & (known["version"] == "v1"),
            known["requests"] + probes,
            known["requests"],
        )
    )
    unaware = {(r["step"], r["version"]): r for r in consistency_rows(run.requests, metrics)}
    assert unaware[(first, "v1")]["flags"], "the probes are more than the table forgives"
    rows = {
        (r["step"], r["version"]): r
        for r in consistency_rows(run.requests, metrics, probes={"v1": probes})
    }
    assert rows[(first, "v1")]["probes"] == probes and not rows[(first, "v1")]["flags"]
    later = [r for (step, version), r in rows.items() if step != first and version == "v1"]
    assert later and all(r["probes"] == 0 and not r["flags"] for r in later)
    # probes told of step 0 do not explain a count that lacks them there and has them later
    moved = known.copy()
    last = moved.index[-1]
    moved.loc[last, "requests"] += probes
    rows = {
        (r["step"], r["version"]): r
        for r in consistency_rows(run.requests, moved, probes={"v1": probes})
    }
    said = rows[(first, "v1")]["flags"]
    assert said and f"-{probes} " in said[0] and f"{v1:,} records and {probes} probes" in said[0]
    assert rows[(int(moved.loc[last, "step"]), str(moved.loc[last, "version"]))]["flags"]


def test_table_joins_all_sources(run) -> None:
    windows = step_windows(run.run)
    client = client_counts(run.requests)
    metrics = client[client["version"] != "unknown"].assign(requests=lambda f: f["requests"] * 1.0)
    table = consistency_table(client, metrics, trace_counts(run.spans, windows))
    assert list(table.columns) == ["step", "version", "client", "metrics", "traces"]
    known = table[table["version"] != "unknown"]
    assert (known["metrics"] == known["client"]).all() and table["metrics"].dtype == "Int64"
    assert table["traces"].isna().sum() == (table["version"] == "unknown").sum()


def test_stickiness_and_cohort_reach() -> None:
    requests = pd.DataFrame(
        {
            "user": ["a", "a", "b", "b", "c", "c", "d", None],
            "version": ["v1", "v1", "v2", "v2", "v1", "v2", None, "v2"],
        }
    )
    assert stickiness(requests) == {
        "users": 3,
        "single_version_users": 2,
        "share_single_version": pytest.approx(2 / 3),
        "users_by_first_version": {"v1": 2, "v2": 1},  # no start_ns: in row order
    }
    table = user_versions(requests).set_index("user")
    assert table.loc["c", "version"] == "mixed" and table.loc["b", "version"] == "v2"
    reach = cohort_reach(requests, ["b", "c"], version="v2")
    assert reach["cohort_share"] == 1.0 and reach["others_share"] == 0.0
    with pytest.raises(ConfigError, match="cookie"):
        stickiness(requests, user_col="session")


def test_random_routing_is_not_sticky(run) -> None:
    result = stickiness(run.requests)
    users = run.requests.groupby("user", observed=True)["version"].nunique()
    assert result["users"] == len(users)
    assert result["single_version_users"] == int((users == 1).sum())
    seen = run.requests.dropna(subset=["user", "version"]).sort_values("start_ns", kind="stable")
    by_first = Counter(str(v) for v in seen.drop_duplicates("user")["version"])
    assert result["users_by_first_version"] == dict(sorted(by_first.items()))


def test_loadgen_users_are_keyed_by_worker_and_user_id() -> None:
    """Each worker numbers its users from 1: user 1 of w1 and user 1 of w2 are two users."""
    rng = np.random.default_rng(52)
    n = 4000
    worker = rng.choice(["worker1", "worker2", "worker3"], n)
    user_id = rng.integers(1, 40, n)
    # each (worker, user) sticks to one version, but user ids alone see both
    sticky = {(w, u): ("v1", "v2")[rng.integers(0, 2)] for w in set(worker) for u in range(1, 40)}
    version = [sticky[(w, int(u))] for w, u in zip(worker, user_id, strict=True)]
    requests = pd.DataFrame(
        {
            "start_ns": np.arange(n, dtype=np.int64),
            "version": pd.Categorical(version),
            "worker": pd.Categorical(worker),
            "user_id": pd.array(np.where(rng.random(n) < 0.05, None, user_id), dtype="Int64"),
        }
    )
    known = requests[requests["user_id"].notna()]
    pairs = set(zip(known["worker"], known["user_id"], strict=True))
    result = stickiness(requests, user_col="user_id")
    assert result["users"] == len(pairs)
    assert result["single_version_users"] == len(pairs)  # every worker's user is sticky
    ids_alone = known.groupby("user_id")["version"].nunique()
    assert (ids_alone > 1).any()  # ... while user ids alone would have looked mixed
    table = user_versions(requests, user_col="user_id")
    assert len(table) == len(pairs) and (table["versions"] == 1).all()
    codes = user_codes(requests, user_col="user_id")  # the keys without a string per row
    keys = user_keys(requests, user_col="user_id")
    assert ((codes < 0) == pd.isna(keys)).all()
    assert len(set(zip(codes[codes >= 0], keys[codes >= 0], strict=True))) == len(pairs)
    beta = {"3", "5"}
    reach = cohort_reach(requests, beta, version="v2", user_col="user_id")
    members = {(w, u) for w, u in pairs if str(u) in beta}
    assert reach["cohort_users"] == len(members)
    assert reach["cohort_reached"] == sum(sticky[(w, int(u))] == "v2" for w, u in members)


def test_cohort_from_a_column() -> None:
    requests = pd.DataFrame(
        {
            "user": ["a", "a", "b", "c", "d"],
            "version": ["v2", "v2", "v1", "v2", "v1"],
            "beta": [True, True, True, False, False],
        }
    )
    reach = cohort_reach(requests, "beta", version="v2")
    assert (reach["cohort_users"], reach["cohort_reached"]) == (2, 1)
    assert (reach["others_users"], reach["others_reached"]) == (2, 1)
    with pytest.raises(ConfigError, match="cohort column"):
        cohort_reach(requests, "gamma")
