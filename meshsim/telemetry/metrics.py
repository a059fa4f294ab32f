"""Istio's standard metrics from hops, in Prometheus' text exposition format.

One series set per (source, destination, status, protocol): the embedded sidecars see each
in-process request identically on both sides, so the same numbers are rendered twice, as
`reporter="destination"` on the destination's `/metrics` and `reporter="source"` on the
source's (the ingress gateway's for hops entering the mesh). Hand-written rather than
prometheus_client: a hop costs one dict lookup and three bisects, and label strings are built
once per series instead of once per request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from itertools import accumulate

from meshsim.boutique.hops import Hop
from meshsim.telemetry import exchange
from meshsim.telemetry.istio import UNKNOWN, Peer, grpc_status, response_flags

DURATION_BUCKETS_MS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000,
)  # fmt: skip
"""Istio's default buckets of istio_request_duration_milliseconds."""
BYTES_BUCKETS = (1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000)
"""Istio's default buckets of istio_request_bytes / istio_response_bytes (1 * 10**i)."""

REQUESTS = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds"
REQUEST_BYTES = "istio_request_bytes"
RESPONSE_BYTES = "istio_response_bytes"
_HELP = {
    REQUESTS: ("counter", "Requests seen by the proxy."),
    DURATION: ("histogram", "Request duration in milliseconds."),
    REQUEST_BYTES: ("histogram", "Request body size in bytes."),
    RESPONSE_BYTES: ("histogram", "Response body size in bytes."),
}
Key = tuple[str, str, int, str]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _principal(peer: Peer) -> str:
    return f"spiffe://cluster.local/ns/{peer.namespace}/sa/{peer.app}"


def istio_labels(
    reporter: str, src: Peer, dst: Peer, status_code: int, protocol: str
) -> dict[str, str]:
    """The labels Istio's stats filter puts on a request, in its order."""
    grpc = protocol == "grpc"
    return {
        "reporter": reporter,
        "source_workload": src.workload,
        "source_workload_namespace": src.namespace,
        "source_principal": _principal(src),
        "source_app": src.app,
        "source_version": src.version,
        "source_canonical_service": src.canonical_service,
        "source_canonical_revision": src.canonical_revision,
        "source_cluster": "Kubernetes",
        "destination_workload": dst.workload,
        "destination_workload_namespace": dst.namespace,
        "destination_principal": _principal(dst),
        "destination_app": dst.app,
        "destination_version": dst.version,
        "destination_service": dst.fqdn,
        "destination_service_name": dst.service,
        "destination_service_namespace": dst.namespace,
        "destination_canonical_service": dst.canonical_service,
        "destination_canonical_revision": dst.canonical_revision,
        "destination_cluster": "Kubernetes",
        "request_protocol": protocol,
        # gRPC errors travel in trailers: the HTTP/2 status stays 200, as Istio reports it.
        "response_code": "200" if grpc and status_code not in (499, 503) else str(status_code),
        "grpc_response_status": grpc_status(status_code) if grpc else "",
        "response_flags": response_flags(status_code),
        # Only the server side of an mTLS connection knows its policy; the client says unknown.
        "connection_security_policy": "mutual_tls" if reporter == "destination" else UNKNOWN,
    }


class Series:
    """Counts and histograms of one label set."""

    __slots__ = ("count", "duration_sum", "duration", "req_sum", "req", "resp_sum", "resp")

    def __init__(self) -> None:
        self.count = 0
        self.duration_sum = 0.0
        self.duration = [0] * (len(DURATION_BUCKETS_MS) + 1)
        self.req_sum = 0
        self.req = [0] * (len(BYTES_BUCKETS) + 1)
        self.resp_sum = 0
        self.resp = [0] * (len(BYTES_BUCKETS) + 1)

    def add(self, duration_ms: float, request_bytes: int, response_bytes: int) -> None:
        self.count += 1
        self.duration_sum += duration_ms
        self.duration[bisect_left(DURATION_BUCKETS_MS, duration_ms)] += 1
        self.req_sum += request_bytes
        self.req[bisect_left(BYTES_BUCKETS, request_bytes)] += 1
        self.resp_sum += response_bytes
        self.resp[bisect_left(BYTES_BUCKETS, response_bytes)] += 1

    def add_without_bodies(self, duration_ms: float) -> None:
        """`add(duration_ms, 0, 0)`: 0 bytes fall in the first bucket of both histograms."""
        self.count += 1
        self.duration_sum += duration_ms
        self.duration[bisect_left(DURATION_BUCKETS_MS, duration_ms)] += 1
        self.req[0] += 1
        self.resp[0] += 1


