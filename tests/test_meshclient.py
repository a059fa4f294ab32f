"""loadgen.meshclient: weight changes on the in-memory twin and on the embedded API."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from loadgen.meshclient import (
    InMemoryMeshClient,
    MeshClient,
    apply_weights,
    check_weights,
    resolve_host,
    warning_texts,
)
from meshcore.errors import BackendError, ConfigError
from meshsim.kubeapi.kubeconfig import write_kubeconfig
from tests.kubeapi_thread import ThreadedServer, serve_in_thread

CANARY = Path(__file__).resolve().parent.parent / "scenarios" / "manifests" / "canary.yaml"


def manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(CANARY.read_text()) if d]


def by_kind(kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(d for d in manifests() if d["kind"] == kind))


def weights_of(vs: dict[str, Any], route: int = 0) -> dict[str, int]:
    return {d["destination"]["subset"]: d["weight"] for d in vs["spec"]["http"][route]["route"]}


def test_apply_weights_keeps_headers_and_zeroes_unnamed_subsets() -> None:
    vs, dr = by_kind("VirtualService"), by_kind("DestinationRule")
    new = apply_weights(vs, [dr], {"v2": 100}, route="primary")
    assert weights_of(new) == {"v1": 0, "v2": 100}
    assert [d["headers"] for d in new["spec"]["http"][0]["route"]] == [
        d["headers"] for d in vs["spec"]["http"][0]["route"]
    ]
    assert weights_of(vs) == {"v1": 100, "v2": 0}, "the input is not modified"
    assert weights_of(apply_weights(vs, [dr], {"v1": 3, "v2": 1}, host="frontend.default")) == {
        "v1": 3,
        "v2": 1,
    }


@pytest.mark.parametrize(
    ("weights", "kwargs", "message"),
    [
        (
            {"v3": 10},
            {},
            "subset v3 is not defined for frontend.default.svc.cluster.local; defined: v1, v2",
        ),
        ({"v1": 0, "v2": 0}, {}, "weights sum to 0"),
        ({"v1": -5, "v2": 105}, {}, "weight of subset v1 is -5"),
        ({"v1": 1.5}, {}, "weight of subset v1 is 1.5"),
        ({"v1": True}, {}, "weight of subset v1 is True"),
        ({}, {}, "weights are empty"),
        ({"v1": 50, "v2": 50}, {"route": "canary"}, "no http route 'canary'; its routes: primary"),
        ({"v1": 50, "v2": 50}, {"route": 3}, "no http route 3"),
        ({"v1": 50, "v2": 50}, {"host": "checkout"}, "not checkout.default.svc.cluster.local"),
    ],
)
def test_refusals_are_one_line_config_errors(
    weights: dict[str, Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        apply_weights(by_kind("VirtualService"), [by_kind("DestinationRule")], weights, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_subsets_need_a_rule_and_a_destination() -> None:
    vs, dr = by_kind("VirtualService"), by_kind("DestinationRule")
    with pytest.raises(ConfigError, match="no DestinationRule defines subsets"):
        apply_weights(vs, [], {"v1": 1})
    dr["spec"]["subsets"].append({"name": "v3", "labels": {"version": "v3"}})
    with pytest.raises(ConfigError, match="no destination for subset v3"):
        apply_weights(vs, [dr], {"v3": 1})
    other_ns = copy.deepcopy(dr)
    other_ns["metadata"]["namespace"] = "shop"
    with pytest.raises(ConfigError, match="no DestinationRule"):
        apply_weights(vs, [other_ns], {"v1": 1})


def test_helpers() -> None:
    assert resolve_host("frontend", "shop") == "frontend.shop.svc.cluster.local"
    assert resolve_host("Frontend.default.svc", "shop") == "frontend.default.svc.cluster.local"
    # Two labels read as name.namespace, as the embedded mesh (meshsim.hosts) reads them.
    assert resolve_host("frontend.web", "shop") == "frontend.web.svc.cluster.local"
    assert resolve_host("www.example.com", "shop") == "www.example.com"
    assert check_weights({"v1": 0, "v2": 7}) == {"v1": 0, "v2": 7}
    assert warning_texts(['299 - "a \\"quoted\\" word"', "junk"]) == ('a "quoted" word',)


def test_in_memory_twin_retries_injected_conflicts() -> None:
    mesh = InMemoryMeshClient(objects=manifests(), conflicts_to_inject=2)
    t0 = time.time_ns()
    change = mesh.set_weights("frontend", "default", {"v1": 90, "v2": 10})
    assert change.attempts == 3
    assert t0 <= change.requested_ns <= change.accepted_ns <= time.time_ns()
    assert weights_of(mesh.get_virtual_service("frontend", "default")) == {"v1": 90, "v2": 10}
    assert len(mesh.writes) == 1
    assert change.resource_version == mesh.writes[0]["metadata"]["resourceVersion"]
    mesh.conflicts_to_inject = 10
    with pytest.raises(BackendError, match="6 writes got 409 Conflict"):
        mesh.set_weights("frontend", "default", {"v1": 50, "v2": 50})
    with pytest.raises(ConfigError, match="VirtualService default/nope not found"):
        mesh.set_weights("nope", "default", {"v1": 1})


def test_kubeconfig_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        MeshClient.from_kubeconfig(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\ncontexts: []\nclusters: []\nusers: []\n")
    with pytest.raises(ConfigError) as err:
        MeshClient.from_kubeconfig(broken, context="nowhere")
    assert "\n" not in str(err.value) and "nowhere" in str(err.value)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: Any) -> Iterator[tuple[ThreadedServer, Path]]:
    srv = serve_in_thread(objects=manifests(), validate=lambda objs: ["the mesh read the weights"])
    try:
        yield srv, write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", srv.url)
    finally:
        srv.close()


@pytest.mark.integration
def test_set_weights_round_trip_through_the_kubernetes_client(
    embedded: tuple[ThreadedServer, Path], caplog: pytest.LogCaptureFixture
) -> None:
    srv, kubeconfig = embedded
    caplog.set_level(logging.WARNING)
    with MeshClient.from_kubeconfig(kubeconfig) as mesh:
        before = mesh.get_virtual_service("frontend", "default")
        t0 = time.time_ns()
        change = mesh.set_weights("frontend", "default", {"v1": 80, "v2": 20}, route="primary")
        assert t0 <= change.requested_ns <= change.accepted_ns <= time.time_ns()
        assert change.attempts == 1 and change.warnings == ("the mesh read the weights",)
        stored = {o["metadata"]["name"]: o for o in srv.objects() if o["kind"] == "VirtualService"}
        assert weights_of(stored["frontend"]) == {"v1": 80, "v2": 20}
        assert stored["frontend"]["metadata"]["resourceVersion"] == change.resource_version
        assert stored["frontend"]["metadata"]["generation"] == before["metadata"]["generation"] + 1
        assert [r["metadata"]["name"] for r in mesh.list_destination_rules("default")] == [
            "frontend"
        ]
        assert mesh.get_destination_rule("frontend", "default")["spec"]["host"] == "frontend"
        with pytest.raises(ConfigError, match="subset canary is not defined"):
            mesh.set_weights("frontend", "default", {"canary": 1})
        with pytest.raises(ConfigError, match="not found"):
            mesh.get_virtual_service("missing", "default")
    assert "the mesh read the weights" in caplog.text


@pytest.mark.integration
def test_a_concurrent_writer_causes_a_409_then_success(
    embedded: tuple[ThreadedServer, Path],
) -> None:
    srv, kubeconfig = embedded
    with (
        MeshClient.from_kubeconfig(kubeconfig) as mesh,
        MeshClient.from_kubeconfig(kubeconfig) as other,
    ):
        reads = 0
        real_get = mesh.get_virtual_service

        def get_then_race(name: str, namespace: str) -> dict[str, Any]:
            nonlocal reads
            vs = real_get(name, namespace)
            reads += 1
            if reads == 1:  # another writer lands between our read and our write
                other.set_weights(name, namespace, {"v1": 50, "v2": 50})
            return vs

        mesh.get_virtual_service = get_then_race  # type: ignore[method-assign]
        change = mesh.set_weights("frontend", "default", {"v1": 10, "v2": 90})
    assert (change.attempts, reads) == (2, 2)
    stored = next(o for o in srv.objects() if o["kind"] == "VirtualService")
    assert weights_of(stored) == {"v1": 10, "v2": 90}


@pytest.mark.integration
def test_unreachable_api_is_a_backend_error(tmp_path: Path) -> None:
    srv = serve_in_thread()
    kubeconfig = write_kubeconfig(tmp_path / "config", srv.url)
    srv.close()
    with (
        MeshClient.from_kubeconfig(kubeconfig, timeout_s=2.0) as mesh,
        pytest.raises(BackendError) as err,
    ):
        mesh.get_virtual_service("frontend", "default")
    message = str(err.value)
    assert "unreachable" in message and "\n" not in message
    assert "meshload-embedded-no-auth" not in message
