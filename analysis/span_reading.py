"""A run folder's spans digested by one process or several.

`SpanReading` starts the first pass (each row group's trace keys, `analysis.span_chunks`) as
soon as it is opened; `digest` then runs the second pass, given which traces' versions to look
up (the report reads those from two columns of the request parts before the requests load, so
the spans' working set and the requests' never meet). A run of more than
`PARALLEL_SPANS` spans is split into contiguous ranges of row groups of about as many spans
each, one per worker: spawned processes (a fresh interpreter, not a copy of the caller's
memory; the caller's main module must guard its top level, as a console script does), each
reading its range and returning its digest, which are added up. Smaller runs are read in the
caller's process, as is every run when `workers` is 1 (a report built inside a Locust run).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.backends import spans_by_backend
from analysis.span_chunks import (
    BlockRange,
    SpanFiles,
    block_keys,
    span_files,
    trace_chunks,
    trace_ends,
)
from analysis.span_digest import SpanDigest, digest_spans

# spans below which the folder is digested in the caller's process: P4's 5 M spans took 11.5 s
# and 0.98 GB in one process, 14.5 s and 2.05 GB in two (each worker's imports and chunk)
PARALLEL_SPANS = 10_000_000


def default_workers() -> int:
    """`meshload report`'s processes for a large run: one per core, at most 4."""
    return min(os.cpu_count() or 1, 4)


@dataclass(frozen=True)
class FolderDigest:
    """The digest of a run folder's spans, the notes of reading them, and how many processes
    read them."""

    digest: SpanDigest
    notes: list[str]
    workers: int


class SpanReading:
    """The spans of one run folder being read; use as a context manager."""

    def __init__(self, path: str | os.PathLike[str], workers: int = 1) -> None:
        self.source = span_files(path)
        n = len(self.source.blocks)
        self.workers = max(1, min(workers, n)) if self.source.spans >= PARALLEL_SPANS else 1
        self._ranges = _ranges(self.source, self.workers) if n else []
        self._pool: ProcessPoolExecutor | None = None
        self._keys: list[Future[tuple[list[np.ndarray], list[str]]]] = []
        if self.workers > 1:
            context = multiprocessing.get_context("spawn")
            # a worker ends with its task: its memory goes as its digest arrives
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, max_tasks_per_child=1
            )
            self._keys = [self._pool.submit(_keys, self.source, r) for r in self._ranges]

    def digest(
        self,
        *,
        frontend: str = "frontend",
        wanted: pa.Array | None = None,
        backend_names: Mapping[str, str] | None = None,
    ) -> FolderDigest:
        """Every span figure (`analysis.span_digest`); `wanted`: the normalised trace ids whose
        frontend version is needed; `backend_names` renames the frontend's versions
        (`analysis.backends.label_to_backend`)."""
        job = _Job(self.source, frontend, wanted, dict(backend_names or {}))
        n = len(self.source.blocks)
        if self._pool is None:
            ends = trace_ends(block_keys(self.source, range(n)))
            digest, notes = job.run(ends.range(0, n))
            return FolderDigest(digest, _notes(self.source.notes, notes), 1)
        keys = [f.result() for f in self._keys]
        ends = trace_ends([k for part, _ in keys for k in part])
        done = list(self._pool.map(job.run, [ends.range(lo, hi) for lo, hi in self._ranges]))
        self.close()
        digest = SpanDigest()
        for part, _ in done:
            digest.merge(part)
        notes = _notes(self.source.notes, *(n for _, n in keys), *(n for _, n in done))
        return FolderDigest(digest, notes, self.workers)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> SpanReading:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def digest_folder(
    path: str | os.PathLike[str],
    *,
    frontend: str = "frontend",
    wanted: pa.Array | None = None,
    backend_names: Mapping[str, str] | None = None,
    workers: int = 1,
) -> FolderDigest:
    """Open, digest and close a `SpanReading` of the folder."""
    with SpanReading(path, workers) as reading:
        return reading.digest(frontend=frontend, wanted=wanted, backend_names=backend_names)


def _keys(source: SpanFiles, blocks: tuple[int, int]) -> tuple[list[np.ndarray], list[str]]:
    return block_keys(source, range(*blocks)), source.notes


@dataclass(frozen=True)
class _Job:
    """The second pass over one range of row groups (pickled into a worker)."""

    source: SpanFiles
    frontend: str
    wanted: pa.Array | None
    names: dict[str, str]

    def run(self, blocks: BlockRange) -> tuple[SpanDigest, list[str]]:
        chunks = trace_chunks(self.source, blocks)
        rename = self._rename if self.names else None
        digest = digest_spans(chunks, frontend=self.frontend, wanted=self.wanted, rename=rename)
        return digest, [*self.source.notes, *self.source.missing_note()]

    def _rename(self, chunk: pd.DataFrame) -> pd.DataFrame:
        return spans_by_backend(chunk, self.names, self.frontend)


def _ranges(source: SpanFiles, workers: int) -> list[tuple[int, int]]:
    """`workers` contiguous ranges of row groups holding about as many spans each."""
    rows = np.cumsum([b.rows for b in source.blocks])
    cuts = np.searchsorted(rows, rows[-1] * np.arange(1, workers) / workers, side="right")
    edges = [0, *sorted({int(c) for c in cuts if 0 < c < len(rows)}), len(rows)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _notes(*lists: list[str]) -> list[str]:
    return list(dict.fromkeys(note for notes in lists for note in notes))
