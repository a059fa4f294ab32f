"""`meshload preflight`: is the cluster ready for a canary test? One line per check."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlparse

from meshcore.errors import ConfigError
from meshcore.exitcodes import ExitCode
from meshload.cli import add_kube_flags


def register(sub: Any) -> None:
    p = sub.add_parser(
        "preflight",
        help="check a cluster is ready for a canary test (sidecars, subsets, gateway, telemetry)",
        description=(
            "Checks, one line each (✓ or ✗ with the fix): the namespace injects sidecars; every "
            "pod of the routed workloads has an istio-proxy container; every DestinationRule "
            "subset has a ready pod; the VirtualService is bound to an existing Gateway serving "
            "its hosts; the ingress gateway has an address; the credentials may update the "
            "VirtualService; one probe through the gateway answers (its status, version header "
            "and stamps); Jaeger and Prometheus answer. Exit code 0 only when all pass."
        ),
    )
    add_kube_flags(p)
    p.add_argument(
        "-n", "--namespace", default="default", help="namespace of the canary (default: default)"
    )
    p.add_argument(
        "--virtual-service",
        default="frontend",
        help="VirtualService whose weights the rollout moves (default: frontend)",
    )
    p.add_argument(
        "--http-route",
        metavar="NAME",
        help="a Gateway API canary: check this HTTPRoute (Accepted by its Gateways of class "
        "istio, every backendRef a Service with ready endpoints) instead of a VirtualService",
    )
    p.add_argument("--jaeger-url", help="Jaeger query URL, e.g. http://127.0.0.1:16686")
    p.add_argument("--prometheus-url", help="Prometheus URL, e.g. http://127.0.0.1:9090")
    p.add_argument(
        "--gateway-url",
        help="the gateway to send one probe through (default: the ingress address found), e.g. "
        "http://127.0.0.1:8080 after `meshload port-forward`",
    )
    p.add_argument(
        "--host-header",
        help="Host of the probe (default: the VirtualService's first host its Gateway serves)",
    )
    p.add_argument("--version-header", default="x-version", help="default: x-version")
    p.add_argument(
        "--ca-bundle",
        help="PEM file of the CA that signed an https:// gateway's certificate (default: the "
        "system's trust store)",
    )
    p.add_argument(
        "--insecure", action="store_true", help="do not verify an https:// gateway's certificate"
    )
    p.set_defaults(run=run)


def _url(flag: str, value: str | None) -> str | None:
    if value and (urlparse(value).scheme not in ("http", "https") or not urlparse(value).netloc):
        raise ConfigError(f"{flag} {value}: not an http(s) URL; give e.g. http://127.0.0.1:16686")
    return value or None


def run(args: argparse.Namespace) -> int:
    from loadgen import client_tls
    from loadgen.clusterread import KubeReader
    from loadgen.options import check_tls_flags
    from loadgen.preflight import Target, run_checks
    from meshcore.kube.client import Kube

    target = Target(
        namespace=args.namespace,
        virtual_service=args.virtual_service,
        jaeger_url=_url("--jaeger-url", args.jaeger_url),
        prometheus_url=_url("--prometheus-url", args.prometheus_url),
        gateway_url=_url("--gateway-url", args.gateway_url),
        host_header=args.host_header or None,
        version_header=args.version_header,
        http_route=args.http_route or None,
    )
    check_tls_flags(args.ca_bundle or "", args.insecure)
    client_tls.configure(client_tls.ClientTls(args.ca_bundle or None, args.insecure))
    with Kube.connect(args.kubeconfig, args.context) as kube:
        checks = run_checks(KubeReader(kube), target)
    for check in checks:
        print(check.line(), flush=True)
    failing = sum(not c.ok for c in checks)
    if failing:
        print(f"preflight: {failing} of {len(checks)} checks fail")
        return ExitCode.FAILED
    print(f"preflight: all {len(checks)} checks pass")
    return ExitCode.OK
