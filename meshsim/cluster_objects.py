"""The core Kubernetes objects the embedded mesh shows its API's clients.

What a cluster running Online Boutique with Istio holds: the namespace labelled for sidecar
injection, one Ready pod per workload with an `istio-proxy` container, a Service and Endpoints
per service, the ingress gateway's Ready pods (one per replica) and its Service with its address
(127.0.0.1 here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from meshsim.hosts import Endpoint

PROXY_IMAGE = "docker.io/istio/proxyv2"
READY = [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}]


def _pod(name: str, namespace: str, labels: dict[str, str], image: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {"sidecar.istio.io/status": '{"containers":["istio-proxy"]}'},
        },
        "spec": {
            "containers": [
                {"name": "server", "image": image},
                {"name": "istio-proxy", "image": PROXY_IMAGE},
            ]
        },
        "status": {
            "phase": "Running",
            "podIP": "127.0.0.1",
            "conditions": READY,
            # With the fields a V1ContainerStatus requires, so typed clients can read it.
            "containerStatuses": [
                {"name": name, "ready": True, "image": img, "imageID": "", "restartCount": 0}
                for name, img in (("server", image), ("istio-proxy", PROXY_IMAGE))
            ],
        },
    }


def core_objects(
    endpoints: Sequence[Endpoint],
    *,
    gateway_port: int,
    namespace: str = "default",
    gateway_pods: Sequence[str] = ("istio-ingressgateway-0",),
    selectors: Mapping[str, Mapping[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """`gateway_pods`: the ingress gateway's replicas, named as their Envoys' `POD_NAME`;
    `selectors`: the selector of each Service that is not `{app: <its name>}` (a Service per
    version, `frontend-v1` over `{app: frontend, version: v1}`)."""
    objects: list[dict[str, Any]] = [
        {
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"istio-injection": "enabled"}},
        },
        {"kind": "Namespace", "metadata": {"name": "istio-system"}},
    ]
    services: dict[tuple[str, str], list[Endpoint]] = {}
    for e in endpoints:
        services.setdefault((e.service, e.namespace), []).append(e)
        objects.append(
            _pod(f"{e.workload}-0", e.namespace, dict(e.labels), f"meshload/simulated-{e.service}")
        )
    for (service, ns), members in services.items():
        selector = dict((selectors or {}).get(service) or {"app": service})
        objects.append(
            {
                "kind": "Service",
                "metadata": {"name": service, "namespace": ns, "labels": {"app": service}},
                "spec": {
                    "type": "ClusterIP",
                    "selector": selector,
                    "ports": [{"name": "http", "port": 80, "targetPort": members[0].port}],
                },
            }
        )
        objects.append(
            {
                "kind": "Endpoints",
                "metadata": {"name": service, "namespace": ns},
                "subsets": [
                    {
                        "addresses": [
                            {
                                "ip": "127.0.0.1",
                                "targetRef": {"kind": "Pod", "name": f"{m.workload}-0"},
                            }
                            for m in members
                        ],
                        "ports": [{"name": "http", "port": members[0].port}],
                    }
                ],
            }
        )
    gateway_labels = {"app": "istio-ingressgateway", "istio": "ingressgateway"}
    for pod in gateway_pods:
        objects.append(_pod(pod, "istio-system", gateway_labels, PROXY_IMAGE))
    objects.append(
        {
            "kind": "Service",
            "metadata": {
                "name": "istio-ingressgateway",
                "namespace": "istio-system",
                "labels": gateway_labels,
            },
            "spec": {
                "type": "LoadBalancer",
                "selector": gateway_labels,
                "ports": [{"name": "http2", "port": gateway_port, "targetPort": gateway_port}],
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}},
        }
    )
    return objects
