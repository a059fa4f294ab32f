"""The markup of report.html: escaping, number formats, badges, tables and sections.

Any string shown may have come from outside (endpoint names, versions, services, error texts,
notes), so every value goes through `esc`; only markup built here is wrapped in `Raw` and
passed through as is.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

MAX_ROWS = 200


class Raw(str):
    """Markup made by this module: never escaped again."""


def esc(value: Any) -> str:
    return value if isinstance(value, Raw) else html.escape(fmt(value), quote=True)


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pct(share: Any) -> str:
    return "–" if share is None else f"{share * 100:.2f} %"


def utc(ns: Any) -> str:
    if not isinstance(ns, int | float):
        return "–"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def badge(verdict: Any) -> Raw:
    if isinstance(verdict, bool):
        verdict = "pass" if verdict else "fail"
    word = verdict if verdict in ("pass", "fail", "inconclusive") else "none"
    shown = verdict if verdict in ("not applied", "broken") else word
    css = "fail" if shown != word else word
    return Raw(f'<span class="badge {css}">{html.escape(str(shown))}</span>')


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, text_cols: int = 1) -> Raw:
    """A table; the first text_cols columns are left aligned; rows past MAX_ROWS are counted."""
    head = "".join(
        f"<th{' class=t' if i < text_cols else ''}>{esc(h)}</th>" for i, h in enumerate(headers)
    )
    body, hidden = [], 0
    for n, row in enumerate(rows):
        if n >= MAX_ROWS:
            hidden += 1
            continue
        cells = "".join(
            f"<td{' class=t' if i < text_cols else ''}>{esc(c)}</td>" for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    more = f'<p class="muted">… {hidden:,} more rows in summary.json</p>' if hidden else ""
    return Raw(f"<table><tr>{head}</tr>{''.join(body)}</table>{more}")


def section(anchor: str, title: str, *parts: str) -> Raw:
    return Raw(f'<section id="{anchor}"><h2>{esc(title)}</h2>{"".join(map(esc, parts))}</section>')


def para(text: Any) -> Raw:
    return Raw(f"<p>{esc(text)}</p>")


def image(charts: Mapping[str, bytes], name: str, alt: str, *, wide: bool = False) -> Raw:
    """A chart inlined as PNG, shrunk to the page's width; `wide`: shown at its own size,
    scrolling sideways where the page is narrower (text that would shrink past reading)."""
    if name not in charts:
        return Raw(f'<p class="muted">{esc(alt)}: chart not drawn (see notes).</p>')
    data = base64.b64encode(charts[name]).decode("ascii")
    img = f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
    return Raw(f'<div class="wide">{img}</div>' if wide else f"<p>{img}</p>")


def range_text(pair: Any) -> str:
    if not pair or all(x is None for x in pair):
        return "–"
    return " – ".join(fmt(x, 1) for x in pair)


def rows_of(records: Iterable[Mapping[str, Any]], keys: str, **formats: Any) -> list[list[Any]]:
    """Cells for the (space separated) keys of each record; `formats` maps a key to a formatter."""
    names = keys.split()
    return [[formats[k](r.get(k)) if k in formats else r.get(k) for k in names] for r in records]


def ms1(x: Any) -> str:
    return fmt(x, 1)
