"""build_report: summary.json per docs/design.md, valid PNGs, a self-contained, escaped HTML."""

from __future__ import annotations

import base64
import html
import json
import re
import socket
import struct
from pathlib import Path

import pandas as pd
import pytest

from analysis.charts import CHART_NAMES
from analysis.report import build_report, error_counts
from analysis.synthetic import make_run

EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def write_run(folder: Path, run: dict[str, object], requests: pd.DataFrame, spans: pd.DataFrame):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps(run))
    requests.to_parquet(folder / "requests.parquet")
    if not spans.empty:
        spans.to_parquet(folder / "spans.parquet")
    return folder


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    synth = make_run(
        n_requests=4000,
        seed=71,
        slowdown={"v2": 1.5},
        error_rate={"v2": 0.03},
        unknown_rate=0.01,
        n_users=50,
    )
    requests = synth.requests.copy()
    names = requests["name"].cat.add_categories([EVIL])
    names.iloc[::97] = EVIL  # an endpoint name from outside
    requests["name"] = names
    failed = requests.index[~requests["ok"].to_numpy() & (requests["version"] == "v2").to_numpy()]
    requests.loc[failed[:3], "error"] = EVIL  # an error text quoting a response body
    spans = synth.spans.copy()
    services = spans["service"].cat.add_categories([EVIL])
    services[spans["service"] == "currencyservice"] = EVIL  # a span tag (service.name)
    spans["service"] = services
    folder = write_run(tmp_path_factory.mktemp("run") / "r", synth.run, requests, spans)
    return build_report(folder, tolerance_pp=2.5, progress=False), requests


