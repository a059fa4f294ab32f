"""Forward the cluster's ingress gateway, Jaeger and Prometheus to ports on 127.0.0.1.

Two halves, kept apart so each is tested on its own:
- resolution (`resolve`): Service -> its port -> selector -> a Ready pod -> the container port,
  read through a `ClusterReader` (the Kubernetes API, or the embedded mesh's);
- byte pumping (`Listener`): each local TCP connection gets its own stream from a `Dialer`.
  `KubeDialer` opens one with `kubernetes.stream.portforward` (a websocket to the API server's
  pods/portforward), as `kubectl port-forward` does; `DirectDialer` connects TCP straight to an
  address, the unit-test twin (and what the embedded mesh's pods, all on 127.0.0.1, allow).
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from loadgen.clusterread import ClusterReader, is_ready, selector_text
from meshcore.errors import BackendError, ConfigError
from meshcore.kube.client import Kube

log = logging.getLogger(__name__)
CHUNK_BYTES = 64 * 1024
# How long an answer may still flow after the client stopped sending, when the stream to the pod
# cannot be half-closed; HTTP clients send their last byte before they read the answer anyway.
LINGER_S = 5.0


@dataclass(frozen=True)
class Forward:
    """One thing to forward: a Service port (by number, target port or name) to a local port."""

    name: str
    namespace: str
    service: str
    port: int
    port_names: tuple[str, ...]
    local_port: int
    required: bool = True
    install_hint: str = ""


@dataclass(frozen=True)
class Resolved:
    forward: Forward
    pod: str
    pod_port: int


def _pick_port(svc: dict[str, Any], fwd: Forward) -> dict[str, Any]:
    ports = list((svc.get("spec") or {}).get("ports") or [])
    for test in (
        lambda p: p.get("port") == fwd.port or p.get("targetPort") == fwd.port,
        lambda p: p.get("name") in fwd.port_names,
    ):
        found = next((p for p in ports if test(p)), None)
        if found is not None:
            return dict(found)
    if len(ports) == 1:
        return dict(ports[0])
    have = ", ".join(f"{p.get('name', '?')}:{p.get('port')}" for p in ports) or "none"
    raise ConfigError(
        f"Service {fwd.namespace}/{fwd.service} has no port {fwd.port} (it has {have}); "
        "check the addon's Service"
    )


def _container_port(pod: dict[str, Any], target: Any, fallback: int) -> int:
    if target is None:
        return fallback
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
    name = pod["metadata"]["name"]
    raise ConfigError(f"pod {name} has no container port named {target}; check its Service")


def resolve(reader: ClusterReader, fwd: Forward) -> Resolved:
    """The Ready pod (first by name) and container port that `fwd`'s Service sends to."""
    svc = reader.service(fwd.namespace, fwd.service)
    if svc is None:
        hint = f"; {fwd.install_hint}" if fwd.install_hint else ""
        raise ConfigError(f"Service {fwd.namespace}/{fwd.service} not found{hint}")
    port = _pick_port(svc, fwd)
    raw = (svc.get("spec") or {}).get("selector") or {}
    selector = {str(k): str(v) for k, v in raw.items()}
    if not selector:
        raise ConfigError(f"Service {fwd.namespace}/{fwd.service} has no selector; forward a pod")
    ready = sorted(
        (p for p in reader.pods(fwd.namespace, selector) if is_ready(p)),
        key=lambda p: str(p["metadata"]["name"]),
    )
    if not ready:
        raise BackendError(
            f"no Ready pod behind Service {fwd.namespace}/{fwd.service} "
            f"({selector_text(selector)}); check `kubectl get pods -n {fwd.namespace}`"
        )
    pod = ready[0]
    pod_port = _container_port(pod, port.get("targetPort"), int(port["port"]))
    return Resolved(fwd, str(pod["metadata"]["name"]), pod_port)


class Conn(Protocol):
    """The socket-like stream a Dialer returns."""

    def recv(self, size: int, /) -> bytes: ...
    def sendall(self, data: bytes, /) -> None: ...
    def close(self) -> None: ...


