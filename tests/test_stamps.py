"""meshcore.stamps and the twin route of meshcore.kube.istio: meshload's requests are stamped,
nobody else's, and the route is left exactly as the user wrote it."""

from __future__ import annotations

from typing import Any

import pytest

from meshcore.errors import ConfigError
from meshcore.kube.client import ApiRefusal
from meshcore.kube.istio import apply_weights, is_twin, route_index, with_twin, without_twin
from meshcore.stamps import (
    CONFIG_HEADER,
    REPLICA_HEADER,
    REPLICA_VALUE,
    RUN_HEADER,
    Stamping,
    config_step,
    config_value,
    replica_id,
    run_token,
)
from tests.canary_manifests import by_kind, manifests, weights_of
from tests.twins import InMemoryMeshClient


def bookinfo_shape() -> dict[str, Any]:
    """The canary's VirtualService without any response header, with a match, as Bookinfo's
    and Flagger's are written."""
    vs = by_kind("VirtualService")
    route = vs["spec"]["http"][0]
    route["match"] = [{"uri": {"prefix": "/"}}]
    for d in route["route"]:
        d.pop("headers")
    vs["spec"]["http"].append({"name": "other", "route": [{"destination": {"host": "frontend"}}]})
    return vs


def test_stamp_values() -> None:
    token = run_token("canary-20261201-101010-abcd")
    assert len(token) == 8 and token != run_token("canary-20261201-101010-abce")
    assert config_step(config_value(token, 3), token) == 3
    assert config_step(config_value("00000000", 3), token) is None  # another run's
    assert config_step(None, token) is None and config_step("junk", token) is None
    assert replica_id("istio-ingressgateway-7d4-0") == replica_id(" istio-ingressgateway-7d4-0 ")
    assert replica_id("%ENVIRONMENT(POD_NAME)%") is None and replica_id("") is None


def test_the_twin_matches_only_meshload_and_carries_the_stamps() -> None:
    vs = bookinfo_shape()
    new, stamped = with_twin(vs, 0, Stamping("abcd1234", "x-version", replica=True), 2)
    twin, route, other = new["spec"]["http"]
    assert is_twin(twin) and not is_twin(route) and twin["name"] == "primary-meshload"
    assert twin["match"] == [
        {"uri": {"prefix": "/"}, "headers": {RUN_HEADER: {"exact": "abcd1234"}}}
    ]
    assert stamped == ["v1", "v2"]
    assert [d["headers"]["response"]["set"] for d in twin["route"]] == [
        {"x-version": "v1"},
        {"x-version": "v2"},
    ]
    assert twin["headers"]["response"]["set"] == {
        CONFIG_HEADER: "abcd1234.2",
        REPLICA_HEADER: REPLICA_VALUE,
    }
    assert route == vs["spec"]["http"][0] and other == vs["spec"]["http"][1]
    assert without_twin(new) == vs, "field for field, the route as the user wrote it"
    assert route_index(new, 0) == 1 and route_index(new, "primary") == 1
    assert route_index(new, 1) == 2
    with pytest.raises(ConfigError, match="its routes: primary, other"):
        route_index(new, "primary-meshload")


def test_a_version_header_the_user_sets_is_left_alone() -> None:
    vs = by_kind("VirtualService")  # the canary's: x-version per destination
    new, stamped = with_twin(vs, 0, Stamping("abcd1234", "X-Version", replica=False), 0)
    assert stamped == []
    twin = new["spec"]["http"][0]
    assert [d["headers"] for d in twin["route"]] == [
        d["headers"] for d in vs["spec"]["http"][0]["route"]
    ]
    assert REPLICA_HEADER not in twin["headers"]["response"]["set"]
    assert twin["match"] == [{"headers": {RUN_HEADER: {"exact": "abcd1234"}}}]


def test_a_stamped_rollout_leaves_the_route_as_the_user_wrote_it() -> None:
    vs = bookinfo_shape()
    client = InMemoryMeshClient(objects=[vs, by_kind("DestinationRule")])
    route = client.route("frontend", "default", "primary")
    route.stamping = Stamping("abcd1234", "x-version")
    for step, weights in enumerate(({"v1": 90, "v2": 10}, {"v1": 50, "v2": 50}, {"v2": 100})):
        route.set_weights(weights, step)
        stored = client.get("VirtualService", "default", "frontend")
        twins = [r for r in stored["spec"]["http"] if is_twin(r)]
        assert len(twins) == 1 and twins[0]["headers"]["response"]["set"][CONFIG_HEADER] == (
            f"abcd1234.{step}"
        )
        assert weights_of(stored, 0) == weights_of(stored, 1), "twin and route move together"
    assert route.subsets() == ["v1", "v2"]
    route.unstamp()
    after = client.get("VirtualService", "default", "frontend")
    expected = apply_weights(vs, manifests(), {"v2": 100}, route="primary")
    assert after["spec"] == expected["spec"]
    assert {k: v for k, v in after["metadata"].items() if k != "resourceVersion"} == {
        k: v for k, v in expected["metadata"].items() if k != "resourceVersion"
    }


class RefusingClient(InMemoryMeshClient):
    """An API whose admission refuses any route with a header match (a strict webhook)."""

    def replace(self, obj: Any) -> Any:
        if any(is_twin(r) for r in obj["spec"]["http"]):
            raise ApiRefusal("admission webhook denied the request: header matches", 422, {})
        return super().replace(obj)


def test_refused_stamps_fall_back_to_the_weights_alone() -> None:
    client = RefusingClient(objects=[bookinfo_shape(), by_kind("DestinationRule")])
    route = client.route("frontend", "default", "primary")
    route.stamping = Stamping("abcd1234", "x-version")
    change = route.set_weights({"v1": 70, "v2": 30}, 1)
    assert change.weights == {"v1": 70, "v2": 30} and "header matches" in str(route.refused)
    stored = client.get("VirtualService", "default", "frontend")
    assert not any(is_twin(r) for r in stored["spec"]["http"])
    assert weights_of(stored) == {"v1": 70, "v2": 30}
    route.set_weights({"v2": 100}, 2)  # once refused, not tried again
    assert len(client.writes) == 2
