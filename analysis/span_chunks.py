"""A run folder's spans read as chunks of whole traces, never all at once.

The files (`spans.parquet` fetched, the `spans/` parts recorded) are read a block (one row group)
at a time, in two passes:
1. only `trace_id`, to learn each trace's first and last block (`trace_ends`; a trace is keyed
   by a 64-bit number taken from its id: two traces sharing one only travel together);
2. every column a figure needs (`trace_chunks`): a block's spans join those carried over, the
   spans of traces whose last block this is are complete and go out, the rest are carried on.

Both passes split into contiguous ranges of blocks that separate processes can read
(`analysis.span_digest` runs one per core): a range also reads, from the blocks before it, the
spans of the traces that end inside it, and leaves those that end after it to the next range.
Chunks are cut at about `chunk_spans` spans. Memory holds one chunk, one block, the carried spans
(traces crossing a block boundary: few, as the trace store and a Jaeger fetch write a trace's
spans close together) and sixteen bytes per trace. A file that cannot be read is a note.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from analysis.frames import SPAN_COLUMNS, from_arrow
from meshcore.runfolder import SPANS_DIR, SPANS_FILE, RunFolder

CHUNK_SPANS = 1_000_000
# the columns a span figure reads (`analysis.span_digest`); the rest stay on disk
FIGURE_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_id",
    "service",
    "kind",
    "start_ns",
    "duration_ms",
    "version",
    "status_code",
)
_TYPES = {"int64": pa.int64(), "Int64": pa.int64(), "float64": pa.float64()}
_TYPES.update({"str": pa.large_string(), "category": pa.large_string()})


@dataclass(frozen=True)
class Block:
    """One row group of one span file."""

    path: Path
    row_group: int
    rows: int


@dataclass
class SpanFiles:
    """The span files of a folder as blocks, with what went wrong reading them."""

    root: Path
    blocks: list[Block] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dedupe: bool = False  # fetched and recorded both (an older report): a span counts once
    missing: set[str] = field(default_factory=set)

    @property
    def spans(self) -> int:
        return sum(b.rows for b in self.blocks)

    def unreadable(self, path: Path, exc: BaseException) -> None:
        text = str(exc).strip().splitlines()
        first = text[0] if text else exc.__class__.__name__
        note = f"{path.relative_to(self.root)}: unreadable, spans left out ({first})"
        if note not in self.notes:
            self.notes.append(note)

    def missing_note(self) -> list[str]:
        if not self.missing:
            return []
        listed = ", ".join(c for c in FIGURE_COLUMNS if c in self.missing)
        return [f"spans lack column(s) {listed}; filled with nulls"]


def span_files(path: str | os.PathLike[str]) -> SpanFiles:
    """The span files of a run folder, `spans.parquet` first, then the recorded parts."""
    folder = RunFolder(path)
    files = folder.span_parts()
    source = SpanFiles(folder.path, dedupe=len(files) > 1 and files[0] == folder.file(SPANS_FILE))
    if not files:
        source.notes.append(f"no spans ({SPANS_FILE} and {SPANS_DIR}/ absent)")
    for file in files:
        try:
            meta = pq.ParquetFile(file).metadata
        except (OSError, pa.ArrowException) as exc:
            source.unreadable(file, exc)
            continue
        source.blocks += [
            Block(file, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)
        ]
    return source


@dataclass
class TraceEnds:
    """Every trace key (sorted) with its first and last block."""

    keys: np.ndarray
    first: np.ndarray
    last: np.ndarray

    def range(self, lo: int, hi: int) -> BlockRange:
        """What pass 2 over blocks [lo, hi) needs: the traces ending there, and where to start
        reading (the first block holding one of their spans)."""
        mine = (self.last >= lo) & (self.last < hi)
        start = int(self.first[mine].min()) if mine.any() else lo
        return BlockRange(lo, hi, min(start, lo), self.keys[mine], self.last[mine])


@dataclass
class BlockRange:
    lo: int
    hi: int
    start: int
    keys: np.ndarray  # sorted: the traces ending in blocks [lo, hi)
    last: np.ndarray  # the block each ends in

    def last_block(self, ids: pa.ChunkedArray) -> np.ndarray:
        """The last block of each id's trace, -1 for a trace not ending in this range."""
        keys = _keys(ids)
        at = np.minimum(np.searchsorted(self.keys, keys), max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.full(len(keys), -1)
        return np.where(self.keys[at] == keys, self.last[at], -1)


def block_keys(source: SpanFiles, blocks: Sequence[int]) -> list[np.ndarray]:
    """Pass 1 over some blocks: the distinct trace keys of each (empty when unreadable)."""
    out = []
    for b in blocks:
        block = source.blocks[b]
        try:
            ids = _file(block.path).read_row_group(block.row_group, columns=["trace_id"])
            out.append(np.unique(_keys(ids.column("trace_id"))))
        except (OSError, pa.ArrowException, KeyError) as exc:
            source.unreadable(block.path, exc)
            out.append(np.empty(0, dtype=np.uint64))
    return out


def trace_ends(per_block: Sequence[np.ndarray]) -> TraceEnds:
    """Each trace's first and last block from pass 1's keys of every block."""
    if not per_block or not sum(len(k) for k in per_block):
        return TraceEnds(np.empty(0, dtype=np.uint64), np.empty(0, int), np.empty(0, int))
    key = np.concatenate(per_block)
    block = np.repeat(np.arange(len(per_block), dtype=np.int32), [len(k) for k in per_block])
    order = np.lexsort((block, key))
    key, block = key[order], block[order]
    head = np.concatenate(([True], key[1:] != key[:-1]))
    tail = np.concatenate((key[1:] != key[:-1], [True]))
    return TraceEnds(key[head], block[head], block[tail])


def trace_chunks(
    source: SpanFiles, blocks: BlockRange, chunk_spans: int = CHUNK_SPANS
) -> Iterator[pd.DataFrame]:
    """Pass 2: the spans of the traces ending in `blocks` (`TraceEnds.range`), in frames of
    whole traces (SPAN_COLUMNS' dtypes, FIGURE_COLUMNS only)."""
    lo, hi = blocks.lo, blocks.hi
    carried: pa.Table | None = None
    ready: list[pa.Table] = []
    size = 0
    for b in range(blocks.start, hi):
        table = _read(source, source.blocks[b])
        if table is not None and b < lo:  # only the traces this range finishes
            table = table.filter(pa.array(blocks.last_block(table.column("trace_id")) >= 0))
        if table is not None:
            carried = table if carried is None else pa.concat_tables([carried, table])
        if b < lo or carried is None or carried.num_rows == 0:
            continue
        last = blocks.last_block(carried.column("trace_id"))
        done = (last >= 0) & (last <= b)
        ready.append(carried.filter(pa.array(done)))
        carried = carried.filter(pa.array(~done))
        size += ready[-1].num_rows
        if size >= chunk_spans:
            yield _frame(ready, source)
            ready, size = [], 0
    if size:  # what is still carried ends after this range: the next one's
        yield _frame(ready, source)


def _file(path: Path) -> pq.ParquetFile:
    return pq.ParquetFile(path)


def _read(source: SpanFiles, block: Block) -> pa.Table | None:
    try:
        pf = _file(block.path)
        names = [c for c in FIGURE_COLUMNS if c in pf.schema_arrow.names]
        return _uniform(pf.read_row_group(block.row_group, columns=names), source)
    except (OSError, pa.ArrowException) as exc:
        source.unreadable(block.path, exc)
        return None


def _keys(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A uint64 per trace id: the last 16 hex digits of ids of one length (Jaeger's and OTLP's
    hex), else a hash of the id's text."""
    arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    arr = pc.fill_null(arr.cast(pa.large_string()), "")
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    width = np.diff(offsets)
    if n and (width == width[0]).all() and width[0] >= 16:
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        tail = data.reshape(n, int(width[0]))[:, -16:]
        try:
            raw = bytes.fromhex(tail.tobytes().decode("ascii"))
            return np.frombuffer(raw, dtype=">u8").astype(np.uint64)
        except (UnicodeDecodeError, ValueError):
            pass
    return pd.util.hash_array(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object))


def _uniform(table: pa.Table, source: SpanFiles) -> pa.Table:
    """Every figure column, of one type whatever the file wrote (categorical columns stay plain
    strings until a chunk's frame is built: each block has dictionaries of its own)."""
    n = table.num_rows
    out = {}
    for name in FIGURE_COLUMNS:
        target = _TYPES[SPAN_COLUMNS[name]]
        if name in table.column_names:
            column = table.column(name)
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            out[name] = column.cast(target) if column.type != target else column
        else:
            source.missing.add(name)
            out[name] = pa.chunked_array([pa.nulls(n, type=target)])
    return pa.table(out)


def _frame(tables: list[pa.Table], source: SpanFiles) -> pd.DataFrame:
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    frame, _ = from_arrow(table, {c: SPAN_COLUMNS[c] for c in FIGURE_COLUMNS})
    if source.dedupe:
        dup = frame.duplicated(subset=["trace_id", "span_id"])
        if dup.any():
            frame = frame.loc[~dup].reset_index(drop=True)
    pa.default_memory_pool().release_unused()
    return frame
