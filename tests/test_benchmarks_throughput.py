"""The throughput benchmarks count both sides of a ratio by the gateway: its counter is checked
against requests sent one by one, redirects included."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from benchmarks.throughput import Rates, gateway_requests, mean_rates
from meshsim.mesh import Mesh

pytestmark = pytest.mark.integration


class _NoFollow(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_the_gateway_counts_every_request_it_served_a_followed_redirect_twice() -> None:
    with Mesh(prometheus=False, tracing=False) as mesh:
        assert mesh.gateway is not None
        admin = mesh.gateway.replicas[0].admin_url
        before = gateway_requests(admin)
        for _ in range(7):
            with urllib.request.urlopen(mesh.gateway_url + "/_healthz", timeout=5) as r:
                r.read()
        # POST /setCurrency answers 302 to /: a client that follows it makes two requests
        form = b"currency_code=EUR"
        with urllib.request.urlopen(mesh.gateway_url + "/setCurrency", data=form, timeout=5) as r:
            r.read()
        no_follow = urllib.request.build_opener(_NoFollow)
        with pytest.raises(urllib.error.HTTPError) as answer:
            no_follow.open(mesh.gateway_url + "/setCurrency", data=form, timeout=5)
        answer.value.close()
        assert answer.value.code == 302
        assert gateway_requests(admin) - before == 7 + 2 + 1


def test_mean_rates_average_each_process_that_every_run_measured() -> None:
    runs = [
        Rates(100.0, 110.0, {"locust": 400.0, "frontend": 300.0}),
        Rates(200.0, 210.0, {"locust": 600.0}),
    ]
    mean = mean_rates(runs)
    assert (mean.locust_rps, mean.gateway_rps) == (150.0, 160.0)
    assert mean.cpu_us == {"locust": 500.0}  # one run did not see the frontend: no mean of it
