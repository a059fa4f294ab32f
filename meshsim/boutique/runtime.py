"""In-process calls between simulated workloads, on a virtual clock.

Each incoming request gets a `Request`: a timeline that starts when it arrives. Every call
made while serving it picks a workload of the target service, samples that workload's latency
for the operation and advances the timeline, synchronously; the handler then sleeps once for
whatever the timeline is ahead of the wall clock. One timer per request instead of one per
hop keeps CPU low (the simulated mesh shares 2 cores with the load generator), and because
all random draws of a request happen before its first await, a seed reproduces every latency
and error for the same request sequence even when requests overlap.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from math import exp
from typing import Any

from meshsim.boutique.hops import INGRESS, Hop, Observer, Observers, cached_traceparent
from meshsim.spec import MeshSpec, Workload


class CallFailed(Exception):
    """A call that failed as the caller sees it (the demo's handlers turn it into a 500)."""

    def __init__(self, service: str, operation: str, status_code: int, reason: str) -> None:
        super().__init__(f"{service}.{operation}: {reason}")
        self.service = service
        self.operation = operation
        self.status_code = status_code


class RpcError(Exception):
    """Raised by a simulated operation that answers with an error status of its own.

    `status_code` is HTTP-like: 404 for gRPC NOT_FOUND (an unknown product), 400 for
    INVALID_ARGUMENT (an unsupported currency).
    """

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code


class Runtime:
    """Every workload of a spec, the seeded randomness they share and the hop observers."""

    def __init__(
        self, spec: MeshSpec, *, seed: int | None = None, observers: Iterable[Observer] = ()
    ) -> None:
        self.spec = spec
        self.seed = spec.seed if seed is None else seed
        self.rng = random.Random(self.seed)
        # Ids stay random across runs so traces of two runs never merge in one backend.
        self.ids = random.Random()
        self.observers = Observers(observers)
        self.targets: dict[str, tuple[Workload, ...]] = {
            svc: tuple(ws) for svc, ws in spec.services().items()
        }
        self.workloads: dict[str, Workload] = {w.name: w for w in spec.workloads}

    def begin(
        self,
        workload: Workload,
        operation: str,
        traceparent: str | None = None,
        *,
        source: str = INGRESS,
        fallible: bool = True,
    ) -> Request:
        """Start serving one incoming request; samples the workload's own latency and error."""
        return Request(self, workload, operation, traceparent, source, fallible)


class Request:
    """One incoming request: its virtual timeline, trace context and the hops it produced."""

    __slots__ = (
        "runtime",
        "workload",
        "operation",
        "source",
        "start_ns",
        "t0",
        "clock_ms",
        "trace_id",
        "parent_span_id",
        "sampled",
        "hops",
        "root",
        "failed",
    )

    def __init__(
        self,
        runtime: Runtime,
        workload: Workload,
        operation: str,
        traceparent: str | None,
        source: str,
        fallible: bool,
    ) -> None:
        self.runtime = runtime
        self.workload = workload
        self.operation = operation
        self.source = source
        self.start_ns = time.time_ns()
        self.t0 = time.perf_counter()
        self.hops: list[Hop] | None = [] if runtime.observers else None
        ctx = cached_traceparent(traceparent) if self.hops is not None else None
        self.parent_span_id: str | None
        if ctx is not None:
            self.trace_id = ctx.trace_id
            self.parent_span_id, self.sampled = ctx.span_id, ctx.sampled
        else:
            self.trace_id = _hex_id(runtime.ids, 16) if self.hops is not None else ""
            self.parent_span_id, self.sampled = None, True
        self.root = Site(self, workload, self.new_span_id())
        rng = runtime.rng
        profile = workload.profile
        rate = profile.error_rate
        self.failed = fallible and rate > 0.0 and rng.random() < rate
        self.clock_ms = profile.latency_for(operation).sample_ms(rng)

    def new_span_id(self) -> str:
        return _hex_id(self.runtime.ids, 8) if self.hops is not None else ""

    async def finish(self, status_code: int) -> None:
        """Wait until the timeline's end, then tell the observers about every hop."""
        ahead_s = self.clock_ms / 1000.0 - (time.perf_counter() - self.t0)
        if ahead_s > 0:
            try:
                await asyncio.sleep(ahead_s)
            except asyncio.CancelledError:
                # Cut short (shutdown, client gone): still counted, as a proxy would (499).
                self._emit(499)
                raise
        self._emit(status_code)

    def _emit(self, status_code: int) -> None:
        hops = self.hops
        if hops is None:
            return
        self.hops = None
        hops.append(
            _new_hop(
                Hop,
                (
                    self.source,
                    self.workload.name,
                    self.operation,
                    "http",
                    self.start_ns,
                    (time.perf_counter() - self.t0) * 1000.0,
                    status_code,
                    status_code >= 500,
                    self.trace_id,
                    self.root.span_id,
                    self.parent_span_id,
                    self.sampled,
                ),
            )
        )
        self.runtime.observers.emit(hops)


class Site:
    """Where code runs: a workload serving one hop of a request. Calls leave from here."""

    __slots__ = ("request", "workload", "span_id")

    def __init__(self, request: Request, workload: Workload, span_id: str) -> None:
        self.request = request
        self.workload = workload
        self.span_id = span_id

    def call(
        self, service: str, operation: str, body: Callable[..., Any] | None = None, *args: Any
    ) -> Any:
        """Call `operation` on one workload of `service`; `body(site, *args)` is its work.

        Raises CallFailed when the chosen workload fails (its error rate), answers an error
        status of its own (RpcError), or lets a failure of its own calls through. The caller's
        `outbound_latency_factor` for `service` scales the callee's sampled latency.
        """
        req = self.request
        runtime = req.runtime
        targets = runtime.targets.get(service)
        if not targets:
            raise CallFailed(service, operation, 503, "no healthy upstream")
        rng = runtime.rng
        dst = targets[0] if len(targets) == 1 else targets[rng.randrange(len(targets))]
        profile = dst.profile
        start_ms = req.clock_ms
        hops = req.hops
        # _hex_id(runtime.ids, 8), inlined: a dozen calls per page.
        span_id = runtime.ids.getrandbits(64).to_bytes(8, "big").hex() if hops is not None else ""
        rate = profile.error_rate
        status, reason, result = 200, "", None
        if rate > 0.0 and rng.random() < rate:
            status, reason = 500, f"simulated failure in {dst.name}"
        elif body is not None:
            try:
                result = body(Site(req, dst, span_id), *args)
            except RpcError as e:
                status, reason = e.status_code, str(e)
            except CallFailed as e:
                status, reason = 500, str(e)
        factor = self.workload.profile.outbound_latency_factor.get(service, 1.0)
        # profile.latency_for(operation).sample_ms(rng), inlined (the same draw).
        latency = profile.operations.get(operation, profile.latency)
        sigma = latency.sigma
        own_ms = latency.median_ms if sigma == 0.0 else exp(latency.mu + sigma * rng.gauss())
        req.clock_ms += own_ms * factor
        if hops is not None:
            hops.append(
                _new_hop(
                    Hop,
                    (
                        self.workload.name,
                        dst.name,
                        operation,
                        "grpc",
                        req.start_ns + int(start_ms * 1e6),
                        req.clock_ms - start_ms,
                        status,
                        status != 200,
                        req.trace_id,
                        span_id,
                        self.span_id,
                        req.sampled,
                    ),
                )
            )
        if status != 200:
            raise CallFailed(service, operation, status, reason)
        return result


# A hop per call: tuple.__new__ skips the NamedTuple's Python-level __new__ (a third of the
# cost of making one), with the fields in Hop's order.
_new_hop = tuple.__new__


def _hex_id(ids: random.Random, size: int) -> str:
    """`size` random bytes as lower-case hex, as f"{getrandbits(8 * size):0{2 * size}x}"."""
    return ids.getrandbits(8 * size).to_bytes(size, "big").hex()
