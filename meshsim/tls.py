"""TLS at the embedded gateway: the servers that terminate it, the run's own certificate
authority, and the HTTPS listener each gateway replica serves them on.

    servers = tls_servers(resources, warnings)   # Istio SIMPLE servers, Gateway API HTTPS
    chains = Certificates(folder).chains(servers)  # ca.crt, and one certificate per credential
    listener = https_listener(hcm, chains)       # the replica's second listener

An Istio Gateway server with `tls.mode: SIMPLE` names a Kubernetes Secret (`credentialName`)
that holds its certificate; a Gateway API listener with `protocol: HTTPS` names it in
`tls.certificateRefs`. The embedded mesh has no Secrets to read: it makes a certificate
authority for the mesh (`<mesh folder>/tls/ca.crt`, printed by `meshload mesh up`) and, per
credential, a certificate for the server's hosts, 127.0.0.1 and localhost, signed by it. A
client that trusts `ca.crt` verifies the gateway as it would verify a cluster's.

As Istio programs a gateway, each server is a filter chain matched by the SNI of its hosts; a
server for `*` matches any SNI and none. A client that sends no SNI (one connecting to an
address) reaches only a `*` server.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshcore.files import write_atomic
from meshsim.resources import GATEWAY_API_GROUP, Resource

TLS_SOCKET = "envoy.transport_sockets.tls"
DOWNSTREAM_TLS_TYPE = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
)
LISTENER_NAME = "ingress-https"
STAT_PREFIX = "https"  # Envoy's listener stats: listener.https.ssl.*
# Istio's TLS protocol names -> Envoy's.
_PROTOCOLS = {"TLSV1_0": "TLSv1_0", "TLSV1_1": "TLSv1_1", "TLSV1_2": "TLSv1_2",
              "TLSV1_3": "TLSv1_3", "TLS_AUTO": "TLS_AUTO"}  # fmt: skip
_NOT_TERMINATED = ("PASSTHROUGH", "AUTO_PASSTHROUGH", "MUTUAL", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL")
_VALID_DAYS = 30


@dataclass(frozen=True)
class TlsServer:
    """One server that terminates TLS at the gateway."""

    gateway: str  # "default/frontend-gateway"
    port: int
    hosts: tuple[str, ...]
    credential: str
    min_version: str | None = None
    max_version: str | None = None
    cipher_suites: tuple[str, ...] = ()

    @property
    def server_names(self) -> tuple[str, ...]:
        """The SNI names its chain matches: none for a `*` server (it matches any)."""
        names = tuple(h.rpartition("/")[2] for h in self.hosts)
        return () if "*" in names else names

    def to_json(self) -> dict[str, Any]:
        return {"gateway": self.gateway, "port": self.port, "hosts": list(self.hosts),
                "credential": self.credential}  # fmt: skip


def tls_servers(resources: Sequence[Resource], warnings: list[str]) -> list[TlsServer]:
    """The servers of every Gateway that terminate TLS; what the mesh cannot serve is warned."""
    out: list[TlsServer] = []
    for r in resources:
        if r.kind != "Gateway":
            continue
        if r.group == GATEWAY_API_GROUP:
            out.extend(_gateway_api_servers(r, warnings))
        else:
            out.extend(_istio_servers(r, warnings))
    return out


def _istio_servers(gw: Resource, warnings: list[str]) -> list[TlsServer]:
    out = []
    for i, server in enumerate(gw.spec.get("servers") or []):
        tls = server.get("tls") or {}
        where = f"{gw.source}: {gw.ref}: spec.servers[{i}].tls"
        mode = str(tls.get("mode") or "")
        if tls.get("httpsRedirect"):
            warnings.append(f"{where}.httpsRedirect is not simulated: plain HTTP is served")
        if not mode:
            continue
        if mode in _NOT_TERMINATED:
            warnings.append(
                f"{where}.mode {mode} is not simulated: the embedded gateway terminates SIMPLE "
                "TLS only; this server is not served"
            )
            continue
        if not tls.get("credentialName"):
            warnings.append(f"{where}: SIMPLE without credentialName is not served; name one")
            continue
        port = (server.get("port") or {}).get("number") or 443
        out.append(
            TlsServer(
                gateway=f"{gw.namespace}/{gw.name}",
                port=int(port),
                hosts=tuple(str(h) for h in server.get("hosts") or ["*"]),
                credential=str(tls["credentialName"]),
                min_version=_PROTOCOLS.get(str(tls.get("minProtocolVersion") or "")),
                max_version=_PROTOCOLS.get(str(tls.get("maxProtocolVersion") or "")),
                cipher_suites=tuple(str(c) for c in tls.get("cipherSuites") or ()),
            )
        )
    return out


def _gateway_api_servers(gw: Resource, warnings: list[str]) -> list[TlsServer]:
    out = []
    for i, listener in enumerate(gw.spec.get("listeners") or []):
        if listener.get("protocol") != "HTTPS":
            continue
        tls = listener.get("tls") or {}
        where = f"{gw.source}: {gw.ref}: spec.listeners[{i}].tls"
        refs = tls.get("certificateRefs") or []
        if (tls.get("mode") or "Terminate") != "Terminate" or not refs:
            warnings.append(f"{where}: only Terminate with a certificateRef is served")
            continue
        hostname = listener.get("hostname")
        out.append(
            TlsServer(
                gateway=f"{gw.namespace}/{gw.name}",
                port=int(listener.get("port") or 443),
                hosts=(str(hostname),) if hostname else ("*",),
                credential=str(refs[0].get("name")),
            )
        )
    return out


@dataclass(frozen=True)
class Chain:
    """One filter chain of the HTTPS listener: a server and its certificate files."""

    server: TlsServer
    cert: Path
    key: Path


class Certificates:
    """The mesh's certificate authority in `folder` (made on first use) and the certificates
    it signs, one per credential."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca_file = folder / "ca.crt"

    def chains(self, servers: Sequence[TlsServer]) -> list[Chain]:
        """One chain per distinct SNI match; a credential's certificate names every host of
        the servers that use it."""
        hosts: dict[str, set[str]] = {}
        for s in servers:
            hosts.setdefault(s.credential, set()).update(n for n in s.server_names)
        files = {c: self.issue(c, sorted(h)) for c, h in hosts.items()}
        chains: dict[tuple[str, ...], Chain] = {}
        for s in servers:
            cert, key = files[s.credential]
            chains.setdefault(tuple(sorted(s.server_names)), Chain(s, cert, key))
        return list(chains.values())

    def issue(self, credential: str, hosts: Sequence[str]) -> tuple[Path, Path]:
        """`<credential>.crt` and `.key` for `hosts`, 127.0.0.1 and localhost."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        ca_key, ca_cert = self._authority()
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts if h != "localhost"]
        names += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "*")])
        cert = (
            _builder(subject, ca_cert.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in credential)
        return self._write(safe, cert, key)

    def _authority(self) -> tuple[Any, Any]:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key_file = self.folder / "ca.key"
        if self.ca_file.exists() and key_file.exists():
            ca_key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
            return ca_key, x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshload embedded mesh CA")])
        cert = (
            _builder(name, name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            .sign(key, hashes.SHA256())
        )
        self._write("ca", cert, key)
        return key, cert

    def _write(self, stem: str, cert: Any, key: Any) -> tuple[Path, Path]:
        from cryptography.hazmat.primitives import serialization

        self.folder.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = self.folder / f"{stem}.crt", self.folder / f"{stem}.key"
        write_atomic(cert_file, cert.public_bytes(serialization.Encoding.PEM).decode())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(key_file, pem, mode=0o600)
        return cert_file, key_file


def _builder(subject: Any, issuer: Any, public_key: Any) -> Any:
    from cryptography import x509

    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
    )


def https_listener(hcm: dict[str, Any], chains: Sequence[Chain], port: int = 0) -> dict[str, Any]:
    """The replica's HTTPS listener on 127.0.0.1:`port`: one filter chain per chain, each
    terminating TLS in front of the same HTTP connection manager as the plain listener."""
    filter_chains = []
    for chain in chains:
        params: dict[str, Any] = {}
        s = chain.server
        if s.min_version:
            params["tls_minimum_protocol_version"] = s.min_version
        if s.max_version:
            params["tls_maximum_protocol_version"] = s.max_version
        if s.cipher_suites:
            params["cipher_suites"] = list(s.cipher_suites)
        context: dict[str, Any] = {
            "@type": DOWNSTREAM_TLS_TYPE,
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": str(chain.cert)},
                        "private_key": {"filename": str(chain.key)},
                    }
                ],
                **({"tls_params": params} if params else {}),
            },
        }
        entry: dict[str, Any] = {
            "filters": [
                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
            ],  # fmt: skip
            "transport_socket": {"name": TLS_SOCKET, "typed_config": context},
        }
        if s.server_names:
            entry["filter_chain_match"] = {"server_names": list(s.server_names)}
        filter_chains.append(entry)
    return {
        "name": LISTENER_NAME,
        "stat_prefix": STAT_PREFIX,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "listener_filters": [
            {
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": {
                    "@type": "type.googleapis.com/"
                    "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
                },
            }
        ],
        "filter_chains": filter_chains,
    }


def listener_stats(stats: dict[str, str]) -> dict[str, Any]:
    """Envoy's `listener.https.ssl.*` counters (`EnvoyAdmin.stats`) as run.json's gateway
    entry: handshakes, and counts per TLS version and per cipher."""
    prefix = f"listener.{STAT_PREFIX}.ssl."
    out: dict[str, Any] = {"handshakes": 0, "versions": {}, "ciphers": {}}
    for name, value in stats.items():
        if not name.startswith(prefix) or not value.isdigit() or int(value) == 0:
            continue
        rest = name[len(prefix) :]
        if rest == "handshake":
            out["handshakes"] = int(value)
        elif rest.startswith("versions."):
            out["versions"][rest.removeprefix("versions.")] = int(value)
        elif rest.startswith("ciphers."):
            out["ciphers"][rest.removeprefix("ciphers.")] = int(value)
    return out
