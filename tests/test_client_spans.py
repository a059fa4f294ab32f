"""Client spans as OpenTelemetry's users configure them: with OTEL_EXPORTER_OTLP_ENDPOINT aimed
at a second trace store, each request's client span arrives there, named by its grouped
endpoint and carrying meshload's attributes, and it parents the gateway's span (which the
embedded mesh's own store recorded into the run folder); with OTEL_SDK_DISABLED=true none is
made. Real processes: Locust, the embedded mesh, a second `python -m meshsim.tracestore`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from analysis.runfolder import load_run
from meshsim.procs import Child, python_module, wait_for_json
from tests.support import REPO

pytestmark = pytest.mark.integration

PLAN = "users: 10\nsteps:\n  - {weights: {v1: 100, v2: 0}, hold_s: 5}\n"


@pytest.fixture()
def second_store(tmp_path: Path) -> Iterator[str]:
    ports = tmp_path / "store.json"
    child = Child("tracestore", python_module("meshsim.tracestore", "--ports-file", str(ports)),
                  tmp_path / "store.log")  # fmt: skip
    try:
        yield f"http://127.0.0.1:{wait_for_json(ports, child)['port']}"
    finally:
        child.stop()


def canary(tmp_path: Path, env: dict[str, str]) -> Path:
    (tmp_path / "plan.yaml").write_text(PLAN)
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(REPO / "scenarios" / "canary.py"),
         "--headless", "--plan", str(tmp_path / "plan.yaml"),
         "--results-dir", str(tmp_path / "results"), "--run-time", "40"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "results").iterdir()
    return folder


def traces_of(store: str, service: str) -> list[dict]:
    url = f"{store}/api/traces?service={service}&limit=100000"
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())["data"]


def test_client_spans_go_where_otel_says_and_parent_the_gateway(
    tmp_path: Path, second_store: str
) -> None:
    folder = canary(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": second_store,
                               "OTEL_SERVICE_NAME": "shop-load"})  # fmt: skip
    traces = traces_of(second_store, "shop-load")
    spans = [s for t in traces for s in t["spans"]]
    run = load_run(folder)
    assert len(spans) == len(run.requests), (len(spans), len(run.requests))
    names = {s["operationName"] for s in spans}
    assert "/product/[id]" in names and not any(
        n.startswith("/product/") and n != "/product/[id]" for n in names
    )
    tags = {t["key"]: t["value"] for t in spans[0]["tags"]}
    assert {"meshload.step", "meshload.user_id", "meshload.version", "http.request.method"} <= set(
        tags
    ), tags
    assert all(not s.get("references") for s in spans)  # each the root of its trace
    # the gateway's spans (the mesh's own store, in the run folder) are their children
    ids = {s["spanID"].lstrip("0") for s in spans}
    gateway = run.spans[run.spans["service"].astype(str) == "istio-ingressgateway"]
    parents = gateway["parent_id"].astype(str).str.lstrip("0")
    assert len(gateway) and parents.isin(ids).all()
    # the records name the same traces
    recorded = set(run.requests["trace_id"].astype(str).str.lstrip("0"))
    assert {t["traceID"].lstrip("0") for t in traces} == recorded
    assert not (run.spans["service"].astype(str) == "meshload-client").any()  # not in both


def test_no_client_span_is_made_when_the_sdk_is_disabled(tmp_path: Path, second_store: str) -> None:
    folder = canary(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": second_store,
                               "OTEL_SDK_DISABLED": "true"})  # fmt: skip
    assert traces_of(second_store, "meshload-client") == []
    run = load_run(folder)
    assert not (run.spans["service"].astype(str) == "meshload-client").any()
    assert len(run.requests) > 0 and (run.spans["service"].astype(str) == "frontend").any()
