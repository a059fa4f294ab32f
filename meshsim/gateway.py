"""The Istio ingress gateway as a Deployment runs it: N Envoy replicas behind one address.

    gateway = Gateway(workdir, snapshot, replicas=2)   # started and ready
    gateway.url                                        # the one address clients use
    gateway.replicas[1].url, gateway.pods[1]           # one replica, and its pod's name

Each replica is an Envoy of its own (`meshsim.envoy.Envoy`: its own config files, admin port and
listener), started with `POD_NAME` set to its pod's name as Kubernetes names a Deployment's pods
(`istio-ingressgateway-<template hash>-<index>`), so `%ENVIRONMENT(POD_NAME)%` in a response
header tells which replica answered. The control plane pushes to each on its own.

One replica listens on the gateway's address itself, as the mesh always did. Several sit behind
a balancer on that address, one more Envoy, in one of two modes:

    request      an HTTP router, round robin per request: every replica serves 1/N of the
                 requests whatever the number of clients or connections (the default: a
                 stale replica is measured even with one keep-alive user)
    connection   a TCP proxy, round robin per connection, as a cloud load balancer in front
                 of the gateway's Service does: a keep-alive client stays on one replica, so
                 with few users some replicas may serve nothing

The request balancer is transparent: it adds no request id, no `x-envoy-*` header, does not
rewrite `server`, retries nothing and times out nothing (the replicas do that as they always
did).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from meshcore.errors import ConfigError
from meshsim.envoy import EDGE_OVERLOAD, HCM_TYPE, ROUTER_TYPE, Envoy, EnvoyProcess
from meshsim.procs import Child
from meshsim.telemetry.istio import GATEWAY_NAMESPACE
from meshsim.tls import LISTENER_NAME as HTTPS_LISTENER
from meshsim.tls import Certificates, listener_stats
from meshsim.translate import Snapshot

DEPLOYMENT = "istio-ingressgateway"
BALANCE_MODES = ("request", "connection")
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
# The alphabet Kubernetes draws generated name parts from (no vowels, no look-alikes).
_K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Envoy's per-cluster defaults (1024 requests) would turn a large Locust run into 503s at the
# balancer; the replicas themselves have no such bound in front of them.
_UNBOUNDED = {"thresholds": [{"max_connections": 1_000_000, "max_pending_requests": 1_000_000,
                              "max_requests": 1_000_000, "max_retries": 0}]}  # fmt: skip


def pod_names(replicas: int) -> list[str]:
    """The gateway's pod names: `istio-ingressgateway-<template hash>-<index>`. The hash is
    fixed (one pod template), so a replica's name, and the `replica_id` records give it, is
    the same in every embedded run."""
    digest = hashlib.sha256(DEPLOYMENT.encode()).digest()
    template_hash = "".join(_K8S_ALPHABET[b % len(_K8S_ALPHABET)] for b in digest[:10])
    return [f"{DEPLOYMENT}-{template_hash}-{i}" for i in range(replicas)]


def parse_skews(text: str) -> dict[int, float]:
    """`1=800,2=50` (as `--push-skew-ms` takes it) as {replica index: ms}; "" is no skew.
    Only the syntax: `check_replicas` says whether the indices and values can work."""
    out: dict[int, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        index, sep, ms = part.partition("=")
        try:
            if not sep:
                raise ValueError
            replica, skew = int(index), float(ms)
        except ValueError:
            raise ConfigError(f"{part!r} is not REPLICA=MS; give e.g. 1=800,2=50") from None
        if replica in out:
            raise ConfigError(f"{part!r}: replica {replica} has a skew already; give one each")
        out[replica] = skew
    return out


def check_replicas(replicas: int, push_skew_ms: dict[int, float], balance: str) -> None:
    """One line for gateway settings that cannot work."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ConfigError(f"gateway replicas {replicas!r}: give a whole number, 1 or more")
    for index, skew in push_skew_ms.items():
        if not 0 <= index < replicas:
            raise ConfigError(
                f"push skew for replica {index}: the gateway has replicas 0-{replicas - 1}; "
                "give a skew per existing replica"
            )
        if not 0 <= skew <= 60_000:
            raise ConfigError(f"push skew {skew!r} ms of replica {index}: give 0 to 60000 ms")
    if balance not in BALANCE_MODES:
        raise ConfigError(f"gateway balance {balance!r}: choose one of {', '.join(BALANCE_MODES)}")


