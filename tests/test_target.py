"""loadgen.target: the Host a host-bound route needs, derived or given, and driven end to end."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from loadgen.target import derived_authority
from meshsim.mesh import Mesh
from meshsim.resources import load_manifests
from tests.support import canary_against, hammer
from tests.twins import InMemoryMeshClient

REPO = Path(__file__).resolve().parent.parent
HOST_BOUND = REPO / "tests" / "data" / "host-bound.yaml"
PLAN = "users: 8\nsteps:\n  - {weights: {v1: 50, v2: 50}, hold_s: 4}\n"


def test_the_authority_is_the_first_host_the_gateway_serves() -> None:
    objects = [r.to_object() for r in load_manifests(HOST_BOUND)]
    assert derived_authority(InMemoryMeshClient(objects), "frontend", "default") == (
        "frontend.example.com"
    )
    for o in objects:
        if o["kind"] == "Gateway":
            o["spec"]["servers"][0]["hosts"] = ["other.example.org"]
    assert derived_authority(InMemoryMeshClient(objects), "frontend", "default") is None
    star = [r.to_object() for r in load_manifests(REPO / "scenarios" / "manifests" / "canary.yaml")]
    assert derived_authority(InMemoryMeshClient(star), "frontend", "default") is None


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with Mesh(manifests=HOST_BOUND) as m:
        yield m


@pytest.mark.integration
@pytest.mark.parametrize("given", [None, "frontend.example.com"])
def test_a_host_bound_route_is_driven_end_to_end(
    tmp_path: Path, mesh: Mesh, given: str | None
) -> None:
    assert hammer(mesh.gateway_url + "/", 4).statuses == {404: 4}, "no Host, no route"
    (tmp_path / "plan.yaml").write_text(PLAN)
    cmd = canary_against(mesh, tmp_path / "plan.yaml", tmp_path / "results",
                         *(["--host-header", given] if given else []))  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "results").iterdir()
    info = json.loads((folder / "run.json").read_text())
    assert info["host_header"] == "frontend.example.com"
    rows = ds.dataset(folder / "requests").to_table(columns=["status", "version"]).to_pydict()
    assert rows["status"] and 404 not in rows["status"]
    answered = [v for v, s in zip(rows["version"], rows["status"], strict=True) if s]
    assert len(answered) >= 0.99 * len(rows["status"]), "a request stopped mid-flight at most"
    assert set(answered) == {"v1", "v2"}, "stamped: the route sets no version header"
