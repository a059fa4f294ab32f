"""`python -m meshsim.boutique` as a real process: routes, cookies, carts, errors, stopping."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meshsim.boutique.catalog import PRODUCTS
from meshsim.spec import load_spec

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
ORDER_FORM = {
    "email": "someone@example.com",
    "street_address": "1600 Amphitheatre Parkway",
    "zip_code": "94043",
    "city": "Mountain View",
    "state": "CA",
    "country": "United States",
    "credit_card_number": "4432-8015-6152-0454",
    "credit_card_expiration_month": "1",
    "credit_card_expiration_year": "2039",
    "credit_card_cvv": "672",
}


def _start(tmp: Path, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start the boutique in its own session; its stderr goes to `tmp/boutique.log`."""
    ports_file = tmp / "ports.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    with open(tmp / "boutique.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshsim.boutique", "--ports-file", str(ports_file), *args],
            cwd=REPO,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    return proc, ports_file


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        return None


@pytest.fixture(scope="module")
def boutique(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    proc, ports_file = _start(tmp_path_factory.mktemp("boutique"), "--seed", "42")
    try:
        deadline = time.monotonic() + 20
        while not ports_file.exists():
            assert proc.poll() is None, (ports_file.parent / "boutique.log").read_text()
            assert time.monotonic() < deadline, "the boutique did not write its ports file"
            time.sleep(0.05)
        info = json.loads(ports_file.read_text())
        yield {"proc": proc, **info}
    finally:
        _stop(proc)


def url(boutique: dict[str, Any], workload: str, path: str) -> str:
    return f"http://127.0.0.1:{boutique['workloads'][workload]}{path}"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_ports_file_names_every_workload_and_the_pid(boutique: dict[str, Any]) -> None:
    assert boutique["pid"] == boutique["proc"].pid
    names = [w.name for w in load_spec().workloads]
    assert sorted(boutique["workloads"]) == sorted(names)
    assert boutique["port"] == boutique["workloads"][names[0]]
    assert "metrics" not in boutique  # started without --metrics
    assert len(set(boutique["workloads"].values())) == len(names)


async def _journey(b: dict[str, Any]) -> list[tuple[str, Any]]:
    """One shopper across both frontend versions; every answer recorded for the asserts."""
    seen: list[tuple[str, Any]] = []
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:

        async def go(label: str, method: str, workload: str, path: str, **kw: Any) -> str:
            async with http.request(
                method, url(b, workload, path), allow_redirects=False, **kw
            ) as resp:
                body = await resp.text()
                seen.append(
                    (
                        label,
                        (
                            resp.status,
                            resp.headers.get("Location"),
                            resp.headers.get("x-workload"),
                            resp.headers.getall("Set-Cookie", []),
                            body,
                        ),
                    )
                )
                return body

        await go("home", "GET", "frontend-v1", "/")
        for p in PRODUCTS:
            await go(f"product {p.id}", "GET", "frontend-v1", f"/product/{p.id}")
        await go("unknown product", "GET", "frontend-v1", "/product/NOSUCHITEM")
        await go(
            "currency",
            "POST",
            "frontend-v1",
            "/setCurrency",
            data={"currency_code": "EUR"},
            headers={"Referer": "/product/OLJCESPC7Z"},
        )
        await go(
            "currency no referer",
            "POST",
            "frontend-v2",
            "/setCurrency",
            data={"currency_code": "EUR"},
        )
        await go(
            "bad currency", "POST", "frontend-v1", "/setCurrency", data={"currency_code": "XYZ"}
        )
        await go("product in EUR", "GET", "frontend-v2", "/product/OLJCESPC7Z")
        await go(
            "add",
            "POST",
            "frontend-v1",
            "/cart",
            data={"product_id": "OLJCESPC7Z", "quantity": "3"},
        )
        await go(
            "bad quantity",
            "POST",
            "frontend-v1",
            "/cart",
            data={"product_id": "OLJCESPC7Z", "quantity": "11"},
        )
        await go("cart on v2", "GET", "frontend-v2", "/cart")
        await go(
            "bad order",
            "POST",
            "frontend-v2",
            "/cart/checkout",
            data={**ORDER_FORM, "credit_card_number": "1234"},
        )
        await go("checkout", "POST", "frontend-v2", "/cart/checkout", data=ORDER_FORM)
        await go("cart after checkout", "GET", "frontend-v1", "/cart")
        await go(
            "add again",
            "POST",
            "frontend-v2",
            "/cart",
            data={"product_id": "6E92ZMYYFZ", "quantity": "1"},
        )
        await go("empty", "POST", "frontend-v1", "/cart/empty")
        await go("cart after empty", "GET", "frontend-v2", "/cart")
        await go("logout", "GET", "frontend-v1", "/logout")
        await go("healthz", "GET", "frontend-v2", "/_healthz")
        await go("robots", "GET", "frontend-v1", "/robots.txt")
        await go("no route", "GET", "frontend-v1", "/nope")
        await go("backend get", "GET", "cartservice-v1", "/any/path")
        await go("backend post", "POST", "recommendationservice-v1", "/x", data=b"{}")
    return seen


def test_a_shopper_journey_across_both_versions(boutique: dict[str, Any]) -> None:
    seen = dict(run(_journey(boutique)))
    status = {k: v[0] for k, v in seen.items()}

    home_status, _, home_workload, home_cookies, home = seen["home"]
    assert (home_status, home_workload) == (200, "frontend-v1")
    (session_cookie,) = home_cookies
    assert session_cookie.startswith("shop_session-id=") and "Max-Age=172800" in session_cookie
    assert all(escape(p.name) in home for p in PRODUCTS)
    assert "frontend-message" not in home

    for p in PRODUCTS:
        page = seen[f"product {p.id}"]
        assert page[0] == 200 and page[3] == [] and escape(p.name) in page[4]
    assert status["unknown product"] == 500

    assert seen["currency"][:2] == (302, "/product/OLJCESPC7Z")
    assert seen["currency"][3] == ["shop_currency=EUR; Max-Age=172800"]
    assert seen["currency no referer"][:3] == (302, "/", "frontend-v2")
    assert status["bad currency"] == 422
    eur_page = seen["product in EUR"][4]
    assert "€17.68" in eur_page and "frontend-message" in eur_page

    assert seen["add"][:2] == (302, "/cart")
    assert status["bad quantity"] == 422
    cart_status, _, cart_workload, _, cart = seen["cart on v2"]
    assert (cart_status, cart_workload) == (200, "frontend-v2")
    assert "Sunglasses" in cart and "€53.05" in cart  # 3 x 19.99 USD in EUR

    assert status["bad order"] == 422
    order_status, _, _, _, order = seen["checkout"]
    assert order_status == 200 and "Your order is complete" in order
    assert "€61.00" in order  # 3 x 17.68 + 7.95 shipping, in EUR
    assert "Your shopping cart is empty" in seen["cart after checkout"][4]

    assert seen["empty"][:2] == (302, "/")
    assert "Your shopping cart is empty" in seen["cart after empty"][4]

    logout_status, logout_location, _, logout_cookies, _ = seen["logout"]
    assert (logout_status, logout_location) == (302, "/")
    assert sorted(c.split("=")[0] for c in logout_cookies) == ["shop_currency", "shop_session-id"]
    assert all("Max-Age=0" in c for c in logout_cookies)

    assert seen["healthz"][0] == 200 and seen["healthz"][4] == "ok"
    assert seen["robots"][0] == 200 and seen["robots"][4].startswith("User-agent: *")
    assert seen["no route"][:3] == (404, None, "frontend-v1")
    for label, workload in (
        ("backend get", "cartservice-v1"),
        ("backend post", "recommendationservice-v1"),
    ):
        b_status, _, b_workload, _, body = seen[label]
        assert (b_status, b_workload) == (200, workload)
        assert json.loads(body)["workload"] == workload


async def _product_pages(b: dict[str, Any], workload: str, n: int) -> Counter[tuple[int, str]]:
    tally: Counter[tuple[int, str]] = Counter()
    remaining = n
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as http:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with http.get(url(b, workload, "/product/66VCHSJNUP")) as resp:
                    await resp.read()
                    tally[(resp.status, resp.headers["x-workload"])] += 1

        await asyncio.gather(*(worker() for _ in range(32)))
    return tally


def test_v2_fails_half_a_percent_of_requests_v1_none(boutique: dict[str, Any]) -> None:
    n, p = 4000, 0.005
    v2 = run(_product_pages(boutique, "frontend-v2", n))
    failed = v2[(500, "frontend-v2")]
    assert failed + v2[(200, "frontend-v2")] == n
    assert abs(failed - n * p) <= 4 * math.sqrt(n * p * (1 - p))
    v1 = run(_product_pages(boutique, "frontend-v1", 1000))
    assert v1 == Counter({(200, "frontend-v1"): 1000})


def test_sigterm_stops_promptly_with_exit_0(tmp_path: Path) -> None:
    proc, ports_file = _start(tmp_path)
    deadline = time.monotonic() + 20
    while not ports_file.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ports_file.exists()
    started = time.monotonic()
    assert _stop(proc) == 0
    assert time.monotonic() - started < 3


def test_bad_spec_exits_2_with_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("workloads:\n  - name: w\n    service: s\n    profile: {error_rate: 2}\n")
    proc, ports_file = _start(tmp_path, "--spec", str(spec))
    assert proc.wait(timeout=20) == 2
    stderr = (tmp_path / "boutique.log").read_text()
    assert stderr.strip().splitlines() == [
        f"{spec}: workloads[0].profile.error_rate: 2.0 is outside [0, 1]; "
        "give a share such as 0.005 for 0.5 %"
    ]
    assert not ports_file.exists()
