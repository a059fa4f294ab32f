"""The markup of report.html: escaping, number formats, badges, tables and sections.

Any string shown may have come from outside (endpoint names, versions, services, error texts,
notes), so every value goes through `esc`; only markup built here is wrapped in `Raw` and
passed through as is.
"""

from __future__ import annotations

import base64
import html
import math
import re
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
    """A table. Numbers right, text left: the first text_cols columns, and any column with a
    cell that is not a number, are left aligned; a number (with its unit) or an interval never
    breaks across lines. Rows past MAX_ROWS are counted."""
    shown: list[list[str]] = []
    hidden = 0
    for row in rows:
        if len(shown) < MAX_ROWS:
            shown.append([esc(c) for c in row])
        else:
            hidden += 1
    text = {i for i in range(len(headers)) if i < text_cols}
    text |= {i for r in shown for i, c in enumerate(r) if not _NUMBER.match(c) and c not in BLANK}
    head = "".join(
        f"<th{' class=t' if i in text else ''}>{esc(h)}</th>" for i, h in enumerate(headers)
    )
    cell = "<td{}>{}</td>".format
    body = "".join(
        "<tr>" + "".join(cell(_cell_class(i in text, c), c) for i, c in enumerate(r)) + "</tr>"
        for r in shown
    )
    more = f'<p class="muted">… {hidden:,} more rows in summary.json</p>' if hidden else ""
    return Raw(f"<table><tr>{head}</tr>{body}</table>{more}")


_ONE = r"[-+−]?[\d,.]+(e[-+]?\d+)?( ?(%|ms|s|pp|req/s))?"
_NUMBER = re.compile(rf"^{_ONE}( – {_ONE})?$")  # a number, or an interval of two
BLANK = ("", "–")  # an empty cell, and fmt's for a missing value


def _cell_class(text: bool, cell: str) -> str:
    """`t`: left aligned (a text column); `n`: a number, or an interval, kept on one line."""
    number = _NUMBER.match(cell) is not None
    classes = " ".join(c for c, on in (("t", text), ("n", number)) if on)
    return f' class="{classes}"' if classes else ""


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
