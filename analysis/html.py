"""report.html: one self-contained page (inline CSS, charts as base64 PNG, no scripts, no links).

Everything shown comes from summary.json, and any of its strings may have come from outside, so
every value goes through `analysis.markup.esc`. The rollout's own sections (split, propagation)
are `analysis.html_rollout`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from analysis.html_judge import judge_section
from analysis.html_rollout import propagation_section, split_line, split_overall, split_section
from analysis.markup import Raw, badge, esc, fmt, image, para, pct, rows_of, section, table, utc

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1d2329;
padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em;
margin-top:2em}table{border-collapse:collapse;margin:.6em 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f3f5f7}td.t,th.t{text-align:left}td.n{white-space:nowrap}
img{max-width:100%;border:1px solid #eee}
.wide{overflow-x:auto;margin:1em 0}.wide img{max-width:none}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;color:#fff}
.pass{background:#1a7f37}.fail{background:#cf222e}.inconclusive,.none{background:#9a6700}
.big{font-size:1.3em}.notes{background:#fff8c5;border:1px solid #d4a72c;padding:.5em 1em}
.meta td{text-align:left}.muted{color:#57606a}
.health{font-size:1.2em;font-weight:600;padding:.5em 1em;border-radius:6px;color:#fff}
.health.ok{background:#1a7f37}.health.bad{background:#cf222e}
"""


def _health(s: Mapping[str, Any]) -> Raw:
    """The report's first line: was the run measured as planned?"""
    health = s.get("run_health") or {}
    line = health.get("line") or "Run status unknown"
    return Raw(f'<p class="health {"ok" if health.get("ok") else "bad"}">{esc(line)}</p>')


