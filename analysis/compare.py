"""What changed between two runs' summaries, and whether run B regressed against run A.

Only summaries are compared (not raw samples), so the rule works on deltas with allowances:
B regresses when, for a version present in both runs,
- its p50 or p99 rose by more than max_latency_increase_pct of A's value and by more than
  min_latency_increase_ms (a floor, so sub-millisecond jitter of a fast service is not news);
- its error rate rose by more than max_error_rate_increase_pp;
or when a split step that passed in A fails in B (its verdict; a step inconclusive in either
run decides nothing), or the judge went from pass to fail.

Summaries of different schema versions, scenarios or plans (the steps' weights) are refused
unless forced: comparing a canary with an A/B test, or step 3 of one plan with step 3 of
another, gives numbers but no meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from analysis.judge import plan_weights
from meshcore.errors import ConfigError

COMPARED_FIGURES = ("p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")
JUDGED_FIGURES = ("p50_ms", "p99_ms")


def _scenario(summary: Mapping[str, Any]) -> Any:
    return (summary.get("run") or {}).get("scenario")


def _error_rates(summary: Mapping[str, Any]) -> dict[str, float]:
    rates = {
        v: e["rate"] for v, e in (summary.get("errors") or {}).items() if e.get("rate") is not None
    }
    if not rates:  # summaries written before `errors` existed: the judge's pair still has them
        rates = dict((summary.get("judge") or {}).get("error_rate") or {})
    return rates


def check_comparable(a: Mapping[str, Any], b: Mapping[str, Any]) -> None:
    """ConfigError (one line) when the two summaries should not be compared."""
    va, vb = a.get("schema_version"), b.get("schema_version")
    if va != vb:
        raise ConfigError(
            f"summaries have different schema versions ({va} vs {vb}); rebuild both with "
            "`meshload report`, or pass --force"
        )
    sa, sb = _scenario(a), _scenario(b)
    if sa != sb:
        raise ConfigError(
            f"runs are of different scenarios ({sa} vs {sb}); pass --force to compare anyway"
        )
    pa, pb = (plan_weights((s.get("run") or {}).get("plan")) for s in (a, b))
    if pa and pb and pa != pb:  # a summary without a recorded plan says nothing of its steps
        if len(pa) != len(pb):
            how = f"{len(pa)} steps vs {len(pb)}"
        else:
            k = next(i for i, (x, y) in enumerate(zip(pa, pb, strict=True)) if x != y)
            how = f"step {k}: {_weights_text(pa[k])} vs {_weights_text(pb[k])}"
        raise ConfigError(
            f"runs follow different plans ({how}): their steps do not match; pass --force to "
            "compare anyway"
        )


def _weights_text(weights: Mapping[str, float]) -> str:
    return ", ".join(f"{v} {w:g}" for v, w in weights.items())


def compare_runs(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    force: bool = False,
    max_latency_increase_pct: float = 10.0,
    min_latency_increase_ms: float = 1.0,
    max_error_rate_increase_pp: float = 1.0,
) -> dict[str, Any]:
    """A JSON-safe dict: per-figure a/b/difference, `verdict` and the `regressions` behind it."""
    if not force:
        check_comparable(a, b)
    regressions: list[str] = []
    improvements: list[str] = []
    latency: dict[str, dict[str, Any]] = {}
    lat_a, lat_b = a.get("latency") or {}, b.get("latency") or {}
    for v in sorted(set(lat_a) & set(lat_b)):
        latency[v] = {}
        for fig in COMPARED_FIGURES:
            xa, xb = lat_a[v].get(fig), lat_b[v].get(fig)
            if xa is None or xb is None:
                continue
            diff = xb - xa
            pct = diff / xa * 100.0 if xa else None
            latency[v][fig] = {"a": xa, "b": xb, "diff_ms": diff, "diff_pct": pct}
            if fig not in JUDGED_FIGURES:
                continue
            allowed = max(min_latency_increase_ms, xa * max_latency_increase_pct / 100.0)
            text = f"{v} {fig[:-3]} {xa:.2f} -> {xb:.2f} ms ({diff:+.2f} ms"
            text += f", {pct:+.1f} %)" if pct is not None else ")"
            if diff > allowed:
                regressions.append(f"{text}, allowed +{allowed:.2f} ms")
            elif -diff > allowed:
                improvements.append(text)
    only = sorted(set(lat_a) ^ set(lat_b))
    errors: dict[str, dict[str, Any]] = {}
    rates_a, rates_b = _error_rates(a), _error_rates(b)
    for v in sorted(set(rates_a) & set(rates_b)):
        diff_pp = (rates_b[v] - rates_a[v]) * 100.0
        errors[v] = {"a": rates_a[v], "b": rates_b[v], "diff_pp": diff_pp}
        text = f"{v} error rate {rates_a[v] * 100:.2f} -> {rates_b[v] * 100:.2f} %"
        if diff_pp > max_error_rate_increase_pp:
            regressions.append(f"{text}, allowed +{max_error_rate_increase_pp:g} pp")
        elif -diff_pp > max_error_rate_increase_pp:
            improvements.append(text)
    split = _split(a, b, regressions)
    propagation = _propagation(a, b)
    ja, jb = (a.get("judge") or {}).get("verdict"), (b.get("judge") or {}).get("verdict")
    if ja == "pass" and jb == "fail":
        regressions.append("judge verdict pass -> fail")
    cov_a = (a.get("consistency") or {}).get("trace_coverage")
    cov_b = (b.get("consistency") or {}).get("trace_coverage")
    return {
        "a": {"run_id": a.get("run_id"), "scenario": _scenario(a)},
        "b": {"run_id": b.get("run_id"), "scenario": _scenario(b)},
        "verdict": "regression" if regressions else "no regression",
        "regressions": regressions,
        "improvements": improvements,
        "latency": latency,
        "versions_in_one_run_only": only,
        "errors": errors,
        "split": split,
        "propagation": propagation,
        "judge": {"a": ja, "b": jb},
        "trace_coverage": {"a": cov_a, "b": cov_b},
        "thresholds": {
            "max_latency_increase_pct": max_latency_increase_pct,
            "min_latency_increase_ms": min_latency_increase_ms,
            "max_error_rate_increase_pp": max_error_rate_increase_pp,
        },
    }


def _max_error(step: Mapping[str, Any]) -> float | None:
    errs = [abs(e) for v, e in (step.get("error_pp") or {}).items() if e is not None]
    return max(errs) if errs else None


def _split(a: Mapping[str, Any], b: Mapping[str, Any], regressions: list[str]) -> list[Any]:
    by_a = {s["step"]: s for s in a.get("split") or []}
    by_b = {s["step"]: s for s in b.get("split") or []}
    rows = []
    for step in sorted(set(by_a) | set(by_b)):
        sa, sb = by_a.get(step) or {}, by_b.get(step) or {}
        va, vb = _step_verdict(sa), _step_verdict(sb)
        rows.append(
            {
                "step": step,
                "a_passed": sa.get("passed"),
                "b_passed": sb.get("passed"),
                "a_verdict": va,
                "b_verdict": vb,
                "a_max_error_pp": _max_error(sa),
                "b_max_error_pp": _max_error(sb),
            }
        )
        if va == "pass" and vb == "fail":
            regressions.append(f"split step {step} passed before, fails now: {sb.get('reason')}")
    return rows


def _step_verdict(step: Mapping[str, Any]) -> str | None:
    """pass, fail or inconclusive; a summary older than three-valued verdicts: pass or fail."""
    if step.get("verdict") in ("pass", "fail", "inconclusive"):
        return str(step["verdict"])
    passed = step.get("passed")
    return None if passed is None else "pass" if passed else "fail"


def _propagation(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    da = {p["step"]: p.get("delay_ms") for p in a.get("propagation") or []}
    db = {p["step"]: p.get("delay_ms") for p in b.get("propagation") or []}
    return [
        {
            "step": s,
            "a_delay_ms": da.get(s),
            "b_delay_ms": db.get(s),
            "diff_ms": db[s] - da[s] if da.get(s) is not None and db.get(s) is not None else None,
        }
        for s in sorted(set(da) | set(db))
    ]


def _ms(value: float | None) -> str:
    return "not detected" if value is None else f"{value:.1f} ms"


def format_comparison(result: Mapping[str, Any]) -> str:
    """The comparison as plain text lines for a terminal."""
    a, b = result["a"], result["b"]
    lines = [f"A: {a['run_id']} ({a['scenario']})", f"B: {b['run_id']} ({b['scenario']})"]
    for v, figs in result["latency"].items():
        cells = [f"{f[:-3]} {d['a']:.2f}->{d['b']:.2f}" for f, d in figs.items()]
        lines.append(f"latency {v} (ms): " + ", ".join(cells))
    for v, e in result["errors"].items():
        lines.append(f"errors {v}: {e['a'] * 100:.2f} % -> {e['b'] * 100:.2f} %")
    for s in result["split"]:
        lines.append(f"split step {s['step']}: {s['a_verdict']} -> {s['b_verdict']}")
    for p in result["propagation"]:
        if p["a_delay_ms"] is not None or p["b_delay_ms"] is not None:
            da, db = (_ms(p[k]) for k in ("a_delay_ms", "b_delay_ms"))
            lines.append(f"propagation step {p['step']}: {da} -> {db}")
    lines.append(f"judge: {result['judge']['a']} -> {result['judge']['b']}")
    if result["versions_in_one_run_only"]:
        lines.append("versions in one run only: " + ", ".join(result["versions_in_one_run_only"]))
    lines += [f"improved: {x}" for x in result["improvements"]]
    lines += [f"REGRESSION: {x}" for x in result["regressions"]]
    lines.append(f"verdict: {result['verdict']}")
    return "\n".join(lines)