def test_summary_json_has_the_design_keys(built) -> None:
    result, requests = built
    on_disk = json.loads(
        result.summary_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}")
    )
    assert on_disk == result.summary
    for key in ("schema_version", "split", "propagation", "latency", "judge", "consistency"):
        assert key in on_disk
    assert on_disk["tolerance_pp"] == 2.5
    assert on_disk["run"]["scenario"] == "synthetic"
    for step in on_disk["split"]:
        assert {
            "step",
            "configured",
            "observed",
            "n",
            "ci95",
            "error_pp",
            "chi2_p",
            "passed",
        } <= set(step)
    assert all({"step", "delay_ms"} <= set(p) for p in on_disk["propagation"])
    stats = {"n", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms"}
    assert all(stats <= set(v) for v in on_disk["latency"].values())
    assert on_disk["judge"]["verdict"] == "fail"  # v2 is 1.5x slower and fails 3 %
    assert on_disk["judge"]["roles_source"] == "plan weights"  # the plan moves traffic to v2
    assert on_disk["run"]["roles"] is None  # this run.json records no roles
    assert on_disk["sticky"]["users"] == 50  # plain weights: users hop between versions
    assert on_disk["sticky"]["single_version_users"] < 50
    assert on_disk["charts"] == [f"{name}.png" for name in CHART_NAMES]
    assert any("metrics" in n for n in on_disk["notes"])  # no metrics.parquet in this folder


def test_error_counts_match_a_plain_count(built) -> None:
    result, requests = built
    versions = requests["version"].astype(object).fillna("unknown").to_numpy()
    ok = requests["ok"].to_numpy()
    for v, rec in result.summary["errors"].items():
        mine = versions == v
        assert rec["n"] == int(mine.sum())
        assert rec["errors"] == int((mine & ~ok).sum())
        assert rec["rate"] == pytest.approx((mine & ~ok).sum() / mine.sum())
    v2 = result.summary["errors"]["v2"]
    counts = [count for _, count, _ in v2["top"]]
    assert counts == sorted(counts, reverse=True) and sum(counts) <= v2["errors"], v2["top"]
    evil = error_counts(requests[requests["error"].astype(object) == EVIL])
    assert sum(c for label, c, _ in evil["v2"]["top"] if label.startswith(EVIL)) == 3, evil
    assert error_counts(requests.iloc[:0]) == {}


def test_failures_are_grouped_by_kind_status_and_endpoint_with_a_portless_example() -> None:
    """The same failure on every product and every run's port is one line."""
    from tests.records import request_table

    errors = [
        "LocustBadStatusCode: URL http://127.0.0.1:42789/product/L9ECAV7KIM: code=500",
        "LocustBadStatusCode: URL http://127.0.0.1:42789/product/OLJCESPC7Z: code=500",
        "LocustBadStatusCode: URL http://127.0.0.1:39001/product/66VCHSJNUP: code=500",
        "ConnectionRefusedError: [Errno 111] Connection refused",
        None,
    ]
    table = request_table(
        5, version=["v2"] * 5, ok=[False] * 5, status=[500, 500, 500, 0, 503],
        name=["/product/[id]"] * 3 + ["/", "/cart"], method=["GET"] * 5, error=errors,
    )  # fmt: skip
    [(version, rec)] = error_counts(table.to_pandas()).items()
    assert version == "v2" and rec["errors"] == 5
    assert rec["top"] == [
        ["LocustBadStatusCode: 500 on GET /product/[id]", 3, "/product/L9ECAV7KIM"],
        ["503 on GET /cart", 1, None],
        ["ConnectionRefusedError: no response on GET /", 1, None],
    ]


def test_pngs_are_valid_and_sensible(built) -> None:
    result, _ = built
    assert set(result.chart_paths) == set(CHART_NAMES)
    for path in result.chart_paths.values():
        data = path.read_bytes()
        width, height = png_size(data)
        assert 600 <= width <= 2000 and 200 <= height <= 2000, (path.name, width, height)
        assert len(data) > 5_000


def test_html_is_self_contained_escaped_and_shows_the_verdict(built) -> None:
    result, _ = built
    page = result.html_path.read_text(encoding="utf-8")
    assert EVIL not in page
    assert page.count(EVIL_ESCAPED) >= 3  # endpoint, hops/graph tables and error texts
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert "<link" not in page
    assert '<span class="badge fail">fail</span>' in page  # the judge's verdict
    assert "v2 vs v1, roles from plan weights" in page
    assert "Users who saw a single version:" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(CHART_NAMES)
    assert base64.b64decode(images[0]) == result.chart_paths[CHART_NAMES[0]].read_bytes()
    for note in result.notes:
        assert html.escape(note) in page


def test_corrupt_parts_become_notes(tmp_path: Path) -> None:
    synth = make_run(n_requests=1500, seed=72, with_spans=False)
    folder = tmp_path / "r"
    (folder / "requests").mkdir(parents=True)
    telemetry = {"jaeger_url": "http://127.0.0.1:16686", "prometheus_url": None}
    (folder / "run.json").write_text(json.dumps({**synth.run, "telemetry": telemetry}))
    synth.requests.to_parquet(folder / "requests" / "w1.parquet")
    (folder / "requests" / "w2.parquet").write_bytes(b"PAR1 not really parquet")
    (folder / "spans.parquet").write_bytes(b"\x00" * 64)
    (folder / "metrics.parquet").write_bytes(b"garbage")
    result = build_report(folder, progress=False)
    notes = " | ".join(result.notes)
    assert "w2.parquet: unreadable" in notes
    assert "spans.parquet: unreadable" in notes and "metrics.parquet: unreadable" in notes
    assert "chart hops not drawn" in notes and "chart service_graph not drawn" in notes
    assert "rerun with --jaeger-url http://127.0.0.1:16686" in notes  # told, never fetched unasked
    assert result.summary["latency"]["v1"]["n"] == int((synth.requests["version"] == "v1").sum())
    page = result.html_path.read_text()
    assert "w2.parquet: unreadable" in page
    assert (folder / "split_over_time.png").is_file() and not (folder / "hops.png").exists()


def test_only_run_json_and_broken_events_still_give_a_report(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    run = make_run(n_requests=200, seed=73, with_spans=False).run
    run["events"] = [{"kind": "weights", "step": 0, "weights": {"v1": 0, "v2": 0}}]
    (folder / "run.json").write_text(json.dumps(run))
    result = build_report(folder, progress=False)
    notes = " | ".join(result.notes)
    assert "no request records" in notes
    assert "split and propagation left out" in notes
    assert result.summary["split"] == [] and result.chart_paths == {}
    assert "no request records" in result.html_path.read_text()


@pytest.mark.integration  # binds a port to find one nothing listens on
def test_a_stale_chart_is_removed_and_unreachable_telemetry_is_a_note(tmp_path: Path) -> None:
    synth = make_run(n_requests=600, seed=74, with_spans=False)
    folder = write_run(tmp_path / "r", synth.run, synth.requests, pd.DataFrame())
    (folder / "hops.png").write_bytes(b"old")
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    result = build_report(folder, jaeger_url=url, prometheus_url=url, progress=False)
    assert not (folder / "hops.png").exists()
    notes = " | ".join(result.notes)
    assert "traces not fetched" in notes and "metrics not fetched" in notes


def test_mesh_latency_from_istio_buckets(tmp_path: Path) -> None:
    from analysis.report import mesh_latency

    def series(version: str, le: str, values: list[float]) -> list[dict[str, object]]:
        labels = json.dumps(
            {
                "reporter": "destination",
                "destination_app": "frontend",
                "destination_version": version,
                "le": le,
            },
            sort_keys=True,
        )
        return [
            {
                "t": 100.0 + 15 * i,
                "metric": "istio_request_duration_milliseconds_bucket",
                "labels": labels,
                "value": v,
            }
            for i, v in enumerate(values)
        ]

    # v1: cumulative buckets 10 ms: 50, 20 ms: 100, +Inf: 100; the 10 ms counter resets once:
    # 0, 30, 5, 20 counts 30 + 5 + 15 = 50
    rows = (
        series("v1", "10", [0, 30, 5, 20])
        + series("v1", "20", [0, 60, 100, 100])
        + series("v1", "+Inf", [0, 60, 100, 100])
    )
    out = mesh_latency(pd.DataFrame(rows))
    assert out is not None
    # by hand: rank 50 of 100 ends the first bucket; rank 90 is 40/50 into (10, 20]
    assert out["v1"]["n"] == 100 and isinstance(out["v1"]["n"], int)  # a request count
    assert out["v1"]["p50_ms"] == pytest.approx(10.0)
    assert out["v1"]["p90_ms"] == pytest.approx(18.0)
    assert out["v1"]["p99_ms"] == pytest.approx(10 + 10 * 49 / 50)
    assert mesh_latency(pd.DataFrame(rows).assign(metric="other")) is None
    # a v2 series first scraped after the run started was born in it: its first value counts
    born = series("v2", "10", [4, 6]) + series("v2", "+Inf", [4, 10])
    out = mesh_latency(pd.DataFrame(rows + born), started_s=50.0)
    assert out is not None and out["v2"]["n"] == 10 and out["v1"]["n"] == 100
    assert out["v2"]["p50_ms"] == pytest.approx(10 * 5 / 6)  # rank 5 of the 6 in (0, 10]
    out = mesh_latency(pd.DataFrame(rows + born), started_s=200.0)
    assert out is not None and out["v2"]["n"] == 6  # scraped before the run: only the increase


def test_a_stamped_run_shows_each_replica_and_an_unstamped_one_an_estimate(tmp_path: Path) -> None:
    synth = make_run(n_requests=4000, seed=75, rps=40.0, propagation_ms=7.0, stamped=True,
                     replicas=2, replica_delay_ms=[0.0, 1200.0], with_spans=False)  # fmt: skip
    rid = next(iter(synth.run["replica_pods"]))
    meta = {**synth.run, "replica_pods": {**synth.run["replica_pods"], rid: EVIL}}
    folder = write_run(tmp_path / "stamped", meta, synth.requests, pd.DataFrame())
    result = build_report(folder, progress=False)
    page = result.html_path.read_text(encoding="utf-8")
    assert "Measured from the stamps" in page and "resolution (ms)" in page
    assert "Estimated, not measured" not in page
    assert f"{EVIL_ESCAPED} ({rid})" in page and EVIL not in page  # a pod name from outside
    changes = result.summary["propagation"]
    assert all(len(p["by_replica"]) == 2 for p in changes[1:])
    assert result.summary["run"]["replica_pods"][rid] == EVIL
    # a step of too few requests says what it needs, in the table and the verdict line
    assert "inconclusive" in page and "needs" in page
    first = next(s for s in result.summary["split"] if s["verdict"] == "inconclusive")
    assert f"{first['needs_requests']:,}" in page

    plain = {k: v for k, v in synth.run.items() if k not in ("stamps", "replica_pods")}
    plain["stamps"], plain["stamping"] = None, "off (--no-stamp)"
    bare = synth.requests.drop(columns=["config_step", "replica"])
    folder = write_run(tmp_path / "plain", plain, bare, pd.DataFrame())
    result = build_report(folder, progress=False)
    page = result.html_path.read_text(encoding="utf-8")
    assert "Estimated, not measured" in page and "estimated change point (ms)" in page
    assert "Measured from the stamps" not in page
    assert any(n.startswith("not stamped (off (--no-stamp))") for n in result.notes)
    assert {p["method"] for p in result.summary["propagation"]} == {"estimate"}


def test_mesh_side_quantiles_read_as_estimates_and_their_count_as_requests() -> None:
    from analysis.html import render_html

    mesh = {"v1": {"n": 4366, "p50_ms": 6.83, "p99_ms": 22.56}}
    page = render_html({"run_id": "r", "mesh_latency": mesh}, {})
    assert "Per version (mesh side, estimated from Istio&#x27;s histogram buckets), ms:" in page
    assert '<td class="n">4,366</td>' in page and "4,366.00" not in page


def test_the_judge_section_says_how_latency_was_compared() -> None:
    from analysis.html import render_html

    judged = {"baseline": "v1", "canary": "v2", "verdict": "pass", "p99_ms": {"v1": 1, "v2": 1},
              "p50_ms": {"v1": 1, "v2": 1}, "mannwhitney_p": 0.5}  # fmt: skip
    matched = {**judged, "latency_method": "step-matched", "latency_steps": [1, 2, 3, 4],
               "rank_test": "van Elteren"}  # fmt: skip
    page = render_html({"judge": matched}, {})
    assert "step-matched: the versions compared within each step that served both " in page
    assert "(steps 1, 2, 3, 4)" in page and "van Elteren (canary slower)" in page
    page = render_html({"judge": {**judged, "latency_method": "pooled"}}, {})
    assert "Latency pooled over the run: no step served both versions" in page
    assert "Mann-Whitney U (canary slower)" in page


def test_the_judge_section_says_how_errors_were_compared() -> None:
    from test_judge import erring_run

    from analysis.html import render_html
    from analysis.judge import judge

    # healthy while sharing the traffic, v2 fails 4 % once it serves all of it (step 5)
    result = judge(erring_run(8, ((0.005, 0.0), *[(0.005, 0.005)] * 4, (0.0, 0.04))), n_boot=100)
    page = render_html({"judge": result}, {})
    assert "Errors step-matched too (steps 1–4, the rates weighted alike, exact stratified" in page
    assert "step 5, which v2 served alone, against v1 in step 4." in page
    matched = result["error_rate_matched"]
    # the matched rate, not the pooled one
    assert f'<td class="n">{matched["v2"] * 100:.2f}</td>' in page
    assert f"exact stratified p={result['error_p']:.3f}" in page
    alone = result["canary_alone"]
    assert (
        f'error rate (%), v2 alone in step 5</td><td class="n">{alone["baseline_rate"] * 100:.2f}'
        in page
    )
    assert "(baseline: step 4)" in page
    blue_green = pd.DataFrame({"version": ["v1"] * 300 + ["v2"] * 300, "latency_ms": 10.0,
                               "ok": True, "step": [0] * 300 + [1] * 300})  # fmt: skip
    page = render_html({"judge": judge(blue_green, n_boot=100)}, {})
    assert "Errors pooled over every request (no step served both versions" in page
    assert "Fisher exact p=" in page and "alone in" not in page


def test_the_split_table_names_each_verdict_column_for_what_it_judges() -> None:
    from analysis.html import render_html

    step = {"step": 1, "n": 1060, "configured": {"v1": 0.9, "v2": 0.1},
            "observed": {"v1": 0.912, "v2": 0.088},
            "ci95": {"v1": [0.89, 0.93], "v2": [0.07, 0.11]},
            "error_pp": {"v1": 1.2, "v2": -1.2}, "verdicts": {"v1": "pass", "v2": "inconclusive"},
            "verdict": "inconclusive", "needs_requests": 3458, "method": "stamped"}  # fmt: skip
    page = render_html({"split": [step]}, {})
    section = page[page.index('id="split"') :]
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", section[: section.index("</tr>")])
    assert headers == ["step", "version", "configured", "observed", "95 % interval",
                       "error (pp)", "version verdict", "n", "step verdict", "needs (requests)",
                       "reason"]  # fmt: skip


def test_the_split_section_says_what_another_route_served() -> None:
    from analysis.html import render_html

    step = {"step": 0, "n": 30, "configured": {"v1": 0.8, "v2": 0.2}, "n_elsewhere": 3094,
            "observed": {"v1": 0.83, "v2": 0.17}, "verdict": "inconclusive",
            "method": "stamped"}  # fmt: skip
    page = html.unescape(render_html({"split": [step]}, {}))
    assert "came from another route (an A/B cohort's header match, a sticky user's cookie " \
           "route) and are not counted: step 0: 3,094." in page  # fmt: skip
    assert "another route" not in html.unescape(
        render_html({"split": [{**step, "n_elsewhere": 0}]}, {})
    )


def test_numbers_sit_right_and_never_break_and_text_sits_left() -> None:
    from analysis.html import _CSS
    from analysis.markup import table

    rows = [["v1", "0.00 %", 2456, "a long reason", "86.20 % – 92.62 %"]]
    rows += [["v2", "5.98 %", None, "", "exact p=0.5"]]
    page = str(table(["version", "rate", "n", "why", "interval / test"], rows))
    cells = re.findall(r'<t([hd])(?: class="?([tn ]+)"?)?>([^<]*)</t[hd]>', page)
    kinds = {(tag, text): kind for tag, kind, text in cells}
    assert kinds[("d", "0.00 %")] == kinds[("d", "2,456")] == "n", "numbers: right, one line"
    assert kinds[("d", "–")] == "", "a missing number leaves its column numeric"
    assert kinds[("d", "a long reason")] == kinds[("d", "")] == "t", "a column with prose is text"
    assert kinds[("d", "86.20 % – 92.62 %")] == "t n", "an interval in a text column: one line"
    assert kinds[("h", "why")] == "t" and kinds[("h", "rate")] == "", "headers follow their column"
    assert "td.n{white-space:nowrap}" in _CSS
