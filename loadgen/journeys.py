"""Online Boutique shoppers, as the demo's own load generator drives them.

Same tasks and weights as microservices-demo's `src/loadgenerator/locustfile.py` (index 1,
setCurrency 2, browseProduct 10, addToCart 2, viewCart 3, checkout 1), the same product ids,
currencies and checkout form; redirects are followed. Changes that serve measurement: every
request carries a meshload `traceparent` (and, in a stamped run, the run header only the stamp
route matches, `meshcore.stamps`); a redirect's follow-up is a request of its own, recorded as
the gateway, its metrics and the traces count it; product pages are named `/product/[id]` so
Locust's tables stay readable. Think time is shorter than the demo's 1-10 s
so a two-minute rollout gathers enough requests per step; `wait_time` is a class attribute to
override in a scenario.
"""

from __future__ import annotations

import datetime
import itertools
import random
import time
from typing import Any
from urllib.parse import urlsplit

from locust import between, task
from locust.contrib.fasthttp import FastHttpSession, FastHttpUser

from loadgen import client_spans, client_tls, openmodel
from meshcore.stamps import CONFIG_HEADER, RUN_HEADER, config_step
from meshcore.traceparent import TraceContext, new_trace, parse_traceparent

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
PRODUCT_NAME = "/product/[id]"
REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5
_user_ids = itertools.count(1)

# The demo draws these from Faker; fixed values keep runs reproducible and Faker optional.
_STREETS = ("1600 Amphitheatre Parkway", "1 Hacker Way", "410 Terry Ave N", "1 Apple Park Way")
_CITIES = (("Mountain View", "CA", "94043"), ("Seattle", "WA", "98109"), ("Austin", "TX", "78701"))


def endpoint_name(path: str) -> str:
    """How records and Locust's tables name a path: product pages grouped."""
    return PRODUCT_NAME if path.startswith("/product/") else path


class TracedSession(FastHttpSession):
    """A FastHttpSession that gives each request its own W3C `traceparent`.

    The trace id reaches the capture hook through Locust's request `context`, the one channel
    from a request to its event that survives redirects and failures alike.

    Class-level, set by the harness for the run: `sampling` (`--trace-sampling`), `stamp`
    (the run's stamp token: sent as `x-meshload-run`, the header only the stamp twin route
    matches, `meshcore.stamps`) and `authority` (`--host-header`: the Host the gateway sees).
    """

    sampling: float = 1.0
    stamp: str | None = None
    authority: str | None = None
    tracer: Any = None  # client spans (`loadgen.client_spans`); None: none made
    clock: Any = None  # the rollout's StepClock, for the client span's step
    version_header: str = "x-version"

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        context: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        headers = dict(headers or {})
        given = next((v for k, v in headers.items() if k.lower() == "traceparent"), None)
        # A task that sends its own traceparent keeps it; its trace id is recorded all the same.
        parsed = parse_traceparent(given) if given else None
        span = None
        if parsed is None and self.tracer is not None:  # the client span roots the trace
            path = urlsplit(url).path or "/"
            span = client_spans.start(
                self.tracer, str(kwargs.get("name") or endpoint_name(path)), method, path
            )
            trace = TraceContext(*client_spans.trace_ids(span))
        else:
            trace = parsed or new_trace(self.sampling)
        if parsed is None:  # none given, or one that is not W3C: send ours
            headers = {k: v for k, v in headers.items() if k.lower() != "traceparent"}
            headers["traceparent"] = trace.header
        if self.stamp is not None:
            headers[RUN_HEADER] = self.stamp
        if self.authority is not None:
            headers["Host"] = self.authority
        mine = {**(context or {}), "trace_id": trace.trace_id, "sampled": trace.sampled}
        wanted = kwargs.pop("allow_redirects", True)
        follow = wanted and not kwargs.get("catch_response")  # a caller's context manager: Locust's
        started_ns = time.time_ns()
        response = super().request(
            method, url, headers=headers, context=mine, allow_redirects=wanted and not follow,
            **kwargs,
        )  # fmt: skip
        if span is not None:
            client_spans.end(span, response, self._span_facts(response, mine, started_ns))
        # A redirect is followed as a request of its own, recorded with its own version, trace
        # and time, as the gateway, its metrics and the traces count it.
        for _ in range(MAX_REDIRECTS if follow else 0):
            # a request that got no response (connection refused) has no headers at all
            location = (getattr(response, "headers", None) or {}).get("Location")
            if getattr(response, "status_code", 0) not in REDIRECTS or not location:
                break
            path = urlsplit(location).path or "/"
            response = self.request(
                "GET", location, name=endpoint_name(path), context=context,
                allow_redirects=False,
            )  # fmt: skip
        return response

    def _user_context(self) -> dict[str, Any]:
        """The user's own context (Locust adds it to the request's after this session)."""
        user = getattr(self, "user", None)
        try:
            return dict(user.context()) if user is not None else {}
        except Exception:
            return {}

    def _span_facts(
        self, response: Any, context: dict[str, Any], started_ns: int
    ) -> dict[str, Any]:
        headers = getattr(response, "headers", None) or {}
        config = config_step(headers.get(CONFIG_HEADER), self.stamp) if self.stamp else None
        return {
            "step": self.clock.step_at(started_ns) if self.clock is not None else None,
            "user_id": context.get("user_id", self._user_context().get("user_id")),
            "version": headers.get(self.version_header),
            "config_step": config,
        }


