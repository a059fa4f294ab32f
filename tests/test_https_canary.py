"""HTTPS at the gateway, as users run it: `locust -f scenarios/canary_https.py` on the embedded
mesh (a Gateway server with `tls.mode: SIMPLE` and `credentialName`, verified with the mesh's
own CA), and a host-bound HTTPS Gateway driven as a cluster with `--ca-bundle`, the SNI taken
from the route's host. What the clients negotiated is checked against the gateway's own count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meshcore.exitcodes import ExitCode
from meshsim.mesh import Mesh
from meshsim.tls import Certificates
from tests.support import REPO, canary_against, local_processes, mesh_up

pytestmark = pytest.mark.integration

SCENARIO = REPO / "scenarios" / "canary_https.py"
# All on one version per step: every stamped step's split is exact, so its verdict is 'pass'
# whatever the handful of requests a 4 s step gathers (a 50/50 step of ~100 would not be).
PLAN = """users: 10
steps:
  - {weights: {v1: 100, v2: 0}, hold_s: 4}
  - {weights: {v1: 0, v2: 100}, hold_s: 4}
"""
HOST_BOUND = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: frontend-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 443, name: https, protocol: HTTPS}
      hosts: [frontend.example.com]
      tls: {mode: SIMPLE, credentialName: frontend-cert}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: frontend, namespace: default}
spec:
  host: frontend
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: frontend, namespace: default}
spec:
  hosts: [frontend.example.com]
  gateways: [frontend-gateway]
  http:
    - name: primary
      route:
        - {destination: {host: frontend, subset: v1}, weight: 100}
        - {destination: {host: frontend, subset: v2}, weight: 0}
"""


def run(tmp_path: Path, *options: str, scenario: Path = SCENARIO) -> tuple[int, str, Path]:
    (tmp_path / "plan.yaml").write_text(PLAN)
    cmd = [
        sys.executable, "-m", "locust", "-f", str(scenario), "--headless",
        "--plan", str(tmp_path / "plan.yaml"), "--results-dir", str(tmp_path / "results"),
        "--run-time", "40", *options,
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=150)
    folders = list((tmp_path / "results").iterdir()) if (tmp_path / "results").exists() else []
    return done.returncode, done.stderr, folders[0] if folders else tmp_path


def tls_of(folder: Path) -> dict[str, Any]:
    info = json.loads((folder / "run.json").read_text())
    assert info["target"].startswith("https://127.0.0.1:"), info["target"]
    tls: dict[str, Any] = info["tls"]
    return tls


def handshakes(tls: dict[str, Any]) -> int:
    return sum(h["count"] for h in tls["handshakes"])


def test_an_https_canary_on_the_embedded_mesh_passes_and_tells_what_was_negotiated(
    tmp_path: Path,
) -> None:
    code, err, folder = run(tmp_path)
    assert code == ExitCode.OK, err[-3000:]
    tls = tls_of(folder)
    assert tls["verify"] == "ca-bundle" and tls["ca_bundle"].endswith("tls/ca.crt"), tls
    assert tls["failures"] == [] and tls["server_name"] is None, tls
    # every connection the clients opened (10 users, and meshload's own probes) is one the
    # gateway's Envoy counted, with the same version and cipher
    (gateway,) = tls["gateway"]
    assert handshakes(tls) == gateway["handshakes"] >= 10, tls
    assert {h["version"] for h in tls["handshakes"]} == set(gateway["versions"]) == {"TLSv1.3"}
    assert {h["cipher"] for h in tls["handshakes"]} == set(gateway["ciphers"]), tls
    from analysis.report import build_report

    summary = build_report(folder, tolerance_pp=15.0, progress=False).summary
    assert [s["verdict"] for s in summary["split"]] == ["pass", "pass"], summary["split"]
    client = summary["transport"]["client"]
    assert client["scheme"] == "https" and client["verify"] == "ca-bundle", client
    assert client["agreement"]["agree"] is True, client
    hops = {(h["source"], h["destination"]): h["requests"] for h in summary["transport"]["hops"]}
    assert set(hops) and all(set(r) == {"mutual_tls"} for r in hops.values()), hops
    assert "TLSv1.3" in (folder / "report.html").read_text()


def test_a_gateway_signed_by_another_ca_fails_every_handshake_loudly(tmp_path: Path) -> None:
    other = Certificates(tmp_path / "other-ca")
    other.issue("x", ["frontend.example.com"])
    code, err, folder = run(tmp_path, "--ca-bundle", str(other.ca_file))
    assert code != ExitCode.OK, err[-3000:]
    tls = tls_of(folder)
    assert tls["handshakes"] == [] and tls["verify"] == "ca-bundle", tls
    (failure,) = tls["failures"]
    assert failure["error"].startswith("certificate verify failed: "), failure
    assert failure["count"] >= 10, failure
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"meshload: exit {code} ") and "TLS" in last, last


