"""P3: a weight change accepted by the Kubernetes API -> the first response from the new version.

The embedded mesh's control plane answers the API, then pushes to Envoy (as istiod does), so
the delay measured here is what a canary's propagation figure sees on this machine.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from meshcore.kube.client import MeshClient
from meshsim.mesh import Mesh

CHANGES = 24


class Prober:
    """Back-to-back GETs on one keep-alive connection, remembering when each version answered."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1"
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        self.seen: list[tuple[int, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + 300  # bounded even if nobody stops us
        while not self.stop.is_set() and time.monotonic() < deadline:
            self.conn.request("GET", "/_healthz")
            resp = self.conn.getresponse()
            resp.read()
            self.seen.append((time.time_ns(), resp.getheader("x-version")))

    def first_after(self, since_ns: int, version: str, timeout_s: float = 2.0) -> int | None:
        deadline = time.monotonic() + timeout_s
        index = 0
        while time.monotonic() < deadline:
            seen = self.seen
            while index < len(seen):
                at, v = seen[index]
                index += 1
                if at >= since_ns and v == version:
                    return at
            time.sleep(0.0005)
        return None

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.conn.close()


def run() -> dict[str, Any]:
    delays_ms: list[float] = []
    with Mesh(tracing=False) as mesh:
        client = MeshClient.connect(mesh.kubeconfig)
        prober = Prober(mesh.gateway_url)
        try:
            for i in range(CHANGES):
                target = "v2" if i % 2 == 0 else "v1"
                change = client.set_weights("frontend", "default", {target: 100})
                at = prober.first_after(change.accepted_ns, target)
                if at is not None:
                    delays_ms.append((at - change.accepted_ns) / 1e6)
                time.sleep(0.05)
        finally:
            prober.close()
            client.close()
    q = statistics.quantiles(delays_ms, n=20, method="inclusive")
    p50, p95 = statistics.median(delays_ms), q[18]
    return {
        "id": "P3",
        "what": "weight change accepted by the API -> first response from the new version",
        "changes": CHANGES,
        "observed": len(delays_ms),
        "p50_ms": round(p50, 2),
        "p95_ms": round(p95, 2),
        "goal": "p50 <= 20 ms",
        "met": p50 <= 20.0 and len(delays_ms) == CHANGES,
    }