class BoutiqueUser(FastHttpUser):
    """One shopper. Subclasses may set `cohort` (recorded per request) and `default_headers`."""

    abstract = True
    wait_time = between(0.1, 1.0)
    cohort: str | None = None

    def __init__(self, environment: Any) -> None:
        # an https:// gateway is verified and named as the run says (`loadgen.client_tls`)
        self.insecure, self.ssl_context_factory = client_tls.for_users()
        super().__init__(environment)
        # Same session, one extra behaviour: a traceparent per request (TracedSession has no
        # state of its own, so re-classing the session Locust built is safe).
        self.client.__class__ = TracedSession
        self.user_id = next(_user_ids)
        self.rng = random.Random()
        self.pacer = openmodel.pacer_for(self)
        if self.pacer is not None:
            self.wait_time = self.pacer.wait_time  # type: ignore[method-assign]

    def context(self) -> dict[str, Any]:
        ctx: dict[str, Any] = {"user_id": self.user_id}
        if self.cohort is not None:
            ctx["cohort"] = self.cohort
        if self.pacer is not None:
            ctx.update(self.pacer.context())
        return ctx

    def on_start(self) -> None:
        self.index()

    @task(1)
    def index(self) -> None:
        self.client.get("/")

    @task(2)
    def set_currency(self) -> None:
        self.client.post("/setCurrency", {"currency_code": self.rng.choice(CURRENCIES)})

    @task(10)
    def browse_product(self) -> None:
        self.client.get(f"/product/{self.rng.choice(PRODUCTS)}", name=PRODUCT_NAME)

    @task(3)
    def view_cart(self) -> None:
        self.client.get("/cart")

    @task(2)
    def add_to_cart(self) -> None:
        product = self.rng.choice(PRODUCTS)
        self.client.get(f"/product/{product}", name=PRODUCT_NAME)
        self.client.post("/cart", {"product_id": product, "quantity": self.rng.randint(1, 10)})

    @task(1)
    def checkout(self) -> None:
        self.add_to_cart()
        year = datetime.datetime.now().year + 1
        street = self.rng.choice(_STREETS)
        city, state, zip_code = self.rng.choice(_CITIES)
        self.client.post(
            "/cart/checkout",
            {
                "email": f"shopper{self.user_id}@example.com",
                "street_address": street,
                "zip_code": zip_code,
                "city": city,
                "state": state,
                "country": "United States",
                "credit_card_number": "4432801561520454",
                "credit_card_expiration_month": self.rng.randint(1, 12),
                "credit_card_expiration_year": self.rng.randint(year, year + 70),
                "credit_card_cvv": f"{self.rng.randint(100, 999)}",
            },
        )


class OnlineBoutiqueUser(BoutiqueUser):
    """The shopper the scenarios run."""
