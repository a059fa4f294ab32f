"""Is this cluster ready for a canary test? One `Check` per fact, each naming its fix.

The checks are pure functions over what a `ClusterReader` returns (`loadgen.clusterread`: the
Kubernetes API through the official client, or a twin in memory for unit tests); Jaeger and
Prometheus are probed through an injectable `HttpGet`. `run_checks` runs them all in the order
a user fixes them: namespace injection, the routed workloads (Service, sidecars, ready pods per
DestinationRule subset), the Gateway binding, the ingress address, the telemetry backends. A
Gateway API canary (`Target.http_route`) has its route's checks from `loadgen.preflight_gateway`.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from loadgen import client_tls
from loadgen.clusterread import SIDECAR, ClusterReader, has_sidecar, is_ready, selector_text
from loadgen.options import TLS_FIX
from meshcore.kube.istio import (
    GROUP,
    authority,
    host_matches,
    resolve_host,
    route_destinations,
    service_name,
)
from meshcore.stamps import CONFIG_HEADER, REPLICA_HEADER

HttpGet = Callable[[str, float], tuple[int, bytes]]
Probe = Callable[[str, Mapping[str, str], float], tuple[int, dict[str, str]]]
APPLY_FIX = "kubectl apply -f scenarios/manifests/cluster/"


@dataclass(frozen=True)
class Check:
    """One verdict: what was found, and when it fails, the command or edit that fixes it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    value: str = ""  # e.g. the ingress gateway's URL, for the caller to reuse

    def line(self) -> str:
        return f"✓ {self.detail}" if self.ok else f"✗ {self.detail} — fix: {self.fix}"


