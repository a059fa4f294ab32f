"""`meshload port-forward`: the ingress gateway, Jaeger and Prometheus on 127.0.0.1 ports."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import Any

from meshcore.exitcodes import ExitCode
from meshload.cli import add_kube_flags

GATEWAY_HINT = "istioctl install creates it (default and demo profiles)"
ADDON_HINT = "kubectl apply -f samples/addons/{file} of your Istio download"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "port-forward",
        help="forward the ingress gateway, Jaeger and Prometheus to 127.0.0.1 until Ctrl-C",
        description=(
            "Forwards istio-ingressgateway (port 80), Jaeger's query (tracing, 16686) and "
            "Prometheus (9090) from the cluster to local ports with the Kubernetes API's "
            "port-forward, and prints the URLs to give locust and meshload. A missing addon is "
            "reported and skipped; the gateway is required."
        ),
    )
    add_kube_flags(p)
    p.add_argument(
        "-n",
        "--namespace",
        default="istio-system",
        help="namespace of the gateway and the addons (default: istio-system)",
    )
    for name, port in (("gateway", 8080), ("jaeger", 16686), ("prometheus", 9090)):
        p.add_argument(
            f"--{name}-port",
            type=int,
            default=port,
            metavar="PORT",
            help=f"local port for {name} on 127.0.0.1 (default: {port}; 0 takes a free one)",
        )
    p.set_defaults(run=run)


def forwards(args: argparse.Namespace) -> list[Any]:
    from loadgen.portforward import Forward

    ns = args.namespace
    return [
        Forward(
            "gateway",
            ns,
            "istio-ingressgateway",
            80,
            ("http2", "http"),
            args.gateway_port,
            install_hint=GATEWAY_HINT,
        ),
        Forward(
            "jaeger",
            ns,
            "tracing",
            16686,
            ("http-query",),
            args.jaeger_port,
            required=False,
            install_hint=ADDON_HINT.format(file="jaeger.yaml"),
        ),
        Forward(
            "prometheus",
            ns,
            "prometheus",
            9090,
            ("http",),
            args.prometheus_port,
            required=False,
            install_hint=ADDON_HINT.format(file="prometheus.yaml"),
        ),
    ]


def locust_command(urls: dict[str, str]) -> str:
    """The canary's command line for these forwarded URLs (the walkthrough shows it)."""
    command = f"locust -f scenarios/canary.py --mesh kubernetes --host {urls['gateway']}"
    if "jaeger" in urls:
        command += f" --jaeger-url {urls['jaeger']}"
    if "prometheus" in urls:
        command += f" --prometheus-url {urls['prometheus']}"
    return command


def _stop_on_sigterm(stop: threading.Event) -> Any:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace) -> int:
    from loadgen.clusterread import KubeReader
    from loadgen.portforward import KubeDialer, open_forwards
    from meshcore.kube.client import Kube

    kube = Kube.connect(args.kubeconfig, args.context)
    stop = threading.Event()
    previous = _stop_on_sigterm(stop)
    listeners: list[Any] = []
    try:
        listeners, skipped = open_forwards(KubeReader(kube), KubeDialer(kube), forwards(args))
        urls = {lst.target.forward.name: lst.url for lst in listeners}
        for lst in listeners:
            t = lst.target
            print(
                f"{t.forward.name} {lst.url}  (pod {t.forward.namespace}/{t.pod} port {t.pod_port})"
            )
        for line in skipped:
            print(line, file=sys.stderr)
        print(f"run: {locust_command(urls)}")
        print("forwarding; Ctrl-C stops", flush=True)
        while not stop.wait(0.5):
            pass
        return ExitCode.OK
    except KeyboardInterrupt:
        return ExitCode.OK
    finally:
        signal.signal(signal.SIGTERM, previous)
        for lst in listeners:
            lst.close()
        kube.close()
