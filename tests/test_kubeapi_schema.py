"""CRD schema validation, CEL rules, patches and selectors of the embedded Kubernetes API."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshsim.kubeapi.crds import load_catalog
from meshsim.kubeapi.patch import json_patch, merge_patch
from meshsim.kubeapi.schema import (
    check_metadata,
    check_object,
    drop_nulls,
    field_path,
    prune_object,
)
from meshsim.kubeapi.selectors import field_matcher, label_matcher
from meshsim.kubeapi.status import ApiError
from meshsim.kubeapi.tables import human_age

CANARY = Path(__file__).resolve().parent.parent / "scenarios" / "manifests" / "canary.yaml"
CATALOG = load_catalog()

# Examples from Istio's reference documentation (istio.io/latest/docs/reference/config/networking).
DOC_EXAMPLES = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-route}
spec:
  hosts: [reviews.prod.svc.cluster.local]
  http:
  - name: reviews-v2-routes
    match:
    - uri: {prefix: /wpcatalog}
    - uri: {prefix: /consumercatalog}
    rewrite: {uri: /newcatalog}
    route:
    - destination: {host: reviews.prod.svc.cluster.local, subset: v2}
  - name: reviews-v1-route
    route:
    - destination: {host: reviews.prod.svc.cluster.local, subset: v1}
      weight: 75
    - destination: {host: reviews.prod.svc.cluster.local, subset: v3}
      weight: 25
    retries: {attempts: 3, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure"}
    timeout: 10s
    fault:
      delay: {percentage: {value: 0.1}, fixedDelay: 5s}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: bookinfo-ratings}
spec:
  host: ratings.prod.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms}
      http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10}
    outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}
  subsets:
  - name: testversion
    labels: {version: v3}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: my-gateway, namespace: some-config-namespace}
spec:
  selector: {app: my-gateway-controller}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [uk.bookinfo.com, eu.bookinfo.com]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https-443, protocol: HTTPS}
    hosts: [uk.bookinfo.com, eu.bookinfo.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-secret}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - randomSamplingPercentage: 100.0
"""


def docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(DOC_EXAMPLES) if d] + [
        d for d in yaml.safe_load_all(CANARY.read_text()) if d
    ]


def causes_of(obj: dict[str, Any], version: str = "v1") -> list[tuple[str, str]]:
    group = obj["apiVersion"].split("/")[0]
    rtype = CATALOG.by_kind(group, obj["kind"])
    assert rtype is not None
    return check_object(rtype, version, obj)


def vs() -> dict[str, Any]:
    return copy.deepcopy(
        next(
            d
            for d in docs()
            if d["metadata"]["name"] == "frontend" and d["kind"] == "VirtualService"
        )
    )


@pytest.mark.parametrize("version", ["v1", "v1beta1", "v1alpha3"])
def test_documented_examples_are_valid_in_every_served_version(version: str) -> None:
    for obj in docs():
        v = "v1alpha1" if obj["kind"] == "Telemetry" and version != "v1" else version
        assert causes_of(obj, v) == [], obj["metadata"]["name"]
        assert check_metadata(obj) == []


def test_catalog_matches_the_crd_file() -> None:
    vs_type = CATALOG.by_plural("networking.istio.io", "virtualservices")
    assert vs_type is not None
    assert (vs_type.kind, vs_type.storage_version, vs_type.short_names) == (
        "VirtualService",
        "v1",
        ("vs",),
    )
    assert set(vs_type.versions) == {"v1", "v1beta1", "v1alpha3"}
    assert CATALOG.versions("networking.istio.io")[0] == "v1"
    assert [c["name"] for c in vs_type.printer_columns["v1"]] == ["Gateways", "Hosts", "Age"]


def test_a_string_weight_is_refused_naming_the_field() -> None:
    obj = vs()
    obj["spec"]["http"][0]["route"][1]["weight"] = "10"
    [(field, message)] = causes_of(obj)
    assert field == "spec.http[0].route[1].weight"
    assert "must be of type integer" in message


