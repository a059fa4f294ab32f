"""The simulated backend services' operations, with the calls each one makes in the demo.

Each operation runs as the body of `Site.call`: it receives the site of the workload serving
it and makes its own downstream calls from there. State (carts) belongs to the service, not
to a workload, so every cartservice workload (and every frontend version) sees the same carts,
as the demo's Redis-backed cart service does.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from dataclasses import dataclass

from meshsim.boutique.catalog import (
    ADS_BY_CATEGORY,
    ALL_ADS,
    EUR_RATES,
    PRODUCT_BY_ID,
    PRODUCTS,
    SHIPPING_COST_USD,
    SUPPORTED_CURRENCIES,
    Ad,
    Product,
    convert,
)
from meshsim.boutique.runtime import CallFailed, RpcError, Site

# Sessions whose carts are kept; beyond this the oldest cart is dropped so a long load test
# with fresh sessions cannot grow memory without bound.
MAX_CARTS = 100_000
MAX_RECOMMENDATIONS = 5


@dataclass(frozen=True, slots=True)
class OrderItem:
    product: Product
    quantity: int
    cost: float


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    tracking_id: str
    currency: str
    shipping_cost: float
    items: tuple[OrderItem, ...]

    @property
    def total(self) -> float:
        return self.shipping_cost + sum(i.cost * i.quantity for i in self.items)


class Backends:
    """Operations of every backend service; `rng` is the mesh's seeded one, `ids` is not."""

    def __init__(self, rng: random.Random, ids: random.Random) -> None:
        self.rng = rng
        self.ids = ids
        self.carts: dict[str, dict[str, int]] = {}
        # Ads per category tuple asked for (the products' own, a handful in all).
        self._ads: dict[tuple[str, ...], tuple[Ad, ...]] = {}

    # productcatalogservice
    def list_products(self, site: Site) -> tuple[Product, ...]:
        return PRODUCTS

    def get_product(self, site: Site, product_id: str) -> Product:
        product = PRODUCT_BY_ID.get(product_id)
        if product is None:
            raise RpcError(404, f"no product with ID {product_id}")
        return product

    # currencyservice
    def get_supported_currencies(self, site: Site) -> tuple[str, ...]:
        return SUPPORTED_CURRENCIES

    def convert(self, site: Site, amount_usd: float, to_code: str) -> float:
        if to_code not in EUR_RATES:
            raise RpcError(400, f"unsupported currency {to_code}")
        return convert(amount_usd, "USD", to_code)

    # cartservice
    def add_item(self, site: Site, user_id: str, product_id: str, quantity: int) -> None:
        cart = self.carts.get(user_id)
        if cart is None:
            if len(self.carts) >= MAX_CARTS:
                del self.carts[next(iter(self.carts))]
            cart = self.carts[user_id] = {}
        cart[product_id] = cart.get(product_id, 0) + quantity

    def get_cart(self, site: Site, user_id: str) -> tuple[tuple[str, int], ...]:
        cart = self.carts.get(user_id)
        return tuple(cart.items()) if cart else ()

    def empty_cart(self, site: Site, user_id: str) -> None:
        self.carts.pop(user_id, None)

    # recommendationservice
    def list_recommendations(self, site: Site, product_ids: tuple[str, ...]) -> list[str]:
        products = site.call("productcatalogservice", "ListProducts", self.list_products)
        candidates = [p.id for p in products if p.id not in product_ids]
        return self.rng.sample(candidates, min(MAX_RECOMMENDATIONS, len(candidates)))

    # shippingservice
    def get_quote(self, site: Site, items: tuple[tuple[str, int], ...]) -> float:
        return SHIPPING_COST_USD if items else 0.0

    def ship_order(self, site: Site, items: tuple[tuple[str, int], ...]) -> str:
        return f"{self.ids.getrandbits(40):010X}"

    # paymentservice and emailservice: only their latency and errors matter here.
    def charge(self, site: Site, amount: float, currency: str) -> str:
        return f"{self.ids.getrandbits(128):032x}"

    def send_order_confirmation(self, site: Site, email: str, order_id: str) -> None:
        return None

    # adservice
    def get_ads(self, site: Site, categories: tuple[str, ...]) -> tuple[Ad, ...]:
        ads = self._ads.get(categories)
        if ads is None:
            ads = tuple(ad for c in categories for ad in ADS_BY_CATEGORY.get(c, ()))
            if len(self._ads) < 1000:
                self._ads[categories] = ads
        return ads or tuple(self.rng.sample(ALL_ADS, 2))

    # checkoutservice: PlaceOrder, with the demo's calls in the demo's order.
    def place_order(self, site: Site, user_id: str, currency: str, email: str) -> Order:
        items = site.call("cartservice", "GetCart", self.get_cart, user_id)
        order_items = []
        for product_id, quantity in items:
            product = site.call("productcatalogservice", "GetProduct", self.get_product, product_id)
            cost = site.call(
                "currencyservice", "Convert", self.convert, product.price_usd, currency
            )
            order_items.append(OrderItem(product, quantity, cost))
        shipping_usd = site.call("shippingservice", "GetQuote", self.get_quote, items)
        shipping = site.call("currencyservice", "Convert", self.convert, shipping_usd, currency)
        order_id = str(uuid.UUID(int=self.ids.getrandbits(128), version=4))
        order = Order(order_id, "", currency, shipping, tuple(order_items))
        site.call("paymentservice", "Charge", self.charge, order.total, currency)
        tracking_id = site.call("shippingservice", "ShipOrder", self.ship_order, items)
        # The demo ignores a failure to empty the cart after a paid order...
        with contextlib.suppress(CallFailed):
            site.call("cartservice", "EmptyCart", self.empty_cart, user_id)
        order = Order(order.order_id, tracking_id, currency, shipping, order.items)
        # ...and only logs a failed confirmation email.
        with contextlib.suppress(CallFailed):
            site.call(
                "emailservice",
                "SendOrderConfirmation",
                self.send_order_confirmation,
                email,
                order.order_id,
            )
        return order
