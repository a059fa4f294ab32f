"""A hop observer that exports one SERVER span per sampled hop over OTLP/HTTP, in batches.

On the request path the observer only appends `(hop, request id)` to a bounded queue; a
background thread encodes (see `meshsim.telemetry.otlp`) and posts every second or every
`batch_spans` spans, like the SDK's BatchSpanProcessor. A full queue drops spans (counted);
a failing collector is logged once and its batches dropped: traffic never waits for tracing.
"""

from __future__ import annotations

import http.client
import logging
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat

from meshsim.boutique.hops import Hop
from meshsim.telemetry import exchange
from meshsim.telemetry.istio import Peer
from meshsim.telemetry.otlp import SpanEncoder, export_framed, workload_resource

log = logging.getLogger(__name__)

DEFAULT_MAX_QUEUE = 100_000
DEFAULT_BATCH_SPANS = 2048
DEFAULT_FLUSH_INTERVAL_S = 1.0
_RATIO_SCALE = 1 << 64


Poster = Callable[[bytes], object]
"""Where encoded export requests go (an `OtlpHttpPoster`, or `list.append` in tests); raises on
failure."""


class OtlpHttpPoster:
    """POSTs protobuf export requests to an OTLP/HTTP `/v1/traces` URL over one keep-alive
    connection (reopened after a failure)."""

    def __init__(self, endpoint: str, timeout_s: float = 2.0) -> None:
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"{endpoint!r} is not an http:// OTLP endpoint")
        self.host, self.port = url.hostname, url.port or 80
        self.path = url.path or "/v1/traces"
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def __call__(self, body: bytes) -> None:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        try:
            self._conn.request("POST", self.path, body, {"Content-Type": "application/x-protobuf"})
            resp = self._conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            self._conn.close()
            self._conn = None
            raise
        if resp.status >= 300:
            raise OSError(f"{self.path} answered HTTP {resp.status}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def sampled_by_trace_id(trace_id: str, ratio: float) -> bool:
    """The SDK's TraceIdRatioBased rule: the trace id's low 64 bits below ratio * 2**64."""
    return int(trace_id[16:], 16) < ratio * _RATIO_SCALE


class SpanObserver:
    """Turns hops into spans; call `close()` to flush and stop the export thread."""

    def __init__(
        self,
        peers: Mapping[str, Peer],
        poster: Poster,
        *,
        sampling_ratio: float = 1.0,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch_spans: int = DEFAULT_BATCH_SPANS,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.encoder = SpanEncoder(peers)
        self.resources = {name: workload_resource(p) for name, p in peers.items()}
        self.poster = poster
        self.sampling_ratio = sampling_ratio
        self.max_queue = max_queue
        self.batch_spans = batch_spans
        self.flush_interval_s = flush_interval_s
        self.dropped = 0
        self.exported = 0
        self.failed_batches = 0
        self._on_error = on_error
        self._queue: deque[tuple[Hop, str]] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._logged = False
        self._thread = threading.Thread(target=self._run, name="span-export", daemon=True)
        self._thread.start()

    def is_sampled(self, hop: Hop, ex: exchange.Exchange | None) -> bool:
        if ex is not None:
            return ex.sampled
        if hop.parent_span_id is None:
            return sampled_by_trace_id(hop.trace_id, self.sampling_ratio)
        return hop.sampled

    def __call__(self, hop: Hop) -> None:
        ex = exchange.current()
        if not self.is_sampled(hop, ex):
            return
        queue = self._queue
        if len(queue) >= self.max_queue:
            self.dropped += 1
            return
        request_id = ex.request_id if ex is not None and ex.request_id else None
        queue.append((hop, request_id or exchange.request_id_from_trace(hop.trace_id)))
        if len(queue) >= self.batch_spans:
            self._wake.set()

    def observe_request(self, hops: Sequence[Hop]) -> None:
        """Every hop of one request: one sampling decision and one queue operation."""
        ex = exchange.current()
        if ex is None or not ex.request_id:
            for hop in hops:
                self(hop)
            return
        if not ex.sampled:
            return
        queue = self._queue
        room = self.max_queue - len(queue)
        if room < len(hops):
            self.dropped += len(hops) - max(room, 0)
            if room <= 0:
                return
            hops = hops[:room]
        # One C-level extend: the export thread pops from the other end meanwhile.
        queue.extend(zip(hops, repeat(ex.request_id)))
        if len(queue) >= self.batch_spans:
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            self.flush()
            if stopping:
                return

    def flush(self) -> None:
        """Export everything queued so far (from the export thread, or after close)."""
        while self._queue:
            self._export_batch()

    def _export_batch(self) -> None:
        queue, encode = self._queue, self.encoder.framed
        by_workload: dict[str, list[bytes]] = {}
        n = 0
        for _ in range(min(len(queue), self.batch_spans)):
            try:
                hop, request_id = queue.popleft()
            except IndexError:  # flushed from another thread meanwhile (close() timed out)
                break
            n += 1
            spans = by_workload.get(hop[1])  # destination
            if spans is None:
                spans = by_workload[hop[1]] = []
            spans.append(encode(hop, request_id))
        body = export_framed(
            (self.resources.get(w, b""), spans) for w, spans in by_workload.items()
        )
        try:
            self.poster(body)
            self.exported += n
        except Exception as e:
            self.failed_batches += 1
            if self._on_error is not None:
                self._on_error(e)
            if not self._logged:
                self._logged = True
                log.warning("span export failed (%s); dropping spans until it works again", e)

    def close(self, timeout_s: float = 5.0) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout_s)
        closer = getattr(self.poster, "close", None)
        if closer is not None:
            closer()
