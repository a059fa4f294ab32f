"""The content of run.json at the start of a run (docs/design.md; keys are never renamed)."""

from __future__ import annotations

import functools
import os
import socket
from importlib import metadata
from typing import Any

from loadgen.embedded import envoy_version, mesh_urls
from loadgen.options import Settings
from loadgen.plan import Plan
from meshcore.figures import choose_roles
from meshcore.runfolder import SCHEMA_VERSION, new_run_id


@functools.cache
def versions(embedded: bool) -> dict[str, str | None]:
    from meshcore import __version__ as meshload_version

    return {
        "meshload": meshload_version,
        "locust": _dist_version("locust"),
        "envoy": envoy_version() if embedded else None,
    }


def _dist_version(name: str) -> str | None:
    """Read without importing: importing Locust monkey-patches the whole process."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def new_run_info(
    *,
    scenario: str,
    started_ns: int,
    target: str,
    plan: Plan,
    settings: Settings,
    mesh: Any,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    urls = mesh_urls(mesh) if mesh is not None else {}
    jaeger = settings.jaeger_url or urls.get("jaeger") or None
    prometheus = settings.prometheus_url or urls.get("prometheus") or None
    info: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": new_run_id(scenario, started_ns),
        "scenario": scenario,
        "started_ns": started_ns,
        "ended_ns": None,
        "status": "running",
        "target": target,
        "mesh": "embedded" if mesh is not None else "kubernetes",
        "plan": plan.to_json(),
        # Who is compared with whom, by the live gates and the report alike.
        "roles": choose_roles([s.weights for s in plan.steps], plan.canary).to_json(),
        "events": [],
        "telemetry": {"jaeger_url": jaeger, "prometheus_url": prometheus},
        "versions": versions(mesh is not None),
        "version_header": settings.version_header,
        "trace_sampling": settings.trace_sampling,
        "arrival_rate": settings.arrival_rate or None,
        "step_boundary": "requested_ns",
        # Who writes this file: a report can tell a run still going from one cut short.
        "master": {"host": socket.gethostname(), "pid": os.getpid()},
    }
    if mesh is not None:
        info["mesh_urls"] = urls
    if extra:
        info.update({k: v for k, v in extra.items() if k not in info})
    return info