def test_insecure_skips_verification_and_says_so(tmp_path: Path) -> None:
    code, err, folder = run(tmp_path, "--insecure")
    assert code == ExitCode.OK, err[-3000:]
    tls = tls_of(folder)
    assert tls["verify"] == "insecure" and tls["ca_bundle"] is None and handshakes(tls) >= 10


def test_ca_bundle_and_insecure_together_is_one_line(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_text("")
    code, err, _ = run(tmp_path, "--ca-bundle", str(bundle), "--insecure")
    assert code == ExitCode.BAD_INPUT, err[-2000:]
    assert "--ca-bundle and --insecure: give one" in err and "Traceback" not in err, err[-2000:]


def test_a_host_bound_https_gateway_is_reached_by_its_sni_with_ca_bundle(tmp_path: Path) -> None:
    """As on a cluster: `--host https://ADDRESS --ca-bundle`, the Host (and so the SNI and the
    name the certificate must carry) derived from the VirtualService's host."""
    manifests = tmp_path / "https.yaml"
    manifests.write_text(HOST_BOUND)
    (tmp_path / "plan.yaml").write_text(PLAN)
    with Mesh(manifests=manifests, prometheus=False, tracing=False) as mesh:
        assert mesh.gateway is not None and mesh.gateway.https_url is not None
        ca = str(mesh.gateway.ca_file)
        cmd = canary_against(mesh, tmp_path / "plan.yaml", tmp_path / "results", "--run-time",
                             "40", "--ca-bundle", ca)  # fmt: skip
        cmd[cmd.index("--host") + 1] = mesh.gateway.https_url
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=150)
        assert done.returncode == ExitCode.OK, done.stderr[-3000:]
        (folder,) = (tmp_path / "results").iterdir()
        tls = tls_of(folder)
        assert tls["server_name"] == "frontend.example.com" and tls["failures"] == [], tls
        assert tls["gateway"] is None, "a cluster's gateway is not asked for its counts"
        (gateway,) = mesh.gateway.tls_stats()
        assert handshakes(tls) >= 10 and gateway["handshakes"] >= handshakes(tls), (tls, gateway)
        # without the SNI (an address only), Istio's host-bound server has no chain to offer
        import ssl
        import urllib.request

        context = ssl.create_default_context(cafile=ca)
        with pytest.raises(OSError):
            urllib.request.urlopen(mesh.gateway.https_url + "/", context=context, timeout=5)


def test_workers_handshakes_are_merged_and_agree_with_the_gateway(tmp_path: Path) -> None:
    """--processes 2: each worker counts its own connections and reports them to the master,
    which adds its probes'; the sum is what the gateway's Envoy counted."""
    code, err, folder = run(tmp_path, *local_processes(2))
    assert code == ExitCode.OK, err[-3000:]
    tls = tls_of(folder)
    (gateway,) = tls["gateway"]
    assert handshakes(tls) == gateway["handshakes"] >= 10, tls


def test_mesh_up_prints_the_https_address_and_its_ca_and_preflight_probes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from meshload.cli import main

    manifests = REPO / "scenarios" / "manifests" / "canary-https.yaml"
    with mesh_up("--manifests", str(manifests), state_dir=tmp_path) as (_, urls, _env):
        assert list(urls)[:3] == ["gateway", "gateway-https", "ca-bundle"], urls
        import ssl
        import urllib.request

        context = ssl.create_default_context(cafile=urls["ca-bundle"])
        with urllib.request.urlopen(urls["gateway-https"] + "/", context=context) as answer:
            assert answer.status == 200
        argv = ["preflight", "--kubeconfig", urls["kubeconfig"],
                "--gateway-url", urls["gateway-https"]]  # fmt: skip
        trusted = main([*argv, "--ca-bundle", urls["ca-bundle"]])
        said = capsys.readouterr().out.splitlines()
        untrusted = main(argv)
        refused = capsys.readouterr().out.splitlines()
    assert trusted == 0, said
    assert any(
        line.startswith(f"✓ gateway at {urls['gateway-https']} answers 200") for line in said
    )
    assert untrusted == 1, refused
    (probe,) = [line for line in refused if line.startswith("✗ gateway at")]
    assert "CERTIFICATE_VERIFY_FAILED" in probe and "fix: pass --ca-bundle" in probe, probe