def _header(s: Mapping[str, Any]) -> Raw:
    run = s.get("run") or {}
    versions = run.get("versions") or {}
    started, ended = run.get("started_ns"), run.get("ended_ns")
    duration = (
        (ended - started) / 1e9 if isinstance(started, int) and isinstance(ended, int) else None
    )
    rows = [
        ("Run", s.get("run_id") or run.get("run_id")),
        ("Scenario", run.get("scenario")),
        ("Mesh", run.get("mesh")),
        ("Target", run.get("target")),
        ("Started", utc(started)),
        ("Ended", utc(ended)),
        ("Duration", f"{duration:,.1f} s" if duration is not None else None),
        ("Records", _records(s)),
        (
            "Tools",
            ", ".join(f"{k} {v}" for k, v in versions.items())
            if isinstance(versions, Mapping)
            else versions,
        ),
    ]
    cells = "".join(f"<tr><th class=t>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    title = f"meshload report: {s.get('run_id') or run.get('run_id') or 'run'}"
    return Raw(f"<h1>{esc(title)}</h1><table class=meta>{cells}</table>")


def _records(s: Mapping[str, Any]) -> str | None:
    """The request records on disk against Locust's count, per process that sent load."""
    requests = (s.get("run_health") or {}).get("requests") or {}
    by_worker = requests.get("by_worker") or {}
    if not isinstance(requests.get("rows"), int):
        return None

    def told(on_disk: Any, counted: Any) -> str:
        if not isinstance(counted, int):
            return f"{on_disk:,}"
        return (
            f"{on_disk:,} = Locust's"
            if on_disk == counted
            else f"{on_disk:,} of Locust's {counted:,}"
        )

    parts = [
        f"{w} {told(r.get('on_disk') or 0, r.get('locust'))}" for w, r in sorted(by_worker.items())
    ]
    total = told(requests["rows"], requests.get("locust"))
    return total + (f" ({'; '.join(parts)})" if len(parts) > 1 else "")


def _verdict(s: Mapping[str, Any]) -> Raw:
    judge = s.get("judge") or {}
    split = s.get("split") or []
    reasons = "".join(f"<li>{esc(r)}</li>" for r in judge.get("reasons") or [])
    pair = f"{judge.get('canary')} vs {judge.get('baseline')}"
    if judge.get("roles_source"):
        pair += f", roles from {judge['roles_source']}"
    return section(
        "verdict",
        "Verdict",
        Raw(f'<p class="big">Canary judge ({esc(pair)}): {badge(judge.get("verdict"))}</p>'),
        Raw(f"<ul>{reasons}</ul>"),
        Raw(
            f'<p class="big">Split accuracy: {badge(split_overall(split))} {esc(split_line(s))}</p>'
        ),
    )


def _notes(s: Mapping[str, Any]) -> Raw:
    notes = s.get("notes") or []
    if not notes:
        return para("Nothing missing: client records, traces and metrics were all available.")
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    title = "Where the data came from, and what is missing or partial"
    return Raw(f'<div class="notes"><b>{title}</b><ul>{items}</ul></div>')


STATS = " n p50_ms p90_ms p95_ms p99_ms p999_ms max_ms"
STAT_HEADERS = ["n", "p50", "p90", "p95", "p99", "p99.9", "max"]


def _latency(s: Mapping[str, Any], charts: Mapping[str, bytes]) -> Raw:
    parts: list[str] = []
    for key, title in (
        ("latency", "client"),
        ("latency_co", "client, corrected for coordinated omission"),
        ("mesh_latency", "mesh side, estimated from Istio's histogram buckets"),
    ):
        if s.get(key):
            recs = [{"version": v, **r} for v, r in s[key].items()]
            parts += [
                para(f"Per version ({title}), ms:"),
                table(["version", *STAT_HEADERS], rows_of(recs, "version" + STATS)),
            ]
    by_step = rows_of(s.get("latency_by_step") or [], "version step" + STATS)
    by_name = rows_of(s.get("latency_by_endpoint") or [], "version name" + STATS)
    parts += [
        image(charts, "latency_over_time", "Latency percentiles over time"),
        image(charts, "latency_cdf", "Latency CDF per version"),
        para("Per step, ms:"),
        table(["version", "step", *STAT_HEADERS], by_step, text_cols=2),
        para("Per endpoint, ms:"),
        table(["version", "endpoint", *STAT_HEADERS], by_name, text_cols=2),
    ]
    return section("latency", "Latency", *parts)


def _told(failure: list[Any]) -> str:
    """One kind of failure: `LocustBadStatusCode: 500 on GET /product/[id] ×3 (e.g.
    /product/L9ECAV7KIM)`."""
    label, count, *example = failure
    seen = f" (e.g. {example[0]})" if example and example[0] else ""
    return f"{label} ×{count:,}{seen}"


def _errors(s: Mapping[str, Any], charts: Mapping[str, bytes]) -> Raw:
    recs = [{"version": v, **e} for v, e in (s.get("errors") or {}).items()]
    top = "; ".join
    rows = rows_of(recs, "version n errors rate top", rate=pct, top=lambda t: top(map(_told, t)))
    headers = ["version", "requests", "failed", "rate", "commonest errors"]
    return section(
        "errors",
        "Errors",
        image(charts, "error_rate", "Error rate over time"),
        table(headers, rows),
    )


def _hops(s: Mapping[str, Any], charts: Mapping[str, bytes]) -> Raw:
    keys = "service baseline_self_ms canary_self_ms delta_self_ms"
    keys += " baseline_critical_ms canary_critical_ms delta_critical_ms"
    rows = rows_of((s.get("hops") or {}).get("table") or [], keys)
    headers = ["service", "self ms (baseline)", "self ms (canary)", "Δ self"]
    headers += ["critical ms (baseline)", "critical ms (canary)", "Δ critical"]
    title = "Per-hop breakdown (mean per trace, from traces)"
    return section("hops", title, image(charts, "hops", "Per-hop breakdown"), table(headers, rows))


def _graph(s: Mapping[str, Any], charts: Mapping[str, bytes]) -> Raw:
    keys = "source destination destination_version requests errors share"
    rows = rows_of(s.get("graph") or [], keys, share=pct)
    headers = ["source", "destination", "version", "requests", "errors", "share of edge"]
    chart = image(charts, "service_graph", "Service graph", wide=True)
    return section("graph", "Service graph", chart, table(headers, rows, text_cols=3))


def _probes_told(counts: list[Mapping[str, Any]]) -> list[Raw]:
    probes = sum(int(r.get("probes") or 0) for r in counts)
    if not probes:
        return []
    return [
        para(
            f"Prometheus also counts meshload's {probes:,} unsampled probes of step 0 (sent "
            "until the gateway served step 0's stamps, before any user started; they are not "
            "records): they are added to the client's count it is compared with."
        )
    ]


def _consistency(s: Mapping[str, Any]) -> Raw:
    c = s.get("consistency") or {}
    counts = c.get("counts") or []
    rows = rows_of(counts, "step version client metrics traces flags", flags="; ".join)
    how = c.get("metrics_counted")
    parts = [
        para(f"Client requests whose trace was found: {pct(c.get('trace_coverage'))}"),
        para(
            f"Prometheus: istio_requests_total of the frontend, {how}, in whole requests. "
            "Traces: spans entering the frontend. A source more than 1 % off the client's "
            "count is flagged with its likely cause."
            if how
            else "No Prometheus counts. Traces: spans entering the frontend."
        ),
        *_probes_told(counts),
        table(
            ["step", "version", "client", "Prometheus", "traces", "disagreement"], rows, text_cols=2
        ),  # fmt: skip
    ]
    sticky = s.get("sticky")
    if sticky:
        single, users = fmt(sticky.get("single_version_users")), fmt(sticky.get("users"))
        share = pct(sticky.get("share_single_version"))
        parts.append(para(f"Users who saw a single version: {single} of {users} ({share})"))
    return section("consistency", "Consistency: client vs Prometheus vs traces", *parts)


_VERIFIED = {
    "ca-bundle": "checked against the CA bundle {}",
    "system": "checked against the system's CAs",
    "insecure": "NOT checked (insecure)",
}


def _tally(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in counts.items())


def _client_tls(c: Mapping[str, Any]) -> list[Raw]:
    """The client -> gateway hop: plain HTTP, or its TLS handshakes beside the gateway's."""
    hop = f"Client → gateway ({c.get('url')})"
    if c.get("scheme") != "https":
        return [para(f"{hop}: plain HTTP, no TLS.")]
    if c.get("handshakes") is None:
        return [para(f"{hop}: TLS; run.json records no handshakes.")]
    verify = str(c.get("verify"))
    checked = _VERIFIED.get(verify, f"checked ({verify})").format(c.get("ca_bundle"))
    sni = c.get("server_name") or "none sent"
    shakes = rows_of(c["handshakes"], "version cipher bits count")
    parts = [
        para(f"{hop}: TLS, SNI {sni}; the gateway's certificate {checked}."),
        table(["version", "cipher", "bits", "handshakes"], shakes, text_cols=2)
        if shakes
        else para("No TLS handshake succeeded."),
        table(["failed handshake", "count"], rows_of(c["failures"], "error count"))
        if c["failures"]
        else para("No failed handshakes."),
    ]
    if c.get("gateway") is None:
        return parts
    a = c.get("agreement") or {}
    tallies = [a.get(k) or {} for k in ("versions", "ciphers")]
    same = all(set(d.get("client") or {}) == set(d.get("gateway") or {}) for d in tallies)
    n, m = a.get("client"), a.get("gateway")
    told = f"the client counted {fmt(n)}, the gateway's listeners {fmt(m)}: "
    told += "they agree" if n == m else "they DIFFER"
    told += f"; {'the same' if same else 'other'} versions and ciphers"
    keys = "replica handshakes versions ciphers"
    listed = rows_of(c["gateway"], keys, versions=_tally, ciphers=_tally)
    return [
        *parts,
        para(f"Handshakes counted by the gateway's Envoys too: {told}."),
        table(["replica", "handshakes", "versions", "ciphers"], listed),
    ]


def _transport(s: Mapping[str, Any]) -> Raw:
    t = s.get("transport") or {}
    c = t.get("client")
    unknown = "run.json names no target: how the client reached the gateway is unknown."
    parts = _client_tls(c) if c else [para(unknown)]
    if not t.get("source_of_hops"):
        parts.append(
            para(
                "Inside the mesh: no istio_requests_total reported by the destination in this "
                "run's metrics (none recorded or fetched): the hops' security is unknown."
            )
        )
        return section("transport", "Transport security", *parts)
    hops = t.get("hops") or []
    policies = sorted(
        {p for h in hops for p in h["requests"]}, key=lambda p: (p != "mutual_tls", p)
    )
    rows = [
        [h["source"], h["destination"], *(h["requests"].get(p, 0) for p in policies)] for h in hops
    ]
    parts += [
        para(
            f"Inside the mesh: requests per hop and connection_security_policy over the run, "
            f"from {t['source_of_hops']}: only the server side knows the policy."
        ),
        table(["source", "destination", *policies], rows, text_cols=2),
    ]
    return section("transport", "Transport security", *parts)


_NAV = (
    ("verdict", "Verdict"),
    ("notes", "Notes"),
    ("split", "Split"),
    ("propagation", "Propagation"),
    ("latency", "Latency"),
    ("judge", "Judge"),
    ("errors", "Errors"),
    ("hops", "Hops"),
    ("graph", "Graph"),
    ("consistency", "Consistency"),
    ("transport", "Transport"),
)


def render_html(summary: Mapping[str, Any], charts: Mapping[str, bytes]) -> str:
    """The whole report page for a summary (as written to summary.json) and its PNG charts."""
    body = [
        _health(summary),
        _header(summary),
        Raw("<p>" + " · ".join(f'<a href="#{a}">{t}</a>' for a, t in _NAV) + "</p>"),
        _verdict(summary),
        section("notes", "Notes", _notes(summary)),
        split_section(summary, charts),
        propagation_section(summary),
        _latency(summary, charts),
        judge_section(summary),
        _errors(summary, charts),
        _hops(summary, charts),
        _graph(summary, charts),
        _consistency(summary),
        _transport(summary),
        para(f"summary.json schema version {summary.get('schema_version')}."),
    ]
    title = esc(f"meshload report {summary.get('run_id') or ''}".strip())
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}'
        f"</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
