"""Window splitting of trace searches: full pages split into pieces placed by the traces they
show; every trace is still read whatever order the backend answers in; pages come in time order."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from analysis.spans import load_spans
from analysis.spans_http import _split, _trace_starts_ns

T0_US = 1_780_000_000_000_000
SERVICE = "istio-ingressgateway"


def _tiles(lo: int, hi: int, pieces: list[tuple[int, int]]) -> bool:
    contiguous = all(b[0] == a[1] + 1 for a, b in zip(pieces, pieces[1:], strict=False))
    return pieces[0][0] == lo and pieces[-1][1] == hi and contiguous and len(pieces) >= 2


def test_split_pieces_tile_the_window() -> None:
    rng = random.Random(7)
    for _ in range(300):
        lo = rng.randrange(10**18)
        hi = lo + rng.randrange(2, 10**11)
        starts = [rng.randrange(lo - 10, hi + 10) for _ in range(rng.randrange(0, 60))]
        assert _tiles(lo, hi, _split(lo, hi, starts, rng.randrange(1, 40)))


def test_split_cuts_the_known_part_every_half_page_then_at_its_width() -> None:
    lo, hi, ms = 0, 100_000 * 10**6, 10**6
    # A full page of 20: traces 1 ms apart in the newest part, from 90 s on.
    starts = [90_000 * ms + i * ms for i in range(20)]
    pieces = _split(lo, hi, starts, 20)
    assert _tiles(lo, hi, pieces)
    known = [p for p in pieces if p[0] >= starts[0]]
    assert [sum(a <= t <= b for t in starts) for a, b in known] == [10, 10]
    below = [b - a + 1 for a, b in pieces if b < starts[0]]
    assert below[1:] == [10 * ms] * 31 and below[0] == starts[0] - 31 * 10 * ms


def test_trace_starts_of_every_flavour() -> None:
    v1 = {"data": [{"spans": [{"startTime": 7}, {"startTime": 5}]}, {"spans": []}]}
    zipkin = [[{"timestamp": 9}, {"timestamp": 8}]]
    span = {"traceId": "ab", "startTimeUnixNano": "4000"}
    v3 = {"result": {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}}
    assert _trace_starts_ns(v1) == [5000] and _trace_starts_ns(zipkin) == [8000]
    assert _trace_starts_ns(v3) == [4000] and _trace_starts_ns({"data": []}) == []


class _Jaeger:
    """A Jaeger v1 search over N traces one ms apart, answering `limit` of the matching ones
    newest first or in a seeded random order (some stores do not sort)."""

    def __init__(
        self,
        n: int,
        ordered: bool,
        *,
        spacing_us: int = 1000,
        cap: int = 0,
        windowless: bool = False,
    ) -> None:
        self.starts_us = [T0_US + spacing_us * i for i in range(n)]
        self.ordered = ordered
        self.cap = cap  # at most this many traces per answer, whatever the limit (0: none)
        self.windowless = windowless  # answers the newest traces whatever the window
        self.calls: list[tuple[int, int]] = []
        self.rng = random.Random(3)

    async def search(self, request: web.Request) -> web.Response:
        q = request.query
        start, end, limit = int(q["start"]), int(q["end"]), int(q["limit"])
        self.calls.append((start, end))
        hits = [s for s in self.starts_us if self.windowless or start <= s <= end]
        hits = sorted(hits, reverse=True) if self.ordered else self.rng.sample(hits, len(hits))
        data: list[dict[str, Any]] = [
            {
                "traceID": f"{s:032x}",
                "spans": [{"traceID": f"{s:032x}", "spanID": f"{s:016x}", "startTime": s}],
                "processes": {"p1": {"serviceName": SERVICE}},
            }
            for s in hits[: min(limit, self.cap or limit)]
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
        # One full page, then pieces of half a page (halving: 15 full pages and 16 more).
        assert len(jaeger.calls) == 1 + n // (limit // 2)


@pytest.mark.integration
def test_a_window_too_short_to_split_is_read_with_a_larger_limit(serve: Any) -> None:
    jaeger = _Jaeger(120, ordered=True, spacing_us=4)  # 120 traces within half a millisecond
    url = serve(jaeger)
    notes: list[str] = []
    start_ns = T0_US * 1000
    frame = load_spans(
        url, service=SERVICE, start_ns=start_ns, end_ns=start_ns + 500_000, limit=50, notes=notes
    )
    assert len(frame) == 120 and notes == []  # limits 50, 100, 200: all of them, no note


@pytest.mark.integration
def test_a_backend_that_answers_no_more_is_a_note_not_a_silent_cap(serve: Any) -> None:
    jaeger = _Jaeger(120, ordered=True, spacing_us=4, cap=50)
    url = serve(jaeger)
    notes: list[str] = []
    start_ns = T0_US * 1000
    frame = load_spans(
        url, service=SERVICE, start_ns=start_ns, end_ns=start_ns + 500_000, limit=50, notes=notes
    )
    assert len(frame) == 50
    assert len(jaeger.calls) == 2  # asked again with 100: still 50, so no more asking
    [note] = notes
    assert note.startswith(f"traces of {SERVICE} may be missing: 1 page(s) came back full (50")
    assert "answered no more" in note and "how many were left out is not known" in note


@pytest.mark.integration
def test_the_page_bound_is_a_note(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("analysis.spans_http._MAX_PAGES", 4)
    jaeger = _Jaeger(600, ordered=True, windowless=True)  # every piece comes back full
    url = serve(jaeger)
    notes: list[str] = []
    start_ns, end_ns = T0_US * 1000, (T0_US + 1000 * 600) * 1000
    frame = load_spans(
        url, service=SERVICE, start_ns=start_ns, end_ns=end_ns, limit=50, notes=notes
    )
    assert len(frame) == 50  # the newest 50, answered again and again
    [note] = notes
    assert "the search stopped after 4 pages" in note and "ignore the window" in note
