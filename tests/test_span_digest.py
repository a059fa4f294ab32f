"""Spans read a chunk of whole traces at a time give the figures the whole frame gives.

The independent side is the frame in memory: hop stats, the service graph, traced counts,
coverage and the versions filled from traces computed on all spans at once, against the same
figures gathered from run folders whose spans are split across parts and row groups in the ways
sources write them (trace by trace, time-ordered with traces crossing part boundaries) and in the
worst way (every part holding a shuffled slice of every trace).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis.consistency import step_windows, trace_counts, trace_coverage
from analysis.frames import to_arrow
from analysis.graph import service_graph
from analysis.hop_stats import hop_stats
from analysis.hops import hop_times
from analysis.span_chunks import block_keys, id_keys, span_files, trace_chunks, trace_ends
from analysis.span_digest import digest_spans, frame_chunks
from analysis.span_reading import digest_folder
from analysis.synthetic import make_run
from analysis.versions import fill_from_traces, fill_versions, missing_ids
from meshcore.schemas import SPAN_SCHEMA

SUMS = ["mean_ms", "self_mean_ms", "self_per_trace_ms", "critical_per_trace_ms"]


@pytest.fixture(scope="module")
def run():
    return make_run(n_requests=6_000, seed=11, no_header_rate=0.2, slowdown={"v2": 1.3})


def write_parts(folder: Path, spans: pd.DataFrame, order: np.ndarray, parts: int, rg: int) -> None:
    """`spans` in `order`, cut into `parts` files of row groups of `rg` rows."""
    (folder / "spans").mkdir(parents=True)
    for i, rows in enumerate(np.array_split(order, parts)):
        table = to_arrow(spans.iloc[rows].reset_index(drop=True), SPAN_SCHEMA)
        pq.write_table(table, folder / "spans" / f"part-{i:04d}.parquet", row_group_size=rg)


def by_time(spans: pd.DataFrame) -> np.ndarray:
    """Traces in the order they started, each trace's spans together, as a fetch writes them."""
    first = spans.groupby("trace_id")["start_ns"].transform("min").to_numpy()
    return np.lexsort((spans["start_ns"].to_numpy(), spans["trace_id"].to_numpy(), first))


def by_span_start(spans: pd.DataFrame) -> np.ndarray:
    """Every span in start order: a trace crosses the boundary of parts and row groups."""
    return np.argsort(spans["start_ns"].to_numpy(), kind="stable")


def shuffled(spans: pd.DataFrame) -> np.ndarray:
    return np.random.default_rng(3).permutation(len(spans))


def assert_same_figures(digest, run, windows) -> None:
    whole = hop_stats(hop_times(run.spans))
    got = digest.hop_stats()
    keys = ["service", "version", "root_version", "spans", "p50_ms", "p99_ms"]
    pd.testing.assert_frame_equal(got[keys], whole[keys], check_dtype=False)
    np.testing.assert_allclose(got[SUMS].to_numpy(), whole[SUMS].to_numpy(), rtol=1e-12)
    pd.testing.assert_frame_equal(
        digest.graph(), service_graph(hop_times(run.spans)), check_dtype=False
    )
    pd.testing.assert_frame_equal(
        digest.trace_counts(windows).reset_index(drop=True),
        trace_counts(hop_times(run.spans), windows).reset_index(drop=True),
        check_dtype=False,
    )
    assert digest.coverage(run.requests) == trace_coverage(run.requests, run.spans)


@pytest.mark.parametrize("layout", [by_time, by_span_start, shuffled])
def test_folder_read_in_chunks_gives_the_figures_of_the_whole_frame(run, tmp_path, layout):
    folder = tmp_path / layout.__name__
    write_parts(folder, run.spans, layout(run.spans), parts=7, rg=1_500)
    windows = step_windows(run.run, run.requests)
    wanted = missing_ids(run.requests)
    source = span_files(folder)
    assert len(source.blocks) > 7  # several row groups per part
    ends = trace_ends(block_keys(source, range(len(source.blocks))))
    chunks = list(trace_chunks(source, ends.range(0, len(source.blocks)), chunk_spans=4_000))
    assert sum(len(c) for c in chunks) == len(run.spans)
    for chunk in chunks:  # whole traces: no trace in two chunks
        assert chunk["trace_id"].nunique() * 5 == len(chunk)
    digest = digest_spans(iter(chunks), wanted=wanted)
    assert digest.chunks == len(chunks) > 1
    assert_same_figures(digest, run, windows)
    filled = fill_versions(run.requests, run.spans)
    mine = fill_from_traces(run.requests, digest.trace_versions())
    assert filled.filled == mine.filled > 0
    assert (mine.requests["version"].astype(str) == filled.requests["version"].astype(str)).all()


