"""A plain FastHttpUser doing the Online Boutique demo's journeys: no meshload at all (the
product ids and currencies are loadgen.journeys' own, copied: the reference imports nothing of
meshload)."""

import random

from locust import FastHttpUser, constant, task

PRODUCTS = (
    "0PUK6V6EV0",
    "1YMWWN1N4O",
    "2ZYFJ3GM2N",
    "66VCHSJNUP",
    "6E92ZMYYFZ",
    "9SIQT8TOJO",
    "L9ECAV7KIM",
    "LS4PSXUNUM",
    "OLJCESPC7Z",
)
CURRENCIES = ("EUR", "USD", "JPY", "CAD", "GBP", "TRY")


class PlainShopper(FastHttpUser):
    wait_time = constant(0)

    @task(1)
    def index(self) -> None:
        self.client.get("/")

    @task(2)
    def set_currency(self) -> None:
        self.client.post("/setCurrency", {"currency_code": random.choice(CURRENCIES)})

    @task(10)
    def browse_product(self) -> None:
        self.client.get(f"/product/{random.choice(PRODUCTS)}", name="/product/[id]")

    @task(3)
    def view_cart(self) -> None:
        self.client.get("/cart")

    @task(2)
    def add_to_cart(self) -> None:
        product = random.choice(PRODUCTS)
        self.client.get(f"/product/{product}", name="/product/[id]")
        self.client.post("/cart", {"product_id": product, "quantity": random.randint(1, 10)})

    @task(1)
    def checkout(self) -> None:
        self.add_to_cart()
        self.client.post(
            "/cart/checkout",
            {
                "email": "someone@example.com",
                "street_address": "1600 Amphitheatre Parkway",
                "zip_code": "94043",
                "city": "Mountain View",
                "state": "CA",
                "country": "United States",
                "credit_card_number": "4432801561520454",
                "credit_card_expiration_month": 1,
                "credit_card_expiration_year": 2039,
                "credit_card_cvv": "672",
            },
        )
