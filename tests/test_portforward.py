"""`meshload port-forward`: Service -> Ready pod -> container port against the embedded API;
byte pumping through the DirectDialer twin; the command's output, refusals and Ctrl-C.

The kubernetes client's pods/portforward websocket itself cannot be exercised here (the
embedded API serves no upgrade); the CLI test shows it failing cleanly, one warning line.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadgen.clusterread import KubeReader
from loadgen.portforward import DirectDialer, Forward, Listener, open_forwards, resolve
from meshcore.errors import BackendError, ConfigError
from meshcore.kube.client import Kube
from meshload.cli import main
from meshsim.cluster_objects import READY, core_objects
from meshsim.kubeapi.kubeconfig import write_kubeconfig
from tests.kubeapi_thread import ThreadedServer, serve_in_thread

REPO = Path(__file__).resolve().parent.parent
GATEWAY = Forward("gateway", "istio-system", "istio-ingressgateway", 80, ("http2", "http"), 0)
JAEGER = Forward("jaeger", "istio-system", "tracing", 16686, ("http-query",), 0, required=False)
PROMETHEUS = Forward("prometheus", "istio-system", "prometheus", 9090, ("http",), 0, False, "hint")


def pod(name: str, app: str, ready: bool, ports: list[dict[str, Any]]) -> dict[str, Any]:
    conditions = READY if ready else [{"type": "Ready", "status": "False"}]
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "istio-system", "labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": app, "ports": ports}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": conditions},
    }


def service(name: str, app: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": "Service",
        "metadata": {"name": name, "namespace": "istio-system"},
        "spec": {"type": "ClusterIP", "selector": {"app": app}, "ports": ports},
    }


def addons() -> list[dict[str, Any]]:
    """Jaeger and Prometheus as Istio's samples/addons deploy them."""
    return [
        service("tracing", "jaeger", [{"name": "http-query", "port": 80, "targetPort": 16686}]),
        pod("jaeger-a", "jaeger", False, [{"containerPort": 16686}]),
        pod("jaeger-b", "jaeger", True, [{"containerPort": 16686}]),
        service("prometheus", "prometheus", [{"name": "http", "port": 9090, "targetPort": "web"}]),
        pod("prometheus-0", "prometheus", True, [{"name": "web", "containerPort": 9091}]),
    ]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[ThreadedServer, Path]]:
    core = core_objects([], gateway_port=8443) + addons()
    with serve_in_thread(core_objects=core) as server:
        yield server, write_kubeconfig(tmp_path / "kubeconfig", server.url)


@pytest.mark.integration
def test_resolution_follows_service_selector_ready_pod_and_port(
    api: tuple[ThreadedServer, Path],
) -> None:
    _, kubeconfig = api
    reader = KubeReader(Kube.connect(kubeconfig))
    gw = resolve(reader, GATEWAY)
    assert (gw.pod, gw.pod_port) == ("istio-ingressgateway-0", 8443)  # by port name http2
    jaeger = resolve(reader, JAEGER)
    assert (jaeger.pod, jaeger.pod_port) == ("jaeger-b", 16686)  # jaeger-a is not Ready
    prom = resolve(reader, PROMETHEUS)
    assert (prom.pod, prom.pod_port) == ("prometheus-0", 9091)  # named targetPort
    with pytest.raises(ConfigError, match=r"Service istio-system/kiali not found; hint"):
        resolve(reader, Forward("kiali", "istio-system", "kiali", 20001, (), 0, False, "hint"))
    reader.kube.close()


@pytest.mark.integration
def test_no_ready_pod_and_optional_forwards(tmp_path: Path) -> None:
    core = core_objects([], gateway_port=8443) + [
        service("tracing", "jaeger", [{"name": "http-query", "port": 80, "targetPort": 16686}]),
        pod("jaeger-a", "jaeger", False, [{"containerPort": 16686}]),
    ]
    with serve_in_thread(core_objects=core) as server:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        reader = KubeReader(Kube.connect(kubeconfig))
        with pytest.raises(BackendError, match=r"no Ready pod behind Service istio-system/tracing"):
            resolve(reader, JAEGER)
        dialer = DirectDialer(lambda ns, pod, port: ("127.0.0.1", port))
        listeners, skipped = open_forwards(reader, dialer, [GATEWAY, JAEGER, PROMETHEUS])
        try:
            assert [lst.target.forward.name for lst in listeners] == ["gateway"]
            assert [s.split(":")[0] for s in skipped] == ["jaeger", "prometheus"]
            assert (
                "prometheus: not forwarded: Service istio-system/prometheus not found"
                in (skipped[1])
            )
        finally:
            for lst in listeners:
                lst.close()
        reader.kube.close()


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP server that sends back what it reads, then closes after the client's EOF."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.mark.integration
def test_bytes_pass_unchanged_both_ways(echo_port: int) -> None:
    dialed: list[tuple[str, str, int]] = []

    def address(ns: str, pod: str, port: int) -> tuple[str, int]:
        dialed.append((ns, pod, port))
        return "127.0.0.1", echo_port

    from loadgen.portforward import Resolved

    listener = Listener(Resolved(GATEWAY, "istio-ingressgateway-0", 8080), DirectDialer(address))
    payload = random.Random(7).randbytes(3 * 1024 * 1024 + 17)
    try:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as conn:

            def send() -> None:
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)

            sender = threading.Thread(target=send)
            sender.start()
            got = bytearray()
            while chunk := conn.recv(65536):
                got.extend(chunk)
            sender.join()
    finally:
        listener.close()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert dialed == [("istio-system", "istio-ingressgateway-0", 8080)]


