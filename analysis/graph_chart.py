"""The service graph chart: services in columns by call depth, each box listing its callers.

Each column is as wide as its widest box (measured by the Agg renderer, in inches) and the
columns are set side by side with room for the arrows, so the figure is as wide as its text
needs and no wider; the report shows it at that size (scrolling sideways when the page is
narrower) rather than shrinking its 7-point text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis.chart_png import DPI, label, png

FONT_PT = 7
_GAP_IN = 0.6  # between columns: room for the arrows
_MARGIN_IN = 0.15
_PAD_IN = 2 * 0.4 * FONT_PT / 72 + 0.02  # the box's pad on both sides, and its edge
_LINE_IN = 0.17  # the height of one line of a box, spacing included
_TITLE_IN = 0.4
_MIN_WIDTH_IN = 7.0  # the title's width
_SPLIT_AFTER = 44  # characters: a longer caller line puts its version split on a line of its own


def graph_depths(edges: pd.DataFrame) -> dict[str, int]:
    """Column of each service: its longest call chain from a caller nobody calls."""
    nodes = list(dict.fromkeys([*edges["source"], *edges["destination"]]))
    pairs = list(dict.fromkeys(zip(edges["source"], edges["destination"], strict=True)))
    depth = dict.fromkeys(nodes, 0)
    for _ in range(len(nodes)):  # longest path by relaxation; a call cycle stops at len(nodes)
        changed = False
        for s, d in pairs:
            if s != d and depth[d] < depth[s] + 1 <= len(nodes):
                depth[d], changed = depth[s] + 1, True
        if not changed:
            break
    return depth


def _incoming(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Per destination, the lines of its calling services: requests, errors and the version
    split (on a line of its own when the line would be long)."""
    lines: dict[str, list[str]] = {}
    for (src, dst), g in frame.groupby(["source", "destination"], sort=True):
        errors = int(g["errors"].sum())
        text = f"← {label(src)}: {int(g['requests'].sum()):,} req"
        text += f", {errors:,} err" if errors else ""
        mine = lines.setdefault(str(dst), [])
        if set(g["destination_version"]) != {"unknown"}:
            shares = zip(g["destination_version"], g["share"], strict=True)
            split = " / ".join(f"{label(v)} {s * 100:.0f}%" for v, s in shares)
            if len(text) + len(split) + 3 > _SPLIT_AFTER:
                mine.extend([text, f"    {split}"])
                continue
            text += f" · {split}"
        mine.append(text)
    return lines


def plot_graph(graph: Sequence[Mapping[str, Any]]) -> bytes:
    """Services in columns by call depth; each box lists its callers with counts and split."""
    frame = pd.DataFrame(list(graph))
    if frame.empty:
        raise ValueError("no service graph (needs spans)")
    frame["destination_version"] = frame["destination_version"].fillna("unknown").astype(str)
    frame[["source", "destination"]] = frame[["source", "destination"]].astype(str)
    depth = graph_depths(frame)
    incoming = _incoming(frame)
    columns = {x: sorted(n for n in depth if depth[n] == x) for x in sorted(set(depth.values()))}
    height = {n: 1 + len(incoming.get(n, [])) for n in depth}
    tallest = max(sum(height[n] + 1.5 for n in col) for col in columns.values())
    height_in = max(3.0, _LINE_IN * tallest + 1.0)
    fig = Figure(figsize=(10.0, height_in), dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - _TITLE_IN / height_in))
    boxes = {}
    for col in columns.values():
        y = sum(height[n] + 1.5 for n in col) / 2  # centre every column on 0
        for n in col:
            y -= (height[n] + 1.5) / 2
            text = "\n".join([label(n), *incoming.get(n, [])])
            boxes[n] = ax.text(0.0, y, text, ha="center", va="center", fontsize=FONT_PT,
                               multialignment="left", zorder=3,
                               bbox={"boxstyle": "round,pad=0.4", "fc": "#e8f0fe",
                                     "ec": "#4a6fa5"})  # fmt: skip
            y -= (height[n] + 1.5) / 2
    renderer = FigureCanvasAgg(fig).get_renderer()
    widths = [max(boxes[n].get_window_extent(renderer).width / DPI for n in col) + _PAD_IN
              for col in columns.values()]  # fmt: skip
    needed = sum(widths) + _GAP_IN * (len(widths) - 1) + 2 * _MARGIN_IN
    width_in = max(_MIN_WIDTH_IN, needed)
    left = _MARGIN_IN + (width_in - needed) / 2  # a small graph sits in the middle
    for col, width in zip(columns.values(), widths, strict=True):
        for n in col:  # x in inches: the axes span the figure's width, 1 unit = 1 in
            boxes[n].set_x(left + width / 2)
        left += width + _GAP_IN
    fig.set_size_inches(width_in, height_in)
    for src, dst in dict.fromkeys(zip(frame["source"], frame["destination"], strict=True)):
        ax.annotate(
            "",
            xy=(0, 0.5),
            xycoords=boxes[dst],
            xytext=(1, 0.5),
            textcoords=boxes[src],
            zorder=2,
            arrowprops={"arrowstyle": "-|>", "color": "0.45", "shrinkA": 3, "shrinkB": 3},
        )
    ax.set_xlim(0.0, width_in)
    ax.set_ylim(-tallest / 2 - 0.5, tallest / 2 + 0.5)
    ax.set_axis_off()
    fig.suptitle(
        "Service graph from traces: callers of each service, requests and version split",
        y=1.0 - 0.08 / height_in,
        va="top",
        fontsize=9,
    )
    return png(fig)
