"""What every chart of the report shares: one DPI, PNG bytes from matplotlib's Agg canvas (no
display, no pyplot), and labels from outside (versions, services) made safe, because
matplotlib reads `$...$` as math."""

from __future__ import annotations

import io

from matplotlib.figure import Figure

DPI = 100


def label(value: object) -> str:
    """`value` as text matplotlib draws as written."""
    return str(value).replace("$", r"\$")


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()
