"""Per-hop breakdown from spans: where does the canary's extra latency come from?

Every span gets
- `self_ms`: its duration minus the union of its children's intervals (children clipped to the
  span's own interval), so overlapping parallel calls are not subtracted twice;
- `critical_ms`: its share of the critical path. The rule, applied top-down from each root: a
  span's critical children are found walking back from its end - the child that ends last, then
  the child that ends last before that one started, and so on (children that overlap a chosen
  one are off the path). A span on the path contributes its duration minus its critical
  children's durations. Intervals are first clipped recursively into their parent's, so the
  contributions of a trace add up to its root's duration exactly.
- `root_version`: the version of the shallowest `frontend` span of its trace (the version that
  served the request), else the root span's version.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from analysis.changepoint import label_codes

_JUMP_ROUNDS = 12  # 2**12 levels; anything deeper is a parent-id cycle and gets cut
CHUNK_SPANS = 500_000  # timing costs 0.34 us a span at 500 k, 0.53 at 1 M, 0.84 at 2 M
# what a span's figures are computed from (the rest of the frame is only carried along)
_TREE_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_id",
    "service",
    "version",
    "start_ns",
    "duration_ms",
)
_TIMED = {"parent_row": np.int64, "root_row": np.int64, "depth": np.int64,
          "self_ms": np.float64, "critical_ms": np.float64}  # fmt: skip


def _hex64(series: pd.Series) -> np.ndarray | None:
    """16-hex-digit ids as uint64 (null/empty -> 0), or None when ids are not all of that form.

    Read straight from the Arrow buffer: hashing five million id strings takes seconds, this
    takes a fraction of one.
    """
    zero = "0" * 16
    try:
        arr = pa.array(series, from_pandas=True)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        arr = pc.fill_null(arr.cast(pa.large_string()), zero)
        arr = pc.if_else(pc.equal(arr, ""), zero, arr)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    if n == 0 or not (np.diff(offsets) == 16).all():
        return None
    data = arr.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]
    try:
        raw = bytes.fromhex(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64)


def parent_rows(spans: pd.DataFrame) -> np.ndarray:
    """Row of each span's parent within its trace, -1 for roots and orphans.

    A span id repeated within one trace (shared client/server ids) resolves to its first row.
    """
    n = len(spans)
    span_u = _hex64(spans["span_id"])
    parent_u = _hex64(spans["parent_id"]) if span_u is not None else None
    index = pd.Index(span_u) if span_u is not None and parent_u is not None else None
    if index is not None and index.is_unique:
        assert parent_u is not None
        rows = index.get_indexer(parent_u)
        rows[parent_u == 0] = -1
    else:  # ids that are not 64-bit hex, or repeat across traces: key on (trace, span)
        tcode, _ = pd.factorize(spans["trace_id"])
        both = pd.concat([spans["span_id"], spans["parent_id"]], ignore_index=True)
        scode, uniques = pd.factorize(both)
        width = max(len(uniques), 1)
        keys = tcode.astype(np.int64) * width + scode[:n]
        pkeys = np.where(scode[n:] >= 0, tcode.astype(np.int64) * width + scode[n:], -1)
        _, first = np.unique(keys, return_index=True)
        found = pd.Index(keys[first]).get_indexer(pkeys)
        rows = np.where(found >= 0, first[found], -1)
    rows = rows.astype(np.int64)
    rows[rows == np.arange(n)] = -1
    return rows


def _jump(parent: np.ndarray, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Pointer jumping: root row and depth of every span in O(n log depth)."""
    n = len(parent)
    ptr = np.where(parent < 0, np.arange(n), parent)
    depth = (parent >= 0).astype(np.int64)
    for _ in range(rounds):
        jumped = ptr[ptr]
        if (jumped == ptr).all():
            break
        depth = depth + depth[ptr]
        ptr = jumped
    return ptr, depth


def span_tree(spans: pd.DataFrame) -> pd.DataFrame:
    """parent_row, root_row and depth per span (positional rows of `spans`)."""
    parent = parent_rows(spans)
    ptr, depth = _jump(parent, _JUMP_ROUNDS)
    unsettled = ptr[ptr] != ptr
    if unsettled.any():  # a parent-id cycle: cut it so every span still has a root
        parent = np.where(unsettled, -1, parent)
        ptr, depth = _jump(parent, _JUMP_ROUNDS)
    return pd.DataFrame({"parent_row": parent, "root_row": ptr, "depth": depth})