@pytest.mark.integration
def test_a_failing_dial_closes_the_connection_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from loadgen.portforward import Resolved

    closed = socket.create_server(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    listener = Listener(
        Resolved(GATEWAY, "gw-0", 8080), DirectDialer(lambda *a: ("127.0.0.1", dead_port))
    )
    try:
        with caplog.at_level(logging.WARNING, logger="loadgen.portforward"):
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", listener.port), timeout=10) as conn:
                    assert conn.recv(1) == b""
            time.sleep(0.1)
    finally:
        listener.close()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "cannot reach pod istio-system/gw-0 port 8080" in warnings[0]


@pytest.mark.integration
def test_forwarded_gateway_of_the_embedded_mesh_serves_the_canary() -> None:
    from meshsim.mesh import Mesh

    with Mesh(prometheus=False) as mesh:
        reader = KubeReader(Kube.connect(mesh.kubeconfig))
        # The embedded mesh's pods all listen on 127.0.0.1: dialing the pod port directly
        # stands in for the API server's tunnel.
        dialer = DirectDialer(lambda ns, pod, port: ("127.0.0.1", port))
        [listener], skipped = open_forwards(reader, dialer, [GATEWAY, JAEGER])
        try:
            assert listener.target.pod_port == int(mesh.gateway_url.rsplit(":", 1)[1])
            assert skipped and skipped[0].startswith("jaeger: not forwarded")
            versions = []
            for _ in range(40):
                with urllib.request.urlopen(f"{listener.url}/_healthz", timeout=10) as answer:
                    assert answer.status == 200
                    versions.append(answer.headers["x-version"])
        finally:
            listener.close()
            reader.kube.close()
    assert versions == ["v1"] * 40  # the default canary sends 100 % to v1


@pytest.mark.integration
def test_cli_refusals_are_one_line(
    api: tuple[ThreadedServer, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, kubeconfig = api
    busy = socket.create_server(("127.0.0.1", 0))
    try:
        argv = ["port-forward", "--kubeconfig", str(kubeconfig)]
        assert main([*argv, "--gateway-port", str(busy.getsockname()[1])]) == 2
        assert main([*argv, "-n", "elsewhere"]) == 2
    finally:
        busy.close()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert "gateway: cannot listen on 127.0.0.1:" in err[0]
    assert "Service elsewhere/istio-ingressgateway not found; istioctl install" in err[1]


@pytest.mark.integration
def test_cli_prints_urls_and_stops_on_ctrl_c(api: tuple[ThreadedServer, Path]) -> None:
    _, kubeconfig = api
    argv = [sys.executable, "-m", "meshload.cli", "port-forward", "--kubeconfig", str(kubeconfig)]
    argv += ["--gateway-port", "0", "--jaeger-port", "0", "--prometheus-port", "0"]
    # PYTHONFAULTHANDLER: a process that does not stop is made to print every thread's stack
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
    with subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline().rstrip("\n") for _ in range(5)]
            urls = dict(line.split()[:2] for line in lines[:3])
            assert set(urls) == {"gateway", "jaeger", "prometheus"}
            assert lines[3] == (
                f"run: locust -f scenarios/canary.py --mesh kubernetes --host {urls['gateway']} "
                f"--jaeger-url {urls['jaeger']} --prometheus-url {urls['prometheus']}"
            )
            assert lines[4] == "forwarding; Ctrl-C stops"
            port = int(urls["gateway"].rsplit(":", 1)[1])
            # The embedded API refuses the websocket upgrade: the connection closes, one warning.
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                assert conn.recv(1) == b""
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGABRT)
                _, err = proc.communicate(timeout=10)
                pytest.fail(f"port-forward still ran 20 s after Ctrl-C; its threads:\n{err}")
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0
    assert "gateway: cannot reach pod istio-system/istio-ingressgateway-0 port 8443" in err
    assert "Traceback" not in err
