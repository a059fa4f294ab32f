"""What the Gateway API tests share: the canary manifest, an HTTPRoute builder, requests
through a running mesh's gateway with a Host, and waiting for an answer."""

from __future__ import annotations

import http.client
import time
from typing import Any

from meshsim.mesh import Mesh
from tests.support import REPO

GROUP = "gateway.networking.k8s.io"
CANARY = REPO / "scenarios" / "manifests" / "gateway-api.yaml"


def httproute(name: str, rules: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name},
        "spec": {"parentRefs": [{"name": "shop"}], "rules": rules, **spec},
    }


def ask(
    mesh: Mesh, path: str, host: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(mesh.gateway_url.removeprefix("http://"), timeout=10)
    conn.request("GET", path, headers={"Host": host, **(headers or {})})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def workload_of(mesh: Mesh, path: str, host: str, **headers: str) -> str | None:
    return ask(mesh, path, host, headers).getheader("x-workload")


def wait_for(check: Any, timeout_s: float = 10.0) -> Any:
    """check() until it answers something true; the last answer."""
    until = time.monotonic() + timeout_s
    while not (found := check()) and time.monotonic() < until:
        time.sleep(0.05)
    return found
