"""A run folder's spans read as chunks of whole traces, never all at once.

The files (`spans.parquet` fetched, the `spans/` parts recorded) are read a block (one row group)
at a time, in two passes:
1. only `trace_id`, to learn each trace's first and last block and, per block, which of its
   traces go on later (`trace_ends`; a trace is keyed by a 64-bit number taken from its id:
   two traces sharing one only travel together);
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
from analysis.hops import CHUNK_SPANS, trace_cuts
from meshcore.runfolder import SPANS_DIR, SPANS_FILE, RunFolder

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
TRACE_KEY = "trace_key"  # a column of the chunks: each span's trace as `id_keys` gives it
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
    """Per block, the traces in it that go on in a later block (sorted keys, and the block each
    ends in); per trace its first and last block. In spans written in time order only the
    traces crossing a block's end go on, so these lists are short."""

    cont: list[tuple[np.ndarray, np.ndarray]]
    first: np.ndarray
    last: np.ndarray

    def range(self, lo: int, hi: int) -> BlockRange:
        """What pass 2 over blocks [lo, hi) needs: where to start reading (the first block
        holding a span of a trace that ends in the range), and the blocks' going-on lists."""
        mine = (self.last >= lo) & (self.last < hi)
        start = min(int(self.first[mine].min()) if mine.any() else lo, lo)
        return BlockRange(lo, hi, start, self.cont[start:hi])


@dataclass
class BlockRange:
    lo: int
    hi: int
    start: int
    cont: list[tuple[np.ndarray, np.ndarray]]  # of blocks start .. hi-1

    def last_block(self, b: int, keys: np.ndarray) -> np.ndarray:
        """The block where the trace of each of block b's keys ends (b itself for most)."""
        going, last = self.cont[b - self.start]
        if not len(going):
            return np.full(len(keys), b)
        at = np.minimum(np.searchsorted(going, keys), len(going) - 1)
        return np.where(going[at] == keys, last[at], b)


def block_keys(source: SpanFiles, blocks: Sequence[int]) -> list[np.ndarray]:
    """Pass 1 over some blocks: the distinct trace keys of each (empty when unreadable)."""
    out = []
    for b in blocks:
        block = source.blocks[b]
        try:
            ids = _file(block.path).read_row_group(block.row_group, columns=["trace_id"])
            # a trace's spans mostly lie together: fewer keys to sort once each run is one
            ordered = np.sort(_runs(id_keys(ids.column("trace_id"))))  # np.unique: 8x slower
            out.append(_runs(ordered))
        except (OSError, pa.ArrowException, KeyError) as exc:
            source.unreadable(block.path, exc)
            out.append(np.empty(0, dtype=np.uint64))
    return out


def _runs(keys: np.ndarray) -> np.ndarray:
    """The first key of each run of equal keys."""
    return keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys


def trace_ends(per_block: Sequence[np.ndarray]) -> TraceEnds:
    """Each trace's first and last block from pass 1's keys of every block."""
    none = (np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int32))
    if not per_block or not sum(len(k) for k in per_block):
        return TraceEnds([none] * len(per_block), np.empty(0, int), np.empty(0, int))
    key = np.concatenate(per_block)
    block = np.repeat(np.arange(len(per_block), dtype=np.int32), [len(k) for k in per_block])
    order = np.lexsort((block, key))
    key, block = key[order], block[order]
    head = np.concatenate(([True], key[1:] != key[:-1]))
    tail = np.concatenate((key[1:] != key[:-1], [True]))
    last = block[tail]
    pair_last = np.repeat(last, np.diff(np.append(np.flatnonzero(head), len(key))))
    goes_on = np.flatnonzero(pair_last > block)
    by_block = goes_on[np.argsort(block[goes_on], kind="stable")]  # key order kept in a block
    bounds = np.searchsorted(block[by_block], np.arange(len(per_block) + 1))
    cont = [
        (key[by_block[bounds[b] : bounds[b + 1]]], pair_last[by_block[bounds[b] : bounds[b + 1]]])
        for b in range(len(per_block))
    ]
    return TraceEnds(cont, block[head], last)


