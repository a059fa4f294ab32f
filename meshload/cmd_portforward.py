"""`meshload port-forward`: the ingress gateway, Jaeger and Prometheus on 127.0.0.1 ports."""

from __future__ import annotations

import argparse
import sys
import time
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


# name, Service, its port, port names to look for, required, how to install it
TARGETS = (
    ("gateway", "istio-ingressgateway", 80, ("http2", "http"), True, GATEWAY_HINT),
    ("jaeger", "tracing", 16686, ("http-query",), False, ADDON_HINT.format(file="jaeger.yaml")),
    ("prometheus", "prometheus", 9090, ("http",), False, ADDON_HINT.format(file="prometheus.yaml")),
)


def forwards(args: argparse.Namespace) -> list[Any]:
    from loadgen.portforward import Forward

    return [
        Forward(
            name,
            args.namespace,
            service,
            port,
            names,
            getattr(args, f"{name}_port"),
            required=required,
            install_hint=hint,
        )  # fmt: skip
        for name, service, port, names, required, hint in TARGETS
    ]


def locust_command(urls: dict[str, str]) -> str:
    """The canary's command line for these forwarded URLs (the walkthrough shows it)."""
    command = f"locust -f scenarios/canary.py --mesh kubernetes --host {urls['gateway']}"
    if "jaeger" in urls:
        command += f" --jaeger-url {urls['jaeger']}"
    if "prometheus" in urls:
        command += f" --prometheus-url {urls['prometheus']}"
    return command


def run(args: argparse.Namespace) -> int:
    from loadgen.clusterread import KubeReader
    from loadgen.portforward import KubeDialer, open_forwards
    from meshcore.kube.client import Kube

    kube = Kube.connect(args.kubeconfig, args.context)
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
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (meshload.cli): the normal end
        return ExitCode.OK
    finally:
        for lst in listeners:
            lst.close()
        kube.close()
