"""Hops: the one record every simulated request and call produces, and who gets told.

A hop is one request from a source to a destination workload: the gateway's request to a
frontend, or one in-process RPC between simulated services. Tracing (a span per hop) and
Istio-style metrics (a sample per hop) are observers; the handlers never know about them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from meshcore.traceparent import TraceContext, parse_traceparent

log = logging.getLogger(__name__)

INGRESS = "istio-ingressgateway"
"""The source named on hops that enter the mesh through the gateway."""


class Hop(NamedTuple):
    """One request from `source` to `destination`, as a span and a metric sample see it.

    Immutable and a NamedTuple rather than a frozen dataclass: a busy mesh makes a dozen per
    page, and a frozen dataclass costs five times as much to build.

    `start_ns` is epoch time; `duration_ms` includes the calls the destination made itself.
    `status_code` is HTTP-like for every protocol (a failed RPC is 500, an unknown product
    404); `error` is true when the caller saw a failure. `parent_span_id` is None for a hop
    whose request came with no (valid) W3C traceparent.
    """

    source: str
    destination: str
    operation: str
    protocol: str
    start_ns: int
    duration_ms: float
    status_code: int
    error: bool
    trace_id: str
    span_id: str
    parent_span_id: str | None
    sampled: bool = True


Observer = Callable[[Hop], None]


@runtime_checkable
class RequestObserver(Protocol):
    """An observer that can also take every hop of one request in one call.

    `observe_request(hops)` must do what calling the observer on each hop in turn would; it
    runs in the task that served the request, once per request instead of once per hop.
    """

    def __call__(self, hop: Hop) -> None: ...

    def observe_request(self, hops: Sequence[Hop]) -> None: ...


def cached_traceparent(header: str | None) -> TraceContext | None:
    """`parse_traceparent`, remembering the last header: the telemetry middleware and the
    request it wraps parse the same header in a row."""
    global _last_parsed
    if not header:
        return None
    last = _last_parsed
    if last[0] == header:
        return last[1]
    ctx = parse_traceparent(header)
    _last_parsed = (header, ctx)
    return ctx


_last_parsed: tuple[str, TraceContext | None] = ("", None)


class Observers:
    """The observers of a mesh; one that raises is logged once, then ignored when it raises."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._observers: list[Observer] = list(observers)
        self._failed: set[int] = set()
        self._sinks: list[tuple[Observer, Callable[[Sequence[Hop]], None] | None]] = []
        self._update()

    def __bool__(self) -> bool:
        return bool(self._observers)

    def __len__(self) -> int:
        return len(self._observers)

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)
        self._update()

    def remove(self, observer: Observer) -> None:
        self._observers.remove(observer)
        self._update()

    def _update(self) -> None:
        self._sinks = [
            (o, o.observe_request if isinstance(o, RequestObserver) else None)
            for o in self._observers
        ]

    def emit(self, hops: Sequence[Hop]) -> None:
        """Every hop of one request to every observer (per request when it can take that)."""
        for observer, per_request in self._sinks:
            if per_request is not None:
                try:
                    per_request(hops)
                except Exception:
                    self._failed_once(observer)
                continue
            for hop in hops:
                try:
                    observer(hop)
                except Exception:
                    self._failed_once(observer)

    def _failed_once(self, observer: Observer) -> None:
        # Telemetry must never break traffic; one log line per broken observer.
        if id(observer) not in self._failed:
            self._failed.add(id(observer))
            log.exception("hop observer %r failed; ignoring its errors", observer)