def test_unknown_fields_are_refused_or_pruned_on_request() -> None:
    obj = vs()
    obj["spec"]["http"][0]["route"][0]["wieght"] = 10
    obj["spec"]["hostz"] = ["x"]
    fields = [f for f, _ in causes_of(obj)]
    assert fields == ["spec.hostz", "spec.http[0].route[0].wieght"]
    rtype = CATALOG.by_kind("networking.istio.io", "VirtualService")
    assert rtype is not None
    dropped = prune_object(rtype, "v1", obj)
    assert sorted(dropped) == ["spec.hostz", "spec.http[0].route[0].wieght"]
    assert causes_of(obj) == [] and obj == vs()


def test_nulls_the_schema_does_not_allow_are_dropped() -> None:
    rtype = CATALOG.by_kind("networking.istio.io", "VirtualService")
    assert rtype is not None
    spec = vs()["spec"]
    spec["http"][0]["route"][0]["weight"] = None
    spec["http"][0]["corsPolicy"] = {"allowCredentials": None}  # nullable in the CRD
    drop_nulls(rtype.schemas["v1"]["properties"]["spec"], spec)
    assert "weight" not in spec["http"][0]["route"][0]
    assert spec["http"][0]["corsPolicy"] == {"allowCredentials": None}


def test_one_of_durations_enums_and_ranges() -> None:
    obj = vs()
    route = obj["spec"]["http"][0]
    route["match"] = [{"uri": {"exact": "/", "prefix": "/"}}]
    route["timeout"] = "5 seconds"
    # The CRD leaves weights unbounded (Istio's webhook, the semantic hook here, refuses < 0).
    route["route"][0]["weight"] = -1
    obj["spec"]["http"].append({"directResponse": {"status": 2**32}})
    found = dict(causes_of(obj))
    assert "at most one of exact, prefix, regex" in found["spec.http[0].match[0].uri"]
    assert "less than or equal to 4294967295" in found["spec.http[1].directResponse.status"]
    assert "spec.http[0].route[0].weight" not in found
    obj = vs()
    obj["spec"]["http"][0]["timeout"] = "5x"
    assert causes_of(obj) == [
        ("spec.http[0].timeout", 'Invalid value: "5x": must be a valid duration greater than 1ms')
    ]
    dr = copy.deepcopy(next(d for d in docs() if d["kind"] == "DestinationRule"))
    dr["spec"]["trafficPolicy"]["loadBalancer"]["simple"] = "FASTEST"
    [(field, message)] = causes_of(dr)
    assert field == "spec.trafficPolicy.loadBalancer.simple" and '"LEAST_REQUEST"' in message


def test_gateway_exclusive_tls_fields_follow_the_cel_rule() -> None:
    gw = copy.deepcopy(next(d for d in docs() if d["kind"] == "Gateway"))
    gw["spec"]["servers"][1]["tls"]["credentialNames"] = ["a", "b"]
    [(field, message)] = causes_of(gw)
    assert field == "spec.servers[1].tls"
    assert "only one of credentialName or credentialNames" in message


def test_metadata_names_follow_rfc_1123() -> None:
    assert check_metadata({"metadata": {"name": "Front_End"}})[0][0] == "metadata.name"
    assert check_metadata({"metadata": {}})[0][0] == "metadata.name"
    assert check_metadata({"metadata": {"name": "a.b-c", "labels": {"x": 1}}}) == [
        ("metadata.labels", "Invalid value: must be a map of strings")
    ]


# RFC 7386 appendix A, every example.
MERGE_CASES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), MERGE_CASES)
def test_merge_patch_rfc7386_examples(target: Any, patch: Any, result: Any) -> None:
    assert merge_patch(target, patch) == result


