"""Window splitting of trace searches: full pages split into pieces sized by the density they
show; every trace is still read whatever order the backend answers in; pages come in time order."""

from __future__ import annotations

import asyncio
import math
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from analysis.spans import load_spans
from analysis.spans_http import _estimate_count, _split

T0_US = 1_780_000_000_000_000
SERVICE = "istio-ingressgateway"


def test_split_pieces_tile_the_window() -> None:
    rng = random.Random(7)
    for _ in range(200):
        lo = rng.randrange(10**18)
        hi = lo + rng.randrange(2 * 10**6, 10**11)
        estimated, limit = rng.uniform(0, 50_000), rng.randrange(2, 3000)
        pieces = _split(lo, hi, estimated, limit)
        assert pieces[0][0] == lo and pieces[-1][1] == hi and len(pieces) >= 2
        assert all(b[0] == a[1] + 1 for a, b in zip(pieces, pieces[1:], strict=False))
        assert all(b - a >= 10**6 - 1 for a, b in pieces)
        wanted = max(2, math.ceil(estimated / max(1, limit // 2)))
        assert len(pieces) == max(2, min(64, wanted, (hi - lo) // 10**6))


def _v1_page(starts_us: list[int]) -> dict[str, Any]:
    return {"data": [{"spans": [{"startTime": s}, {"startTime": s + 5}]} for s in starts_us]}


def test_estimate_extrapolates_the_covered_part() -> None:
    lo, hi = 0, 100 * 10**9
    # 50 traces in the newest quarter: about 200 in the whole window.
    newest = [int((75 + i / 2) * 10**6) for i in range(50)]
    assert _estimate_count(_v1_page(newest), 50, lo, hi) == pytest.approx(200)
    spread = [int(i * 2 * 10**6) for i in range(50)]  # a sample over the whole window
    assert _estimate_count(_v1_page(spread), 50, lo, hi) == pytest.approx(50)
    assert _estimate_count({"data": []}, 50, lo, hi) == 50


class _Jaeger:
    """A Jaeger v1 search over N traces one ms apart, answering `limit` of the matching ones
    newest first or in a seeded random order (some stores do not sort)."""

    def __init__(self, n: int, ordered: bool) -> None:
        self.starts_us = [T0_US + 1000 * i for i in range(n)]
        self.ordered = ordered
        self.calls: list[tuple[int, int]] = []
        self.rng = random.Random(3)

    async def search(self, request: web.Request) -> web.Response:
        q = request.query
        start, end, limit = int(q["start"]), int(q["end"]), int(q["limit"])
        self.calls.append((start, end))
        hits = [s for s in self.starts_us if start <= s <= end]
        hits = sorted(hits, reverse=True) if self.ordered else self.rng.sample(hits, len(hits))
        data: list[dict[str, Any]] = [
            {
                "traceID": f"{s:032x}",
                "spans": [{"traceID": f"{s:032x}", "spanID": f"{s:016x}", "startTime": s}],
                "processes": {"p1": {"serviceName": SERVICE}},
            }
            for s in hits[:limit]
        ]
        for trace in data:
            trace["spans"][0]["processID"] = "p1"
        return web.json_response({"data": data, "total": 0, "limit": 0, "offset": 0})

    async def services(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [SERVICE], "total": 1})


@pytest.fixture
def serve() -> Iterator[Any]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runners: list[web.AppRunner] = []

    def start(jaeger: _Jaeger) -> str:
        app = web.Application()
        app.router.add_get("/api/traces", jaeger.search)
        app.router.add_get("/api/services", jaeger.services)

        async def go() -> str:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            runners.append(runner)
            return f"http://127.0.0.1:{runner.addresses[0][1]}"

        return asyncio.run_coroutine_threadsafe(go(), loop).result(10)

    yield start
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.mark.integration
@pytest.mark.parametrize("ordered", [True, False])
def test_every_trace_read_once_in_time_order(serve: Any, ordered: bool) -> None:
    n, limit = 600, 50
    jaeger = _Jaeger(n, ordered)
    url = serve(jaeger)
    start_ns, end_ns = T0_US * 1000, (T0_US + 1000 * n) * 1000
    frame = load_spans(url, service=SERVICE, start_ns=start_ns, end_ns=end_ns, limit=limit)
    expected = [f"{s:032x}" for s in jaeger.starts_us]
    assert sorted(frame["trace_id"]) == expected and len(frame) == n  # all, once each
    # Pages come earliest first (each in the backend's order): starts rise across the frame.
    first_half, second_half = frame["start_ns"][: n // 4], frame["start_ns"][-n // 4 :]
    assert first_half.max() < second_half.min()
    if ordered:
        # One full page, then pieces of half a page (halving would send 15 full pages + 16).
        assert len(jaeger.calls) == 1 + n // (limit // 2)
