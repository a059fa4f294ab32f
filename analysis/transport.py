"""Transport security: how the client reached the gateway, and how each hop inside the mesh did.

Two sources, each independent of the other:

- run.json `tls` (written by the load generator for an https target): the SNI sent, how the
  gateway's certificate was checked, the handshakes per (version, cipher), the failed ones per
  error text and, in the embedded mesh, the gateway's Envoys' own listener counts per replica.
  The client's handshakes are compared with the gateway's sum, and so are their versions and
  ciphers. A run without `tls` whose `target` is `http://...` went to the gateway in plain HTTP.
- Istio's `istio_requests_total`, the series reported by the destination (only the server side
  of a connection knows its `connection_security_policy`; the source side says `unknown`):
  requests per (source_workload, destination_workload) and policy over the run, counted as the
  consistency table counts Prometheus (`analysis.consistency.metrics_counts_from_istio`, one
  window from run.json's `started_ns` to `ended_ns`).

`transport_security` gives summary.json's `transport` and the notes to add: no handshake,
failed handshakes, a gateway that counted otherwise, plain text on a hop of an mTLS mesh.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analysis.consistency import metrics_counts_from_istio
from analysis.frames import labels_json
from meshcore.errors import MeshloadError, RunFolderError

REQUESTS_METRIC = "istio_requests_total"
HOPS_SOURCE = f"{REQUESTS_METRIC} (reporter=destination)"
MUTUAL_TLS, PLAIN = "mutual_tls", "none"
HOP_COLUMNS = ("source", "destination", "policy", "requests")
# metrics_counts_from_istio counts per (destination_app, destination_version): each hop's series
# are handed to it under this app, with the hop and its policy as their "version"
_HOP_APP = "meshload-hop"


def transport_security(
    run: Mapping[str, Any], metrics: pd.DataFrame
) -> tuple[dict[str, Any], list[str]]:
    """summary.json's `transport` and the notes it calls for (module docstring)."""
    client = client_transport(run)
    notes = client_notes(client)
    try:
        started, ended = (_int_or_none(run.get(k)) for k in ("started_ns", "ended_ns"))
        hops = hop_requests(metrics, started_ns=started, ended_ns=ended)
    except MeshloadError as exc:
        notes.append(f"hop security left out: {exc}")
        hops = None
    else:
        if hops is None and not metrics.empty:
            notes.append(f"the metrics hold no {HOPS_SOURCE}: the hops' security is unknown")
    records = hop_records(hops) if hops is not None else []
    notes += hop_notes(records)
    summary = {
        "client": client,
        "hops": records,
        "source_of_hops": HOPS_SOURCE if hops is not None else None,
    }
    return summary, notes


# --- the client -> gateway hop (run.json) ---------------------------------------------------


def client_transport(run: Mapping[str, Any]) -> dict[str, Any] | None:
    """How the client reached the gateway: run.json `tls`, else what `target` says; None
    without either."""
    tls = run.get("tls")
    target = run.get("target")
    if not isinstance(tls, Mapping):
        if not isinstance(target, str) or "://" not in target:
            return None
        scheme = target.split("://", 1)[0].lower()
        # an https target without `tls`: a run from before meshload recorded its handshakes
        unknown: list[dict[str, Any]] | None = None if scheme == "https" else []
        return _client(scheme, target, handshakes=unknown, failures=unknown)
    url = tls.get("url") if isinstance(tls.get("url"), str) else target
    handshakes = _entries(tls.get("handshakes"), ("version", "cipher", "bits"))
    failures = _entries(tls.get("failures"), ("error",))
    gateway = _gateway(tls.get("gateway"))
    told = {k: tls.get(k) for k in ("server_name", "verify", "ca_bundle")}
    client = _client(
        "https", url, handshakes=handshakes, failures=failures, gateway=gateway, **told
    )
    client["agreement"] = agreement(handshakes, gateway) if gateway is not None else None
    return client


