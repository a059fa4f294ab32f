"""TLS pieces on their own: which Gateway servers terminate TLS, the mesh's CA and the
certificates it signs (checked by a real handshake), Envoy's listener counters, and the
client-side counts merged across processes."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from loadgen import client_tls
from meshsim.resources import GATEWAY_API_GROUP, Resource
from meshsim.tls import Certificates, TlsServer, listener_stats, tls_servers


def istio_gateway(*servers: dict) -> Resource:
    return Resource("Gateway", "gw", "default", {"servers": list(servers)}, source="gw.yaml")


def test_simple_servers_terminate_tls_and_the_others_are_named() -> None:
    warnings: list[str] = []
    gw = istio_gateway(
        {"port": {"number": 80}, "hosts": ["*"], "tls": {"httpsRedirect": True}},
        {"port": {"number": 443, "protocol": "HTTPS"}, "hosts": ["default/shop.example.com"],
         "tls": {"mode": "SIMPLE", "credentialName": "shop", "minProtocolVersion": "TLSV1_3"}},
        {"port": {"number": 443}, "hosts": ["a.example.com"], "tls": {"mode": "PASSTHROUGH"}},
        {"port": {"number": 443}, "hosts": ["b.example.com"], "tls": {"mode": "SIMPLE"}},
    )  # fmt: skip
    api = Resource(
        "Gateway", "web", "default",
        {"listeners": [{"name": "https", "port": 8443, "protocol": "HTTPS",
                        "hostname": "web.example.com",
                        "tls": {"certificateRefs": [{"name": "web-cert"}]}},
                       {"name": "http", "port": 80, "protocol": "HTTP"}]},
        api_version=f"{GATEWAY_API_GROUP}/v1",
    )  # fmt: skip
    servers = tls_servers([gw, api], warnings)
    assert [(s.gateway, s.port, s.credential, s.server_names) for s in servers] == [
        ("default/gw", 443, "shop", ("shop.example.com",)),
        ("default/web", 8443, "web-cert", ("web.example.com",)),
    ]
    assert servers[0].min_version == "TLSv1_3"
    assert len(warnings) == 3, warnings
    assert "httpsRedirect is not simulated" in warnings[0]
    assert "mode PASSTHROUGH is not simulated" in warnings[1]
    assert "SIMPLE without credentialName" in warnings[2]


def test_a_star_server_matches_any_sni() -> None:
    assert TlsServer("default/gw", 443, ("*",), "c").server_names == ()


def exchange(settings: client_tls.ClientTls, cert: Path, key: Path) -> bytes:
    """Two bytes from a server of `cert` through a TLS connection of `settings` (its handshake
    counted), over a socket pair: no port is bound."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    ours, theirs = socket.socketpair()

    def serve() -> None:
        try:
            with server_context.wrap_socket(theirs, server_side=True) as tls:
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError):
            theirs.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_tls.make_context(settings).wrap_socket(ours) as tls:
            return tls.recv(2)
    finally:
        ours.close()
        thread.join(5)


@pytest.mark.parametrize("name", ["shop.example.com", "127.0.0.1", "localhost"])
def test_a_certificate_of_the_mesh_ca_verifies_for_its_hosts_and_the_loopback(
    tmp_path: Path, name: str
) -> None:
    certs = Certificates(tmp_path / "tls")
    cert, key = certs.issue("shop-cert", ["shop.example.com"])
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    settings = client_tls.ClientTls(ca_bundle=str(certs.ca_file), server_name=name)
    client_tls.reset()
    assert exchange(settings, cert, key) == b"ok"
    (shake,) = client_tls.counts()["handshakes"]
    assert shake["version"] == "TLSv1.3" and shake["count"] == 1, shake


def test_another_name_or_another_ca_fails_and_is_counted(tmp_path: Path) -> None:
    certs = Certificates(tmp_path / "tls")
    cert, key = certs.issue("shop-cert", ["shop.example.com"])
    other = Certificates(tmp_path / "other")
    other.issue("x", ["x"])
    client_tls.reset()
    for settings in (
        client_tls.ClientTls(ca_bundle=str(certs.ca_file), server_name="admin.example.com"),
        client_tls.ClientTls(ca_bundle=str(other.ca_file), server_name="shop.example.com"),
    ):
        with pytest.raises(ssl.SSLError):
            exchange(settings, cert, key)
    counts = client_tls.counts()
    assert counts["handshakes"] == []
    errors = sorted(f["error"] for f in counts["failures"])
    assert len(errors) == 2 and all(e.startswith("certificate verify failed: ") for e in errors)
    assert any("Hostname mismatch" in e for e in errors), errors
    entry = {**counts}
    assert "none succeeded" in (client_tls.failed(entry) or "")
    assert client_tls.failed({**counts, "handshakes": [{"count": 5}]}) is None  # only logged


def test_the_ca_survives_a_second_issue_and_insecure_verifies_nothing(tmp_path: Path) -> None:
    certs = Certificates(tmp_path / "tls")
    certs.issue("a", ["a.example.com"])
    first = certs.ca_file.read_bytes()
    cert, key = certs.issue("b", ["b.example.com"])
    assert certs.ca_file.read_bytes() == first  # one CA signs every credential of the mesh
    assert exchange(client_tls.ClientTls(insecure=True), cert, key) == b"ok"
    assert client_tls.ClientTls(insecure=True).verify == "insecure"
    assert client_tls.ClientTls(ca_pem="x").verify == "ca-bundle"
    assert client_tls.ClientTls().verify == "system"


def test_envoy_listener_counters_and_the_delta_over_a_run() -> None:
    stats = {
        "listener.https.ssl.handshake": "12",
        "listener.https.ssl.versions.TLSv1.3": "12",
        "listener.https.ssl.versions.TLSv1.2": "0",
        "listener.https.ssl.ciphers.TLS_AES_256_GCM_SHA384": "12",
        "listener.https.ssl.connection_error": "2",
    }
    after = {"replica": "p0", **listener_stats(stats)}
    assert after == {"replica": "p0", "handshakes": 12, "versions": {"TLSv1.3": 12},
                     "ciphers": {"TLS_AES_256_GCM_SHA384": 12}}  # fmt: skip
    before = [{"replica": "p0", "handshakes": 4, "versions": {"TLSv1.3": 4},
               "ciphers": {"TLS_AES_256_GCM_SHA384": 4}}]  # fmt: skip
    (delta,) = client_tls.gateway_delta(before, [after])
    assert delta["handshakes"] == 8 and delta["versions"] == {"TLSv1.3": 8}, delta


def test_counts_of_several_processes_merge() -> None:
    one = {"handshakes": [{"version": "TLSv1.3", "cipher": "C", "bits": 256, "count": 3}],
           "failures": [{"error": "e", "count": 1}]}  # fmt: skip
    two = {"handshakes": [{"version": "TLSv1.3", "cipher": "C", "bits": 256, "count": 4}],
           "failures": []}  # fmt: skip
    merged = client_tls.merged([one, two])
    assert merged["handshakes"] == [{"version": "TLSv1.3", "cipher": "C", "bits": 256, "count": 7}]
    assert merged["failures"] == [{"error": "e", "count": 1}]
