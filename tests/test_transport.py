"""Transport security: run.json `tls` against the gateway's counts, mTLS per hop from Istio."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from analysis.report import build_report
from analysis.synthetic import make_run
from analysis.transport import HOPS_SOURCE, hop_requests, transport_security

T0_S = 1_000.0  # the run: 1,000 s to 1,060 s
RUN = {"started_ns": int(T0_S * 1e9), "ended_ns": int((T0_S + 60) * 1e9)}
EMPTY = pd.DataFrame(columns=["t", "metric", "labels", "value"])
TLS13 = "TLS_AES_256_GCM_SHA384"


def https_run(**tls: Any) -> dict[str, Any]:
    given = {
        "url": "https://127.0.0.1:4443",
        "server_name": "frontend.example.com",
        "verify": "ca-bundle",
        "ca_bundle": "/tmp/ca.crt",
        "handshakes": [{"version": "TLSv1.3", "cipher": TLS13, "bits": 256, "count": 20}],
        "failures": [],
        **tls,
    }
    return {**RUN, "target": "https://127.0.0.1:4443", "tls": given}


def replica(name: str, n: int, version: str = "TLSv1.3", cipher: str = TLS13) -> dict[str, Any]:
    return {"replica": name, "handshakes": n, "versions": {version: n}, "ciphers": {cipher: n}}


def hop(src: str, dst: str, policy: str, reporter: str = "destination", **more: str) -> dict:
    return {
        "reporter": reporter,
        "source_workload": src,
        "destination_workload": dst,
        "destination_service_name": dst.split("-")[0],
        "connection_security_policy": policy,
        **more,
    }


def samples(series: list[tuple[dict, list[tuple[float, float]]]]) -> pd.DataFrame:
    """istio_requests_total samples: per label set, its (seconds after T0_S, value) points."""
    rows = [
        {
            "t": T0_S + t,
            "metric": "istio_requests_total",
            "labels": json.dumps(lb, sort_keys=True),
            "value": v,
        }  # fmt: skip
        for lb, points in series
        for t, v in points
    ]
    return pd.DataFrame(rows)


def test_https_with_agreeing_gateway_stats() -> None:
    run = https_run(gateway=[replica("gw-0", 12), replica("gw-1", 8)])
    transport, notes = transport_security(run, EMPTY)
    client = transport["client"]
    assert client["scheme"] == "https" and client["server_name"] == "frontend.example.com"
    assert client["verify"] == "ca-bundle" and client["ca_bundle"] == "/tmp/ca.crt"
    assert client["handshakes"] == run["tls"]["handshakes"]
    assert [g["handshakes"] for g in client["gateway"]] == [12, 8]
    told = client["agreement"]
    assert (told["client"], told["gateway"], told["agree"]) == (20, 20, True)
    assert told["versions"] == {
        "client": {"TLSv1.3": 20},
        "gateway": {"TLSv1.3": 20},
        "agree": True,
    }
    assert not notes  # and no metrics: the hops are unknown, not an error
    assert transport["hops"] == [] and transport["source_of_hops"] is None


def test_a_gateway_that_counted_otherwise_is_flagged_with_both_numbers() -> None:
    run = https_run(gateway=[replica("gw-0", 12), replica("gw-1", 11, version="TLSv1.2")])
    transport, notes = transport_security(run, EMPTY)
    told = transport["client"]["agreement"]
    assert (told["client"], told["gateway"], told["agree"]) == (20, 23, False)
    assert told["versions"]["agree"] is False and told["ciphers"]["agree"] is False
    assert "TLS handshakes disagree: the client counted 20, the gateway's listeners 23" in notes
    assert (
        "TLS versions disagree: the client's TLSv1.3 ×20, the gateway's TLSv1.2 ×11, TLSv1.3 ×12"
        in notes
    )
    assert not any(n.startswith("TLS ciphers") for n in notes)  # the same cipher, counted 3 more
    # the same total in other versions still disagrees
    same_total = https_run(gateway=[replica("gw-0", 20, version="TLSv1.2")])
    transport, notes = transport_security(same_total, EMPTY)
    told = transport["client"]["agreement"]
    assert told["client"] == told["gateway"] == 20 and told["agree"] is False
    assert notes == ["TLS versions disagree: the client's TLSv1.3 ×20, the gateway's TLSv1.2 ×20"]


def test_failed_and_missing_handshakes_are_notes() -> None:
    error = "certificate verify failed: self-signed certificate"
    run = https_run(handshakes=[], failures=[{"error": error, "count": 3}], verify="system")
    transport, notes = transport_security(run, EMPTY)
    assert transport["client"]["failures"] == [{"error": error, "count": 3}]
    assert transport["client"]["agreement"] is None  # no gateway stats: nothing to compare
    assert f"3 TLS handshakes failed: {error}" in notes
    assert "no TLS handshake with https://127.0.0.1:4443 succeeded" in notes


def test_an_http_target_is_plain_http_and_an_https_one_without_tls_is_unknown() -> None:
    transport, notes = transport_security({**RUN, "target": "http://127.0.0.1:8080"}, EMPTY)
    client = transport["client"]
    assert (client["scheme"], client["url"]) == ("http", "http://127.0.0.1:8080")
    assert client["handshakes"] == [] and client["gateway"] is None and not notes
    older, notes = transport_security({**RUN, "target": "https://shop.example.com"}, EMPTY)
    assert older["client"]["scheme"] == "https" and older["client"]["handshakes"] is None
    target = "https://shop.example.com"
    assert notes == [f"run.json has no tls for the https target {target}: handshakes unknown"]
    assert transport_security(RUN, EMPTY)[0]["client"] is None


def test_requests_per_hop_and_policy_with_plain_text_noted() -> None:
    gw, fe1 = "istio-ingressgateway", "frontend-v1"
    metrics = samples(
        [
            # existed before the run: only the increase counts, 100 -> 160
            (hop(gw, fe1, "mutual_tls"), [(-5.0, 100.0), (30.0, 130.0), (65.0, 160.0)]),
            # another series of the same hop and policy (another response code) adds up
            (hop(gw, fe1, "mutual_tls", response_code="500"), [(-5.0, 1.0), (65.0, 3.0)]),
            # a counter reset: 10, 40, 5, 25 counts 30 + 5 + 20 = 55
            (
                hop(fe1, "cartservice-v1", "mutual_tls"),
                [(-5.0, 10.0), (20.0, 40.0), (40.0, 5.0), (65.0, 25.0)],
            ),
            # born during the run (first scraped at 30 s): its first value counts too
            (hop(fe1, "currencyservice-v1", "none"), [(30.0, 7.0), (65.0, 9.0)]),
            (hop(fe1, "currencyservice-v1", "mutual_tls"), [(-5.0, 0.0), (65.0, 40.0)]),
            # the caller's side of the same requests: its policy is unknown, and not counted
            (hop(gw, fe1, "unknown", reporter="source"), [(-5.0, 0.0), (65.0, 999.0)]),
        ]  # fmt: skip
    )
    transport, notes = transport_security(RUN, metrics)
    assert transport["source_of_hops"] == HOPS_SOURCE
    assert transport["hops"] == [
        {"source": fe1, "destination": "cartservice-v1", "requests": {"mutual_tls": 55}},
        {"source": fe1, "destination": "currencyservice-v1",
         "requests": {"mutual_tls": 40, "none": 9}},
        {"source": gw, "destination": fe1, "requests": {"mutual_tls": 62}},
    ]  # fmt: skip
    assert notes == ["plain text between frontend-v1 and currencyservice-v1: 9 requests (of 49)"]


def test_a_mesh_without_mtls_is_one_note_and_no_metrics_none() -> None:
    metrics = samples(
        [
            (hop("a", "b", "none"), [(-5.0, 0.0), (65.0, 4.0)]),
            (hop("b", "c", "none"), [(-5.0, 0.0), (65.0, 6.0)]),
        ]
    )
    transport, notes = transport_security(RUN, metrics)
    assert [h["requests"] for h in transport["hops"]] == [{"none": 4}, {"none": 6}]
    assert notes == ["no mutual TLS on any hop: 10 requests in plain text over 2 hops"]
    # metrics without any destination-reported series: the hops are unknown, and said so
    only_source = samples([(hop("a", "b", "unknown", reporter="source"), [(0.0, 1.0)])])
    assert hop_requests(only_source) is None
    transport, notes = transport_security(RUN, only_source)
    assert transport["source_of_hops"] is None and transport["hops"] == []
    assert notes == [f"the metrics hold no {HOPS_SOURCE}: the hops' security is unknown"]
    assert hop_requests(EMPTY) is None


def test_broken_labels_are_a_note_not_an_error() -> None:
    broken = pd.DataFrame(
        {"t": [T0_S], "metric": ["istio_requests_total"], "labels": ["{not json"], "value": [1.0]}
    )
    transport, notes = transport_security(RUN, broken)
    assert transport["source_of_hops"] is None
    assert len(notes) == 1 and notes[0].startswith("hop security left out: metrics: a labels")


def test_build_report_shows_the_section_and_writes_the_key(tmp_path: Path) -> None:
    synth = make_run(n_requests=400, seed=91, with_spans=False)
    started_s = synth.run["started_ns"] / 1e9  # type: ignore[operator]
    error = "certificate verify failed: <self-signed>"  # text from outside: escaped
    run = {
        **synth.run,
        **https_run(gateway=[replica("gw-0", 20)], failures=[{"error": error, "count": 3}]),
        "started_ns": synth.run["started_ns"],
        "ended_ns": synth.run["ended_ns"],
    }
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps(run))
    synth.requests.to_parquet(folder / "requests.parquet")
    metrics = samples(
        [
            (hop("istio-ingressgateway", "frontend-v1", "mutual_tls"), [(-1, 0.0), (1e4, 300.0)]),
            (hop("frontend-v1", "adservice-v1", "none"), [(-1, 0.0), (1e4, 5.0)]),
        ]
    ).assign(t=lambda f: f["t"] - T0_S + started_s)
    metrics.to_parquet(folder / "metrics.parquet")
    result = build_report(folder, progress=False)
    on_disk = json.loads(result.summary_path.read_text())
    transport = on_disk["transport"]
    assert transport["client"]["agreement"]["agree"] is True
    assert transport["hops"][1]["requests"] == {"mutual_tls": 300}
    assert f"3 TLS handshakes failed: {error}" in on_disk["notes"]
    assert "plain text between frontend-v1 and adservice-v1: 5 requests (of 5)" in on_disk["notes"]
    page = result.html_path.read_text()
    assert '<section id="transport"><h2>Transport security</h2>' in page
    assert '<a href="#transport">' in page
    assert "SNI frontend.example.com" in page and "&lt;self-signed&gt;" in page
    assert "the client counted 20, the gateway&#x27;s listeners 20: they agree" in page
    assert "<self-signed>" not in page


@pytest.mark.parametrize("verify", ["insecure", "system"])
def test_the_section_says_how_the_certificate_was_checked(verify: str) -> None:
    from analysis.html import render_html

    transport, _ = transport_security(https_run(verify=verify, ca_bundle=None), EMPTY)
    page = html.unescape(render_html({"transport": transport}, {}))
    said = {"insecure": "certificate NOT checked (insecure)", "system": "the system's CAs"}
    assert said[verify] in page
    assert "no istio_requests_total reported by the destination" in page
