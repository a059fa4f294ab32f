"""The embedded mesh's real Envoy gateway, programmed from Istio manifests."""

from __future__ import annotations

import copy
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshcore.errors import BackendError, ManifestError
from meshsim.envoy import Envoy
from meshsim.envoy_format import COMMANDS
from meshsim.envoy_format import problem as format_problem
from meshsim.mesh import Mesh
from meshsim.resources import Resource, load_manifests, parse_documents
from meshsim.routes import ROUTE_CONFIG_TYPE
from meshsim.translate import ROUTE_CONFIG_NAME, Snapshot
from tests.support import hammer, within_se

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
CANARY = HERE.parent / "scenarios" / "manifests" / "canary.yaml"
SPEC = HERE / "data" / "gateway-spec.yaml"


def canary(*weights: int, **route: Any) -> list[Resource]:
    """The shipped canary manifests with other weights and route fields."""
    out = []
    for r in load_manifests(CANARY):
        if r.kind == "VirtualService":
            spec = copy.deepcopy(r.spec)
            for dest, w in zip(spec["http"][0]["route"], weights, strict=False):
                dest["weight"] = w
            spec["http"][0].update(route)
            r = Resource(r.kind, r.name, r.namespace, spec, r.api_version, "test.yaml")
        out.append(r)
    return out


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with Mesh(manifests=canary(100, 0), spec=SPEC, prometheus=False) as m:
        yield m


def get_version(url: str) -> str | None:
    with urllib.request.urlopen(url, timeout=5) as resp:
        resp.read()
        value: str | None = resp.headers.get("x-version")
        return value


def test_ninety_ten_split_over_20000_requests(mesh: Mesh) -> None:
    mesh.apply(canary(90, 10))
    tally = hammer(mesh.gateway_url + "/_healthz", 20_000)
    assert tally.statuses == {200: 20_000}
    assert set(tally.header) == {"v1", "v2"}
    assert within_se(tally.header["v2"], 20_000, 0.10), tally.header


def test_weight_change_visible_within_100ms(mesh: Mesh) -> None:
    mesh.apply(canary(100, 0))
    assert {get_version(mesh.gateway_url + "/_healthz") for _ in range(20)} == {"v1"}
    mesh.apply(canary(0, 100), wait=False)
    started = time.perf_counter()  # the API has accepted the change; the push follows
    while get_version(mesh.gateway_url + "/_healthz") != "v2":
        assert time.perf_counter() - started < 1.0, "the change never showed"
    assert time.perf_counter() - started < 0.100
    assert hammer(mesh.gateway_url + "/_healthz", 300).header == {"v2": 300}


def test_header_match_routes_a_cohort(mesh: Mesh) -> None:
    text = CANARY.read_text().replace(
        "    - name: primary\n",
        """    - name: beta-testers
      match:
        - headers:
            x-cohort:
              exact: beta
      route:
        - destination:
            host: frontend
            subset: v2
          headers:
            response:
              set:
                x-version: v2
    - name: primary
""",
    )
    mesh.apply(parse_documents(text, "abtest.yaml"))
    beta = hammer(mesh.gateway_url + "/_healthz", 200, headers={"x-cohort": "beta"})
    others = hammer(mesh.gateway_url + "/_healthz", 200, headers={"x-cohort": "gamma"})
    assert beta.header == {"v2": 200}
    assert others.header == {"v1": 200}


def test_fault_abort_percentage_within_binomial_error(mesh: Mesh) -> None:
    mesh.apply(canary(100, 0, fault={"abort": {"httpStatus": 418, "percentage": {"value": 20.0}}}))
    tally = hammer(mesh.gateway_url + "/_healthz", 5_000)
    assert set(tally.statuses) == {200, 418}
    assert within_se(tally.statuses[418], 5_000, 0.20), tally.statuses


def test_retries_turn_a_flaky_upstream_into_successes(mesh: Mesh) -> None:
    def flaky(retries: dict[str, Any]) -> list[Resource]:
        route = {"route": [{"destination": {"host": "flaky"}}], "retries": retries}
        return canary(**route)

    mesh.apply(flaky({"attempts": 0}))
    without = hammer(mesh.gateway_url + "/anything", 2_000)
    mesh.apply(flaky({"attempts": 5, "retryOn": "5xx"}))
    with_retries = hammer(mesh.gateway_url + "/anything", 2_000)
    # Half the tries fail: alone, ~50 % succeed; with 5 retries, 1 - 0.5**6 = 98.4 %.
    assert within_se(without.statuses[200], 2_000, 0.5), without.statuses
    assert with_retries.statuses[200] / 2_000 > 0.96, with_retries.statuses


