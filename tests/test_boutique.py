"""The simulated boutique in-process: hop trees, observers, seeds, profiles."""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from meshsim.boutique import INGRESS, Hop, Runtime, serve
from meshsim.boutique.catalog import PRODUCT_IDS
from meshsim.spec import MeshSpec, load_spec

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def run(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 30))


async def _get_product_page(hops: list[Hop], seed: int | None = None) -> int:
    running = await serve(load_spec(), seed, observers=[hops.append])
    try:
        async with aiohttp.ClientSession() as http:
            url = running.url("frontend-v1") + "/product/OLJCESPC7Z"
            async with http.get(url, headers={"traceparent": TRACEPARENT}) as resp:
                await resp.read()
                return resp.status
    finally:
        await running.close()


@pytest.mark.integration  # serves on 127.0.0.1
def test_product_page_hop_tree_follows_the_demo_and_the_traceparent() -> None:
    hops: list[Hop] = []
    assert run(_get_product_page, hops) == 200
    assert {h.trace_id for h in hops} == {TRACE_ID}
    (root,) = [h for h in hops if h.source == INGRESS]
    assert (root.destination, root.operation, root.protocol) == (
        "frontend-v1",
        "GET /product/{id}",
        "http",
    )
    assert (root.parent_span_id, root.status_code, root.error) == (PARENT_ID, 200, False)
    assert hops[-1] is root  # a parent is reported after its children, like spans ending

    children = [h for h in hops if h.parent_span_id == root.span_id]
    assert [(h.source, h.destination, h.operation) for h in children] == [
        ("frontend-v1", "productcatalogservice-v1", "GetProduct"),
        ("frontend-v1", "currencyservice-v1", "GetSupportedCurrencies"),
        ("frontend-v1", "cartservice-v1", "GetCart"),
        ("frontend-v1", "currencyservice-v1", "Convert"),
        ("frontend-v1", "recommendationservice-v1", "ListRecommendations"),
        *[("frontend-v1", "productcatalogservice-v1", "GetProduct")] * 5,
        ("frontend-v1", "adservice-v1", "GetAds"),
    ]
    (recommend,) = [h for h in children if h.operation == "ListRecommendations"]
    (nested,) = [h for h in hops if h.parent_span_id == recommend.span_id]
    assert (nested.source, nested.destination, nested.operation) == (
        "recommendationservice-v1",
        "productcatalogservice-v1",
        "ListProducts",
    )
    assert len(hops) == len(children) + 2
    assert len({h.span_id for h in hops}) == len(hops)
    assert all(
        h.status_code == 200 and not h.error and h.protocol == "grpc" for h in hops if h is not root
    )

    # Calls run one after another inside the frontend's own time, as in the demo (offsets
    # from the root's start, to 1 us: start_ns is rounded to whole nanoseconds).
    def span_us(h: Hop) -> tuple[float, float]:
        start_us = (h.start_ns - root.start_ns) / 1e3
        return start_us, start_us + h.duration_ms * 1e3

    spans = [span_us(h) for h in children]
    for (_, before_end), (after_start, _) in zip(spans, spans[1:], strict=False):
        assert after_start >= before_end - 1
    assert spans[0][0] >= 0
    assert spans[-1][1] <= root.duration_ms * 1e3 + 1
    nested_start, nested_end = span_us(nested)
    assert spans[4][0] - 1 <= nested_start and nested_end <= spans[4][1] + 1
    assert root.duration_ms >= sum(h.duration_ms for h in children)


async def _sequence(seed: int) -> list[tuple[int, str, tuple[tuple[str, float], ...]]]:
    """A fixed request sequence; per request its status, workload and hop latencies."""
    per_request: list[list[Hop]] = [[]]
    running = await serve(load_spec(), seed, observers=[lambda h: per_request[-1].append(h)])
    out = []
    try:
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            for i in range(60):
                fe = running.url("frontend-v2" if i % 3 else "frontend-v1")
                path = ["/", f"/product/{PRODUCT_IDS[i % 9]}", "/cart"][i % 3]
                if i % 7 == 0:
                    form = {"product_id": PRODUCT_IDS[i % 9], "quantity": "2"}
                    request = http.post(fe + "/cart", data=form, allow_redirects=False)
                else:
                    request = http.get(fe + path)
                async with request as resp:
                    await resp.read()
                    hops = tuple(
                        (h.destination, round(h.duration_ms, 9))
                        for h in per_request[-1]
                        if h.source != INGRESS
                    )
                    out.append((resp.status, resp.headers["x-workload"], hops))
                per_request.append([])
    finally:
        await running.close()
    return out


@pytest.mark.integration  # serves on 127.0.0.1
def test_same_seed_same_answers_other_seed_other_answers() -> None:
    first, again, other = run(_sequence, 7), run(_sequence, 7), run(_sequence, 8)
    assert len(first) == 60 and all(status in (200, 302, 500) for status, _, _ in first)
    assert sum(len(hops) for _, _, hops in first) > 300
    assert first == again
    assert [h for _, _, h in first] != [h for _, _, h in other]


