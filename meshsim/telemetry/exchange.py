"""What the hop observers need to know about the HTTP request being served, and cannot see in
a `Hop`: the `x-request-id`, the sampling decision for the whole request, the body sizes.

A wrapper around each route's handler (`wrap`) puts an `Exchange` in a context variable around
each request; the handler emits its hops (in `Request.finish`) from the same task, so the
observers read it synchronously. The hop that entered the workload is handed back to the
wrapper, which records its metrics once the response size is known.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from aiohttp import web

from meshsim.boutique.hops import Hop, cached_traceparent

METRICS_PATH = "/metrics"


class Exchange:
    """One HTTP request a workload serves, as telemetry sees it."""

    __slots__ = ("workload", "request_id", "sampled", "request_bytes", "entry")

    def __init__(
        self, workload: str, request_id: str | None, sampled: bool, request_bytes: int
    ) -> None:
        self.workload = workload
        self.request_id = request_id
        self.sampled = sampled
        self.request_bytes = request_bytes
        self.entry: Hop | None = None

    def is_entry(self, hop: Hop) -> bool:
        """The hop of this very request (the others are calls it made)."""
        return hop.destination == self.workload


CURRENT: ContextVar[Exchange | None] = ContextVar("meshsim_exchange", default=None)


def current() -> Exchange | None:
    return CURRENT.get()


def sampled_by_ratio(ratio: float, rng: Callable[[], float] = random.random) -> bool:
    return ratio >= 1.0 or (ratio > 0.0 and rng() < ratio)


def request_id_from_trace(trace_id: str) -> str:
    """A stable UUID-shaped request id for hops that came without an `x-request-id`."""
    t = trace_id
    return f"{t[0:8]}-{t[8:12]}-{t[12:16]}-{t[16:20]}-{t[20:32]}"


def _body_size(response: web.StreamResponse) -> int:
    body = getattr(response, "body", None)
    if isinstance(body, bytes | bytearray):
        return len(body)
    return response.content_length or 0


Record = Callable[[Hop, int, int], None]
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def wrap(workload: str, sampling_ratio: float, record: Record, handler: Handler) -> Handler:
    """`handler` with an `Exchange` around each request it serves (a middleware of one route).

    Sampling: a valid client `traceparent` decides (its sampled flag); without one the
    configured ratio decides once for every hop of the request, as a sidecar's random sampling
    does for a new trace. `record(hop, request_bytes, response_bytes)` gets the entry hop.
    """

    async def telemetry(request: web.BaseRequest) -> web.StreamResponse:
        headers = request.headers
        ctx = cached_traceparent(headers.get("traceparent"))
        sampled = ctx.sampled if ctx is not None else sampled_by_ratio(sampling_ratio)
        ex = Exchange(workload, headers.get("x-request-id"), sampled, request.content_length or 0)
        token = CURRENT.set(ex)
        response_bytes = 0
        try:
            response = await handler(request)
            response_bytes = _body_size(response)
            return response
        finally:
            CURRENT.reset(token)
            if ex.entry is not None:
                record(ex.entry, ex.request_bytes, response_bytes)

    return telemetry
