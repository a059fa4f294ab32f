"""report.html's sections of the rollout itself: split accuracy per step and propagation.

A step's verdict is pass, fail or inconclusive (`analysis.verdicts`); a propagation delay is
measured from the stamps, per gateway replica, or, for an unstamped run, an estimate labelled
so, with its support interval (`analysis.stamped`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from analysis.markup import (
    Raw,
    badge,
    fmt,
    image,
    ms1,
    para,
    pct,
    range_text,
    rows_of,
    section,
    table,
    utc,
)


def step_verdict_of(step: Mapping[str, Any]) -> str:
    """pass, fail or inconclusive; summaries older than three-valued verdicts give pass/fail."""
    verdict = step.get("verdict")
    if verdict in ("pass", "fail", "inconclusive"):
        return str(verdict)
    return "pass" if step.get("passed") else "fail"


def split_overall(split: list[Mapping[str, Any]]) -> str | None:
    """The run's split: fail if a step failed, pass if all passed, else inconclusive."""
    verdicts = {step_verdict_of(st) for st in split}
    if not verdicts:
        return None
    return "fail" if "fail" in verdicts else "pass" if verdicts == {"pass"} else "inconclusive"


def split_line(s: Mapping[str, Any]) -> str:
    split = s.get("split") or []
    verdicts = [step_verdict_of(st) for st in split]
    counts = {v: verdicts.count(v) for v in ("pass", "fail", "inconclusive")}
    tol = fmt(s.get("tolerance_pp"))
    line = (
        f"of {len(split)} steps, {counts['pass']} pass, {counts['fail']} fail, "
        f"{counts['inconclusive']} inconclusive (pass: every version's 95 % interval inside its "
        f"weight ± {tol} pp; fail: one wholly outside it)"
    )
    return line


def split_section(s: Mapping[str, Any], charts: Mapping[str, bytes]) -> Raw:
    rows: list[tuple[Any, ...]] = []
    methods = set()
    for st in s.get("split") or []:
        result = "not applied" if st.get("applied") is False else None
        result = "broken" if st.get("broken") else result
        step_badge = badge(result or step_verdict_of(st))
        needs = st.get("needs_requests")
        methods.add(st.get("method"))
        if not st.get("observed"):
            configured = ", ".join(f"{v} {pct(x)}" for v, x in (st.get("configured") or {}).items())
            blank = ("–", configured, "–", "–", "–", "–")
            rows.append((st["step"], *blank, st.get("n"), step_badge, needs, st.get("reason")))
        for v in st.get("observed") or {}:
            ci = (st.get("ci95") or {}).get(v) or [None, None]
            own = (st.get("verdicts") or {}).get(v)
            rows.append(
                (
                    st["step"],
                    v,
                    pct((st.get("configured") or {}).get(v)),
                    pct(st["observed"][v]),
                    f"{pct(ci[0])} – {pct(ci[1])}",
                    fmt((st.get("error_pp") or {}).get(v)),
                    badge(own) if own else "–",
                    st.get("n"),
                    step_badge,
                    needs,
                    st.get("reason"),
                )
            )
    headers = (
        "step,version,configured,observed,95 % interval,error (pp),version verdict,n,"
        "step verdict,needs (requests)"
    )
    counted = {
        "stamped": "the requests whose response carried the step's configuration stamp",
        "estimate": "the requests that started after the step's estimated change point",
    }
    how = [counted[m] for m in ("stamped", "estimate") if m in methods]
    parts = [image(charts, "split_over_time", "Served split over time")]
    if how:
        counts = " and, for unstamped steps, ".join(how)
        line = split_line(s).capitalize()
        parts.append(
            para(f"Each step counts {counts}. {line}; an inconclusive step says what it needs.")
        )
    elsewhere = [(st["step"], st["n_elsewhere"]) for st in s.get("split") or []
                 if st.get("n_elsewhere")]  # fmt: skip
    if elsewhere:
        each = ", ".join(f"step {k}: {n:,}" for k, n in elsewhere)
        parts.append(para(f"Responses without the step's stamp came from another route (an "
                          f"A/B cohort's header match, a sticky user's cookie route) and are not "
                          f"counted: {each}."))  # fmt: skip
    parts.append(table([*headers.split(","), "reason"], rows, text_cols=2))
    return section("split", "Split accuracy per step", *parts)


def propagation_section(s: Mapping[str, Any]) -> Raw:
    changes = s.get("propagation") or []
    stamped = [p for p in changes if p.get("method") == "stamped"]
    estimated = [p for p in changes if p.get("method") != "stamped"]
    parts: list[str] = []
    if stamped:
        parts.append(
            para(
                "Measured from the stamps: from the API accepting the change to the first "
                "response of the new configuration, overall and per gateway replica; "
                "'last old' is the last response still of the old one (a stale replica shows as "
                "a long tail); 'resolution' is how precisely the data places the switch (from "
                "the last old-configuration request before it)."
            )
        )
        rows: list[list[Any]] = []
        for p in stamped:
            rows.append([p["step"], "all replicas", utc(p.get("accepted_ns")), *_timing(p)])
            rows[-1] += [p.get("n_window"), p.get("reason")]
            for r in p.get("by_replica") or []:
                who = f"{r.get('pod') or '–'} ({r.get('replica')})"
                note = "" if r.get("delay_ms") is not None else "never served the new configuration"
                rows.append([p["step"], who, "", *_timing(r), r.get("n"), note])
        headers = ["step", "replica (pod)", "accepted", "delay (ms)", "resolution (ms)"]
        headers += ["last old (ms)", "requests", "note"]
        parts.append(table(headers, rows, text_cols=2))
    if estimated:
        parts.append(
            para(
                "Estimated, not measured (the run carried no stamps): the most likely position "
                "of the switch in the sequence of served versions, and its support interval. At "
                "low rates and small weight shifts the interval is wide and the estimate far "
                "from the real delay; a stamped run measures it."
            )
        )
        keys = "step accepted_ns detected delay_ms delay_range_ms n_window reason"
        rows = rows_of(estimated, keys, accepted_ns=utc, delay_ms=ms1, delay_range_ms=range_text)
        headers = ["step", "accepted", "detected", "estimated change point (ms)"]
        headers += ["support interval (ms)", "requests", "note"]
        parts.append(table(headers, rows))
    if not changes:
        parts.append(para("No weight changes."))
    return section("propagation", "Propagation delay per weight change", *parts)


def _timing(r: Mapping[str, Any]) -> list[str]:
    return [ms1(r.get("delay_ms")), ms1(r.get("resolution_ms")), ms1(r.get("stale_ms"))]
