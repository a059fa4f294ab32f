"""Serving a whole mesh spec from one asyncio process: one 127.0.0.1 port per workload."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler

from meshsim.boutique.backends import Backends
from meshsim.boutique.frontend import Frontend
from meshsim.boutique.hops import INGRESS, Observer, Observers
from meshsim.boutique.runtime import Runtime
from meshsim.spec import MeshSpec, Workload

if TYPE_CHECKING:
    from meshsim.telemetry.workloads import WorkloadTelemetry

log = logging.getLogger(__name__)

FRONTEND_SERVICE = "frontend"
HOST = "127.0.0.1"
# Services the frontend and checkout call; a spec without one makes those calls fail (503).
BOUTIQUE_SERVICES = (
    "productcatalogservice",
    "currencyservice",
    "cartservice",
    "recommendationservice",
    "shippingservice",
    "checkoutservice",
    "paymentservice",
    "emailservice",
    "adservice",
)


class Running:
    """A served runtime: the port of every workload, its hop observers, and how to stop it."""

    def __init__(
        self,
        runtime: Runtime,
        runners: Mapping[str, web.AppRunner],
        ports: Mapping[str, int],
        telemetry: WorkloadTelemetry | None = None,
        metrics_ports: Mapping[str, int] | None = None,
    ) -> None:
        self.runtime = runtime
        self._runners = dict(runners)
        self.ports: Mapping[str, int] = MappingProxyType(dict(ports))
        self.telemetry = telemetry
        # Proxies whose /metrics is not on a workload port (the ingress gateway's series).
        self.metrics_ports: Mapping[str, int] = MappingProxyType(dict(metrics_ports or {}))

    @property
    def observers(self) -> Observers:
        return self.runtime.observers

    def url(self, workload: str) -> str:
        return f"http://{HOST}:{self.ports[workload]}"

    async def close(self) -> None:
        for runner in self._runners.values():
            await runner.cleanup()
        self._runners.clear()
        if self.telemetry is not None:
            self.telemetry.close()


async def serve(
    spec: MeshSpec,
    seed: int | None = None,
    *,
    observers: Iterable[Observer] = (),
    telemetry: WorkloadTelemetry | None = None,
) -> Running:
    """Start every workload of `spec` on its own free 127.0.0.1 port.

    `seed` overrides the spec's; `observers` get every hop (add more via `.observers.add`).
    With `telemetry`, every workload also serves `/metrics` and its hops become spans and
    Istio metrics; the ingress gateway's series get a port of their own (`metrics_ports`).
    """
    if telemetry is not None:
        observers = [*observers, *telemetry.observers]
    runtime = Runtime(spec, seed=seed, observers=observers)
    backends = Backends(runtime.rng, runtime.ids)
    if FRONTEND_SERVICE in runtime.targets:
        missing = [s for s in BOUTIQUE_SERVICES if s not in runtime.targets]
        if missing:
            log.warning(
                "spec has no workload for %s; the frontend's calls to them fail (503)",
                ", ".join(missing),
            )
    runners: dict[str, web.AppRunner] = {}
    ports: dict[str, int] = {}
    metrics_ports: dict[str, int] = {}
    try:
        for workload in spec.workloads:
            app = _app(runtime, backends, workload, telemetry)
            ports[workload.name] = await _start(runners, workload.name, app)
        if telemetry is not None:
            metrics_ports[INGRESS] = await _start(runners, INGRESS, telemetry.gateway_app())
    except BaseException:
        for runner in runners.values():
            await runner.cleanup()
        if telemetry is not None:
            telemetry.close()
        raise
    return Running(runtime, runners, ports, telemetry, metrics_ports)


async def _start(runners: dict[str, web.AppRunner], name: str, app: web.Application) -> int:
    # No access log: formatting a line per request would cost more than the request.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    runners[name] = runner
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    return _bound_port(runner)


def _app(
    runtime: Runtime,
    backends: Backends,
    workload: Workload,
    telemetry: WorkloadTelemetry | None = None,
) -> web.Application:
    name = workload.name
    if telemetry is None:
        app = web.Application()
    else:
        app = web.Application(middlewares=[telemetry.middleware(name)])
        app.router.add_get("/metrics", telemetry.metrics_handler(name))

    async def mark(request: web.BaseRequest, response: web.StreamResponse) -> None:
        # Also marks aiohttp's own 404/405 answers, which never reach a handler.
        response.headers["x-workload"] = name

    app.on_response_prepare.append(mark)
    if workload.service == FRONTEND_SERVICE:
        app.add_routes(Frontend(runtime, backends, workload).routes())
    else:
        app.router.add_route("*", "/{tail:.*}", _backend_handler(runtime, workload))
    return app


def _backend_handler(runtime: Runtime, workload: Workload) -> Handler:
    """Any path on a backend's own port: its latency and errors, then a small JSON answer."""
    version = workload.labels.get("version")
    ok = json.dumps(
        {"workload": workload.name, "service": workload.service, "version": version, "status": "ok"}
    )
    failed = json.dumps(
        {
            "workload": workload.name,
            "service": workload.service,
            "version": version,
            "status": "error",
            "error": f"simulated failure in {workload.name}",
        }
    )

    async def handle(request: web.Request) -> web.Response:
        req = runtime.begin(workload, f"{request.method} /*", request.headers.get("traceparent"))
        status = 500 if req.failed else 200
        await req.finish(status)
        return web.Response(
            status=status, text=failed if req.failed else ok, content_type="application/json"
        )

    return handle


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("a workload's site started without a listening address")


def write_ports_file(
    path: str | Path,
    ports: Mapping[str, int],
    pid: int | None = None,
    metrics_ports: Mapping[str, int] | None = None,
) -> None:
    """Write `{"pid", "workloads": {name: port}}` atomically: readers never see half a file.

    `metrics_ports` (`{"istio-ingressgateway": port}`) adds a `"metrics"` key.
    """
    target = Path(path)
    doc: dict[str, object] = {"pid": os.getpid() if pid is None else pid, "workloads": dict(ports)}
    if metrics_ports:
        doc["metrics"] = dict(metrics_ports)
    data = json.dumps(doc, indent=2)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