def trace_chunks(
    source: SpanFiles, blocks: BlockRange, chunk_spans: int = CHUNK_SPANS
) -> Iterator[pd.DataFrame]:
    """Pass 2: the spans of the traces ending in `blocks` (`TraceEnds.range`), in frames of
    whole traces (SPAN_COLUMNS' dtypes, FIGURE_COLUMNS only, and TRACE_KEY: `id_keys`)."""
    lo, hi = blocks.lo, blocks.hi
    carried: pa.Table | None = None
    carried_last = np.empty(0, dtype=np.int64)
    ready: list[pa.Table] = []
    size = 0
    for b in range(blocks.start, hi):
        table = _read(source, source.blocks[b])
        if table is not None:
            keys = id_keys(table.column("trace_id"))
            last = blocks.last_block(b, keys)
            table = table.append_column(TRACE_KEY, pa.array(keys))
            # a range keeps the traces it finishes: those ending in an earlier range are done,
            # those ending in a later one are the later one's
            keep = (last >= lo) & (last < hi)
            if not keep.all():
                table, last = table.filter(pa.array(keep)), last[keep]
            carried = table if carried is None else pa.concat_tables([carried, table])
            carried_last = np.concatenate((carried_last, last))
        if b < lo or carried is None or carried.num_rows == 0:
            continue
        done = carried_last <= b
        if done.all():
            ready.append(carried)
            carried, carried_last = None, carried_last[:0]
        else:
            ready.append(carried.filter(pa.array(done)))
            carried, carried_last = carried.filter(pa.array(~done)), carried_last[~done]
        size += ready[-1].num_rows
        if size >= chunk_spans:
            yield from _frames(ready, source, chunk_spans)
            ready, size = [], 0
    if size:
        yield from _frames(ready, source, chunk_spans)


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


def id_keys(ids: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A uint64 per trace id: the low 64 bits of its hex value, so ids equal but for case and
    leading zeros (Jaeger drops them) get one key; an id that is not hex, a hash of its
    normalised text (`normalised`). Two traces share a key with a chance
    of 2**-64."""
    arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    arr = pc.fill_null(arr.cast(pa.large_string()), "")
    keys = _hex_tail(arr)
    if keys is not None:  # ids of one width, as OTLP and Jaeger write them: no string made
        return keys
    arr = pc.utf8_lpad(normalised(arr), width=32, padding="0")
    keys = _hex_tail(arr)
    if keys is not None:
        return keys
    # some ids are not hex: each hex one keeps its key, whatever else shares its array
    keys = pd.util.hash_array(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object))
    hexed = pc.match_substring_regex(arr, "^[0-9a-f]{16,}$")
    rows = np.flatnonzero(hexed.to_numpy(zero_copy_only=False))
    if len(rows):
        keys[rows] = _hex_tail(pc.utf8_slice_codeunits(arr.take(rows), -16))
    return keys


def normalised(ids: pa.Array) -> pa.Array:
    """Trace ids as compared: lower case, leading zeros dropped (as Jaeger drops them)."""
    return pc.utf8_ltrim(pc.utf8_lower(ids), characters="0")


def _hex_tail(arr: pa.Array) -> np.ndarray | None:
    """The last 16 hex digits of ids all of one width (at least 16), or None."""
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    width = np.diff(offsets)
    if not n or not (width == width[0]).all() or width[0] < 16:
        return None if n else np.empty(0, dtype=np.uint64)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    try:
        raw = bytes.fromhex(data.reshape(n, int(width[0]))[:, -16:].tobytes().decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


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


def _frames(tables: list[pa.Table], source: SpanFiles, chunk_spans: int) -> Iterator[pd.DataFrame]:
    """The complete spans gathered, as frames of whole traces of about `chunk_spans` spans."""
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    del tables[:]
    if table.num_rows <= chunk_spans * 3 // 2:
        yield _frame(table, source)
        return
    keys = table.column(TRACE_KEY).to_numpy()
    cuts = _clean_cuts(keys, chunk_spans)
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        if hi - lo <= 2 * chunk_spans:  # spans in time order: a slice, no copy
            yield _frame(table.slice(lo, hi - lo), source)
            continue
        piece = table.slice(lo, hi - lo)  # traces spread over it: gathered trace by trace
        for rows in trace_cuts(keys[lo:hi], chunk_spans):
            yield _frame(piece.take(rows), source)


def _clean_cuts(keys: np.ndarray, chunk_spans: int) -> list[int]:
    """Row positions about `chunk_spans` apart where no trace has rows on both sides."""
    n = len(keys)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    ends = np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))  # each trace's last
    starts = np.append(0, ends[:-1] + 1)
    last = np.empty(n, dtype=np.int64)
    last[order] = np.repeat(order[ends], ends - starts + 1)  # stable: the trace's last row
    clean = np.flatnonzero(np.maximum.accumulate(last) == np.arange(n)) + 1
    cuts = [0]
    while cuts[-1] < n:
        at = int(np.searchsorted(clean, cuts[-1] + chunk_spans))
        cuts.append(int(clean[min(at, len(clean) - 1)]))
    return cuts


def _frame(table: pa.Table, source: SpanFiles) -> pd.DataFrame:
    frame, _ = from_arrow(table, {c: SPAN_COLUMNS[c] for c in FIGURE_COLUMNS})
    if source.dedupe:
        dup = frame.duplicated(subset=["trace_id", "span_id"])
        if dup.any():
            frame = frame.loc[~dup].reset_index(drop=True)
    pa.default_memory_pool().release_unused()
    return frame