def test_v2_reaches_productcatalog_20_percent_slower_and_fails_half_a_percent() -> None:
    spec = load_spec()
    runtime = Runtime(spec, seed=3)
    v1, v2 = (runtime.workloads[n] for n in ("frontend-v1", "frontend-v2"))

    def call_ms(frontend: Any) -> float:
        req = runtime.begin(frontend, "GET /", fallible=False)
        before = req.clock_ms
        req.root.call("productcatalogservice", "GetProduct")
        return float(req.clock_ms - before)

    v1_ms = [call_ms(v1) for _ in range(40_000)]
    v2_ms = [call_ms(v2) for _ in range(40_000)]
    assert statistics.median(v1_ms) == pytest.approx(0.3, rel=0.02)
    assert statistics.median(v2_ms) / statistics.median(v1_ms) == pytest.approx(1.2, rel=0.03)

    n = 100_000
    failed = sum(runtime.begin(v2, "GET /").failed for _ in range(n))
    p = 0.005
    assert abs(failed - n * p) <= 4 * math.sqrt(n * p * (1 - p))
    assert not any(runtime.begin(v1, "GET /").failed for _ in range(10_000))
    assert not any(runtime.begin(v2, "GET /_healthz", fallible=False).failed for _ in range(10_000))


async def _with_observers(observers: list[Any]) -> list[int]:
    running = await serve(load_spec(), observers=observers)
    try:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(3):
                async with http.get(running.url("frontend-v1") + "/") as resp:
                    statuses.append(resp.status)
            return statuses
    finally:
        await running.close()


@pytest.mark.integration  # serves on 127.0.0.1
def test_a_raising_observer_is_logged_once_and_breaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(hop: Hop) -> None:
        raise RuntimeError("exporter down")

    seen: list[Hop] = []
    with caplog.at_level(logging.ERROR, logger="meshsim.boutique.hops"):
        statuses = run(_with_observers, [broken, seen.append])
    assert statuses == [200, 200, 200]
    assert sum(h.source == INGRESS for h in seen) == 3
    assert len([r for r in caplog.records if "exporter down" in str(r.exc_info)]) == 1


def test_without_traceparent_a_new_trace_starts() -> None:
    runtime = Runtime(load_spec(), observers=[lambda h: None])
    req = runtime.begin(runtime.workloads["frontend-v1"], "GET /", None)
    assert len(req.trace_id) == 32 and int(req.trace_id, 16) != 0
    assert req.parent_span_id is None
    other = runtime.begin(runtime.workloads["frontend-v1"], "GET /", "garbage")
    assert other.trace_id != req.trace_id


async def _cancel_while_waiting(runtime: Runtime) -> None:
    req = runtime.begin(runtime.workloads["frontend-v1"], "GET /", TRACEPARENT)
    req.clock_ms = 5_000.0  # far ahead of the wall clock: finish() must wait
    task = asyncio.create_task(req.finish(200))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_request_cut_short_is_still_reported_once() -> None:
    seen: list[Hop] = []
    runtime = Runtime(load_spec(), observers=[seen.append])
    run(_cancel_while_waiting, runtime)
    assert [(h.source, h.status_code, h.error, h.parent_span_id) for h in seen] == [
        (INGRESS, 499, False, PARENT_ID)
    ]
    assert 5 <= seen[0].duration_ms < 1_000


def _spec_with_failing(service: str) -> MeshSpec:
    spec = load_spec()
    workloads = tuple(
        replace(w, profile=replace(w.profile, error_rate=1.0)) if w.service == service else w
        for w in spec.workloads
    )
    return replace(spec, workloads=workloads)


async def _statuses(spec: MeshSpec, paths: list[str], hops: list[Hop]) -> list[int]:
    running = await serve(spec, observers=[hops.append])
    try:
        async with aiohttp.ClientSession() as http:
            out = []
            for path in paths:
                async with http.get(running.url("frontend-v1") + path) as resp:
                    out.append(resp.status)
            return out
    finally:
        await running.close()


@pytest.mark.integration  # serves on 127.0.0.1
@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        # The demo renders pages without ads or recommendations when those fail...
        ("adservice", [200, 200, 200]),
        ("recommendationservice", [200, 200, 200]),
        # ...and answers 500 when anything else it asked for failed.
        ("cartservice", [500, 500, 500]),
        ("currencyservice", [500, 500, 500]),
        ("productcatalogservice", [500, 500, 200]),
    ],
)
def test_failing_backends_give_the_demos_answers(failing: str, expected: list[int]) -> None:
    hops: list[Hop] = []
    paths = ["/", "/product/OLJCESPC7Z", "/cart"]
    assert run(_statuses, _spec_with_failing(failing), paths, hops) == expected
    failed = [h for h in hops if h.destination.startswith(failing)]
    assert failed and all(h.error and h.status_code == 500 for h in failed)
    roots = [h for h in hops if h.source == INGRESS]
    assert [h.status_code for h in roots] == expected


@pytest.mark.integration  # serves on 127.0.0.1
def test_unknown_product_is_a_404_hop_and_a_500_page() -> None:
    hops: list[Hop] = []
    assert run(_statuses, load_spec(), ["/product/NOSUCHITEM"], hops) == [500]
    assert [(h.destination, h.operation, h.status_code, h.error) for h in hops] == [
        ("productcatalogservice-v1", "GetProduct", 404, True),
        ("frontend-v1", "GET /product/{id}", 500, True),
    ]