BAD_CASES = [
    ("weights summing to 0", lambda: canary(0, 0), "spec.http[0].route: weights sum to 0"),
    ("a negative weight", lambda: canary(110, -10), "spec.http[0].route[1].weight: -10 is neg"),
    (
        "an unknown subset",
        lambda: _retarget({"host": "frontend", "subset": "v9"}),
        "spec.http[0].route[0].destination.subset: subset 'v9'",
    ),
    (
        "an unserved host",
        lambda: _retarget({"host": "nowhere", "subset": "v1"}),
        "spec.http[0].route[0].destination.host: no workload serves nowhere.default",
    ),
    (
        "a stray % in a header value",
        lambda: canary(100, 0, headers={"response": {"set": {"x-sale": "50% off"}}}),
        "spec.http[0].headers.response.set.x-sale: '50% off': the % at position 2 starts no",
    ),
    (
        "unparsable YAML",
        lambda: parse_documents("spec: [oops\n", "bad.yaml"),
        "bad.yaml: document: line",
    ),
]


def _retarget(destination: dict[str, str]) -> list[Resource]:
    resources = canary(100, 0)
    resources[-1].spec["http"][0]["route"][0]["destination"] = destination
    return resources


@pytest.mark.parametrize(("case", "make", "line"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_invalid_resources_are_refused_while_traffic_flows(
    mesh: Mesh, case: str, make: Any, line: str
) -> None:
    mesh.apply(canary(100, 0))
    tallies = []
    traffic = threading.Thread(
        target=lambda: tallies.append(hammer(mesh.gateway_url + "/_healthz", 1_500, concurrency=4))
    )
    traffic.start()
    try:
        with pytest.raises(ManifestError) as info:
            mesh.apply(make())
    finally:
        traffic.join(timeout=60)
    message = str(info.value)
    assert line in message and "\n" not in message
    assert tallies and tallies[0].statuses == {200: 1_500}
    assert tallies[0].header == {"v1": 1_500}


# -- Envoy's header formatting, on an Envoy of its own ------------------------------------------
# Valid parameters for the commands that check theirs (what problem() leaves to Envoy).
PARAMS = {
    "CEL": "request.path",
    "COALESCE": '{"operators":["REQUEST_DURATION"]}',
    "COMMON_DURATION": "DS_RX_BEG:DS_TX_END:ms",
    "GRPC_STATUS": "NUMBER",
    "METADATA": "ROUTE",
    "PATH": "WQ",
    "QUERY_PARAMS": "ORIG",
    "REQUESTED_SERVER_NAME": "SNI_ONLY",
    "START_TIME": "%s",
}


def answering(*values: str) -> Snapshot:
    """Routes answering every request themselves, with `values` as response headers."""
    headers = [
        {"header": {"key": f"x-h{i}", "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for i, v in enumerate(values)
    ]
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200}}
    route["response_headers_to_add"] = headers
    vhost = {"name": "all", "domains": ["*"], "routes": [route]}
    routes = {"@type": ROUTE_CONFIG_TYPE, "name": ROUTE_CONFIG_NAME, "virtual_hosts": [vhost]}
    return Snapshot(routes=routes, clusters=[])


@pytest.fixture(scope="module")
def lone_envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Envoy]:
    envoy = Envoy(tmp_path_factory.mktemp("envoy"), answering(), pod_name="gw-abc-7")
    try:
        yield envoy
    finally:
        envoy.stop()


def envoy_takes(envoy: Envoy, value: str) -> bool:
    try:
        envoy.apply(answering(value))
    except BackendError as e:
        assert "envoy refused configuration version" in str(e)
        return False
    return True


def test_header_values_expand_in_the_replica_environment(lone_envoy: Envoy) -> None:
    values = ("%ENVIRONMENT(POD_NAME)%", "%HOSTNAME%", "%ENVIRONMENT(MESHLOAD_UNSET)%", "a%%b")
    lone_envoy.apply(answering(*values))
    with urllib.request.urlopen(lone_envoy.url + "/", timeout=5) as resp:
        got = [resp.headers.get(f"x-h{i}") for i in range(len(values))]
    # The pod's name; the machine's name (alike for every replica); "-" for an unset variable.
    assert got == ["gw-abc-7", socket.gethostname(), "-", "a%b"]


def test_the_translation_refuses_exactly_what_envoy_refuses(lone_envoy: Envoy) -> None:
    values = ["100%", "50% off", "%foo", "%hostname%", "%%%", "%NOPE%", "%REQ(x)%%", "%%"]
    values += ["%REQ(a?b?c)%", "%REQ(a b)%", "%REQ(:authority)%", "%HOSTNAME()%"]
    for name in sorted(COMMANDS):
        param = PARAMS.get(name, "a")
        values += [f"%{name}%", f"%{name}({param})%", f"%{name}:3%", f"%{name}({param}):3%"]
    disagree = [
        (v, why)
        for v in values
        if ((why := format_problem(v)) is None) != envoy_takes(lone_envoy, v)
    ]
    assert disagree == []
    assert envoy_takes(lone_envoy, "still serving")  # nothing refused broke it
