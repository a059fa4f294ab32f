"""`meshload preflight` against the embedded Kubernetes API with seeded bad states, and a Mesh."""

from __future__ import annotations

import contextlib
import copy
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loadgen.preflight import Target, check_http, check_ingress, run_checks
from meshload.cli import main
from meshsim.cluster_objects import core_objects
from meshsim.hosts import Endpoint
from meshsim.kubeapi.kubeconfig import write_kubeconfig
from meshsim.resources import load_manifests
from meshsim.spec import load_spec
from tests.kubeapi_thread import serve_in_thread
from tests.twins import StaticReader

REPO = Path(__file__).resolve().parent.parent
CANARY = REPO / "scenarios" / "manifests" / "canary.yaml"
Mutate = Callable[[list[dict[str, Any]]], None]


def default_core() -> list[dict[str, Any]]:
    spec = load_spec()
    endpoints = [
        Endpoint(w.name, w.service, w.namespace, dict(w.labels), 20000 + i)
        for i, w in enumerate(spec.workloads)
    ]
    return core_objects(endpoints, gateway_port=8080)


def canary_objects(drop_kind: str = "") -> list[dict[str, Any]]:
    return [r.to_object() for r in load_manifests(CANARY) if r.kind != drop_kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def run_preflight(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mutate: Mutate | None = None,
    objects: list[dict[str, Any]] | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[int, list[str]]:
    core = copy.deepcopy(default_core())
    if mutate:
        mutate(core)
    istio = canary_objects() if objects is None else objects
    with serve_in_thread(objects=istio, core_objects=core) as api, gateway_stub() as gateway:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        args = ["preflight", "--kubeconfig", str(kubeconfig), "--gateway-url", gateway, *extra]
        code = main(args)
    return code, capsys.readouterr().out.splitlines()


@contextlib.contextmanager
def gateway_stub(status: int = 200, version: str | None = "v1") -> Iterator[str]:
    """A gateway for the probe: answers every GET with `status` and the version header, and
    keeps the Host it saw."""

    class Gateway(http.server.BaseHTTPRequestHandler):
        hosts: list[str] = []

        def do_GET(self) -> None:  # noqa: N802
            Gateway.hosts.append(str(self.headers.get("Host")))
            self.send_response(status)
            if version:
                self.send_header("x-version", version)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def failing(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("✗")]


@pytest.mark.integration
def test_all_pass_on_the_seeded_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_preflight(tmp_path, capsys)
    checks = [line for line in lines if line[:1] in "✓✗"]
    # namespace, sidecars of frontend, subsets v1 and v2, gateway binding, ingress address,
    # access to update the VirtualService, the probe through the gateway
    assert len(checks) == 8
    assert code == 0 and not failing(lines)
    assert (
        "✓ ingress gateway Service istio-system/istio-ingressgateway at http://127.0.0.1:8080"
        in (" ".join(lines))
    )
    assert "✓ these credentials may update VirtualService default/frontend" in lines
    assert any(line.startswith("✓ gateway at http://127.0.0.1:") and "x-version: v1" in line
               for line in lines)  # fmt: skip
    assert lines[-1] == "preflight: all 8 checks pass"


@pytest.mark.integration
def test_namespace_without_injection_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def unlabel(core: list[dict[str, Any]]) -> None:
        named(core, "Namespace", "default")["metadata"]["labels"] = {}

    code, lines = run_preflight(tmp_path, capsys, unlabel)
    assert code == 1
    [bad] = failing(lines)
    assert bad.startswith("✗ namespace default is not labelled istio-injection=enabled")
    assert "kubectl label namespace default istio-injection=enabled --overwrite" in bad


@pytest.mark.integration
def test_pod_without_sidecar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def strip(core: list[dict[str, Any]]) -> None:
        pod = named(core, "Pod", "frontend-v2-0")
        pod["spec"]["containers"] = [c for c in pod["spec"]["containers"] if c["name"] == "server"]

    code, lines = run_preflight(tmp_path, capsys, strip)
    assert code == 1
    [bad] = failing(lines)
    assert "without an istio-proxy container" in bad and "frontend-v2-0" in bad
    assert "frontend-v1-0" not in bad and "rollout restart" in bad


@pytest.mark.integration
def test_subset_without_ready_pods(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def unready(core: list[dict[str, Any]]) -> None:
        pod = named(core, "Pod", "frontend-v2-0")
        pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]

    code, lines = run_preflight(tmp_path, capsys, unready)
    assert code == 1
    [bad] = failing(lines)
    assert bad.startswith("✗ subset v2 of frontend.default.svc.cluster.local")
    assert "(app=frontend,version=v2): no ready pod" in bad
    assert any(line.startswith("✓ subset v1 of frontend") for line in lines)


@pytest.mark.integration
def test_subset_v1_missing_label_points_at_the_patch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def stock(core: list[dict[str, Any]]) -> None:  # the demo's frontend has no version label
        del named(core, "Pod", "frontend-v1-0")["metadata"]["labels"]["version"]

    code, lines = run_preflight(tmp_path, capsys, stock)
    [bad] = failing(lines)
    assert code == 1 and bad.startswith("✗ subset v1 of frontend")
    assert "scenarios/manifests/cluster/patches/" in bad
    assert (REPO / "scenarios" / "manifests" / "cluster" / "patches").is_dir()


@pytest.mark.integration
def test_missing_gateway(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_preflight(tmp_path, capsys, objects=canary_objects(drop_kind="Gateway"))
    assert code == 1
    [bad] = failing(lines)
    assert "names Gateway default/frontend-gateway, which does not exist" in bad
    assert "kubectl apply -f scenarios/manifests/cluster/" in bad


@pytest.mark.integration
def test_missing_virtual_service(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_preflight(tmp_path, capsys, extra=("--virtual-service", "checkout"))
    assert code == 1
    assert failing(lines) == [
        "✗ VirtualService default/checkout not found — fix: kubectl apply -f "
        "scenarios/manifests/cluster/ (or pass --virtual-service and -n)"
    ]


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preflight", "--kubeconfig", str(tmp_path / "nope")]) == 2
    assert main(["preflight", "--kubeconfig", "x", "--jaeger-url", "localhost:16686"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "does not exist" in err[0] and "not an http(s) URL" in err[1]


@pytest.mark.integration
def test_unreachable_api_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with serve_in_thread() as api:
        url = api.url
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", url)  # nothing listens there now
    assert main(["preflight", "--kubeconfig", str(kubeconfig)]) == 1
    [err] = capsys.readouterr().err.splitlines()
    assert err.startswith("meshload: error: Kubernetes API at") and "unreachable" in err


def _gateway_service(kind: str, lb_ip: str | None) -> dict[str, Any]:
    status = {"loadBalancer": {"ingress": [{"ip": lb_ip}]}} if lb_ip else {"loadBalancer": {}}
    return {
        "kind": "Service",
        "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
        "spec": {
            "type": kind,
            "ports": [
                {"name": "status-port", "port": 15021, "nodePort": 30021},
                {"name": "http2", "port": 80, "targetPort": 8080, "nodePort": 31380},
            ],
        },
        "status": status,
    }


NODE = {
    "kind": "Node",
    "metadata": {"name": "minikube"},
    "status": {"addresses": [{"type": "InternalIP", "address": "192.168.49.2"}]},
}


def test_ingress_address_like_minikube() -> None:
    pending = StaticReader([_gateway_service("LoadBalancer", None), NODE])
    check = check_ingress(pending, "istio-system", "istio-ingressgateway")
    assert check.ok and check.value == "http://192.168.49.2:31380"
    tunnel = StaticReader([_gateway_service("LoadBalancer", "10.96.0.7"), NODE])
    assert check_ingress(tunnel, "istio-system", "istio-ingressgateway").value == (
        "http://10.96.0.7:80"
    )
    cluster_ip = StaticReader([_gateway_service("ClusterIP", None)])
    bad = check_ingress(cluster_ip, "istio-system", "istio-ingressgateway")
    assert not bad.ok and "meshload port-forward" in bad.fix and "minikube tunnel" in bad.fix
    missing = check_ingress(StaticReader([]), "istio-system", "istio-ingressgateway")
    assert not missing.ok and "not found" in missing.detail


def test_http_probes_with_a_twin() -> None:
    answers = {
        "http://j/api/services": (200, b'{"data": ["frontend", "jaeger-all-in-one"]}'),
        "http://p/-/ready": (503, b""),
        "http://p/api/v1/status/buildinfo": (200, b'{"status": "success"}'),
    }
    seen: list[str] = []

    def get(url: str, timeout_s: float) -> tuple[int, bytes]:
        seen.append(url)
        if url not in answers:
            raise ConnectionRefusedError(111, "Connection refused")
        return answers[url]

    jaeger = check_http("Jaeger", "http://j/", ("/api/services",), get, fix="f")
    assert jaeger.ok and jaeger.detail.endswith("; 2 services traced")
    prom = check_http(
        "Prometheus", "http://p", ("/-/ready", "/api/v1/status/buildinfo"), get, fix=""
    )
    assert prom.ok and seen[-2:] == ["http://p/-/ready", "http://p/api/v1/status/buildinfo"]
    down = check_http("Jaeger", "http://x", ("/api/services",), get, fix="give the URL")
    assert not down.ok and "not reachable" in down.detail and down.line().endswith("give the URL")
    reader = StaticReader([])
    target = Target(jaeger_url="http://j", prometheus_url="http://x")
    names = [
        (c.name, c.ok) for c in run_checks(reader, target, get=get, probe=probe_answering(200))
    ]
    assert names[-2:] == [("Jaeger", True), ("Prometheus", False)]


@pytest.fixture
def prometheus_stub() -> Iterator[str]:
    """Answers /-/ready as Prometheus does; the real one is not needed for a probe."""

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            ok = self.path == "/-/ready"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b"Prometheus Server is Ready.\n" if ok else b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_all_pass_on_the_embedded_mesh(
    capsys: pytest.CaptureFixture[str], prometheus_stub: str
) -> None:
    from meshsim.mesh import Mesh

    with Mesh() as mesh:
        assert mesh.jaeger_url
        # The mesh's own Prometheus when the binary is installed, else a stand-in for the probe.
        prometheus = getattr(mesh, "prometheus_url", None) or prometheus_stub
        argv = ["preflight", "--kubeconfig", str(mesh.kubeconfig), "-n", "default"]
        argv += ["--jaeger-url", mesh.jaeger_url, "--prometheus-url", prometheus]
        code = main(argv)
        gateway = mesh.gateway_url
    lines = capsys.readouterr().out.splitlines()
    assert code == 0, lines
    assert not failing(lines)
    assert any(f"istio-ingressgateway at {gateway} (LoadBalancer)" in line for line in lines)
    assert any(line.startswith("✓ Jaeger at") for line in lines)
    assert any(line.startswith(f"✓ Prometheus at {prometheus} answers /-/ready") for line in lines)


@pytest.mark.integration
def test_an_httproute_canary_passes_on_the_embedded_mesh_and_a_foreign_class_fails(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--http-route` against the embedded API (its GatewayClass, the HTTPRoute's status, the
    backend Services' endpoints), then with the Gateway moved to another controller's class."""
    from meshsim.mesh import Mesh
    from meshsim.resources import parse_documents

    manifests = REPO / "scenarios" / "manifests" / "gateway-api.yaml"
    with Mesh(manifests=manifests, prometheus=False, tracing=False) as mesh:
        argv = ["preflight", "--kubeconfig", str(mesh.kubeconfig), "--http-route", "frontend"]
        good = main(argv)
        said = capsys.readouterr().out.splitlines()
        foreign = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: elsewhere}
spec: {controllerName: example.com/gateway-controller}
"""
        mesh.apply(parse_documents(foreign, "class.yaml"))
        gateway = next(
            r for r in parse_documents(manifests.read_text(), str(manifests))
            if r.kind == "Gateway" and r.group == "gateway.networking.k8s.io"
        )  # fmt: skip
        gateway.spec["gatewayClassName"] = "elsewhere"
        mesh.apply([gateway])
        bad = main(argv)
        refused = capsys.readouterr().out.splitlines()
    assert good == 0, said
    assert "✓ HTTPRoute default/frontend is Accepted by Gateway default/frontend-gateway" in said
    assert "✓ Gateway default/frontend-gateway is of class istio" in said
    assert any(line.startswith("✓ Service default/frontend-v2 (app=frontend,version=v2)")
               for line in said), said  # fmt: skip
    assert bad == 1, refused
    wrong = [line for line in refused if line.startswith("✗")]
    assert any("frontend-gateway" in line and "elsewhere" in line for line in wrong), wrong


@pytest.mark.integration
def test_static_reader_twin_answers_as_the_api_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def unlabel_and_strip(core: list[dict[str, Any]]) -> None:
        named(core, "Namespace", "default")["metadata"]["labels"] = {}
        pod = named(core, "Pod", "frontend-v1-0")
        pod["spec"]["containers"] = pod["spec"]["containers"][:1]

    code, lines = run_preflight(tmp_path, capsys, unlabel_and_strip)
    core = default_core()
    unlabel_and_strip(core)
    reader = StaticReader(core + canary_objects())
    probe = probe_answering(200, {"x-version": "v1"})
    twin = [c.line() for c in run_checks(reader, Target(), probe=probe)]
    assert code == 1 and len(failing(twin)) == 2
    real_url = next(line.split()[3] for line in lines if line.startswith("✓ gateway at"))
    assert [line.replace(real_url, "http://127.0.0.1:8080") for line in lines[:-1]] == twin


def test_a_virtual_service_without_http_routes_fails() -> None:
    objects = default_core() + canary_objects()
    vs = named(objects, "VirtualService", "frontend")
    vs["spec"]["tcp"] = [{"route": vs["spec"].pop("http")[0]["route"]}]
    lines = [
        c.line() for c in run_checks(StaticReader(objects), Target(), probe=probe_answering(200))
    ]
    assert failing(lines) == [
        "✗ VirtualService default/frontend has no HTTP route destinations — fix: give it an "
        "http route, as in scenarios/manifests/cluster/"
    ]


def probe_answering(status: int, headers: dict[str, str] | None = None) -> Any:
    seen: list[tuple[str, dict[str, str]]] = []

    def probe(url: str, sent: Any, timeout_s: float) -> tuple[int, dict[str, str]]:
        seen.append((url, dict(sent)))
        return status, dict(headers or {})

    probe.seen = seen  # type: ignore[attr-defined]
    return probe


def test_the_probe_says_what_the_gateway_answered() -> None:
    host_bound = canary_objects()
    vs = named(host_bound, "VirtualService", "frontend")
    vs["spec"]["hosts"] = ["frontend.example.com"]
    gw = named(host_bound, "Gateway", "frontend-gateway")
    gw["spec"]["servers"][0]["hosts"] = ["*.example.com"]
    reader = StaticReader(default_core() + host_bound)
    target = Target(gateway_url="http://127.0.0.1:8080")
    probe = probe_answering(200, {"x-version": "v2", "x-meshload-config": "abcd1234.3"})
    [line] = [c.line() for c in run_checks(reader, target, probe=probe) if c.name == "probe"]
    assert probe.seen == [("http://127.0.0.1:8080/", {"Host": "frontend.example.com"})]
    assert line == (
        "✓ gateway at http://127.0.0.1:8080 answers 200 with Host frontend.example.com; "
        "x-version: v2; stamps seen: x-meshload-config"
    )
    [lost] = [
        c for c in run_checks(reader, target, probe=probe_answering(404)) if c.name == "probe"
    ]
    assert not lost.ok and "--host-header" in lost.fix
    bare = [c for c in run_checks(reader, target, probe=probe_answering(200)) if c.name == "probe"][
        0
    ]
    assert "no x-version header: meshload stamps one" in bare.detail


def test_credentials_that_cannot_update_the_route_fail() -> None:
    reader = StaticReader(default_core() + canary_objects())
    reader.forbidden = frozenset({("update", "virtualservices", "default", "frontend")})
    [access] = [
        c for c in run_checks(reader, Target(), probe=probe_answering(200)) if c.name == "access"
    ]
    assert not access.ok and "rbac.yaml" in access.fix