class IstioMetrics:
    """A hop observer keeping Istio's metrics; `render(proxy)` is that proxy's `/metrics`.

    Inside a workload served with the `exchange` wrapper, the hop that entered the workload
    is recorded by the wrapper with its real body sizes; in-process RPCs have no wire, so
    they count 0 bytes.
    """

    def __init__(self, peers: Mapping[str, Peer]) -> None:
        self.peers = peers
        self._series: dict[Key, Series] = {}
        self._rendered: dict[tuple[Key, str], str] = {}

    def __call__(self, hop: Hop) -> None:
        ex = exchange.current()
        if ex is not None and ex.entry is None and ex.is_entry(hop):
            ex.entry = hop
            return
        self.record(hop, 0, 0)

    def observe_request(self, hops: Sequence[Hop]) -> None:
        """Every hop of one request, as calling this observer on each would record them."""
        ex = exchange.current()
        all_series = self._series
        for hop in hops:
            if ex is not None and ex.entry is None and ex.is_entry(hop):
                ex.entry = hop
                continue
            key = (hop.source, hop.destination, hop.status_code, hop.protocol)
            series = all_series.get(key)
            if series is None:
                series = all_series[key] = Series()
            # series.add_without_bodies(hop.duration_ms), inlined: a dozen hops per page.
            duration_ms = hop.duration_ms
            series.count += 1
            series.duration_sum += duration_ms
            series.duration[bisect_left(DURATION_BUCKETS_MS, duration_ms)] += 1
            series.req[0] += 1
            series.resp[0] += 1

    def record(self, hop: Hop, request_bytes: int, response_bytes: int) -> None:
        key = (hop.source, hop.destination, hop.status_code, hop.protocol)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = Series()
        series.add(hop.duration_ms, request_bytes, response_bytes)

    def _label_text(self, key: Key, reporter: str) -> str:
        text = self._rendered.get((key, reporter))
        if text is None:
            src, dst = self._peer(key[0]), self._peer(key[1])
            labels = istio_labels(reporter, src, dst, key[2], key[3])
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self._rendered[(key, reporter)] = text
        return text

    def _peer(self, name: str) -> Peer:
        peer = self.peers.get(name)
        if peer is None:
            # A hop from or to a workload the spec does not name: labelled, not dropped.
            peer = Peer(name, UNKNOWN, name, UNKNOWN, name, name, "latest", name, "", "")
        return peer

    def render(self, proxy: str | None = None) -> str:
        """The exposition of `proxy` (a workload name or the gateway), or of every proxy."""
        chosen: list[tuple[str, Key, Series]] = []
        for key, series in list(self._series.items()):
            if proxy is None or key[1] == proxy:
                chosen.append((self._label_text(key, "destination"), key, series))
            if proxy is None or key[0] == proxy:
                chosen.append((self._label_text(key, "source"), key, series))
        lines: list[str] = []
        for metric, (kind, text) in _HELP.items():
            lines += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}"]
            for labels, _, s in chosen:
                if metric == REQUESTS:
                    lines.append(f"{metric}{{{labels}}} {s.count}")
                elif metric == DURATION:
                    bounds = DURATION_BUCKETS_MS
                    _histogram(lines, metric, labels, bounds, s.duration, s.duration_sum)
                elif metric == REQUEST_BYTES:
                    _histogram(lines, metric, labels, BYTES_BUCKETS, s.req, s.req_sum)
                else:
                    _histogram(lines, metric, labels, BYTES_BUCKETS, s.resp, s.resp_sum)
        return "\n".join(lines) + "\n"


def _histogram(
    lines: list[str],
    metric: str,
    labels: str,
    bounds: tuple[float, ...],
    counts: list[int],
    total: float,
) -> None:
    cumulative = list(accumulate(counts))
    for bound, c in zip(bounds, cumulative, strict=False):
        lines.append(f'{metric}_bucket{{{labels},le="{bound}"}} {c}')
    lines.append(f'{metric}_bucket{{{labels},le="+Inf"}} {cumulative[-1]}')
    lines.append(f"{metric}_sum{{{labels}}} {total}")
    lines.append(f"{metric}_count{{{labels}}} {cumulative[-1]}")