def test_a_frame_cut_where_traces_end(run):
    chunks = list(frame_chunks(run.spans, chunk_spans=7_001))
    assert len(chunks) > 2 and sum(len(c) for c in chunks) == len(run.spans)
    assert all(c["trace_id"].nunique() * 5 == len(c) for c in chunks)
    digest = digest_spans(iter(chunks))
    assert_same_figures(digest, run, step_windows(run.run, run.requests))


def test_unreadable_part_is_a_note_and_the_rest_counts(run, tmp_path):
    folder = tmp_path / "run"
    write_parts(folder, run.spans, by_time(run.spans), parts=4, rg=10_000)
    broken = folder / "spans" / "part-0002.parquet"
    broken.write_bytes(b"not parquet")
    read = digest_folder(folder)
    assert any("part-0002.parquet: unreadable, spans left out" in n for n in read.notes)
    intact = sum(
        pq.ParquetFile(p).metadata.num_rows
        for p in sorted((folder / "spans").glob("*"))
        if p != broken
    )
    assert read.digest.spans == intact


def test_ids_of_other_forms_are_hashed_consistently():
    import pyarrow as pa

    ids = pa.array(["abc", "a-much-longer-trace-id", "abc", None])
    keys = id_keys(ids)
    assert keys[0] == keys[2] and keys[0] != keys[1]
    hexed = pa.array(["0" * 16 + "00000000000000ff", "f" * 32])
    assert list(id_keys(hexed)) == [255, 2**64 - 1]


def test_an_id_keeps_its_key_whatever_shares_its_array():
    import pyarrow as pa

    # as Jaeger gives them (leading zeros dropped, any case), and beside an id that is not hex
    alone = id_keys(pa.array(["0" * 20 + "abcdef012345", "F" * 32]))
    mixed = id_keys(pa.array(["abcdef012345", "not-a-hex-id", "f" * 32, None]))
    assert list(alone) == [0xABCDEF012345, 2**64 - 1]
    assert [mixed[0], mixed[2]] == list(alone)
    assert mixed[1] not in alone


def test_fetched_and_recorded_spans_count_once(run, tmp_path):
    folder = tmp_path / "run"
    write_parts(folder, run.spans, by_time(run.spans), parts=3, rg=10_000)
    pq.write_table(to_arrow(run.spans, SPAN_SCHEMA), folder / "spans.parquet")
    (folder / "run.json").write_text(json.dumps(run.run))
    assert digest_folder(folder).digest.spans == len(run.spans)


@pytest.mark.integration
def test_two_processes_give_the_digest_of_one(run, tmp_path, monkeypatch):
    import analysis.span_reading as span_reading

    folder = tmp_path / "run"
    write_parts(folder, run.spans, by_span_start(run.spans), parts=6, rg=2_000)
    monkeypatch.setattr(span_reading, "PARALLEL_SPANS", 1)
    one, two = digest_folder(folder, workers=1), digest_folder(folder, workers=2)
    assert (one.workers, two.workers) == (1, 2)
    windows = step_windows(run.run, run.requests)
    assert_same_figures(two.digest, run, windows)
    pd.testing.assert_frame_equal(one.digest.hop_stats(), two.digest.hop_stats())


def test_clean_cuts_never_split_a_trace():
    from analysis.span_chunks import _clean_cuts

    keys = np.array([1, 1, 2, 3, 2, 3, 4, 4, 5], dtype=np.uint64)
    assert _clean_cuts(keys, 2) == [0, 2, 6, 8, 9]
    assert _clean_cuts(keys[::-1].copy(), 100) == [0, 9]