def test_json_patch_rfc6902_examples() -> None:
    doc = {"foo": ["bar", "baz"], "biscuits": [{"name": "Digestive"}, {"name": "Choco"}]}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/foo/1", "value": "qux"},
            {"op": "remove", "path": "/foo/0"},
            {"op": "replace", "path": "/biscuits/0/name", "value": "Ginger"},
            {"op": "copy", "from": "/biscuits/0", "path": "/best"},
            {"op": "move", "from": "/foo/1", "path": "/moved"},
            {"op": "add", "path": "/foo/-", "value": "end"},
            {"op": "add", "path": "/a~1b", "value": 1},
            {"op": "test", "path": "/best/name", "value": "Ginger"},
        ],
    )
    assert out == {
        "foo": ["qux", "end"],
        "biscuits": [{"name": "Ginger"}, {"name": "Choco"}],
        "best": {"name": "Ginger"},
        "moved": "baz",
        "a/b": 1,
    }
    assert doc["foo"] == ["bar", "baz"]
    for bad in (
        [{"op": "remove", "path": "/nope"}],
        [{"op": "replace", "path": "/foo/9", "value": 1}],
        [{"op": "test", "path": "/foo/0", "value": "x"}],
        [{"op": "jump", "path": "/"}],
    ):
        with pytest.raises(ApiError):
            json_patch(doc, bad)


def test_label_and_field_selectors() -> None:
    objs = [
        {"metadata": {"name": f"n{i}", "namespace": ns, "labels": labels}}
        for i, (ns, labels) in enumerate(
            [
                ("a", {"app": "web", "version": "v1"}),
                ("a", {"app": "web", "version": "v2"}),
                ("b", {"app": "db"}),
                ("b", {}),
            ]
        )
    ]

    def names(sel: str) -> list[str]:
        match = label_matcher(sel)
        return [o["metadata"]["name"] for o in objs if match(o)]

    assert names("app=web") == ["n0", "n1"]
    assert names("app==web,version!=v1") == ["n1"]
    assert names("version in (v2, v3)") == ["n1"]
    assert names("app notin (web),app") == ["n2"]
    assert names("!app") == ["n3"]
    assert names("") == ["n0", "n1", "n2", "n3"]
    by_field = field_matcher("metadata.namespace=b,metadata.name!=n3")
    assert [o["metadata"]["name"] for o in objs if by_field(o)] == ["n2"]
    with pytest.raises(ApiError):
        field_matcher("spec.host=x")
    with pytest.raises(ApiError):
        label_matcher("a in b")


def test_field_paths_and_ages() -> None:
    assert field_path(["spec", "http", 0, "route", 1, "weight"]) == "spec.http[0].route[1].weight"
    from datetime import UTC, datetime

    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert human_age("2026-01-02T03:03:20Z", now) == "45s"
    assert human_age("2026-01-02T02:59:00Z", now) == "5m5s"
    assert human_age("2026-01-02T00:04:05Z", now) == "3h"
    assert human_age("2025-12-29T03:04:05Z", now) == "4d"


def test_printer_columns_take_the_first_result_of_their_json_path() -> None:
    """The JSONPath subset the served CRDs' printer columns use, each read from the CRDs."""
    from meshsim.kubeapi.tables import table

    gateway_class = CATALOG.by_plural("gateway.networking.k8s.io", "gatewayclasses")
    gateway = CATALOG.by_plural("gateway.networking.k8s.io", "gateways")
    assert gateway_class is not None and not gateway_class.namespaced
    assert gateway is not None and gateway.namespaced
    obj = {
        "metadata": {"name": "shop", "creationTimestamp": "2026-01-02T03:04:05Z"},
        "spec": {"gatewayClassName": "istio", "controllerName": "istio.io/gateway-controller"},
        "status": {
            "addresses": [{"value": "10.0.0.1"}, {"value": "10.0.0.2"}],
            "conditions": [
                {"type": "Accepted", "status": "True"},
                {"type": "Programmed", "status": "False"},
            ],
        },
    }

    def cells(columns: list[dict[str, Any]]) -> dict[str, Any]:
        found = table([obj], columns, "1", "")
        names = [c["name"] for c in found["columnDefinitions"]]
        return dict(zip(names, found["rows"][0]["cells"], strict=True))

    got = cells(gateway.printer_columns["v1"])
    assert (got["Class"], got["Address"], got["Programmed"]) == ("istio", "10.0.0.1", "False")
    got = cells(gateway_class.printer_columns["v1"])
    assert (got["Controller"], got["Accepted"]) == ("istio.io/gateway-controller", "True")
    del obj["status"]
    assert cells(gateway_class.printer_columns["v1"])["Accepted"] is None
