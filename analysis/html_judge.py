"""The report's canary-vs-baseline section: the judge's figures, and how it compared them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from analysis.judge import latency_method_line
from analysis.judge_errors import error_method_line, steps_text
from analysis.markup import Raw, fmt, para, section, table


def judge_section(s: Mapping[str, Any]) -> Raw:
    j = s.get("judge") or {}
    b, c = j.get("baseline"), j.get("canary")
    if not (b and c and "p99_ms" in j):
        return section(
            "judge", "Canary vs baseline", para("Not enough data to compare two versions.")
        )
    rows = []
    for key in ("p50", "p99"):
        ci = j.get(f"{key}_diff_ci95") or [None, None]
        rows.append(
            (
                key,
                j[f"{key}_ms"].get(b),
                j[f"{key}_ms"].get(c),
                j.get(f"{key}_diff_ms"),
                f"{fmt(ci[0])} – {fmt(ci[1])}",
            )
        )
    er = j.get("error_rate_matched") or j.get("error_rate") or {}
    test = j.get("error_test") or "Fisher exact"
    rows.append(
        (
            "error rate (%)",
            (er.get(b) or 0.0) * 100,
            (er.get(c) or 0.0) * 100,
            j.get("error_rate_diff_pp"),
            f"{test} p={fmt(j.get('error_p'), 3)}",
        )
    )
    if alone := j.get("canary_alone"):
        rows.append(
            (
                f"error rate (%), {c} alone in {steps_text(alone['steps'])}",
                alone["baseline_rate"] * 100,
                alone["rate"] * 100,
                alone["diff_pp"],
                f"Fisher exact p={fmt(alone['p'], 3)} (baseline: step {alone['baseline_step']})",
            )
        )
    return section(
        "judge",
        "Canary vs baseline",
        para(f"{latency_method_line(j)} {error_method_line(j)}".strip()),
        para(
            f"{j.get('rank_test') or 'Mann-Whitney U'} (canary slower) "
            f"p={fmt(j.get('mannwhitney_p'), 4)}; allowed p99 increase "
            f"{fmt(j.get('allowed_p99_increase_ms'))} ms."
        ),
        table(
            ["figure", f"baseline {b}", f"canary {c}", "difference", "95 % interval / test"], rows
        ),
    )
