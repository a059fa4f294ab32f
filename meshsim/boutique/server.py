"""Serving a whole mesh spec from one asyncio process: one 127.0.0.1 port per workload."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from aiohttp import web

from meshsim.boutique.backends import Backends
from meshsim.boutique.frontend import Frontend
from meshsim.boutique.hops import INGRESS, Observer
from meshsim.boutique.routing import Handler, Routes
from meshsim.boutique.runtime import Runtime
from meshsim.serving import Served
from meshsim.spec import MeshSpec, Workload

if TYPE_CHECKING:
    from meshsim.telemetry.workloads import WorkloadTelemetry

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
SHUTDOWN_S = 0.5

FRONTEND_SERVICE = "frontend"
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


async def serve(
    spec: MeshSpec,
    seed: int | None = None,
    *,
    observers: Iterable[Observer] = (),
    telemetry: WorkloadTelemetry | None = None,
) -> Served[Runtime]:
    """Start every workload of `spec` on its own free 127.0.0.1 port, one site per workload.

    `seed` overrides the spec's; `observers` get every hop (add more via
    `.state.observers.add`). With `telemetry`, every workload also serves `/metrics` and its
    hops become spans and Istio metrics; the ingress gateway's series get a site of their own
    (`INGRESS`), and closing closes the telemetry.
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
    sites = {w.name: _routes(runtime, backends, w, telemetry) for w in spec.workloads}
    closers = [telemetry.close] if telemetry is not None else []
    served = Served(runtime, close_after=closers)
    try:
        for name, routes in sites.items():
            server = web.Server(routes, access_log=None)
            await served.start_runner(name, web.ServerRunner(server, shutdown_timeout=SHUTDOWN_S))
        if telemetry is not None:
            app = telemetry.gateway_app()
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_S)
            await served.start_runner(INGRESS, runner)
    except BaseException:
        await served.close()
        raise
    return served


def _routes(
    runtime: Runtime,
    backends: Backends,
    workload: Workload,
    telemetry: WorkloadTelemetry | None = None,
) -> Routes:
    name = workload.name
    routes = Routes(name)
    if telemetry is not None:
        routes.add("GET", METRICS_PATH, telemetry.metrics_handler(name))

    def wrap(handler: Handler) -> Handler:
        return handler if telemetry is None else telemetry.wrap(name, handler)

    if workload.service == FRONTEND_SERVICE:
        Frontend(runtime, backends, workload).routes(routes, wrap)
    else:
        routes.add_any(wrap(_backend_handler(runtime, workload)))
    return routes


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

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        req = runtime.begin(workload, f"{request.method} /*", request.headers.get("traceparent"))
        status = 500 if req.failed else 200
        await req.finish(status)
        return web.Response(
            status=status, text=failed if req.failed else ok, content_type="application/json"
        )

    return handle