def http_get(url: str, timeout_s: float) -> tuple[int, bytes]:
    """Status and body of a GET; an HTTP error status is returned, not raised."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
            return int(answer.status), answer.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""


def passed(name: str, detail: str, value: str = "") -> Check:
    return Check(name, True, detail, value=value)


def failed(name: str, detail: str, fix: str) -> Check:
    return Check(name, False, detail, fix)


def inject_fix(namespace: str) -> str:
    return (
        f"kubectl label namespace {namespace} istio-injection=enabled --overwrite && "
        f"kubectl rollout restart deployment -n {namespace}"
    )


def check_namespace(reader: ClusterReader, namespace: str) -> Check:
    ns = reader.namespace(namespace)
    if ns is None:
        return failed("namespace", f"namespace {namespace} not found", "check -n/--namespace")
    labels = (ns.get("metadata") or {}).get("labels") or {}
    if labels.get("istio-injection") == "enabled":
        return passed("namespace", f"namespace {namespace} is labelled istio-injection=enabled")
    if labels.get("istio.io/rev") and labels.get("istio-injection") != "disabled":
        rev = labels["istio.io/rev"]
        return passed("namespace", f"namespace {namespace} injects sidecars (istio.io/rev={rev})")
    detail = f"namespace {namespace} is not labelled istio-injection=enabled"
    return failed("namespace", detail, inject_fix(namespace))


def _ref(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or "default"), str(meta.get("name") or "?")


def check_gateways(
    reader: ClusterReader, vs: Mapping[str, Any], ingress_namespace: str
) -> list[Check]:
    """The VirtualService names Gateways that exist, serve its hosts and select a ready pod."""
    ns, name = _ref(vs)
    ref, spec = f"VirtualService {ns}/{name}", vs.get("spec") or {}
    hosts = [str(h) for h in spec.get("hosts") or []]
    names = [str(g) for g in spec.get("gateways") or [] if g != "mesh"]
    if not names:
        fix = "add `gateways: [frontend-gateway]` to its spec, as in scenarios/manifests/cluster/"
        return [failed("gateway", f"{ref} names no Gateway: ingress traffic misses it", fix)]
    if not hosts:
        return [failed("gateway", f"{ref} names no hosts", 'add `hosts: ["*"]` to its spec')]
    checks = []
    for full in names:
        gw_ns, _, gw_name = full.rpartition("/")
        where = f"Gateway {gw_ns or ns}/{gw_name}"
        gw = reader.istio("Gateway", gw_ns or ns, gw_name)
        if gw is None:
            checks.append(
                failed("gateway", f"{ref} names {where}, which does not exist", APPLY_FIX)
            )
            continue
        gw_spec = gw.get("spec") or {}
        served = [str(h) for s in gw_spec.get("servers") or [] for h in s.get("hosts") or []]
        unserved = [h for h in hosts if not any(host_matches(g, h) for g in served)]
        selector = {str(k): str(v) for k, v in (gw_spec.get("selector") or {}).items()}
        pods = [p for p in reader.pods(ingress_namespace, selector) if is_ready(p)]
        if unserved:
            detail = f"{where} does not serve host(s) {', '.join(unserved)} of {ref}"
            fix = f"add them to a server's hosts of {where} (it serves {', '.join(served)})"
            checks.append(failed("gateway", detail, fix))
        elif not selector or not pods:
            sel = selector_text(selector) or "no selector"
            detail = f"{where} selects no ready pod in {ingress_namespace} ({sel})"
            fix = "set its spec.selector to `istio: ingressgateway` (istioctl's ingress gateway)"
            checks.append(failed("gateway", detail, fix))
        else:
            detail = f"{ref} (hosts {', '.join(hosts)}) is bound to {where} ({len(pods)} pod(s))"
            checks.append(passed("gateway", detail))
    return checks


def check_workloads(reader: ClusterReader, vs: Mapping[str, Any]) -> list[Check]:
    """Per routed host: its Service, a sidecar in every pod, ready pods behind every subset."""
    vs_ns, vs_name = _ref(vs)
    routed = route_destinations(vs)
    if not routed:  # meshload moves weights of HTTP routes only
        detail = f"VirtualService {vs_ns}/{vs_name} has no HTTP route destinations"
        return [failed("host", detail, "give it an http route, as in scenarios/manifests/cluster/")]
    checks: list[Check] = []
    for fqdn, used in sorted(routed.items()):
        named = service_name(fqdn)
        if named is None:
            checks.append(passed("host", f"destination {fqdn} is outside the cluster; skipped"))
            continue
        ns, name = named
        svc = reader.service(ns, name)
        raw = ((svc or {}).get("spec") or {}).get("selector") or {}
        selector = {str(k): str(v) for k, v in raw.items()}
        if svc is None or not selector:
            problem = "does not exist" if svc is None else "has no selector"
            fix = "deploy Online Boutique (release/kubernetes-manifests.yaml) or fix the host"
            checks.append(failed("host", f"{fqdn}: Service {ns}/{name} {problem}", fix))
            continue
        pods = reader.pods(ns, selector)
        bare = sorted(str(p["metadata"]["name"]) for p in pods if not has_sidecar(p))
        where = f"Service {ns}/{name} ({selector_text(selector)})"
        if not pods:
            checks.append(failed("sidecar", f"no pods behind {where}", APPLY_FIX))
        elif bare:
            detail = f"pod(s) without an {SIDECAR} container behind {where}: {', '.join(bare)}"
            checks.append(failed("sidecar", detail, inject_fix(ns)))
        else:
            detail = f"all {len(pods)} pod(s) behind {where} have an {SIDECAR} container"
            checks.append(passed("sidecar", detail))
        checks.extend(_check_subsets(reader, fqdn, ns, sorted({vs_ns, ns}), selector, used))
    return checks


def _check_subsets(
    reader: ClusterReader,
    fqdn: str,
    ns: str,
    rule_namespaces: list[str],
    selector: dict[str, str],
    used: set[str],
) -> list[Check]:
    defined: dict[str, dict[str, str]] = {}
    for rule_ns in rule_namespaces:
        for rule in reader.istio_list("DestinationRule", rule_ns):
            spec = rule.get("spec") or {}
            if resolve_host(str(spec.get("host", "")), rule_ns) != fqdn:
                continue
            for s in spec.get("subsets") or []:
                labels = {str(k): str(v) for k, v in (s.get("labels") or {}).items()}
                defined.setdefault(str(s.get("name")), labels)
    checks = []
    for subset in sorted(used - defined.keys()):
        detail = f"subset {subset} of {fqdn} is routed to, but no DestinationRule defines it"
        checks.append(failed("subset", detail, APPLY_FIX))
    for subset, labels in sorted(defined.items()):
        wanted = {**selector, **labels}
        ready = sorted(str(p["metadata"]["name"]) for p in reader.pods(ns, wanted) if is_ready(p))
        what = f"subset {subset} of {fqdn} ({selector_text(wanted)})"
        if ready:
            checks.append(passed("subset", f"{what}: {len(ready)} ready pod(s)"))
            continue
        first = APPLY_FIX
        if labels.get("version") == "v1":
            first = "label the stock frontend: see scenarios/manifests/cluster/patches/"
        wait = f"kubectl get pods -n {ns} -l {selector_text(wanted)}"
        checks.append(failed("subset", f"{what}: no ready pod", f"{first}; then `{wait}`"))
    return checks


def http_port(svc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ingress Service's plain-HTTP port: named http2/http, else port 80, else the first."""
    ports = list((svc.get("spec") or {}).get("ports") or [])
    for test in (lambda p: p.get("name") in ("http2", "http"), lambda p: p.get("port") == 80):
        found = next((p for p in ports if test(p)), None)
        if found is not None:
            return dict(found)
    return dict(ports[0]) if ports else None


