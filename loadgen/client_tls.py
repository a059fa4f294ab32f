"""TLS as meshload's clients speak it to an `https://` gateway, and what they negotiated.

    client_tls.configure(ClientTls(ca_bundle="ca.crt", server_name="frontend.example.com"))
    user.insecure, user.ssl_context_factory = client_tls.for_users()   # Locust's FastHttpUser
    client_tls.probe_context()                                        # urllib's, for probes
    client_tls.counts()   # {"handshakes": [{version, cipher, bits, count}], "failures": [...]}

The gateway's certificate is verified against `--ca-bundle` (the embedded mesh's own CA by
default), else the system's trust store; `--insecure` verifies nothing. The SNI (and the name
the certificate must carry) is `--host-header` when given, as a browser sends the host it asks
for, so an Istio server bound to `frontend.example.com` is reached at 127.0.0.1 as in a cluster.

Every TLS connection this process opens is counted by what it negotiated (version, cipher) or
by why it failed: users' connections and meshload's own probes alike, so the sum over the
processes that sent load is what the gateway counted (`meshsim.tls.listener_stats`).

Import after Locust: with gevent's monkey patching, `ssl.SSLContext` is gevent's, which
geventhttpclient requires.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loadgen.options import TLS_FIX

log = logging.getLogger("meshload")
_lock = threading.Lock()
_handshakes: Counter[tuple[str, str, int]] = Counter()
_failures: Counter[str] = Counter()


@dataclass(frozen=True)
class ClientTls:
    """How this run's clients check the gateway: `verify` is "ca-bundle", "system" or
    "insecure"."""

    ca_bundle: str | None = None
    insecure: bool = False
    server_name: str | None = None
    ca_pem: str | None = None  # the bundle's text, as a worker on another machine gets it

    @property
    def verify(self) -> str:
        if self.insecure:
            return "insecure"
        return "ca-bundle" if self.ca_bundle or self.ca_pem else "system"


_settings = ClientTls()


_SOCKET: Any = ssl.SSLContext.sslsocket_class  # gevent's under monkey patching


class _CountingSocket(_SOCKET):
    """An SSL socket that counts its handshake's outcome."""

    def do_handshake(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().do_handshake(*args, **kwargs)
        except (ssl.SSLError, OSError) as e:
            checked = getattr(e, "verify_message", "")
            reason = f"certificate verify failed: {checked}" if checked else str(e)
            with _lock:
                _failures[reason] += 1
            raise
        cipher = self.cipher() or ("", "", 0)
        with _lock:
            _handshakes[(str(self.version()), str(cipher[0]), int(cipher[2] or 0))] += 1


class _Context(ssl.SSLContext):
    """An SSL context that sends `server_name` as SNI (and checks the certificate against it)
    whatever host the connection was opened to, and counts its handshakes."""

    sslsocket_class = _CountingSocket
    server_name: str | None = None

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> Any:
        if self.server_name:
            kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(sock, *args, **kwargs)


def configure(settings: ClientTls) -> None:
    """This process's TLS settings for the run."""
    global _settings
    _settings = settings


def make_context(settings: ClientTls | None = None, **_: Any) -> ssl.SSLContext:
    """A client context of `settings` (this process's by default); Locust calls it with
    `cafile` (its own bundle), which the settings decide instead."""
    s = settings or _settings
    context = _Context(ssl.PROTOCOL_TLS_CLIENT)
    context.server_name = s.server_name
    if s.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif s.ca_pem:
        context.load_verify_locations(cadata=s.ca_pem)
    elif s.ca_bundle:
        context.load_verify_locations(cafile=s.ca_bundle)
    else:
        context.load_default_certs()
    return context


def for_users() -> tuple[bool, Callable[..., ssl.SSLContext]]:
    """FastHttpUser's `insecure` and `ssl_context_factory` for this run."""
    return _settings.insecure, make_context


def probe_context(host: str | None = None) -> ssl.SSLContext:
    """urllib's context for meshload's own requests to the gateway, named by the `host`
    (Host header) they send when they send one, as the users' are."""
    return make_context(replace(_settings, server_name=host or _settings.server_name))


def counts() -> dict[str, list[dict[str, Any]]]:
    """What this process's TLS connections negotiated, and why the others failed."""
    with _lock:
        return _as_lists(_handshakes, _failures)


def reset() -> None:
    """Forget the counts (a new run in the same process)."""
    with _lock:
        _handshakes.clear()
        _failures.clear()


def merged(parts: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """`counts()` of several processes as one."""
    shakes: Counter[tuple[str, str, int]] = Counter()
    fails: Counter[str] = Counter()
    for part in parts:
        for h in part.get("handshakes") or []:
            key = (str(h["version"]), str(h["cipher"]), int(h.get("bits") or 0))
            shakes[key] += int(h["count"])
        for f in part.get("failures") or []:
            fails[str(f["error"])] += int(f["count"])
    return _as_lists(shakes, fails)


def _as_lists(
    shakes: Mapping[tuple[str, str, int], int], fails: Mapping[str, int]
) -> dict[str, list[dict[str, Any]]]:
    return {
        "handshakes": [
            {"version": v, "cipher": c, "bits": b, "count": n}
            for (v, c, b), n in sorted(shakes.items())
        ],
        "failures": [{"error": e, "count": n} for e, n in sorted(fails.items())],
    }


class RunTls:
    """One run's TLS, on the process that writes run.json: the settings its clients use, and
    the gateway's own counts at the start (the embedded mesh may have served earlier runs)."""

    def __init__(self, url: str, settings: ClientTls, mesh: Any = None) -> None:
        self.url, self.settings, self.mesh = url, settings, mesh
        configure(settings)
        reset()
        self.before = self._gateway() or []

    @classmethod
    def of(cls, url: str, options: Any, mesh: Any, server_name: str | None) -> RunTls | None:
        """For an `https://` target (None for plain HTTP): `--ca-bundle`, else the embedded
        mesh's CA; `--insecure`; the SNI `server_name`."""
        if not url.startswith("https://"):
            return None
        ca = getattr(options, "ca_bundle", "") or None
        insecure = bool(getattr(options, "insecure", False))
        gateway = getattr(mesh, "gateway", None)
        if ca is None and not insecure and gateway is not None and gateway.ca_file is not None:
            ca = str(gateway.ca_file)
        return cls(url, ClientTls(ca_bundle=ca, insecure=insecure, server_name=server_name), mesh)

    def ca_pem(self) -> str:
        """The CA bundle's text for the workers ("" when the system's store or none)."""
        path = self.settings.ca_bundle
        return Path(path).read_text(encoding="utf-8") if path and not self.settings.insecure else ""

    def _gateway(self) -> list[dict[str, Any]] | None:
        gateway = getattr(self.mesh, "gateway", None)
        try:
            return gateway.tls_stats() if gateway is not None else None
        except Exception:  # a gateway that died is reported elsewhere; its count is lost
            return None

    def entry(self, parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """run.json's `tls`: the settings, every process's counts merged, and (embedded mesh)
        the gateway's own count per replica over the run."""
        after = self._gateway()
        s = self.settings
        return {
            "url": self.url,
            "server_name": s.server_name,
            "verify": s.verify,
            "ca_bundle": s.ca_bundle,
            **merged(parts),
            "gateway": gateway_delta(self.before, after) if after is not None else None,
        }


def failed(entry: Mapping[str, Any]) -> str | None:
    """The run's failure when no TLS handshake succeeded (every request then failed for it);
    a share of failed handshakes is only logged (the requests' errors count it too)."""
    fails = entry.get("failures") or []
    bad = sum(int(f["count"]) for f in fails)
    good = sum(int(h["count"]) for h in entry.get("handshakes") or [])
    if not bad:
        return None
    why = f"{bad:,} of {bad + good:,} TLS handshakes failed ({fails[0]['error']})"
    if good:
        log.warning("%s", why)
        return None
    return f"{why}, none succeeded; {TLS_FIX}"


def gateway_delta(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The gateway's per-replica counts over a run: `after` less `before` (the mesh may have
    served earlier runs)."""
    old = {b["replica"]: b for b in before}
    out = []
    for a in after:
        b = old.get(a["replica"], {})

        def less(key: str, a: dict[str, Any] = a, b: dict[str, Any] = b) -> dict[str, int]:
            was = b.get(key) or {}
            return {k: n - int(was.get(k, 0)) for k, n in a[key].items() if n - was.get(k, 0)}

        out.append(
            {
                "replica": a["replica"],
                "handshakes": int(a["handshakes"]) - int(b.get("handshakes", 0)),
                "versions": less("versions"),
                "ciphers": less("ciphers"),
            }
        )
    return out
