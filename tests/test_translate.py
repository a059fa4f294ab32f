"""Istio resources -> Envoy config: what is honoured, warned about, and refused."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from meshcore.errors import ManifestError
from meshcore.kube.istio import resolve_host
from meshcore.stamps import REPLICA_VALUE
from meshsim.envoy_format import problem as format_problem
from meshsim.hosts import Endpoint, cluster_name
from meshsim.resources import Resource, load_manifests, parse_documents
from meshsim.translate import build_snapshot

ENDPOINTS = [
    Endpoint("frontend-v1", "frontend", "default", {"app": "frontend", "version": "v1"}, 1001),
    Endpoint("frontend-v2", "frontend", "default", {"app": "frontend", "version": "v2"}, 1002),
    Endpoint("adservice", "adservice", "default", {"app": "adservice", "version": "v1"}, 1003),
]
CANARY = Path(__file__).resolve().parent.parent / "scenarios" / "manifests" / "canary.yaml"


def canary(**route_changes: Any) -> list[Resource]:
    resources = load_manifests(CANARY)
    out = []
    for r in resources:
        if r.kind == "VirtualService":
            spec = copy.deepcopy(r.spec)
            spec["http"][0].update(route_changes)
            r = Resource(r.kind, r.name, r.namespace, spec, r.api_version, "vs.yaml")
        out.append(r)
    return out


def with_weights(*weights: Any) -> list[Resource]:
    resources = load_manifests(CANARY)
    vs = next(r for r in resources if r.kind == "VirtualService")
    spec = copy.deepcopy(vs.spec)
    for dest, w in zip(spec["http"][0]["route"], weights, strict=True):
        dest["weight"] = w
    return [
        Resource(vs.kind, vs.name, vs.namespace, spec, vs.api_version, "vs.yaml") if r is vs else r
        for r in resources
    ]


def route_of(snapshot: Any, index: int = 0) -> dict[str, Any]:
    route: dict[str, Any] = snapshot.routes["virtual_hosts"][0]["routes"][index]
    return route


def test_hosts_resolve_as_istio_does() -> None:
    fqdn = "frontend.default.svc.cluster.local"
    assert resolve_host("frontend", "default") == fqdn
    assert resolve_host("frontend.default", "prod") == fqdn
    assert resolve_host("frontend.default.svc.cluster.local", "prod") == fqdn
    assert resolve_host("frontend", "prod") == "frontend.prod.svc.cluster.local"
    assert cluster_name(fqdn, "v2") == "frontend_v2"
    assert "." not in cluster_name("frontend.prod.svc.cluster.local", "v1")


def test_weighted_subsets_with_version_headers() -> None:
    snap = build_snapshot(with_weights(90, 10), ENDPOINTS)
    assert snap.warnings == []
    clusters = route_of(snap)["route"]["weighted_clusters"]["clusters"]
    assert [(c["name"], c["weight"]) for c in clusters] == [
        ("frontend_v1", 90),
        ("frontend_v2", 10),
    ]
    header = clusters[1]["response_headers_to_add"][0]
    assert header["header"] == {"key": "x-version", "value": "v2"}
    assert header["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
    by_name = {c["name"]: c for c in snap.clusters}
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in by_name["frontend_v2"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [1002]
    assert len(by_name["frontend"]["load_assignment"]["endpoints"][0]["lb_endpoints"]) == 2


def test_zero_weight_destination_is_dropped_but_still_checked() -> None:
    snap = build_snapshot(with_weights(100, 0), ENDPOINTS)
    names = [c["name"] for c in route_of(snap)["route"]["weighted_clusters"]["clusters"]]
    assert names == ["frontend_v1"]


@pytest.mark.parametrize(
    ("weights", "field", "words"),
    [
        ((0, 0), "spec.http[0].route", "weights sum to 0"),
        ((110, -10), "spec.http[0].route[1].weight", "negative"),
        (("90", 10), "spec.http[0].route[0].weight", "not an integer"),
    ],
)
def test_bad_weights_are_refused_with_one_line(weights: Any, field: str, words: str) -> None:
    with pytest.raises(ManifestError) as info:
        build_snapshot(with_weights(*weights), ENDPOINTS)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("vs.yaml: VirtualService default/frontend: " + field)
    assert words in message


def test_unknown_subset_and_unserved_host_are_refused() -> None:
    resources = with_weights(50, 50)
    vs = resources[-1]
    vs.spec["http"][0]["route"][1]["destination"]["subset"] = "v3"
    with pytest.raises(
        ManifestError,
        match=r"route\[1\]\.destination\.subset: subset 'v3'.*"
        r"defined: v1, v2",
    ):
        build_snapshot(resources, ENDPOINTS)
    vs.spec["http"][0]["route"][1]["destination"] = {"host": "checkout", "subset": "v1"}
    with pytest.raises(
        ManifestError,
        match=r"destination\.host: no workload serves "
        r"checkout\.default\.svc\.cluster\.local",
    ):
        build_snapshot(resources, ENDPOINTS)


def test_unsupported_fields_warn_naming_field_and_resource() -> None:
    snap = build_snapshot(canary(corsPolicy={"allowOrigins": [{"exact": "*"}]}), ENDPOINTS)
    assert snap.warnings == [
        "vs.yaml: VirtualService default/frontend: spec.http[0].corsPolicy "
        "is not supported by the embedded mesh and is ignored"
    ]


def test_matches_become_ordered_envoy_routes() -> None:
    text = CANARY.read_text().replace(
        "    - name: primary\n",
        """    - name: beta
      match:
        - headers:
            x-canary:
              exact: "yes"
        - queryParams:
            cohort:
              regex: "b.*"
          uri:
            prefix: /product/
      route:
        - destination:
            host: frontend
            subset: v2
    - name: primary