def check_ingress(reader: ClusterReader, namespace: str, name: str) -> Check:
    """An address outside the cluster: a LoadBalancer IP, else a NodePort on a node's IP."""
    ref = f"ingress gateway Service {namespace}/{name}"
    svc = reader.service(namespace, name)
    port = http_port(svc) if svc else None
    if svc is None or port is None:
        fix = "istioctl install (its default and demo profiles create istio-ingressgateway)"
        return failed("ingress", f"{ref} {'has no ports' if svc else 'not found'}", fix)
    kind = str((svc.get("spec") or {}).get("type") or "ClusterIP")
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addresses = [str(i.get("ip") or i.get("hostname") or "") for i in ingress]
    if kind == "LoadBalancer" and any(addresses):
        url = f"http://{next(a for a in addresses if a)}:{port['port']}"
        return passed("ingress", f"{ref} at {url} (LoadBalancer)", url)
    node_ips = [
        str(a["address"])
        for n in reader.nodes()
        for wanted in ("ExternalIP", "InternalIP")
        for a in (n.get("status") or {}).get("addresses") or []
        if a.get("type") == wanted
    ]
    if port.get("nodePort") and node_ips:
        url = f"http://{node_ips[0]}:{port['nodePort']}"
        why = "NodePort; `minikube tunnel` would give the LoadBalancer an IP"
        return passed("ingress", f"{ref} at {url} ({why})", url)
    detail = f"{ref} has no address outside the cluster (type {kind}, no IP, no node address)"
    fix = "run `minikube tunnel`, or `meshload port-forward` and use http://127.0.0.1:8080"
    return failed("ingress", detail, fix)


def check_http(
    name: str, url: str, paths: tuple[str, ...], get: HttpGet, *, fix: str, timeout_s: float = 5.0
) -> Check:
    """`name` at `url` answers 200 on one of `paths` (tried in order)."""
    base = url.rstrip("/")
    last = ""
    for path in paths:
        try:
            code, body = get(base + path, timeout_s)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            return failed(name, f"{name} at {url} not reachable ({reason})", fix)
        if code == 200:
            extra = ""
            if path == "/api/services":
                try:
                    extra = f"; {len(json.loads(body).get('data') or [])} services traced"
                except (ValueError, AttributeError):
                    return failed(name, f"{name} at {url}{path} answers, but not JSON", fix)
            return passed(name, f"{name} at {url} answers {path}{extra}", url)
        last = f"HTTP {code} on {path}"
    return failed(name, f"{name} at {url}: {last}", fix)


@dataclass(frozen=True)
class Target:
    """What preflight checks: one VirtualService and the backends the report reads."""

    namespace: str = "default"
    virtual_service: str = "frontend"
    jaeger_url: str | None = None
    prometheus_url: str | None = None
    ingress_namespace: str = "istio-system"
    ingress_service: str = "istio-ingressgateway"
    gateway_url: str | None = None  # the probe's target (default: the ingress address found)
    host_header: str | None = None  # the probe's Host (default: derived from the route)
    version_header: str = "x-version"
    http_route: str | None = None  # an HTTPRoute canary: check it instead of the VirtualService


def _gateway_ref(vs: Mapping[str, Any], ref: str) -> tuple[str, str]:
    ns, _, name = ref.rpartition("/")
    return ns or _ref(vs)[0], name


def check_access(reader: ClusterReader, vs: Mapping[str, Any]) -> Check:
    """The credentials may update the VirtualService (a SelfSubjectAccessReview)."""
    ns, name = _ref(vs)
    ref = f"VirtualService {ns}/{name}"
    allowed = reader.can("update", GROUP, "virtualservices", ns, name)
    if allowed:
        return passed("access", f"these credentials may update {ref}")
    fix = "grant update on virtualservices, as scenarios/manifests/cluster/locust/rbac.yaml does"
    return failed("access", f"these credentials may not update {ref}: no weight can move", fix)


