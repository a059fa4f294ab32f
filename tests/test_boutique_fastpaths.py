"""The boutique's shortcuts give what the plain code gives: cookies, ids, per-request observers,
the inlined latency draw, routing without aiohttp's router."""

from __future__ import annotations

import asyncio
import random

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from meshsim.boutique.frontend import _cookies
from meshsim.boutique.hops import Hop, Observers, cached_traceparent
from meshsim.boutique.routing import Routes, path_segment
from meshsim.boutique.runtime import Runtime, _hex_id
from meshsim.spec import load_spec

NAMES = ["shop_session-id", "shop_currency", "a", "x.y", "weird name", "q"]
VALUES = ["EUR", "0f6b2c1e-9d4e-4a57-8f0e-1c2d3e4f5a6b", "", '"quoted"', "a b", "v=1", "é"]


def test_cookie_shortcut_matches_aiohttps_parser() -> None:
    rng = random.Random(5)
    headers = ["", "shop_currency=EUR", "a=1;b=2", "a=1; a=2", "  a=1", "a=1; "]
    for _ in range(300):
        pairs = [f"{rng.choice(NAMES)}={rng.choice(VALUES)}" for _ in range(rng.randrange(1, 4))]
        headers.append(rng.choice(["; ", ";", ";  "]).join(pairs))
    for header in headers:
        request = make_mocked_request("GET", "/", headers={"Cookie": header} if header else {})
        assert dict(_cookies(request)) == dict(request.cookies), header


def test_hex_ids_are_the_formatted_random_bits() -> None:
    mine, plain = random.Random(9), random.Random(9)
    for size in (8, 16) * 500:
        assert _hex_id(mine, size) == f"{plain.getrandbits(8 * size):0{2 * size}x}"


def test_repeated_traceparent_parses_the_same() -> None:
    header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    first, again = cached_traceparent(header), cached_traceparent(header)
    assert first == again and first is not None and first.sampled
    assert cached_traceparent("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert cached_traceparent(header) == first


class _PerRequest:
    def __init__(self) -> None:
        self.calls: list[list[Hop]] = []
        self.hops: list[Hop] = []

    def __call__(self, hop: Hop) -> None:
        self.hops.append(hop)

    def observe_request(self, hops: list[Hop]) -> None:
        self.calls.append(list(hops))


def _hops(n: int) -> list[Hop]:
    return [
        Hop("a", "b", "Op", "grpc", i, 1.0, 200, False, "t" * 32, f"{i:016x}", None)
        for i in range(n)
    ]


def test_request_observers_get_one_call_and_plain_ones_every_hop() -> None:
    per_request, seen = _PerRequest(), list[Hop]()
    observers = Observers([per_request, seen.append])
    for n in (3, 1, 5):
        observers.emit(_hops(n))
    assert [len(c) for c in per_request.calls] == [3, 1, 5] and per_request.hops == []
    assert len(seen) == 9


def test_a_failing_request_observer_never_stops_the_others() -> None:
    seen: list[Hop] = []

    class Broken(_PerRequest):
        def observe_request(self, hops: list[Hop]) -> None:
            raise RuntimeError("boom")

    observers = Observers([Broken(), seen.append])
    observers.emit(_hops(4))
    observers.emit(_hops(2))
    assert len(seen) == 6


def test_a_calls_inlined_latency_is_latency_sample_ms() -> None:
    spec = load_spec()
    runtime = Runtime(spec, seed=3)
    frontend = runtime.workloads["frontend-v1"]
    site = runtime.begin(frontend, "GET /").root
    for service, operation in [("currencyservice", "Convert"), ("cartservice", "GetCart")] * 20:
        (callee,) = runtime.targets[service]
        twin = random.Random()
        twin.setstate(runtime.rng.getstate())
        site.request.clock_ms = 0.0
        site.call(service, operation)
        assert site.request.clock_ms == callee.profile.latency_for(operation).sample_ms(twin)


async def _answer(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(text=f"{request.method} {request.path} {path_segment(request)}")


def test_routes_answer_as_aiohttps_router() -> None:
    routes = Routes("w")
    routes.add("GET", "/", _answer)
    routes.add("GET", "/product/{}", _answer)
    routes.add("POST", "/cart", _answer)
    routes.add("GET", "/logout", _answer, allow_head=False)

    def answer(method: str, path: str) -> tuple[int, str, str | None, str]:
        try:
            resp = asyncio.run(routes(make_mocked_request(method, path)))
        except web.HTTPException as e:
            resp = e
        text = resp.text if isinstance(resp, web.Response) else ""
        return resp.status, resp.headers["x-workload"], resp.headers.get("Allow"), text or ""

    assert answer("GET", "/") == (200, "w", None, "GET / ")
    assert answer("HEAD", "/")[0] == 200
    assert answer("GET", "/product/AB12") == (200, "w", None, "GET /product/AB12 AB12")
    for path in ("/product/", "/product/a/b", "/products/x", "/cart/", "/nowhere"):
        assert answer("GET", path)[:3] == (404, "w", None), path
    assert answer("GET", "/cart")[:3] == (405, "w", "POST")
    assert answer("HEAD", "/logout")[:3] == (405, "w", "GET")
    routes.add_any(_answer)
    assert answer("DELETE", "/nowhere")[0] == 200