def _group_cummax_before(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row, the max of `values` over earlier rows of the same (contiguous) group, else -inf."""
    running = pd.Series(values).groupby(groups).cummax().to_numpy()
    before = np.concatenate(([-np.inf], running[:-1]))
    first = np.concatenate(([True], groups[1:] != groups[:-1]))
    return np.where(first, -np.inf, before)


def _by_group_then(
    groups: np.ndarray, times: np.ndarray, flag: np.ndarray | None = None
) -> np.ndarray:
    """Argsort by (group, time, flag); one int64 sort instead of a three-key lexsort.

    times are ns from the group's parent start (small, as children are clipped into it); falls
    back to lexsort when the packed key would not fit.
    """
    t = np.round(times).astype(np.int64)
    span = int(t.max(initial=0)) + 1
    bits = max(span.bit_length(), 1) + 1
    if len(groups) and int(groups.max()).bit_length() + bits <= 62:
        key = (groups.astype(np.int64) << bits) | (t << 1)
        if flag is not None:
            key |= flag.astype(np.int64)
        return np.argsort(key, kind="stable")
    keys = (times, groups) if flag is None else (flag, times, groups)
    return np.lexsort(keys)


def hop_times(
    spans: pd.DataFrame, *, frontend: str = "frontend", chunk_spans: int = CHUNK_SPANS
) -> pd.DataFrame:
    """`spans` plus parent_row, root_row, depth, self_ms, critical_ms, root_version.

    Every figure of a span depends on its own trace only, so a large frame is done in chunks
    of whole traces of about `chunk_spans` spans each: the working arrays (about 20 of the
    frame's length) then exist for one chunk at a time, and the rows are put back where they
    were (5 M spans: the report's peak memory 2.48 -> 1.9 GB)."""
    n = len(spans)
    if n <= chunk_spans:
        return _hop_times(spans, frontend)
    out = {c: np.empty(n, dtype=t) for c, t in _TIMED.items()}
    version_codes = np.empty(n, dtype=np.int64)
    names_all = list(dict.fromkeys(label_codes(spans["version"])[1]))
    categories = {name: i for i, name in enumerate(names_all)}
    needed = spans[[c for c in _TREE_COLUMNS if c in spans.columns]]
    for rows in whole_traces(spans["trace_id"], chunk_spans):
        part = _hop_times(needed.iloc[rows].reset_index(drop=True), frontend)
        for c in ("parent_row", "root_row"):
            local = part[c].to_numpy()
            out[c][rows] = np.where(local >= 0, rows[np.maximum(local, 0)], -1)
        for c in ("depth", "self_ms", "critical_ms"):
            out[c][rows] = part[c].to_numpy()
        cat = part["root_version"].array
        to_all = np.array([categories[str(v)] for v in cat.categories] + [-1], dtype=np.int64)
        version_codes[rows] = to_all[cat.codes]  # code -1 (none) takes the last: -1
        del part
        pa.default_memory_pool().release_unused()  # the chunk's Arrow strings, taken and gone
    return spans.assign(
        **out, root_version=pd.Categorical.from_codes(version_codes, categories=names_all)
    )


def whole_traces(trace_id: pd.Series, chunk_spans: int) -> Iterator[np.ndarray]:
    """Row positions in chunks of whole traces of about `chunk_spans` rows (a trace longer than
    a chunk is a chunk of its own), the rows of a chunk grouped by trace."""
    arr = pa.array(trace_id, from_pandas=True)  # codes in Arrow: pandas would make a Python
    encoded = pc.dictionary_encode(  # string of every id first
        arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    )
    return trace_cuts(np.asarray(pc.fill_null(encoded.indices, -1)), chunk_spans)


def trace_cuts(codes: np.ndarray, chunk_spans: int) -> Iterator[np.ndarray]:
    """`whole_traces` for a trace code (or key) per row."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    n, lo = len(codes), 0
    while lo < n:
        hi = min(lo + chunk_spans, n)
        if hi < n:  # each chunk ends where a trace does
            trace = sorted_codes[hi]
            hi = int(np.searchsorted(sorted_codes, trace, side="left"))
            if hi <= lo:
                hi = int(np.searchsorted(sorted_codes, trace, side="right"))
        yield order[lo:hi]
        lo = hi


def _hop_times(spans: pd.DataFrame, frontend: str) -> pd.DataFrame:
    tree = span_tree(spans)
    parent, depth = tree["parent_row"].to_numpy(), tree["depth"].to_numpy()
    n = len(spans)
    start_ns = spans["start_ns"].to_numpy(dtype=np.int64)
    # relative to the earliest span: float64 at epoch nanoseconds only resolves 256 ns
    start = (start_ns - (start_ns.min() if n else 0)).astype(float)
    end = start + spans["duration_ms"].to_numpy(dtype=float) * 1e6
    has_parent = parent >= 0
    p = np.where(has_parent, parent, 0)

    # self time: union of children clipped to the parent's own interval
    cs = np.maximum(start, start[p])
    ce = np.maximum(np.minimum(end, end[p]), cs)
    kids = np.flatnonzero(has_parent)
    kids = kids[_by_group_then(parent[kids], cs[kids] - start[parent[kids]])]
    prev_end = _group_cummax_before(parent[kids], ce[kids])
    covered = np.bincount(
        parent[kids],
        weights=np.maximum(ce[kids] - np.maximum(cs[kids], prev_end), 0.0),
        minlength=n,
    )
    self_ms = np.maximum(end - start - covered, 0.0) / 1e6

    # critical path: clip top-down so every interval nests in its parent's
    rs, re_ = start.copy(), end.copy()
    for d in range(1, int(depth.max(initial=0)) + 1):
        rows = np.flatnonzero(depth == d)
        rs[rows] = np.maximum(start[rows], rs[parent[rows]])
        re_[rows] = np.maximum(np.minimum(end[rows], re_[parent[rows]]), rs[rows])
    length = re_ - rs
    in_chain = _critical_children(parent, rs, re_, length)
    critical = ~has_parent
    for d in range(1, int(depth.max(initial=0)) + 1):
        rows = np.flatnonzero(depth == d)
        critical[rows] = in_chain[rows] & critical[parent[rows]]
    chain_kids = np.flatnonzero(critical & has_parent)
    under = np.bincount(parent[chain_kids], weights=length[chain_kids], minlength=n)
    critical_ms = np.where(critical, np.maximum(length - under, 0.0), 0.0) / 1e6

    return spans.assign(
        parent_row=parent,
        root_row=tree["root_row"].to_numpy(),
        depth=depth,
        self_ms=self_ms,
        critical_ms=critical_ms,
        root_version=_root_versions(spans, tree, frontend),
    )


def _critical_children(
    parent: np.ndarray, start: np.ndarray, end: np.ndarray, length: np.ndarray
) -> np.ndarray:
    """Mark each parent's chain: last-ending child, then last-ending before its start, ..."""
    n = len(parent)
    kids = np.flatnonzero((parent >= 0) & (length > 0))
    kids = kids[_by_group_then(parent[kids], end[kids] - start[parent[kids]])]
    g = parent[kids]
    # For each kid, the last sibling (in end order) whose end <= the kid's start: merge the
    # kids' ends and starts in one sort, ends before starts at equal times.
    m = len(kids)
    base = start[g]  # children are clipped into their parent: times from its start are small
    times = np.concatenate((end[kids] - base, start[kids] - base))
    groups = np.concatenate((g, g))
    is_start = np.concatenate((np.zeros(m, bool), np.ones(m, bool)))
    order = _by_group_then(groups, times, is_start)
    pos_of_end = np.where(is_start[order], -1, order)  # order < m are ends, value = kid position
    last_end = np.maximum.accumulate(pos_of_end) if m else pos_of_end
    nxt = np.full(m, -1)
    starts_at = order[is_start[order]] - m
    candidate = last_end[is_start[order]]
    same = (candidate >= 0) & (g[np.maximum(candidate, 0)] == g[starts_at])
    nxt[starts_at] = np.where(same, candidate, -1)
    in_chain = np.zeros(n, dtype=bool)
    last_of_group = np.flatnonzero(np.concatenate((g[1:] != g[:-1], [True]))) if m else kids
    frontier = last_of_group
    while len(frontier):
        in_chain[kids[frontier]] = True
        frontier = nxt[frontier]
        frontier = frontier[frontier >= 0]
    return in_chain


def _root_versions(spans: pd.DataFrame, tree: pd.DataFrame, frontend: str) -> pd.Categorical:
    codes, names = label_codes(spans["version"])
    root = tree["root_row"].to_numpy()
    chosen = codes[root]
    s_codes, s_names = label_codes(spans["service"])
    is_frontend = np.array([name == frontend for name in s_names], dtype=bool)
    fe = np.flatnonzero(is_frontend[s_codes])
    if len(fe):
        depth = tree["depth"].to_numpy()
        fe = fe[np.lexsort((spans["start_ns"].to_numpy()[fe], depth[fe], root[fe]))]
        first = fe[np.concatenate(([True], root[fe][1:] != root[fe][:-1]))]
        by_root = np.full(len(root), -1)
        by_root[root[first]] = codes[first]
        chosen = np.where(by_root[root] >= 0, by_root[root], chosen)
    return pd.Categorical.from_codes(chosen, categories=list(dict.fromkeys(names)))
