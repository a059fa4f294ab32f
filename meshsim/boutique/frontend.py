"""The demo's frontend: its routes, the backend calls each makes, its status codes and cookies.

Follows GoogleCloudPlatform/microservices-demo src/frontend (main.go, handlers.go, rpc.go):
a failed call the demo treats as fatal gives a 500 page; recommendations and ads are optional;
form validation failures give 422, as the demo's validator does.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Mapping
from email.utils import formatdate

from aiohttp import web

from meshsim.boutique.backends import Backends
from meshsim.boutique.catalog import (
    DEFAULT_CURRENCY,
    Ad,
    Product,
)
from meshsim.boutique.forms import (
    add_to_cart_problems,
    parse_uint,
    place_order_problems,
    set_currency_problems,
)
from meshsim.boutique.pages import Pages
from meshsim.boutique.routing import Handler as RouteHandler
from meshsim.boutique.routing import Routes, path_segment
from meshsim.boutique.runtime import CallFailed, Runtime, Site
from meshsim.spec import Workload

SESSION_COOKIE = "shop_session-id"
CURRENCY_COOKIE = "shop_currency"
COOKIE_MAX_AGE_S = 60 * 60 * 48
_NO_FORM: Mapping[str, str] = {}
# A Cookie header of plain `name=value` pairs, as browsers and Locust send ours: split here it
# gives what aiohttp's full RFC 6265 parser gives, at a fraction of the cost.
_PLAIN_COOKIES = re.compile(r"[\w.-]+=[\w.-]*(?:; [\w.-]+=[\w.-]*)*", re.ASCII)


class Visit:
    """What a handler knows about the request it serves."""

    __slots__ = ("site", "session_id", "currency", "form", "http", "set_cookies")

    def __init__(
        self,
        site: Site,
        session_id: str,
        currency: str,
        form: Mapping[str, str],
        http: web.BaseRequest,
        set_cookies: list[str],
    ) -> None:
        self.site = site
        self.session_id = session_id
        self.currency = currency
        self.form = form
        self.http = http
        self.set_cookies = set_cookies


Handler = Callable[[Visit], web.Response]
Wrap = Callable[[RouteHandler], RouteHandler]


def _unwrapped(handler: RouteHandler) -> RouteHandler:
    return handler


class Frontend:
    """The frontend routes served by one frontend workload."""

    def __init__(self, runtime: Runtime, backends: Backends, workload: Workload) -> None:
        self.runtime = runtime
        self.ops = backends
        self.workload = workload
        self.pages = Pages(workload, workload.profile.message)

    def routes(self, routes: Routes, wrap: Wrap = _unwrapped) -> None:
        """Add this frontend's routes; `wrap` is put around each (telemetry's exchange)."""
        for method, path, operation, handler, form, fallible in (
            ("GET", "/", "GET /", self.home, False, True),
            ("GET", "/product/{}", "GET /product/{id}", self.product, False, True),
            ("GET", "/cart", "GET /cart", self.view_cart, False, True),
            ("POST", "/cart", "POST /cart", self.add_to_cart, True, True),
            ("POST", "/cart/empty", "POST /cart/empty", self.empty_cart, False, True),
            ("POST", "/setCurrency", "POST /setCurrency", self.set_currency, True, True),
            ("GET", "/logout", "GET /logout", self.logout, False, True),
            ("POST", "/cart/checkout", "POST /cart/checkout", self.place_order, True, True),
            ("GET", "/_healthz", "GET /_healthz", self.healthz, False, False),
            ("GET", "/robots.txt", "GET /robots.txt", self.robots, False, True),
        ):
            serve = wrap(self._wrap(operation, handler, form=form, fallible=fallible))
            routes.add(method, path, serve, allow_head=path != "/logout")

    def _wrap(
        self, operation: str, handler: Handler, *, form: bool = False, fallible: bool = True
    ) -> RouteHandler:
        runtime, workload = self.runtime, self.workload

        async def serve(request: web.BaseRequest) -> web.StreamResponse:
            # Read the body before `begin`: all random draws of a request then happen without
            # an await in between, which keeps seeded runs reproducible under concurrency.
            fields: Mapping[str, str] = _NO_FORM
            if form:
                posted = await request.post()
                fields = {k: v for k, v in posted.items() if isinstance(v, str)}
            cookies = _cookies(request)
            set_cookies: list[str] = []
            session_id = cookies.get(SESSION_COOKIE)
            if not session_id:
                session_id = str(uuid.uuid4())
                set_cookies.append(f"{SESSION_COOKIE}={session_id}; Max-Age={COOKIE_MAX_AGE_S}")
            currency = cookies.get(CURRENCY_COOKIE) or DEFAULT_CURRENCY
            req = runtime.begin(
                workload, operation, request.headers.get("traceparent"), fallible=fallible
            )
            if req.failed:
                response = self._error(500, f"simulated failure in {workload.name}")
            else:
                visit = Visit(req.root, session_id, currency, fields, request, set_cookies)
                try:
                    response = handler(visit)
                except CallFailed as e:
                    response = self._error(500, str(e))
            await req.finish(response.status)
            for cookie in set_cookies:
                response.headers.add("Set-Cookie", cookie)
            return response

        return serve

    def _error(self, status: int, message: str) -> web.Response:
        return web.Response(
            status=status, text=self.pages.error(status, message), content_type="text/html"
        )

    def _page(self, html: str) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    # Calls the demo's frontend makes (rpc.go), shared by several pages.
    def _currencies(self, site: Site) -> tuple[str, ...]:
        result: tuple[str, ...] = site.call(
            "currencyservice", "GetSupportedCurrencies", self.ops.get_supported_currencies
        )
        return result

    def _cart(self, v: Visit) -> tuple[tuple[str, int], ...]:
        result: tuple[tuple[str, int], ...] = v.site.call(
            "cartservice", "GetCart", self.ops.get_cart, v.session_id
        )
        return result

    def _convert(self, site: Site, amount_usd: float, currency: str) -> float:
        result: float = site.call(
            "currencyservice", "Convert", self.ops.convert, amount_usd, currency
        )
        return result

    def _recommendations(self, v: Visit, product_ids: tuple[str, ...]) -> list[Product]:
        """The demo ignores a failure here: the page shows no recommendations."""
        try:
            ids = v.site.call(
                "recommendationservice",
                "ListRecommendations",
                self.ops.list_recommendations,
                product_ids,
            )
            products = [
                v.site.call("productcatalogservice", "GetProduct", self.ops.get_product, i)
                for i in ids
            ]
        except CallFailed:
            return []
        return products[:4]

    def _ad(self, v: Visit, categories: tuple[str, ...]) -> Ad | None:
        try:
            ads: tuple[Ad, ...] = v.site.call("adservice", "GetAds", self.ops.get_ads, categories)
        except CallFailed:
            return None
        return ads[self.runtime.rng.randrange(len(ads))] if ads else None

    # Routes (handlers.go)
    def home(self, v: Visit) -> web.Response:
        currencies = self._currencies(v.site)
        products: tuple[Product, ...] = v.site.call(
            "productcatalogservice", "ListProducts", self.ops.list_products
        )
        cart = self._cart(v)
        for p in products:
            self._convert(v.site, p.price_usd, v.currency)
        ad = self._ad(v, ())
        return self._page(self.pages.home(v.currency, currencies, _size(cart), ad))

    def product(self, v: Visit) -> web.Response:
        product_id = path_segment(v.http)
        product: Product = v.site.call(
            "productcatalogservice", "GetProduct", self.ops.get_product, product_id
        )
        currencies = self._currencies(v.site)
        cart = self._cart(v)
        self._convert(v.site, product.price_usd, v.currency)
        recommendations = self._recommendations(v, (product_id,))
        ad = self._ad(v, product.categories)
        return self._page(
            self.pages.product(product, v.currency, currencies, _size(cart), recommendations, ad)
        )

    def view_cart(self, v: Visit) -> web.Response:
        currencies = self._currencies(v.site)
        cart = self._cart(v)
        recommendations = self._recommendations(v, tuple(pid for pid, _ in cart))
        quote_usd: float = v.site.call("shippingservice", "GetQuote", self.ops.get_quote, cart)
        shipping = self._convert(v.site, quote_usd, v.currency)
        items = []
        for product_id, quantity in cart:
            p: Product = v.site.call(
                "productcatalogservice", "GetProduct", self.ops.get_product, product_id
            )
            items.append((p, quantity, self._convert(v.site, p.price_usd, v.currency)))
        return self._page(self.pages.cart(v.currency, currencies, items, shipping, recommendations))

    def add_to_cart(self, v: Visit) -> web.Response:
        product_id = v.form.get("product_id", "")
        quantity = parse_uint(v.form.get("quantity", ""))
        problems = add_to_cart_problems(product_id, quantity)
        if problems:
            return self._error(422, "\n".join(problems))
        product: Product = v.site.call(
            "productcatalogservice", "GetProduct", self.ops.get_product, product_id
        )
        v.site.call("cartservice", "AddItem", self.ops.add_item, v.session_id, product.id, quantity)
        return web.Response(status=302, headers={"Location": "/cart"})

    def empty_cart(self, v: Visit) -> web.Response:
        v.site.call("cartservice", "EmptyCart", self.ops.empty_cart, v.session_id)
        return web.Response(status=302, headers={"Location": "/"})

    def set_currency(self, v: Visit) -> web.Response:
        code = v.form.get("currency_code", "")
        problems = set_currency_problems(code)
        if problems:
            return self._error(422, "\n".join(problems))
        v.set_cookies.append(f"{CURRENCY_COOKIE}={code}; Max-Age={COOKIE_MAX_AGE_S}")
        referer = v.http.headers.get("Referer") or "/"
        return web.Response(status=302, headers={"Location": referer})

    def place_order(self, v: Visit) -> web.Response:
        problems = place_order_problems(v.form)
        if problems:
            return self._error(422, "\n".join(problems))
        order = v.site.call(
            "checkoutservice",
            "PlaceOrder",
            self.ops.place_order,
            v.session_id,
            v.currency,
            v.form["email"],
        )
        recommendations = self._recommendations(v, ())
        currencies = self._currencies(v.site)
        return self._page(self.pages.order(order, currencies, recommendations))

    def logout(self, v: Visit) -> web.Response:
        expired = formatdate(time.time() - 365 * 24 * 3600, usegmt=True)
        for name, value in v.http.cookies.items():
            v.set_cookies.append(f"{name}={value}; Expires={expired}; Max-Age=0")
        return web.Response(status=302, headers={"Location": "/"})

    def healthz(self, v: Visit) -> web.Response:
        return web.Response(text="ok")

    def robots(self, v: Visit) -> web.Response:
        return web.Response(text="User-agent: *\nDisallow: /")


def _cookies(request: web.BaseRequest) -> Mapping[str, str]:
    header = request.headers.get("Cookie")
    if not header:
        return _NO_FORM
    if _PLAIN_COOKIES.fullmatch(header):
        return dict(pair.split("=", 1) for pair in header.split("; "))
    return request.cookies


def _size(cart: tuple[tuple[str, int], ...]) -> int:
    return sum(q for _, q in cart)
