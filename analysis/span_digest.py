"""What the report needs from the spans, gathered one chunk of whole traces at a time.

Every span figure depends on its own trace only (`analysis.hops`), so the spans never need to be
in memory together: each chunk is timed (`hops.hop_times`) and leaves its share of every figure
in a `SpanDigest` — the per-hop sums and each group's durations (`hop_stats.HopSums`: percentiles
stay exact), the service graph's edge counts, the traced requests per step and version, the
frontend's version of the traces whose responses carried none, and a 64-bit key per trace
seen (`versions.trace_keys`, for the trace coverage). A chunk is dropped before the next is
read. `digest_spans` takes the chunks from anywhere: `analysis.span_chunks.trace_chunks` reads
them from a run folder's parquet (`analysis.span_reading`: by one process or several); a frame
in memory is one chunk (or several, cut where traces end).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.types import union_categoricals

from analysis.changepoint import version_labels
from analysis.consistency import window_counts
from analysis.graph import edge_counts, sum_edges, with_shares
from analysis.hop_stats import HopSums
from analysis.hops import CHUNK_SPANS, hop_times, whole_traces
from analysis.span_chunks import TRACE_KEY
from analysis.versions import frontend_entries, trace_keys, trace_versions

Renamer = Callable[[pd.DataFrame], pd.DataFrame]


@dataclass
class SpanDigest:
    """The span figures of a run, and how many spans and chunks they came from."""

    spans: int = 0
    chunks: int = 0
    hops: HopSums = field(default_factory=HopSums)
    edges: list[pd.DataFrame] = field(default_factory=list)
    traced: list[pd.DataFrame] = field(default_factory=list)
    entries: list[pd.DataFrame] = field(default_factory=list)
    trace_keys: list[np.ndarray] = field(default_factory=list)  # `versions.trace_keys`
    _coverage: tuple[float | None] | None = None

    @property
    def empty(self) -> bool:
        return self.spans == 0

    def merge(self, other: SpanDigest) -> SpanDigest:
        """This digest plus another of other traces (another range of blocks)."""
        self.spans += other.spans
        self.chunks += other.chunks
        self.hops.merge(other.hops)
        for mine, theirs in (
            (self.edges, other.edges),
            (self.traced, other.traced),
            (self.entries, other.entries),
            (self.trace_keys, other.trace_keys),
        ):
            mine.extend(theirs)
        return self

    def hop_stats(self) -> pd.DataFrame:
        return self.hops.stats()

    def graph(self) -> pd.DataFrame:
        return with_shares(sum_edges(self.edges))

    def trace_counts(self, windows: pd.DataFrame) -> pd.DataFrame:
        """step | version | requests: the traced requests (the frontend's entries) per step
        window (`consistency.step_windows`)."""
        if not self.traced:
            return window_counts(np.empty(0, np.int64), np.empty(0, str), windows)
        start_ns = np.concatenate([t["start_ns"].to_numpy() for t in self.traced])
        versions = union_categoricals([t["version"] for t in self.traced], ignore_order=True)
        return window_counts(start_ns, version_labels(pd.Series(versions)), windows)

    def trace_versions(self) -> pd.DataFrame | None:
        """trace_id | start_ns | version of the frontend's entries (`versions.fill_from_traces`)."""
        return pd.concat(self.entries, ignore_index=True) if self.entries else None

    def coverage(self, requests: pd.DataFrame) -> float | None:
        """Share of client requests (with a trace_id) whose trace is among the spans; the
        traces' keys are let go once it is known."""
        if self._coverage is None:
            ids = requests["trace_id"].dropna()
            if len(ids) == 0:
                self._coverage = (None,)
            else:
                found = 0
                if self.trace_keys:
                    seen = np.sort(np.concatenate(self.trace_keys))  # each trace in one chunk
                    wanted = np.sort(trace_keys(ids))  # sorted: binary searches in order
                    at = np.minimum(np.searchsorted(seen, wanted), len(seen) - 1)
                    found = int(np.count_nonzero(seen[at] == wanted))
                self._coverage = (found / len(ids),)
            self.trace_keys = []
        return self._coverage[0]


def digest_spans(
    chunks: Iterable[pd.DataFrame],
    *,
    frontend: str = "frontend",
    wanted: pa.Array | None = None,
    rename: Renamer | None = None,
) -> SpanDigest:
    """Fold chunks of whole traces into one digest. `wanted`: the normalised trace ids whose
    frontend version is needed (`versions.missing_ids`; None: none); `rename`: what each chunk
    goes through first (the backends' names, `analysis.backends`)."""
    digest = SpanDigest()
    for chunk in chunks:
        if chunk.empty:
            continue
        spans = rename(chunk) if rename is not None else chunk
        timed = hop_times(spans, frontend=frontend, chunk_spans=len(spans))
        digest.spans += len(timed)
        digest.chunks += 1
        digest.hops.add(timed)
        digest.edges.append(edge_counts(timed))
        entry = frontend_entries(timed, frontend)
        digest.traced.append(
            pd.DataFrame(
                {
                    "start_ns": timed["start_ns"].to_numpy()[entry],
                    "version": timed["version"].iloc[np.flatnonzero(entry)].to_numpy(),
                }
            ).astype({"version": "category"})
        )
        if wanted is not None and len(wanted):
            digest.entries.append(trace_versions(timed, frontend, wanted))
        keys = np.sort(chunk_keys(timed))
        digest.trace_keys.append(keys[np.concatenate(([True], keys[1:] != keys[:-1]))])
        del timed, spans
    return digest


def chunk_keys(spans: pd.DataFrame) -> np.ndarray:
    """The trace key of every span with a trace id: the chunk's own column (`TRACE_KEY`, as
    the span files are read), else computed."""
    named = spans["trace_id"].notna().to_numpy()
    if TRACE_KEY in spans.columns:
        return spans[TRACE_KEY].to_numpy()[named]
    return trace_keys(spans["trace_id"][named])


def frame_chunks(spans: pd.DataFrame, chunk_spans: int = CHUNK_SPANS) -> Iterator[pd.DataFrame]:
    """A frame in memory as chunks of whole traces of about `chunk_spans` spans each."""
    if len(spans) <= chunk_spans:
        yield spans
        return
    for rows in whole_traces(spans["trace_id"], chunk_spans):
        yield spans.iloc[np.sort(rows)].reset_index(drop=True)
