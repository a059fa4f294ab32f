"""Telemetry wired into the simulated workloads: observers, handler wrappers and `/metrics`."""

from __future__ import annotations

import logging

from aiohttp import web

from meshsim.boutique.hops import INGRESS, Observer
from meshsim.spec import MeshSpec
from meshsim.telemetry import exchange
from meshsim.telemetry.exchange import METRICS_PATH
from meshsim.telemetry.istio import peers
from meshsim.telemetry.metrics import IstioMetrics
from meshsim.telemetry.spans import OtlpHttpPoster, Poster, SpanObserver

log = logging.getLogger(__name__)

EXPOSITION_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class WorkloadTelemetry:
    """Spans (when an OTLP endpoint or poster is given) and Istio metrics for a mesh spec."""

    def __init__(
        self,
        spec: MeshSpec,
        *,
        otlp_endpoint: str | None = None,
        poster: Poster | None = None,
        sampling_ratio: float = 1.0,
    ) -> None:
        if not 0.0 <= sampling_ratio <= 1.0:
            raise ValueError(f"trace sampling ratio {sampling_ratio} is not within [0, 1]")
        self.peers = peers(spec.workloads)
        self.sampling_ratio = sampling_ratio
        self.metrics = IstioMetrics(self.peers)
        self.spans: SpanObserver | None = None
        if poster is None and otlp_endpoint:
            poster = OtlpHttpPoster(otlp_endpoint)
        if poster is not None:
            self.spans = SpanObserver(self.peers, poster, sampling_ratio=sampling_ratio)

    @property
    def observers(self) -> list[Observer]:
        out: list[Observer] = [self.metrics]
        if self.spans is not None:
            out.append(self.spans)
        return out

    def wrap(self, workload: str, handler: exchange.Handler) -> exchange.Handler:
        """`handler` of `workload`, its requests seen by the spans and metrics."""
        return exchange.wrap(workload, self.sampling_ratio, self.metrics.record, handler)

    def metrics_handler(self, proxy: str) -> exchange.Handler:
        metrics = self.metrics

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return web.Response(
                body=metrics.render(proxy).encode(), headers={"Content-Type": EXPOSITION_TYPE}
            )

        return handle

    def gateway_app(self) -> web.Application:
        """The ingress gateway's source-reported series, on a port of their own.

        Envoy serves its own stats; Istio's `reporter="source"` series for the hops entering
        the mesh come from this app (as Istio's gateway would expose them on :15090).
        """
        app = web.Application()
        app.router.add_get(METRICS_PATH, self.metrics_handler(INGRESS))
        return app

    def close(self) -> None:
        if self.spans is not None:
            self.spans.close()