def http_probe(
    url: str, headers: Mapping[str, str], timeout_s: float
) -> tuple[int, dict[str, str]]:
    """Status and response headers of a GET; an HTTP error status is returned, not raised."""
    request = urllib.request.Request(url, headers=dict(headers))
    try:
        host = next((v for k, v in headers.items() if k.lower() == "host"), None)
        context = client_tls.probe_context(host) if url.startswith("https://") else None
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as answer:
            return int(answer.status), {k.lower(): v for k, v in answer.headers.items()}
    except urllib.error.HTTPError as exc:
        return int(exc.code), {k.lower(): v for k, v in exc.headers.items()}


def check_probe(
    url: str, host: str | None, version_header: str, probe: Probe, timeout_s: float = 5.0
) -> Check:
    """One request through the gateway, as meshload will send them: status, version, stamps."""
    target = url.rstrip("/") + "/"
    sent = f" with Host {host}" if host else ""
    try:
        code, headers = probe(target, {"Host": host} if host else {}, timeout_s)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        fix = "start the gateway or `meshload port-forward`, and pass --gateway-url"
        if isinstance(reason, ssl.SSLError):
            fix = TLS_FIX
        return failed("probe", f"gateway at {url} not reachable{sent} ({reason})", fix)
    if code == 404:
        fix = (
            "pass --host-header with a host the route serves (a VirtualService's hosts, "
            "an HTTPRoute's hostnames)"
        )
        return failed("probe", f"gateway at {url} answers 404{sent}: no route matches", fix)
    if code >= 500:
        return failed("probe", f"gateway at {url} answers {code}{sent}", "check the workloads")
    version = headers.get(version_header.lower())
    said = (
        f"{version_header}: {version}"
        if version
        else f"no {version_header} header: meshload stamps one on its own requests during a run"
    )
    stamps = [h for h in (CONFIG_HEADER, REPLICA_HEADER) if h in headers]
    seen = f"; stamps seen: {', '.join(stamps)}" if stamps else ""
    return passed("probe", f"gateway at {url} answers {code}{sent}; {said}{seen}", url)


def run_checks(
    reader: ClusterReader, target: Target, *, get: HttpGet = http_get, probe: Probe = http_probe
) -> list[Check]:
    """Every check in the order a user fixes them; BackendError when the API itself fails."""
    checks = [check_namespace(reader, target.namespace)]
    if target.http_route:
        from loadgen.preflight_gateway import route_checks  # it builds on this module

        return checks + route_checks(reader, target, get=get, probe=probe)
    vs = reader.istio("VirtualService", target.namespace, target.virtual_service)
    if vs is None:
        ref = f"VirtualService {target.namespace}/{target.virtual_service}"
        fix = f"{APPLY_FIX} (or pass --virtual-service and -n)"
        checks.append(failed("virtualservice", f"{ref} not found", fix))
    else:
        checks.extend(check_workloads(reader, vs))
        checks.extend(check_gateways(reader, vs, target.ingress_namespace))
    ingress = check_ingress(reader, target.ingress_namespace, target.ingress_service)
    checks.append(ingress)
    if vs is not None:
        checks.append(check_access(reader, vs))
        url = target.gateway_url or ingress.value
        if url:
            gateways = [
                g for ref in (vs.get("spec") or {}).get("gateways") or [] if ref != "mesh"
                if (g := reader.istio("Gateway", *_gateway_ref(vs, str(ref)))) is not None
            ]  # fmt: skip
            host = target.host_header or authority(vs, gateways)
            checks.append(check_probe(url, host, target.version_header, probe))
    return checks + check_telemetry(target, get)


def check_telemetry(target: Target, get: HttpGet) -> list[Check]:
    checks = []
    if target.jaeger_url:
        fix = "give Jaeger's query URL (port 16686); `meshload port-forward` prints one"
        checks.append(check_http("Jaeger", target.jaeger_url, ("/api/services",), get, fix=fix))
    if target.prometheus_url:
        fix = "give Prometheus' URL (port 9090); `meshload port-forward` prints one"
        paths = ("/-/ready", "/api/v1/status/buildinfo")
        checks.append(check_http("Prometheus", target.prometheus_url, paths, get, fix=fix))
    return checks
