"""Store semantics of the embedded Kubernetes API: resourceVersion, generation, hooks, watch."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshcore.errors import ManifestError
from meshsim.kubeapi.crds import load_catalog
from meshsim.kubeapi.status import ApiError
from meshsim.kubeapi.store import Store

CANARY = Path(__file__).resolve().parent.parent / "scenarios" / "manifests" / "canary.yaml"
CATALOG = load_catalog()
VS = CATALOG.by_kind("networking.istio.io", "VirtualService")
DR = CATALOG.by_kind("networking.istio.io", "DestinationRule")


def canary() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(CANARY.read_text()) if d]
    return {d["kind"]: d for d in docs}


def vs_object(weights: tuple[int, int] = (100, 0)) -> dict[str, Any]:
    vs = copy.deepcopy(canary()["VirtualService"])
    for dest, w in zip(vs["spec"]["http"][0]["route"], weights, strict=True):
        dest["weight"] = w
    return vs


def test_create_sets_bookkeeping_and_a_global_resource_version() -> None:
    assert VS is not None and DR is not None
    store = Store(first_rv=500)
    vs, _ = store.create(VS, vs_object())
    dr, _ = store.create(DR, canary()["DestinationRule"])
    assert vs["metadata"]["resourceVersion"] == "501"
    assert dr["metadata"]["resourceVersion"] == "502"
    assert vs["metadata"]["generation"] == 1
    assert len(vs["metadata"]["uid"]) == 36 and vs["metadata"]["creationTimestamp"].endswith("Z")
    assert vs["apiVersion"] == "networking.istio.io/v1"
    with pytest.raises(ApiError) as err:
        store.create(VS, vs_object())
    assert (err.value.code, err.value.reason) == (409, "AlreadyExists")
    assert store.resource_version == 502


def test_generation_moves_on_spec_changes_only() -> None:
    assert VS is not None
    store = Store()
    vs, _ = store.create(VS, vs_object())
    vs["metadata"]["labels"] = {"team": "shop"}
    relabelled, _ = store.update(VS, vs)
    assert relabelled["metadata"]["generation"] == 1
    assert (
        int(relabelled["metadata"]["resourceVersion"]) == int(vs["metadata"]["resourceVersion"]) + 1
    )
    relabelled["spec"]["http"][0]["route"][0]["weight"] = 90
    relabelled["spec"]["http"][0]["route"][1]["weight"] = 10
    moved, _ = store.update(VS, relabelled)
    assert moved["metadata"]["generation"] == 2
    # Writing back what is stored changes nothing, as on a real server.
    same, _ = store.update(VS, moved)
    assert same["metadata"]["resourceVersion"] == moved["metadata"]["resourceVersion"]
    # Clients cannot rewrite system fields.
    forged = copy.deepcopy(moved)
    forged["metadata"]["uid"] = "forged"
    forged["metadata"]["generation"] = 99
    kept, _ = store.update(VS, forged)
    assert kept["metadata"]["uid"] == moved["metadata"]["uid"]
    assert kept["metadata"]["generation"] == 2


def test_stale_and_missing_resource_versions_are_refused() -> None:
    assert VS is not None
    store = Store()
    first, _ = store.create(VS, vs_object())
    store.update(VS, {**first, "spec": vs_object((50, 50))["spec"]})
    with pytest.raises(ApiError) as err:
        store.update(VS, {**first, "spec": vs_object((10, 90))["spec"]})
    assert (err.value.code, err.value.reason) == (409, "Conflict")
    assert "the object has been modified" in err.value.message
    unversioned = copy.deepcopy(first)
    del unversioned["metadata"]["resourceVersion"]
    with pytest.raises(ApiError) as err:
        store.update(VS, unversioned)
    assert err.value.code == 422 and "metadata.resourceVersion" in err.value.message
    stored = store.get("networking.istio.io", "virtualservices", "default", "frontend")
    assert stored is not None
    assert [d["weight"] for d in stored["spec"]["http"][0]["route"]] == [50, 50]


def test_validate_hook_sees_the_candidate_set_and_can_refuse() -> None:
    assert VS is not None and DR is not None
    seen: list[list[tuple[str, str]]] = []
    changes: list[int] = []

    def validate(objects: list[dict[str, Any]]) -> list[str]:
        seen.append([(o["kind"], o["metadata"]["name"]) for o in objects])
        for o in objects:
            if o["kind"] == "VirtualService":
                weights = [d.get("weight", 0) for d in o["spec"]["http"][0]["route"]]
                if sum(weights) == 0:
                    raise ManifestError(
                        "<api>",
                        "VirtualService default/frontend",
                        "spec.http[0].route",
                        "weights sum to 0",
                    )
        return ["checked"]

    store = Store(validate=validate, on_change=lambda objs: changes.append(len(objs)))
    store.create(DR, canary()["DestinationRule"])
    vs, warnings = store.create(VS, vs_object())
    assert warnings == ["checked"]
    assert seen[-1] == [("DestinationRule", "frontend"), ("VirtualService", "frontend")]
    before = store.resource_version
    with pytest.raises(ManifestError, match="weights sum to 0"):
        store.update(VS, {**vs, "spec": vs_object((0, 0))["spec"]})
    assert store.resource_version == before
    assert changes == [1, 2]
    store.delete(VS, "default", "frontend")
    assert changes == [1, 2, 1]


def test_on_change_failure_does_not_undo_the_write(caplog: pytest.LogCaptureFixture) -> None:
    assert VS is not None

    def broken(objects: list[dict[str, Any]]) -> None:
        raise RuntimeError("envoy unreachable")

    store = Store(on_change=broken)
    store.create(VS, vs_object())
    assert store.get("networking.istio.io", "virtualservices", "default", "frontend") is not None
    assert "envoy unreachable" in caplog.text


def test_delete_preconditions_and_dry_run() -> None:
    assert VS is not None
    store = Store()
    vs, _ = store.create(VS, vs_object())
    with pytest.raises(ApiError) as err:
        store.delete(VS, "default", "frontend", precondition_rv="1")
    assert err.value.code == 409
    store.delete(VS, "default", "frontend", dry_run=True)
    assert store.get("networking.istio.io", "virtualservices", "default", "frontend") is not None
    store.delete(VS, "default", "frontend", precondition_uid=vs["metadata"]["uid"])
    assert store.get("networking.istio.io", "virtualservices", "default", "frontend") is None
    with pytest.raises(ApiError) as err:
        store.delete(VS, "default", "frontend")
    assert err.value.code == 404


def test_watch_replays_from_a_resource_version_and_expires_old_ones() -> None:
    assert VS is not None

    async def scenario() -> None:
        store = Store(history=3, first_rv=10)
        vs, _ = store.create(VS, vs_object())  # rv 11
        start = int(vs["metadata"]["resourceVersion"])
        vs, _ = store.update(VS, {**vs, "spec": vs_object((50, 50))["spec"]})  # 12
        watcher, backlog = store.watch("networking.istio.io", "virtualservices", None, start)
        assert [(e.type, e.rv) for e in backlog] == [("MODIFIED", 12)]
        store.delete(VS, "default", "frontend")  # 13
        event = watcher.queue.get_nowait()
        assert event is not None and (event.type, event.rv) == ("DELETED", 13)
        assert event.obj["metadata"]["resourceVersion"] == "13"
        _, listed = store.watch("networking.istio.io", "virtualservices", "other", None)
        assert listed == []
        for _ in range(3):
            store.create(VS, vs_object())
            store.delete(VS, "default", "frontend")
        with pytest.raises(ApiError) as err:
            store.watch("networking.istio.io", "virtualservices", None, start)
        assert (err.value.code, err.value.reason) == (410, "Expired")
        store.close_watches()
        assert [e for e in iter_queue(watcher.queue)][-1] is None

    asyncio.run(scenario())


def iter_queue(queue: asyncio.Queue[Any]) -> list[Any]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def test_initial_load_is_validated_as_one_set_without_on_change() -> None:
    assert VS is not None and DR is not None
    calls: list[int] = []
    store = Store(
        validate=lambda objs: [f"{len(objs)} objects"],
        on_change=lambda objs: calls.append(len(objs)),
        first_rv=7,
    )
    warnings = store.load([(DR, canary()["DestinationRule"]), (VS, vs_object())])
    assert warnings == ["2 objects"]
    assert calls == []
    assert store.resource_version == 9
    with pytest.raises(ApiError) as err:
        store.watch("networking.istio.io", "virtualservices", None, 8)
    assert err.value.code == 410
