"""The demo frontend's form rules (its validator package): one message per failed field.

A request whose form breaks a rule gets 422 before any backend call, as in the demo.
"""

from __future__ import annotations

from collections.abc import Mapping

from meshsim.boutique.catalog import EUR_RATES, is_credit_card

ORDER_FIELDS = (
    "email",
    "street_address",
    "zip_code",
    "city",
    "state",
    "country",
    "credit_card_number",
    "credit_card_expiration_month",
    "credit_card_expiration_year",
    "credit_card_cvv",
)
MAX_QUANTITY = 10


def parse_uint(text: str) -> int:
    """As Go's strconv.ParseUint with the error ignored: 0 for anything but digits."""
    return int(text) if text.isascii() and text.isdigit() else 0


def add_to_cart_problems(product_id: str, quantity: int) -> list[str]:
    problems = []
    if not 1 <= quantity <= MAX_QUANTITY:
        problems.append("Field 'Quantity' is invalid: required,gte=1,lte=10")
    if not product_id:
        problems.append("Field 'ProductID' is invalid: required")
    return problems


def set_currency_problems(code: str) -> list[str]:
    # The demo checks ISO 4217; the codes the currency service converts stand in for it.
    return [] if code in EUR_RATES else ["Field 'Currency' is invalid: iso4217"]


def place_order_problems(form: Mapping[str, str]) -> list[str]:
    problems = [f"Field '{f}' is invalid: required" for f in ORDER_FIELDS if not form.get(f)]
    if problems:
        return problems
    email = form["email"]
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        problems.append("Field 'email' is invalid: email")
    if len(form["street_address"]) > 512:
        problems.append("Field 'street_address' is invalid: max")
    for f in ("city", "state", "country"):
        if len(form[f]) > 128:
            problems.append(f"Field '{f}' is invalid: max")
    if not is_credit_card(form["credit_card_number"]):
        problems.append("Field 'credit_card_number' is invalid: credit_card")
    if not 1 <= parse_uint(form["credit_card_expiration_month"]) <= 12:
        problems.append("Field 'credit_card_expiration_month' is invalid: gte=1,lte=12")
    for f in ("zip_code", "credit_card_expiration_year", "credit_card_cvv"):
        if not parse_uint(form[f]):
            problems.append(f"Field '{f}' is invalid: required")
    return problems