def balancer_bootstrap(
    ports: list[int], *, port: int, balance: str, https_ports: list[int] | None = None
) -> dict[str, Any]:
    """An Envoy on 127.0.0.1:`port` sending to the replicas' `ports`, round robin; with
    `https_ports`, a second listener passes TLS connections through to the replicas' HTTPS
    listeners, round robin per connection (TLS ends at a replica, as behind a cloud balancer)."""
    if balance == "connection":
        proxy = {
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": TCP_PROXY_TYPE,
                "stat_prefix": "balancer",
                "cluster": "replicas",
            },
        }
    else:
        proxy = {
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": HCM_TYPE,
                "stat_prefix": "balancer",
                "generate_request_id": False,
                "skip_xff_append": True,
                "server_header_transformation": "PASS_THROUGH",
                "route_config": {
                    "name": "balancer",
                    "virtual_hosts": [
                        {
                            "name": "replicas",
                            "domains": ["*"],
                            "routes": [
                                {
                                    "match": {"prefix": "/"},
                                    "route": {"cluster": "replicas", "timeout": "0s"},
                                }
                            ],
                        }
                    ],
                },
                "http_filters": [
                    {
                        "name": "envoy.filters.http.router",
                        "typed_config": {"@type": ROUTER_TYPE, "suppress_envoy_headers": True},
                    }
                ],
            },
        }
    listeners = [_listener("balancer", proxy)]
    clusters = [_replicas_cluster("replicas", ports)]
    if https_ports:
        tcp = {
            "name": "envoy.filters.network.tcp_proxy",
            "typed_config": {
                "@type": TCP_PROXY_TYPE,
                "stat_prefix": "balancer_https",
                "cluster": "replicas_https",
            },
        }
        listeners.append(_listener(HTTPS_LISTENER, tcp))
        clusters.append(_replicas_cluster("replicas_https", https_ports))
    listeners[0]["address"]["socket_address"]["port_value"] = port
    return {
        "node": {"id": f"{DEPLOYMENT}-balancer.{GATEWAY_NAMESPACE}", "cluster": DEPLOYMENT},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "overload_manager": EDGE_OVERLOAD,
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def _listener(name: str, proxy: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [proxy]}],
    }


def _replicas_cluster(name: str, ports: list[int]) -> dict[str, Any]:
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in ports
    ]
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "circuit_breakers": _UNBOUNDED,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    }


class Gateway:
    """The gateway's replicas (and their balancer when there are several), started and ready
    when the constructor returns; a failure stops what started."""

    def __init__(
        self,
        workdir: Path,
        snapshot: Snapshot,
        *,
        replicas: int = 1,
        port: int = 0,
        balance: str = "request",
        concurrency: int = 1,
        otlp_port: int | None = None,
        trace_sampling: float = 100.0,
    ) -> None:
        check_replicas(replicas, {}, balance)
        self.pods = pod_names(replicas)
        self.balance = balance
        self.replicas: list[Envoy] = []
        self.balancer: EnvoyProcess | None = None
        single = replicas == 1
        # TLS servers get the mesh's own certificates (meshsim.tls), made before any replica
        self.certificates = Certificates(workdir / "tls") if snapshot.tls_servers else None
        chains = self.certificates.chains(snapshot.tls_servers) if self.certificates else []
        try:
            # All start before any is waited for: N replicas take about as long as one.
            for i, pod in enumerate(self.pods):
                self.replicas.append(
                    Envoy(
                        workdir / ("envoy" if single else f"envoy-{i}"),
                        snapshot,
                        port=port if single else 0,
                        otlp_port=otlp_port,
                        trace_sampling=trace_sampling,
                        concurrency=concurrency,
                        pod_name=pod,
                        name="envoy" if single else f"envoy-{i}",
                        wait=False,
                        tls_chains=chains,
                    )
                )
            for replica in self.replicas:
                replica.wait_ready()
            if not single:
                https = [r.https_port for r in self.replicas if r.https_port]
                boot = balancer_bootstrap(
                    [r.port for r in self.replicas], port=port, balance=balance, https_ports=https
                )
                self.balancer = EnvoyProcess(
                    "gateway-balancer", workdir / "balancer", boot, concurrency=concurrency
                )
                self.balancer.wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def port(self) -> int:
        return (self.balancer or self.replicas[0]).port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def https_url(self) -> str | None:
        """The HTTPS address when a Gateway server terminates TLS (None when none does)."""
        port = self.balancer.https_port if self.balancer else self.replicas[0].https_port
        return f"https://127.0.0.1:{port}" if port else None

    @property
    def ca_file(self) -> Path | None:
        """The certificate authority that signed the gateway's certificates."""
        return self.certificates.ca_file if self.certificates else None

    def tls_stats(self) -> list[dict[str, Any]]:
        """Per replica, Envoy's own count of TLS handshakes by version and cipher."""
        if self.https_url is None:
            return []
        return [
            {"replica": pod, **listener_stats(r.admin.stats("listener.https.ssl."))}
            for pod, r in zip(self.pods, self.replicas, strict=True)
        ]

    @property
    def children(self) -> Iterator[Child]:
        """Every process of the gateway, replicas first."""
        yield from (r.child for r in self.replicas)
        if self.balancer is not None:
            yield self.balancer.child

    def urls(self) -> dict[str, str]:
        """The gateway's lines in `meshload mesh up`'s output (after `gateway`)."""
        urls = {}
        if self.https_url is not None:
            urls.update({"gateway-https": self.https_url, "ca-bundle": str(self.ca_file)})
        if self.balancer is None:
            return {**urls, "envoy-admin": self.replicas[0].admin_url}
        for i, r in enumerate(self.replicas):
            urls[f"gateway-{i}"] = r.url
            urls[f"envoy-admin-{i}"] = r.admin_url
        urls["balancer-admin"] = self.balancer.admin_url
        return urls

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        for r in reversed(self.replicas):
            r.stop()
