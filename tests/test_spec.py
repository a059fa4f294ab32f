"""The mesh spec: the packaged default, one clear line per bad input, and latency sampling."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from meshcore.errors import ConfigError
from meshsim.spec import Latency, MeshSpec, Workload, load_spec

BOUTIQUE_BACKENDS = {
    "productcatalogservice",
    "currencyservice",
    "cartservice",
    "recommendationservice",
    "shippingservice",
    "checkoutservice",
    "paymentservice",
    "emailservice",
    "adservice",
}


def test_default_spec_is_the_boutique_with_two_frontend_versions() -> None:
    spec = load_spec()
    assert isinstance(spec, MeshSpec)
    assert (spec.seed, spec.namespace) == (42, "default")
    services = spec.services()
    assert set(services) == BOUTIQUE_BACKENDS | {"frontend"}
    frontends = services["frontend"]
    assert [w.name for w in frontends] == ["frontend-v1", "frontend-v2"]
    assert [dict(w.labels) for w in frontends] == [
        {"app": "frontend", "version": "v1"},
        {"app": "frontend", "version": "v2"},
    ]
    for svc in BOUTIQUE_BACKENDS:
        (only,) = services[svc]
        assert isinstance(only, Workload)
        assert (only.name, dict(only.labels), only.namespace) == (
            f"{svc}-v1",
            {"app": svc, "version": "v1"},
            "default",
        )
    v1, v2 = (w.profile for w in frontends)
    assert (v1.error_rate, v2.error_rate) == (0.0, 0.005)
    assert dict(v2.outbound_latency_factor) == {
        "productcatalogservice": 1.2,
        "recommendationservice": 1.2,
    }
    assert v2.message and not v1.message
    # Latencies stay small so the simulated mesh keeps throughput high.
    for w in spec.workloads:
        for lat in [w.profile.latency, *w.profile.operations.values()]:
            assert lat.median_ms <= 3.0


def test_services_group_workloads_in_spec_order(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "seed: 3\nnamespace: shop\nworkloads:\n"
        "  - {name: a-v2, service: a, labels: {app: a, version: v2}}\n"
        "  - {name: b-v1, service: b}\n"
        "  - {name: a-v1, service: a, namespace: other}\n"
    )
    spec = load_spec(path)
    assert {k: [w.name for w in v] for k, v in spec.services().items()} == {
        "a": ["a-v2", "a-v1"],
        "b": ["b-v1"],
    }
    assert dict(spec.workloads[1].labels) == {"app": "b"}
    assert [w.namespace for w in spec.workloads] == ["shop", "shop", "other"]


def test_profiles_merge_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "defaults:\n"
        "  latency_ms: {median: 1, p99: 4}\n"
        "  operations: {Get: {median: 2, p99: 3}}\n"
        "  outbound_latency_factor: {x: 2}\n"
        "workloads:\n"
        "  - {name: x, service: x}\n  - {name: y, service: y}\n"
        "  - name: w\n    service: s\n    profile:\n"
        "      operations: {Put: {median: 0.5}}\n"
        "      outbound_latency_factor: {y: 1.5}\n"
        "      error_rate: 0.25\n"
    )
    profile = load_spec(path).workloads[2].profile
    assert profile.latency == Latency(1.0, 4.0)
    assert profile.latency_for("Get") == Latency(2.0, 3.0)
    assert profile.latency_for("Put") == Latency(0.5, 0.5)
    assert profile.latency_for("Other") == Latency(1.0, 4.0)
    assert dict(profile.outbound_latency_factor) == {"x": 2.0, "y": 1.5}
    assert profile.error_rate == 0.25


GOOD_WORKLOAD = "  - name: w\n    service: s\n"
BAD_SPECS = {
    "unparsable": ("workloads: [\n  - {name: w", "line 2", "fix the YAML syntax"),
    "unknown_top": (f"sede: 4\nworkloads:\n{GOOD_WORKLOAD}", "sede", "unknown field"),
    "unknown_profile": (
        "workloads:\n  - name: w\n    service: s\n    profile: {latncy_ms: {median: 1}}\n",
        "workloads[0].profile.latncy_ms",
        "latency_ms",
    ),
    "unknown_latency": (
        "workloads:\n  - name: w\n    service: s\n    profile: {latency_ms: {median: 1, p95: 2}}\n",
        "workloads[0].profile.latency_ms.p95",
        "median, p99",
    ),
    "negative_latency": (
        "workloads:\n  - name: w\n    service: s\n"
        "    profile: {operations: {Get: {median: -1, p99: 2}}}\n",
        "workloads[0].profile.operations.Get.median",
        ">= 0",
    ),
    "p99_below_median": (
        "workloads:\n  - name: w\n    service: s\n    profile: {latency_ms: {median: 3, p99: 2}}\n",
        "workloads[0].profile.latency_ms.p99",
        "p99 must be >= median",
    ),
    "duplicate_name": (
        f"workloads:\n{GOOD_WORKLOAD}{GOOD_WORKLOAD}",
        "workloads[1].name",
        "unique",
    ),
    "error_rate_above_1": (
        "workloads:\n  - name: w\n    service: s\n    profile: {error_rate: 1.5}\n",
        "workloads[0].profile.error_rate",
        "[0, 1]",
    ),
    "error_rate_negative": (
        "defaults: {error_rate: -0.1}\nworkloads:\n" + GOOD_WORKLOAD,
        "defaults.error_rate",
        "[0, 1]",
    ),
    "no_workloads": ("seed: 1\n", "workloads", "non-empty list"),
    "missing_service": ("workloads:\n  - name: w\n", "workloads[0].service", "missing"),
    "bad_name": (
        "workloads:\n  - name: Front_End\n    service: s\n",
        "workloads[0].name",
        "lowercase",
    ),
    "label_not_string": (
        "workloads:\n  - name: w\n    service: s\n    labels: {version: 2}\n",
        "workloads[0].labels",
        "string",
    ),
    "outbound_to_unknown_service": (
        "workloads:\n  - name: w\n    service: s\n"
        "    profile: {outbound_latency_factor: {productcatalog: 1.2}}\n",
        "workloads[0].profile.outbound_latency_factor.productcatalog",
        "use one of s",
    ),
    "seed_not_int": (f"seed: x\nworkloads:\n{GOOD_WORKLOAD}", "seed", "integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_gives_one_line_naming_file_field_and_fix(tmp_path: Path, case: str) -> None:
    text, field, fix = BAD_SPECS[case]
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert field in message
    assert fix in message


def test_missing_spec_file_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read the spec .*--spec"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("median_ms", "p99_ms"), [(0.3, 1.2), (0.8, 3.0), (2.0, 9.5)])
def test_sampled_latency_has_the_profile_median_and_p99(median_ms: float, p99_ms: float) -> None:
    lat = Latency(median_ms, p99_ms)
    rng = random.Random(1234)
    samples = np.array([lat.sample_ms(rng) for _ in range(100_000)])
    assert np.quantile(samples, 0.5) == pytest.approx(median_ms, rel=0.01)
    assert np.quantile(samples, 0.99) == pytest.approx(p99_ms, rel=0.03)
    # Independently: a lognormal through (median, p99) has this mean.
    sigma = math.log(p99_ms / median_ms) / stats.norm.ppf(0.99)
    assert samples.mean() == pytest.approx(median_ms * math.exp(sigma**2 / 2), rel=0.01)
    assert samples.min() > 0


def test_constant_and_zero_latency() -> None:
    rng = random.Random(0)
    assert {Latency(1.5, 1.5).sample_ms(rng) for _ in range(100)} == {1.5}
    assert {Latency(0.0, 0.0).sample_ms(rng) for _ in range(100)} == {0.0}


def test_same_seed_same_samples() -> None:
    lat = Latency(0.5, 2.0)
    first, second, other = random.Random(42), random.Random(42), random.Random(43)
    a = [lat.sample_ms(first) for _ in range(1000)]
    assert a == [lat.sample_ms(second) for _ in range(1000)]
    assert a != [lat.sample_ms(other) for _ in range(1000)]
