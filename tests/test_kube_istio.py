"""meshcore.kube.istio: hosts, routes and weights of Istio objects, as pure functions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from meshcore.errors import ConfigError
from meshcore.kube.istio import (
    apply_weights,
    check_weights,
    resolve_host,
    route_destinations,
    route_index,
    route_subsets,
    service_name,
)
from tests.canary_manifests import by_kind, weights_of


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


def test_routes_by_name_or_index() -> None:
    vs = by_kind("VirtualService")
    assert route_index(vs, "primary") == route_index(vs, 0) == 0
    assert route_subsets(vs, 0) == ["v1", "v2"]
    assert route_destinations(vs) == {"frontend.default.svc.cluster.local": {"v1", "v2"}}
    with pytest.raises(ConfigError, match="its routes: primary"):
        route_index(vs, "nope")
    with pytest.raises(ConfigError, match="no http route True"):
        route_index(vs, True)


def test_helpers() -> None:
    assert service_name("frontend.shop.svc.cluster.local") == ("shop", "frontend")
    assert service_name("www.example.com") is None
    assert resolve_host("frontend", "shop") == "frontend.shop.svc.cluster.local"
    assert resolve_host("Frontend.default.svc", "shop") == "frontend.default.svc.cluster.local"
    # Two labels read as name.namespace, as the embedded mesh (meshsim.hosts) reads them.
    assert resolve_host("frontend.web", "shop") == "frontend.web.svc.cluster.local"
    assert resolve_host("www.example.com", "shop") == "www.example.com"
    assert check_weights({"v1": 0, "v2": 7}) == {"v1": 0, "v2": 7}