def _client(scheme: str, url: Any, **given: Any) -> dict[str, Any]:
    keys = ("server_name", "verify", "ca_bundle", "handshakes", "failures", "gateway")
    return {"scheme": scheme, "url": url, **{k: given.get(k) for k in keys}, "agreement": None}


def _entries(value: Any, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """The {..., count} entries of a run.json list, each with exactly `keys` and `count`."""
    if not isinstance(value, list):
        return []
    return [
        {**{k: e.get(k) for k in keys}, "count": _count(e.get("count"))}
        for e in value
        if isinstance(e, Mapping)
    ]


def _gateway(value: Any) -> list[dict[str, Any]] | None:
    if not isinstance(value, list):
        return None
    out = []
    for e in value:
        if not isinstance(e, Mapping):
            continue
        tallies = {k: _tally(e.get(k)) for k in ("versions", "ciphers")}
        count = _count(e.get("handshakes"))
        out.append({"replica": e.get("replica"), "handshakes": count, **tallies})
    return out


def agreement(handshakes: list[dict[str, Any]], gateway: list[dict[str, Any]]) -> dict[str, Any]:
    """The client's handshakes against the gateway replicas' sum, in all and per version and
    cipher; `agree` when all three match."""
    client_n = sum(h["count"] for h in handshakes)
    gateway_n = sum(g["handshakes"] for g in gateway)
    out: dict[str, Any] = {"client": client_n, "gateway": gateway_n}
    for key, field in (("versions", "version"), ("ciphers", "cipher")):
        mine: Counter[str] = Counter()
        for h in handshakes:
            mine[str(h[field])] += h["count"]
        theirs: Counter[str] = Counter()
        for g in gateway:
            theirs.update(g[key])
        out[key] = {
            "client": dict(sorted(mine.items())),
            "gateway": dict(sorted(theirs.items())),
            "agree": +mine == +theirs,  # unary + drops zero counts
        }
    out["agree"] = client_n == gateway_n and out["versions"]["agree"] and out["ciphers"]["agree"]
    return out


def client_notes(client: Mapping[str, Any] | None) -> list[str]:
    """No handshake, failed ones, a gateway that counted otherwise: each said loudly."""
    if not client or client["scheme"] != "https":
        return []
    handshakes, failures = client["handshakes"], client["failures"]
    if handshakes is None:
        return [f"run.json has no tls for the https target {client['url']}: handshakes unknown"]
    notes = []
    if not sum(h["count"] for h in handshakes):
        notes.append(f"no TLS handshake with {client['url']} succeeded")
    for f in failures:
        if f["count"]:
            notes.append(f"{f['count']:,} TLS handshakes failed: {f['error']}")
    told = client.get("agreement")
    if told and told["client"] != told["gateway"]:
        notes.append(
            f"TLS handshakes disagree: the client counted {told['client']:,}, the gateway's "
            f"listeners {told['gateway']:,}"
        )
    for key in ("versions", "ciphers"):
        # unequal totals are told above; a mix is news when the totals agree or the names differ
        if told and not told[key]["agree"] and _mix_differs(told, told[key]):
            mine, theirs = (_listed(told[key][side]) for side in ("client", "gateway"))
            notes.append(f"TLS {key} disagree: the client's {mine}, the gateway's {theirs}")
    return notes


def _mix_differs(told: Mapping[str, Any], tallies: Mapping[str, Any]) -> bool:
    names = (set(tallies[side]) for side in ("client", "gateway"))
    return told["client"] == told["gateway"] or next(names) != next(names)


def _listed(tally: Mapping[str, int]) -> str:
    return ", ".join(f"{k} ×{v:,}" for k, v in tally.items()) or "none"


# --- the hops inside the mesh (Istio's metrics) ---------------------------------------------


def hop_requests(
    metrics: pd.DataFrame, *, started_ns: int | None = None, ended_ns: int | None = None
) -> pd.DataFrame | None:
    """source | destination | policy | requests: whole requests over the run per hop and
    connection_security_policy, from the destination-reported istio_requests_total series.
    None when the metrics hold no such series."""
    samples = metrics[metrics["metric"].astype(str).to_numpy() == REQUESTS_METRIC]
    if samples.empty:
        return None
    labels = samples["labels"].astype(str)
    relabel = {}
    for text in labels.unique():
        try:
            lb = dict(json.loads(text))
        except (ValueError, TypeError) as exc:
            raise RunFolderError(
                f"metrics: a labels value is not a JSON object ({exc}); rewrite metrics.parquet"
            ) from None
        if lb.get("reporter") != "destination":
            continue
        hop = [lb.get(k) or "unknown" for k in ("source_workload", "destination_workload")]
        policy = lb.get("connection_security_policy") or "unknown"
        # `series` keeps every original series apart: the counter is counted per series
        hop_key = json.dumps([*hop, policy])
        relabel[text] = labels_json(
            dict(
                reporter="destination",
                destination_app=_HOP_APP,
                destination_version=hop_key,
                series=text,
            )
        )
    keep = labels.isin(list(relabel)).to_numpy()
    if not keep.any():
        return None
    mine = pd.DataFrame(
        {
            "t": samples["t"].to_numpy(dtype=float)[keep],
            "metric": REQUESTS_METRIC,
            "labels": labels[keep].map(relabel).to_numpy(),
            "value": samples["value"].to_numpy(dtype=float)[keep],
        }
    )
    t_ns = mine["t"].to_numpy() * 1e9
    start = started_ns if started_ns is not None else int(t_ns.min())
    end = max(ended_ns if ended_ns is not None else int(t_ns.max()), start)
    window = pd.DataFrame({"step": [0], "start_ns": [start], "end_ns": [end]}).astype(np.int64)
    counts = metrics_counts_from_istio(
        mine, window, app=_HOP_APP, metric=REQUESTS_METRIC, started_ns=started_ns
    )
    hops = [json.loads(v) for v in counts["version"]]
    return pd.DataFrame(
        {
            "source": [h[0] for h in hops],
            "destination": [h[1] for h in hops],
            "policy": [h[2] for h in hops],
            "requests": counts["requests"].to_numpy(dtype=np.int64),
        },
        columns=list(HOP_COLUMNS),
    )


def hop_records(hops: pd.DataFrame) -> list[dict[str, Any]]:
    """[{source, destination, requests: {policy: n}}], by source then destination; policies
    and hops without a request during the run are left out."""
    out = []
    busy = hops[hops["requests"] > 0].sort_values(["source", "destination", "policy"])
    for (source, destination), g in busy.groupby(["source", "destination"], sort=True):
        requests = {str(p): int(n) for p, n in zip(g["policy"], g["requests"], strict=True)}
        out.append({"source": source, "destination": destination, "requests": requests})
    return out


def hop_notes(records: list[dict[str, Any]]) -> list[str]:
    """Plain text on a hop of a mesh that otherwise speaks mTLS; or no mTLS anywhere."""
    plain = [r for r in records if r["requests"].get(PLAIN)]
    if not plain:
        return []
    if not any(r["requests"].get(MUTUAL_TLS) for r in records):
        n = sum(r["requests"][PLAIN] for r in plain)
        return [f"no mutual TLS on any hop: {n:,} requests in plain text over {len(plain)} hops"]
    return [
        f"plain text between {r['source']} and {r['destination']}: {r['requests'][PLAIN]:,} "
        f"requests (of {sum(r['requests'].values()):,})"
        for r in plain
    ]


# --- reading run.json defensively -----------------------------------------------------------


def _count(value: Any) -> int:
    """A count from run.json; anything else (absent, text, negative) is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _tally(value: Any) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): _count(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
