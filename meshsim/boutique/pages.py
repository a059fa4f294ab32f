"""The frontend's small HTML pages, assembled from fragments computed once per workload.

No template engine: every price of every product in every currency, the product grid per
currency and each workload's header and footer are strings made at start, so serving a page
costs a few joins.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from meshsim.boutique.backends import Order
from meshsim.boutique.catalog import (
    EUR_RATES,
    PRODUCTS,
    WHITELISTED_CURRENCIES,
    Ad,
    Product,
    convert,
    render_money,
)
from meshsim.spec import Workload

_HTTP_REASONS = {
    400: "Bad Request",
    404: "Not Found",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Pages:
    """Every page one frontend workload renders."""

    def __init__(self, workload: Workload, message: str | None) -> None:
        self.workload = workload
        banner = (
            f'<div class="frontend-message" id="frontend-message">{escape(message)}</div>'
            if message
            else ""
        )
        version = workload.labels.get("version", "")
        self._head = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="UTF-8">'
            "<title>Online Boutique</title></head>"
            f'<body data-workload="{escape(workload.name)}" data-version="{escape(version)}">'
            f'{banner}<header><a href="/">Online Boutique</a>'
        )
        self._foot = f"<footer>served by {escape(workload.name)}</footer></body></html>"
        # Every currency the currency service knows can be chosen (cookie) and rendered.
        self._price = {
            (p.id, c): render_money(convert(p.price_usd, "USD", c), c)
            for p in PRODUCTS
            for c in EUR_RATES
        }
        self._grid = {c: "".join(self._card(p, c) for p in PRODUCTS) for c in EUR_RATES}
        self._recs: dict[tuple[str, ...], str] = {}
        self._options: dict[str, str] = {}

    def _card(self, p: Product, currency: str) -> str:
        return (
            f'<div class="hot-product-card"><a href="/product/{p.id}">{escape(p.name)}</a>'
            f'<span class="price">{self._price[(p.id, currency)]}</span></div>'
        )

    def _header(self, currency: str, currencies: Sequence[str], cart_size: int) -> str:
        options = self._options.get(currency)
        if options is None:
            options = "".join(
                f'<option value="{c}"{" selected" if c == currency else ""}>{c}</option>'
                for c in currencies
                if c in WHITELISTED_CURRENCIES
            )
            if currency in EUR_RATES:
                self._options[currency] = options
        return (
            f'{self._head}<form method="POST" action="/setCurrency">'
            f'<select name="currency_code">{options}</select></form>'
            f'<a href="/cart" class="cart-link">Cart ({cart_size})</a></header><main>'
        )

    def _recommendations(self, products: Sequence[Product]) -> str:
        key = tuple(p.id for p in products)
        html = self._recs.get(key)
        if html is None:
            links = "".join(f'<a href="/product/{p.id}">{escape(p.name)}</a>' for p in products)
            html = f'<section class="recommendations">{links}</section>' if links else ""
            if len(self._recs) < 10_000:
                self._recs[key] = html
        return html

    @staticmethod
    def _ad(ad: Ad | None) -> str:
        if ad is None:
            return ""
        return f'<div class="ad"><a href="{escape(ad.redirect_url)}">{escape(ad.text)}</a></div>'

    def home(self, currency: str, currencies: Sequence[str], cart_size: int, ad: Ad | None) -> str:
        return (
            f"{self._header(currency, currencies, cart_size)}"
            f'<section class="hot-products">{self._grid[currency]}</section>'
            f"{self._ad(ad)}</main>{self._foot}"
        )

    def product(
        self,
        product: Product,
        currency: str,
        currencies: Sequence[str],
        cart_size: int,
        recommendations: Sequence[Product],
        ad: Ad | None,
    ) -> str:
        return (
            f"{self._header(currency, currencies, cart_size)}"
            f'<h2 class="product-name">{escape(product.name)}</h2>'
            f'<p class="price">{self._price[(product.id, currency)]}</p>'
            f'<form method="POST" action="/cart">'
            f'<input type="hidden" name="product_id" value="{product.id}">'
            f'<select name="quantity"><option>1</option><option>2</option>'
            f"<option>3</option><option>4</option><option>5</option>"
            f"<option>10</option></select>"
            f'<button type="submit">Add To Cart</button></form>'
            f"{self._recommendations(recommendations)}{self._ad(ad)}</main>{self._foot}"
        )

    def cart(
        self,
        currency: str,
        currencies: Sequence[str],
        items: Sequence[tuple[Product, int, float]],
        shipping: float,
        recommendations: Sequence[Product],
    ) -> str:
        size = sum(q for _, q, _ in items)
        total = shipping + sum(q * price for _, q, price in items)
        rows = "".join(
            f'<tr><td><a href="/product/{p.id}">{escape(p.name)}</a></td><td>{q}</td>'
            f"<td>{render_money(q * price, currency)}</td></tr>"
            for p, q, price in items
        )
        body = (
            f'<table class="cart-items">{rows}</table>'
            f'<p class="shipping">Shipping {render_money(shipping, currency)}</p>'
            f'<p class="total">Total {render_money(total, currency)}</p>'
            '<form method="POST" action="/cart/checkout"><button>Place order</button></form>'
            '<form method="POST" action="/cart/empty"><button>Empty cart</button></form>'
            if items
            else '<p class="empty-cart">Your shopping cart is empty!</p>'
        )
        return (
            f"{self._header(currency, currencies, size)}<h2>Shopping Cart</h2>{body}"
            f"{self._recommendations(recommendations)}</main>{self._foot}"
        )

    def order(
        self, order: Order, currencies: Sequence[str], recommendations: Sequence[Product]
    ) -> str:
        return (
            f"{self._header(order.currency, currencies, 0)}"
            f"<h2>Your order is complete!</h2>"
            f'<p class="order-id">Confirmation # {order.order_id}</p>'
            f'<p class="tracking-id">Tracking # {order.tracking_id}</p>'
            f'<p class="total-paid">Total Paid {render_money(order.total, order.currency)}</p>'
            f"{self._recommendations(recommendations)}</main>{self._foot}"
        )

    def error(self, status: int, message: str) -> str:
        reason = _HTTP_REASONS.get(status, "Error")
        return (
            f"{self._head}</header><main><h2>Uh, oh!</h2>"
            f'<p class="status">HTTP Status: {status} {reason}</p>'
            f'<pre class="error">{escape(message)}</pre></main>{self._foot}'
        )
