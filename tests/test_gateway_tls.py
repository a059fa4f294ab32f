"""The embedded gateway's HTTPS listener, on real Envoys: each server's certificate chosen by
SNI as Istio programs a gateway, TLS passed through a balancer to every replica, the Gateway's
protocol bounds enforced, and Envoy's own handshake counts."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from meshsim.mesh import Mesh

pytestmark = pytest.mark.integration

TWO_HOSTS = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: frontend-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
    - port: {number: 443, name: https-shop, protocol: HTTPS}
      hosts: [shop.example.com]
      tls: {mode: SIMPLE, credentialName: shop-cert, minProtocolVersion: TLSV1_3}
    - port: {number: 443, name: https-admin, protocol: HTTPS}
      hosts: [admin.example.com]
      tls: {mode: SIMPLE, credentialName: admin-cert}
    - port: {number: 443, name: https-mtls, protocol: HTTPS}
      hosts: [mtls.example.com]
      tls: {mode: MUTUAL, credentialName: mtls-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: frontend, namespace: default}
spec:
  hosts: ["*"]
  gateways: [frontend-gateway]
  http:
    - route: [{destination: {host: frontend}}]
"""


def handshake(port: int, ca: str, name: str | None, *, tls12: bool = False) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=ca)
    if tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if name is None:
        context.check_hostname = False
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(sock, server_hostname=name)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_each_server_is_served_its_own_certificate_by_sni(tmp_path: Path) -> None:
    manifests = tmp_path / "gw.yaml"
    manifests.write_text(TWO_HOSTS)
    with Mesh(manifests=manifests, prometheus=False, tracing=False) as mesh:
        gw = mesh.gateway
        assert gw is not None and gw.https_url is not None and gw.ca_file is not None
        assert any("mode MUTUAL is not simulated" in w for w in mesh.warnings), mesh.warnings
        port, ca = port_of(gw.https_url), str(gw.ca_file)
        for name in ("shop.example.com", "admin.example.com"):
            with handshake(port, ca, name) as tls:  # verified against the name: its own cert
                names = [v for k, v in tls.getpeercert()["subjectAltName"] if k == "DNS"]
                assert names[0] == name, names
        # the shop server asks for TLS 1.3 at least; the admin one takes 1.2
        with pytest.raises(ssl.SSLError):
            handshake(port, ca, "shop.example.com", tls12=True)
        with handshake(port, ca, "admin.example.com", tls12=True) as tls:
            assert tls.version() == "TLSv1.2"
        # no server for this name (nor for none): Envoy has no chain to offer, as Istio
        for name in ("other.example.com", "mtls.example.com", None):
            with pytest.raises(OSError):
                handshake(port, ca, name)
        (stats,) = gw.tls_stats()
        assert stats["handshakes"] == 3 and stats["versions"] == {"TLSv1.3": 2, "TLSv1.2": 1}


def test_a_balancer_passes_tls_through_to_every_replica(tmp_path: Path) -> None:
    manifests = tmp_path / "gw.yaml"
    manifests.write_text(TWO_HOSTS.replace("hosts: [admin.example.com]", 'hosts: ["*"]'))
    with Mesh(manifests=manifests, gateway_replicas=2, prometheus=False, tracing=False) as mesh:
        gw = mesh.gateway
        assert gw is not None and gw.https_url is not None
        for _ in range(6):
            with handshake(port_of(gw.https_url), str(gw.ca_file), None) as tls:
                tls.sendall(b"GET /_healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert tls.recv(12).startswith(b"HTTP/1.1 200"), "served through the balancer"
        counts = [s["handshakes"] for s in gw.tls_stats()]
        assert counts == [3, 3], counts  # round robin per connection; TLS ends at a replica