""",
    )
    snap = build_snapshot(parse_documents(text, "m.yaml"), ENDPOINTS)
    first, second, last = snap.routes["virtual_hosts"][0]["routes"]
    assert first["match"] == {
        "prefix": "/",
        "headers": [{"name": "x-canary", "string_match": {"exact": "yes"}}],
    }
    assert second["match"] == {
        "prefix": "/product/",
        "query_parameters": [{"name": "cohort", "string_match": {"safe_regex": {"regex": "b.*"}}}],
    }
    assert first["route"]["weighted_clusters"]["clusters"][0]["name"] == "frontend_v2"
    assert last["name"] == "primary" and last["match"] == {"prefix": "/"}


def test_fault_retries_timeout_mirror() -> None:
    snap = build_snapshot(
        canary(
            fault={
                "abort": {"httpStatus": 503, "percentage": {"value": 12.5}},
                "delay": {"fixedDelay": "250ms", "percentage": {"value": 1}},
            },
            retries={"attempts": 3, "perTryTimeout": "2s", "retryOn": "5xx,503"},
            timeout="1.5s",
            mirror={"host": "adservice"},
            mirrorPercentage={"value": 20.0},
        ),
        ENDPOINTS,
    )
    route = route_of(snap)
    fault = route["typed_per_filter_config"]["envoy.filters.http.fault"]
    assert fault["abort"] == {
        "http_status": 503,
        "percentage": {"numerator": 125000, "denominator": "MILLION"},
    }
    assert fault["delay"]["fixed_delay"] == "0.25s"
    action = route["route"]
    assert action["timeout"] == "1.5s"
    assert action["retry_policy"] == {
        "num_retries": 3,
        "retry_on": "5xx,retriable-status-codes",
        "retriable_status_codes": [503],
        "per_try_timeout": "2s",
    }
    assert action["request_mirror_policies"] == [
        {
            "cluster": "adservice",
            "runtime_fraction": {"default_value": {"numerator": 200000, "denominator": "MILLION"}},
        }
    ]


def test_istio_defaults_no_timeout_and_two_retries() -> None:
    action = route_of(build_snapshot(canary(), ENDPOINTS))["route"]
    assert action["timeout"] == "0s"
    assert action["retry_policy"]["num_retries"] == 2
    no_retry = route_of(build_snapshot(canary(retries={"attempts": 0}), ENDPOINTS))
    assert "retry_policy" not in no_retry["route"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"fault": {"abort": {"httpStatus": 700, "percentage": {"value": 5}}}},
            "spec.http[0].fault.abort.httpStatus",
        ),
        (
            {"fault": {"abort": {"httpStatus": 503, "percentage": {"value": 150}}}},
            "spec.http[0].fault.abort.percentage",
        ),
        ({"timeout": "soon"}, "spec.http[0].timeout"),
        ({"retries": {"attempts": -1}}, "spec.http[0].retries.attempts"),
        ({"match": [{"uri": {"regex": "(["}}]}, "spec.http[0].match[0].uri"),
    ],
)
def test_bad_route_fields_are_refused(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ManifestError) as info:
        build_snapshot(canary(**change), ENDPOINTS)
    assert str(info.value).startswith(f"vs.yaml: VirtualService default/frontend: {field}: ")


def test_destination_rule_policies() -> None:
    text = CANARY.read_text().replace(
        """  subsets:
    - name: v1""",
        """  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          ttl: 60s
    connectionPool:
      tcp:
        maxConnections: 7
      http:
        http1MaxPendingRequests: 3
        maxRequestsPerConnection: 10
    outlierDetection:
      consecutive5xxErrors: 4
      interval: 5s
      baseEjectionTime: 30s
  subsets:
    - name: v1
      trafficPolicy:
        loadBalancer:
          simple: ROUND_ROBIN""",
    )
    snap = build_snapshot(parse_documents(text, "dr.yaml"), ENDPOINTS)
    clusters = {c["name"]: c for c in snap.clusters}
    v1, v2 = clusters["frontend_v1"], clusters["frontend_v2"]
    assert v1["lb_policy"] == "ROUND_ROBIN"
    assert v2["lb_policy"] == "RING_HASH"
    limits = v2["circuit_breakers"]["thresholds"][0]
    assert limits["max_connections"] == 7 and limits["max_pending_requests"] == 3
    assert limits["max_retries"] == 4294967295
    assert v2["outlier_detection"]["consecutive_5xx"] == 4
    assert v2["outlier_detection"]["base_ejection_time"] == "30s"
    options = v2["typed_extension_protocol_options"]
    assert next(iter(options.values()))["common_http_protocol_options"] == {
        "max_requests_per_connection": 10
    }
    # The cookie hash goes on the route, as Istio puts it there for the destination's rule.
    assert route_of(snap)["route"]["hash_policy"] == [{"cookie": {"name": "user", "ttl": "60s"}}]


def test_all_api_versions_and_multi_documents() -> None:
    text = CANARY.read_text()
    for version in ("v1beta1", "v1alpha3"):
        resources = parse_documents(
            text.replace("networking.istio.io/v1\n", f"networking.istio.io/{version}\n"), "x.yaml"
        )
        assert [r.kind for r in resources] == ["Gateway", "DestinationRule", "VirtualService"]
        assert {r.api_version for r in resources} == {f"networking.istio.io/{version}"}
    with pytest.raises(ManifestError, match=r"apiVersion: networking\.istio\.io/v2 is not served"):
        parse_documents(
            text.replace("networking.istio.io/v1\n", "networking.istio.io/v2\n"), "x.yaml"
        )


def test_unparsable_yaml_names_file_and_line() -> None:
    with pytest.raises(ManifestError) as info:
        parse_documents("kind: VirtualService\nspec: [unclosed\n", "broken.yaml")
    assert str(info.value).startswith("broken.yaml: document: line ")


def test_vs_without_gateway_warns_and_does_not_route_ingress() -> None:
    resources = canary()
    resources[-1].spec.pop("gateways")
    snap = build_snapshot(resources, ENDPOINTS)
    assert snap.routes["virtual_hosts"] == []
    assert any("binds no Gateway" in w for w in snap.warnings)


def test_header_values_reach_envoy_untouched() -> None:
    resources = canary(headers={"response": {"set": {"x-meshload-replica": REPLICA_VALUE}}})
    dest = resources[-1].spec["http"][0]["route"][0]
    dest["headers"]["response"]["set"]["x-host"] = "%HOSTNAME%"
    dest["headers"]["request"] = {"add": {"x-off": "50%% off"}}
    route = route_of(build_snapshot(resources, ENDPOINTS))
    assert route["response_headers_to_add"][0]["header"] == {
        "key": "x-meshload-replica",
        "value": "%ENVIRONMENT(POD_NAME)%",
    }
    v1 = route["route"]["weighted_clusters"]["clusters"][0]
    assert [h["header"]["value"] for h in v1["response_headers_to_add"]] == ["v1", "%HOSTNAME%"]
    assert v1["request_headers_to_add"][0]["header"]["value"] == "50%% off"


BAD_HEADER_VALUES = [
    ("100%", "the % at position 3 starts no Envoy command; write %% for a literal %"),
    ("50% off", "the % at position 2 starts no Envoy command"),
    ("%hostname%", "the % at position 0 starts no Envoy command"),
    ("%ENVIROMENT(POD_NAME)%", "%ENVIROMENT(POD_NAME)% is not an Envoy command"),
    ("%ENVIRONMENT%", "%ENVIRONMENT% needs a parameter"),
    ("%HOSTNAME(x)%", "%HOSTNAME(x)% takes no parameter or length"),
    ("%START_TIME:3%", "takes no :LENGTH"),
    ("%REQ(a?b?c)%", "names more than one alternative header"),
    ("%REQ(a b)%", "names an invalid header"),
    ("%REQ(x)%%", "the % at position 8 starts no Envoy command"),
]


@pytest.mark.parametrize(
    ("value", "words"), BAD_HEADER_VALUES, ids=[v for v, _ in BAD_HEADER_VALUES]
)
def test_header_values_envoy_refuses_are_one_line_naming_the_field(value: str, words: str) -> None:
    route_level = canary(headers={"response": {"set": {"x-discount": value}}})
    with pytest.raises(ManifestError) as info:
        build_snapshot(route_level, ENDPOINTS)
    message = str(info.value)
    assert "spec.http[0].headers.response.set.x-discount: " in message
    assert words in message and "\n" not in message
    destination = canary()
    destination[-1].spec["http"][0]["route"][1]["headers"]["request"] = {"add": {"x-d": value}}
    with pytest.raises(
        ManifestError, match=r"spec\.http\[0\]\.route\[1\]\.headers\.request\.add\.x-d"
    ):
        build_snapshot(destination, ENDPOINTS)


def test_format_values_envoy_takes() -> None:
    for value in (
        "plain",
        "%%",
        "a%%b",
        "%ENVIRONMENT(POD_NAME)%",
        "%ENVIRONMENT(POD_NAME):5%",
        "pod-%ENVIRONMENT(POD_NAME)%-%HOSTNAME%",
        "%HOSTNAME()%",
        "%START_TIME(%s)%",
        "%REQ(:authority)%",
        "%REQ(x-a?x-b):10%",
        "%UPSTREAM_CLUSTER%",
    ):
        assert format_problem(value) is None, value
