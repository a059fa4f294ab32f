"""The Online Boutique's fixed data: its nine products, currencies, rates and ads."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    name: str
    price_usd: float
    categories: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Ad:
    redirect_url: str
    text: str


PRODUCTS: tuple[Product, ...] = (
    Product("OLJCESPC7Z", "Sunglasses", 19.99, ("accessories",)),
    Product("66VCHSJNUP", "Tank Top", 18.99, ("clothing", "tops")),
    Product("1YMWWN1N4O", "Watch", 109.99, ("accessories",)),
    Product("L9ECAV7KIM", "Loafers", 89.99, ("footwear",)),
    Product("2ZYFJ3GM2N", "Hairdryer", 24.99, ("hair", "beauty")),
    Product("0PUK6V6EV0", "Candle Holder", 18.99, ("decor", "home")),
    Product("LS4PSXUNUM", "Salt & Pepper Shakers", 18.49, ("kitchen",)),
    Product("9SIQT8TOJO", "Bamboo Glass Jar", 5.49, ("kitchen",)),
    Product("6E92ZMYYFZ", "Mug", 8.99, ("kitchen",)),
)
PRODUCT_IDS: tuple[str, ...] = tuple(p.id for p in PRODUCTS)
PRODUCT_BY_ID = MappingProxyType({p.id: p for p in PRODUCTS})

# The currency service's table: units of each currency per 1 EUR.
EUR_RATES = MappingProxyType(
    {
        "EUR": 1.0,
        "USD": 1.1305,
        "JPY": 126.40,
        "BGN": 1.9558,
        "CZK": 25.592,
        "DKK": 7.4609,
        "GBP": 0.85970,
        "HUF": 315.51,
        "PLN": 4.2996,
        "RON": 4.7463,
        "SEK": 10.5375,
        "CHF": 1.1360,
        "ISK": 136.80,
        "NOK": 9.8040,
        "HRK": 7.4210,
        "RUB": 74.4208,
        "TRY": 6.1247,
        "AUD": 1.6072,
        "BRL": 4.2682,
        "CAD": 1.5128,
        "CNY": 7.5857,
        "HKD": 8.8743,
        "IDR": 15999.40,
        "ILS": 4.0875,
        "INR": 79.4320,
        "KRW": 1275.05,
        "MXN": 21.7999,
        "MYR": 4.6289,
        "NZD": 1.6679,
        "PHP": 59.083,
        "SGD": 1.5349,
        "THB": 36.012,
        "ZAR": 16.0583,
    }
)
SUPPORTED_CURRENCIES: tuple[str, ...] = tuple(EUR_RATES)
# The frontend shows only these, in the order the currency service lists them.
WHITELISTED_CURRENCIES = frozenset({"USD", "EUR", "CAD", "JPY", "GBP", "TRY"})
DEFAULT_CURRENCY = "USD"
CURRENCY_LOGOS = MappingProxyType(
    {"USD": "$", "CAD": "$", "JPY": "¥", "EUR": "€", "TRY": "₺", "GBP": "£"}
)

SHIPPING_COST_USD = 8.99

ADS_BY_CATEGORY = MappingProxyType(
    {
        "clothing": (Ad("/product/66VCHSJNUP", "Tank top for sale. 20% off."),),
        "accessories": (
            Ad("/product/1YMWWN1N4O", "Watch for sale. Buy one, get second kit for free"),
        ),
        "footwear": (
            Ad("/product/L9ECAV7KIM", "Loafers for sale. Buy one, get second one for free"),
        ),
        "hair": (Ad("/product/2ZYFJ3GM2N", "Hairdryer for sale. 50% off."),),
        "decor": (Ad("/product/0PUK6V6EV0", "Candle holder for sale. 30% off."),),
        "kitchen": (
            Ad("/product/9SIQT8TOJO", "Bamboo glass jar for sale. 10% off."),
            Ad("/product/6E92ZMYYFZ", "Mug for sale. Buy two, get third one for free"),
        ),
    }
)
ALL_ADS: tuple[Ad, ...] = tuple(ad for ads in ADS_BY_CATEGORY.values() for ad in ads)


def convert(amount: float, from_code: str, to_code: str) -> float:
    """Convert between two supported currencies through the EUR table (KeyError if not)."""
    return amount / EUR_RATES[from_code] * EUR_RATES[to_code]


def render_money(amount: float, currency: str) -> str:
    """As the frontend shows a price: logo, units and two decimals."""
    return f"{CURRENCY_LOGOS.get(currency, '$')}{amount:.2f}"


def is_credit_card(number: str) -> bool:
    """A number the demo's validator accepts: 12 to 19 digits passing the Luhn check."""
    digits = number.replace(" ", "").replace("-", "")
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0
