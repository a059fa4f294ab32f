"""The boutique's shortcuts give what the plain code gives: cookies, ids, per-request observers."""

from __future__ import annotations

import random

from aiohttp.test_utils import make_mocked_request

from meshsim.boutique.frontend import _cookies
from meshsim.boutique.hops import Hop, Observers, cached_traceparent
from meshsim.boutique.runtime import _hex_id

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
