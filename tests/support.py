"""Helpers for integration tests: a bounded concurrent HTTP client aimed at 127.0.0.1."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Tally:
    """What came back: status codes and the value of one response header, counted."""

    statuses: Counter[int] = field(default_factory=Counter)
    header: Counter[str | None] = field(default_factory=Counter)
    n: int = 0


async def _hammer(
    url: str, n: int, concurrency: int, header: str, headers: Mapping[str, str] | None
) -> Tally:
    assert url.startswith("http://127.0.0.1:"), "tests only ever target the loopback"
    tally = Tally()
    remaining = n
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.get(url, headers=headers, allow_redirects=False) as resp:
                    await resp.read()
                    tally.statuses[resp.status] += 1
                    tally.header[resp.headers.get(header)] += 1
                    tally.n += 1

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 120)
    return tally


def hammer(
    url: str,
    n: int,
    *,
    concurrency: int = 32,
    header: str = "x-version",
    headers: Mapping[str, str] | None = None,
) -> Tally:
    """Send exactly `n` GETs (bounded in count and time) and tally the answers."""
    return asyncio.run(_hammer(url, n, concurrency, header, headers))


def canary_against(mesh: Any, plan: Path, results: Path, *args: str) -> list[str]:
    """`locust -f scenarios/canary.py --headless` with a plan, driving a running embedded mesh
    as a cluster (`--mesh kubernetes --host --kubeconfig`), as a user types it."""
    return [
        sys.executable, "-m", "locust", "-f", str(REPO / "scenarios" / "canary.py"), "--headless",
        "--plan", str(plan), "--results-dir", str(results), "--mesh", "kubernetes",
        "--host", mesh.gateway_url, "--kubeconfig", str(mesh.kubeconfig), *args,
    ]  # fmt: skip
