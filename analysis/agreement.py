"""Do the three counts add up? The consistency table with each disagreement explained.

`analysis.consistency` counts requests per (step, version) three ways: the client's records,
Prometheus (whole requests between the scrapes nearest the step's boundaries) and traces. Here
each row gets what explains a difference: the client's own count between the same scrapes as
Prometheus, and its sampled requests. A source more than 1 % (and more than one request) off
the client's count is flagged with its likely cause:

- Prometheus: the scrape boundaries (when the client's count between those scrapes agrees);
  requests the client did not record as its own (redirects followed as one request, when no
  3xx is recorded; gateway retries; other traffic to the frontend); requests that never
  reached the frontend (no response), or a missing scrape;
- traces: unsampled requests (when the sampled count agrees), traces the backend does not have,
  or frontend entries the client did not record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analysis.changepoint import label_codes
from analysis.consistency import client_counts, consistency_table

METRICS_RULE = "counted between the scrapes nearest the step's boundaries"
AGREE_SHARE = 0.01  # a source this far off the client's count (and by 2+ requests) is flagged


def consistency_rows(
    requests: pd.DataFrame,
    metrics: pd.DataFrame | None = None,
    traces: pd.DataFrame | None = None,
    windows: pd.DataFrame | None = None,
    probes: Mapping[str, int] | None = None,
) -> list[dict[str, Any]]:
    """summary.json's `consistency.counts`: the table, each row with the client's count
    between the same scrapes as Prometheus (`client_between_scrapes`), its sampled requests
    (`client_sampled`, when recorded), `probes` (meshload's own unsampled requests that are not
    records: run.json `first_stamp.by_version`, sent before step 0's users start) and `flags`:
    each source more than 1 % off what the client sent (Prometheus: its records and probes;
    traces: its records), with its likely cause."""
    table = consistency_table(client_counts(requests), metrics, traces)
    first_step = int(table["step"].min()) if len(table) else None
    codes, names = label_codes(requests["version"])
    order = np.argsort(requests["start_ns"].to_numpy(), kind="stable")  # records come sorted
    start, codes = requests["start_ns"].to_numpy()[order], codes[order]
    by_version = {str(v): start[codes == i] for i, v in enumerate(names)}
    edges = {}
    if metrics is not None and not metrics.empty and "scrape_start_ns" in metrics.columns:
        edges = {
            (int(r.step), str(r.version)): (int(r.scrape_start_ns), int(r.scrape_end_ns))
            for r in metrics.itertuples()
        }
    sampled = _sampled_counts(requests)
    status = requests["status"].to_numpy() if "status" in requests.columns else np.zeros(0)
    redirects_recorded = bool(((status >= 300) & (status < 400)).any())
    no_response = {k: int(c) for k, c in _per_step_status0(requests).items()} if len(status) else {}
    bounds = (
        {int(w.step): (int(w.start_ns), int(w.end_ns)) for w in windows.itertuples()}
        if windows is not None
        else {}
    )
    out = []
    for r in table.itertuples(index=False):
        row: dict[str, Any] = {
            "step": int(r.step),
            "version": str(r.version),
            "client": int(r.client),
            "metrics": None if pd.isna(r.metrics) else int(r.metrics),
            "traces": None if pd.isna(r.traces) else int(r.traces),
        }
        edge = edges.get((row["step"], row["version"]))
        times = by_version.get(row["version"], np.zeros(0, np.int64))
        row["client_between_scrapes"] = (
            int(np.searchsorted(times, edge[1]) - np.searchsorted(times, edge[0])) if edge else None
        )
        row["client_sampled"] = sampled.get((row["step"], row["version"])) if sampled else None
        row["probes"] = (
            int((probes or {}).get(row["version"], 0)) if row["step"] == first_step else 0
        )
        sent = row["client"] + row["probes"]
        flags = []
        if row["metrics"] is not None and _off(row["metrics"], sent):
            silent = no_response.get(row["step"], 0)
            why = _metrics_cause(row, edge, bounds.get(row["step"]), redirects_recorded, silent)
            against = _diff(row["metrics"], row["client"], row["probes"])
            flags.append(f"Prometheus {against}: likely {why}")
        if row["traces"] is not None and _off(row["traces"], row["client"]):
            flags.append(
                f"traces {_diff(row['traces'], row['client'])}: likely {_trace_cause(row)}"
            )
        row["flags"] = flags
        out.append(row)
    return out


def _off(count: int, client: int) -> bool:
    return abs(count - client) > max(AGREE_SHARE * client, 1)


def _diff(count: int, client: int, probes: int = 0) -> str:
    sent = client + probes
    share = f" ({(count - sent) / sent * 100:+.1f} %)" if sent else ""
    mine = f" records and {probes:,} probes" if probes else ""
    return f"{count - sent:+,}{share} against the client's {client:,}{mine}"


def _metrics_cause(
    row: Mapping[str, Any],
    edge: tuple[int, int] | None,
    window: tuple[int, int] | None,
    redirects_recorded: bool,
    no_response: int,
) -> str:
    between = row["client_between_scrapes"]
    if between is not None:
        between += row["probes"]
    metrics, client = row["metrics"], row["client"] + row["probes"]
    if between is not None and not _off(metrics, between):
        offsets = ""
        if edge and window:
            offsets = (
                f" ({(edge[0] - window[0]) / 1e9:+.1f} s and {(edge[1] - window[1]) / 1e9:+.1f} s"
                " off them)"
            )
        return (
            f"scrape boundaries: the scrapes nearest the step's boundaries{offsets} bound "
            f"{between:,} of the client's requests, as many as Prometheus counted"
        )
    if metrics > max(client, between or 0):
        causes = ["gateway retries", "other traffic to the frontend"]
        if not redirects_recorded:
            causes.insert(0, "redirects the client followed as one request (none recorded)")
        return "requests the client did not record as its own: " + ", ".join(causes)
    if no_response:
        return (
            f"requests that never reached the frontend ({no_response:,} of the step's got no "
            "response), or a missing scrape"
        )
    return "a missing scrape (the scraper stopped or Prometheus lost samples)"


def _trace_cause(row: Mapping[str, Any]) -> str:
    traces, client, sampled = row["traces"], row["client"], row["client_sampled"]
    if sampled is not None and sampled < client and not _off(traces, sampled):
        return f"unsampled requests: {client - sampled:,} of the client's were not sampled"
    reference = sampled if sampled is not None else client
    if traces < reference:
        return (
            f"missing traces: {reference - traces:,} sampled requests have no trace (dropped by "
            "the backend or never exported)"
        )
    return (
        "spans entering the frontend that the client did not record as requests (redirect "
        "follow-ups within one trace, other traffic)"
    )


def _sampled_counts(requests: pd.DataFrame) -> dict[tuple[int, str], int]:
    """Sampled requests per (step, version); {} when the records do not say."""
    if "sampled" not in requests.columns or not requests["sampled"].notna().any():
        return {}
    mine = requests["sampled"].fillna(False).to_numpy(dtype=bool)
    counts = client_counts(requests[["step", "version"]][mine])  # not a copy of every column
    return {(int(r.step), str(r.version)): int(r.requests) for r in counts.itertuples()}


def _per_step_status0(requests: pd.DataFrame) -> pd.Series:
    silent = requests["status"].to_numpy() == 0
    return pd.Series(requests["step"].to_numpy()[silent]).value_counts()