class Dialer(Protocol):
    def dial(self, namespace: str, pod: str, port: int) -> Conn: ...


class DirectDialer:
    """TCP straight to `address(namespace, pod, port)`; the unit-test twin of KubeDialer."""

    def __init__(self, address: Callable[[str, str, int], tuple[str, int]]) -> None:
        self.address = address

    def dial(self, namespace: str, pod: str, port: int) -> Conn:
        return socket.create_connection(self.address(namespace, pod, port), timeout=10)


class _KubeConn:
    def __init__(self, pf: Any, port: int) -> None:
        self._pf, self._port = pf, port
        self._sock = pf.socket(port)
        self._sock.settimeout(None)

    def recv(self, size: int, /) -> bytes:
        data: bytes = self._sock.recv(size)
        return data

    def sendall(self, data: bytes, /) -> None:
        self._sock.sendall(data)

    def close(self) -> None:
        error = self._pf.error(self._port)
        if error:
            log.warning("port-forward to port %d: %s", self._port, error)
        self._pf.close()


class KubeDialer:
    """One pods/portforward websocket per connection, through the kubernetes client."""

    def __init__(self, kube: Kube) -> None:
        self.core = kube.core
        # kubernetes.stream swaps the ApiClient's call_api while it opens a stream: one at a time.
        self._lock = threading.Lock()

    def dial(self, namespace: str, pod: str, port: int) -> Conn:
        from kubernetes.stream import portforward

        with self._lock:
            pf = portforward(
                self.core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port)
            )
        return _KubeConn(pf, port)


def _pump(src: Any, dst: Any) -> bool:
    """Copy until EOF, then half-close `dst` so the other direction can finish its answer.

    False when `dst` cannot half-close (a port-forward stream: closing its sending side ends
    the whole stream in the kubernetes client).
    """
    try:
        while data := src.recv(CHUNK_BYTES):
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except (OSError, AttributeError):
        return False
    return True


class Listener:
    """127.0.0.1:`local_port` (0: a free one) forwarded to one pod port until close()."""

    def __init__(self, target: Resolved, dialer: Dialer, local_port: int | None = None) -> None:
        self.target = target
        self.dialer = dialer
        wanted = target.forward.local_port if local_port is None else local_port
        try:
            self._sock = socket.create_server(("127.0.0.1", wanted))
        except OSError as exc:
            raise ConfigError(
                f"{target.forward.name}: cannot listen on 127.0.0.1:{wanted} ({exc.strerror}); "
                f"pick another local port (0 takes a free one)"
            ) from None
        self._sock.settimeout(0.2)  # so close() is noticed without a connection arriving
        self.port: int = self._sock.getsockname()[1]
        self._closed = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._accept, name=f"forward-{self.port}")
        self._thread.daemon = True
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        t = self.target
        try:
            remote = self.dialer.dial(t.forward.namespace, t.pod, t.pod_port)
        except Exception as exc:  # one failed stream must not end the forward
            if not self._warned:  # logged once: a client retrying would flood the terminal
                self._warned = True
                log.warning(
                    "%s: cannot reach pod %s/%s port %d (%s); is it still running?",
                    t.forward.name,
                    t.forward.namespace,
                    t.pod,
                    t.pod_port,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
            conn.close()
            return
        back = threading.Thread(target=_pump, args=(remote, conn), daemon=True)
        back.start()
        half_closed = _pump(conn, remote)
        back.join(timeout=None if half_closed else LINGER_S)
        remote.close()
        conn.close()

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        self._thread.join(timeout=2)


def open_forwards(
    reader: ClusterReader, dialer: Dialer, forwards: Sequence[Forward]
) -> tuple[list[Listener], list[str]]:
    """Listeners for what resolves; an optional forward that does not gives a skip message."""
    listeners: list[Listener] = []
    skipped: list[str] = []
    try:
        for fwd in forwards:
            try:
                target = resolve(reader, fwd)
            except (ConfigError, BackendError) as exc:
                if fwd.required:
                    raise
                skipped.append(f"{fwd.name}: not forwarded: {exc}")
                continue
            listeners.append(Listener(target, dialer))
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners, skipped
