"""A run's stamps (`meshcore.stamps`): switched on for the route the plan moves, told in
run.json, removed at the end, and the gateway replicas they name mapped back to their pods.

    "stamps": {"token", "route", "version_header", "version_header_added", "replica"}
    "stamping": null | "off (--no-stamp)" | "refused: <the API's reason>" | "not removed: ..."
    "replica_pods": {replica_id: pod name}   (from the Kubernetes API at the end)
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from meshcore.errors import MeshloadError
from meshcore.stamps import CONFIG_HEADER, RUN_HEADER, Stamping, config_value, replica_id, run_token
from meshcore.traceparent import HEADER as TRACEPARENT
from meshcore.traceparent import new_trace

log = logging.getLogger("meshload")

GATEWAY_NAMESPACE = "istio-system"
GATEWAY_SELECTOR = "istio=ingressgateway"
FIRST_STAMP_WAIT_S = 5.0  # how long users wait for the gateway to serve step 0's stamps
FIRST_STAMP_IN_A_ROW = 8  # answers in a row that carry it: every replica behind a balancer


def switch_on(setter: Any, settings: Any, run_id: str) -> dict[str, Any]:
    """Give the setter (a RouteWeights) this run's stamping; run.json's keys saying so."""
    if settings.no_stamp or not hasattr(setter, "stamping"):
        return {"stamps": None, "stamping": "off (--no-stamp)" if settings.no_stamp else "off"}
    setter.stamping = Stamping(
        run_token(run_id), settings.version_header, replica=not settings.no_replica_stamp
    )
    return {"stamps": described(setter), "stamping": None}


def described(setter: Any) -> dict[str, Any] | None:
    """run.json's `stamps` as the setter has them now (None once the API refused them)."""
    s = getattr(setter, "stamping", None)
    if s is None or getattr(setter, "refused", None):
        return None
    return {
        "token": s.token,
        "route": getattr(setter, "twin", None),
        "version_header": s.version_header,
        "version_header_added": list(getattr(setter, "stamped", [])),
        "replica": s.replica,
    }


def after_change(info: dict[str, Any], setter: Any) -> None:
    """Keep run.json's stamp keys true after a weight change (the API may have refused)."""
    if info.get("stamps") is None:
        return
    refused = getattr(setter, "refused", None)
    if refused:
        info["stamps"], info["stamping"] = None, f"refused: {refused}"
    else:
        info["stamps"] = described(setter)


def switch_off(info: dict[str, Any], setter: Any) -> None:
    """Remove the twin route: the VirtualService or HTTPRoute as the user wrote it (weights
    aside)."""
    if info.get("stamps") is None:
        return
    try:
        setter.unstamp()
        info["stamps"]["removed"] = True
    except MeshloadError as e:
        what = f"the stamp route {info['stamps']['route']} is still in {setter.target}"
        info["stamping"] = f"not removed: {e}"
        if info.get("mesh") == "embedded":  # the mesh this run started stops with it
            sys.stderr.write(f"meshload: {what} ({e}); it goes when the embedded mesh stops\n")
            return
        kind = str(getattr(setter, "kind", "VirtualService")).lower()
        sys.stderr.write(f"meshload: {what} ({e}); remove it with `kubectl edit {kind}`\n")


def replica_pods(kube: Any) -> Mapping[str, str]:
    """{replica_id: pod} of the ingress gateway's pods; {} when the API does not tell."""
    if kube is None:
        return {}
    try:
        found = kube.call(
            "ingress gateway pods",
            "list",
            kube.core.list_namespaced_pod,
            GATEWAY_NAMESPACE,
            label_selector=GATEWAY_SELECTOR,
            _preload_content=False,
        )
    except MeshloadError as e:
        log.info("gateway replicas not mapped to pods: %s", e)
        return {}
    names = [str((p.get("metadata") or {}).get("name")) for p in (found or {}).get("items") or []]
    return {rid: name for name in names if (rid := replica_id(name)) is not None}


def wait_first_stamp(
    info: Mapping[str, Any], target: str, sleep: Callable[[float], Any]
) -> dict[str, Any] | None:
    """Before any user starts: probe the gateway, as meshload's requests reach it, until it
    serves step 0's configuration stamp, FIRST_STAMP_IN_A_ROW answers in a row (one probe per
    connection reaches every replica behind a balancer), so the first requests are stamped too
    (the API accepts a change before the gateway serves it). None when not stamped; else
    run.json's `first_stamp`: `waited_ms` (None when not served within FIRST_STAMP_WAIT_S,
    logged: the first requests then count as unknown), `probes` (how many were answered) and
    `by_version` (answers per served version, "unknown" without one). The probes reach the
    frontend, so Prometheus counts them in step 0 (the consistency table adds them to the
    client's count); they are sent unsampled, so no trace records them."""
    from loadgen.preflight import http_probe

    stamps = info.get("stamps")
    if not stamps:
        return None
    headers = {RUN_HEADER: str(stamps["token"])}
    if info.get("host_header"):
        headers["Host"] = str(info["host_header"])
    wanted = config_value(str(stamps["token"]), 0)
    version_header = str(stamps.get("version_header") or "").lower()
    by_version: Counter[str] = Counter()
    started, in_a_row = time.monotonic(), 0
    while time.monotonic() - started < FIRST_STAMP_WAIT_S:
        headers[TRACEPARENT] = new_trace(sampling=0.0).header
        try:
            _, answer = http_probe(target.rstrip("/") + "/", headers, 1.0)
            by_version[answer.get(version_header) or "unknown"] += 1
        except (OSError, ValueError):
            answer = {}
        in_a_row = in_a_row + 1 if answer.get(CONFIG_HEADER) == wanted else 0
        if in_a_row >= FIRST_STAMP_IN_A_ROW:
            waited_ms = (time.monotonic() - started) * 1000.0
            break
        sleep(0.005 if in_a_row == 0 else 0)
    else:
        waited_ms = None
        log.warning(
            "the gateway did not serve step 0's stamps within %.0f s; the first requests may "
            "carry no version",
            FIRST_STAMP_WAIT_S,
        )
    answered = dict(sorted(by_version.items()))
    return {"waited_ms": waited_ms, "probes": sum(answered.values()), "by_version": answered}
