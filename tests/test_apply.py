"""meshsim.apply: `kubectl apply` of Istio resources through the shared client stack."""

from __future__ import annotations

from meshsim.apply import apply_object
from tests.canary_manifests import by_kind, weights_of
from tests.twins import InMemoryMeshClient


def test_apply_creates_replaces_and_skips_what_is_unchanged() -> None:
    client = InMemoryMeshClient(objects=[by_kind("DestinationRule")], conflicts_to_inject=1)
    vs = by_kind("VirtualService")
    rv, _ = apply_object(client, vs)
    assert [w["kind"] for w in client.writes] == ["VirtualService"]
    assert apply_object(client, vs)[0] == rv and len(client.writes) == 1, "unchanged: no write"
    vs["spec"]["http"][0]["route"][0]["weight"] = 50
    rv2, _ = apply_object(client, vs)  # the injected 409 is read again and retried
    assert (
        rv2 > rv and weights_of(client.writes[-1])["v1"] == 50 and client.conflicts_to_inject == 0
    )
