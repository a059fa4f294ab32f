"""Manifest folders read as `kubectl apply -f DIR` reads them: which files, in which order, and
the later copy of a repeated object winning; checked against the real kubectl (v1.32).

Measured with kubectl: a folder's `.json`, `.yaml` and `.yml` files (case-sensitive, hidden ones
too, no subfolders without -R) are applied in byte order of their names, every document in
order, so an object repeated in a later file or later in the same file is `configured` (or
`unchanged` when identical) and the last copy is what the API keeps.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshcore.errors import ConfigError, ManifestError
from meshsim.apply import not_applied
from meshsim.hosts import Endpoint
from meshsim.kubeapi.kubeconfig import write_kubeconfig
from meshsim.mesh import Mesh
from meshsim.resources import load_manifests, manifest_files, parse_documents, read_manifests
from meshsim.translate import build_snapshot
from tests import support
from tests.kubeapi_thread import serve_in_thread
from tests.support import hammer

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]
REPEATED = DATA / "folders" / "repeated"
ROLLBACK = DATA / "folders" / "rollback"
SPEC = DATA / "gateway-spec.yaml"
ENDPOINTS = [
    Endpoint("frontend-v1", "frontend", "default", {"app": "frontend", "version": "v1"}, 1001),
    Endpoint("frontend-v2", "frontend", "default", {"app": "frontend", "version": "v2"}, 1002),
]
KINDS = ("gateways", "destinationrules", "virtualservices")


def weights(vs: dict[str, Any]) -> dict[str, int]:
    route = vs["spec"]["http"][0]["route"]
    return {d["destination"]["subset"]: d.get("weight", 0) for d in route}


def read_folder(path: Path, caplog: pytest.LogCaptureFixture) -> tuple[list[Any], list[str]]:
    """load_manifests(path) and the lines it logged."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="meshsim.resources"):
        resources = load_manifests(path)
    return resources, [r.getMessage() for r in caplog.records]


# -- without processes -----------------------------------------------------------------------
ENTRY = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: payments-api}}
spec: {{hosts: [{host}], resolution: DNS}}
"""


def test_one_reading_gives_the_routing_resources_and_the_stored_only_objects(
    tmp_path: Path,
) -> None:
    canary = (REPO / "scenarios" / "manifests" / "canary.yaml").read_text()
    (tmp_path / "10-canary.yaml").write_text(canary + "---\n" + ENTRY.format(host="a.example"))
    (tmp_path / "20-entry.yaml").write_text(
        "kind: List\nitems:\n- " + ENTRY.format(host="b.example").replace("\n", "\n  ")
    )
    read = read_manifests(tmp_path)
    assert [r.ref for r in read.resources] == [r.ref for r in parse_documents(canary, "c.yaml")]
    assert "ServiceEntry" not in {r.kind for r in read.resources}
    [entry] = read.unsimulated  # repeated: the later copy wins, from inside its List
    assert entry["metadata"] == {"name": "payments-api", "namespace": "default"}
    assert entry["spec"]["hosts"] == ["b.example"]
    assert not_applied(read, tmp_path) == [
        "ServiceEntry default/payments-api: not applied (only the kinds the embedded mesh routes "
        f"by are); `kubectl apply -f {tmp_path}` stores it"
    ]


def test_repeated_objects_keep_the_later_copy_where_the_first_was_created(
    caplog: pytest.LogCaptureFixture,
) -> None:
    resources, said = read_folder(REPEATED, caplog)
    at = f"{REPEATED}/"
    assert [(r.ref, r.place) for r in resources] == [
        ("Gateway default/frontend-gateway", f"{at}10-canary.yaml document 1"),
        ("DestinationRule default/frontend", f"{at}40-twice.yaml document 1"),
        ("VirtualService default/frontend", f"{at}40-twice.yaml document 3"),
    ]
    dr, vs = resources[1].to_object(), resources[2].to_object()
    assert [s["name"] for s in dr["spec"]["subsets"]] == ["v1", "v2"]
    assert weights(vs) == {"v1": 0, "v2": 100}
    wins = "the later one wins, as kubectl applies both in order"
    assert said == [
        f"DestinationRule default/frontend configured: {at}20-subsets.yaml document 1 "
        f"replaces {at}10-canary.yaml document 2; {wins}",
        f"VirtualService default/frontend configured: {at}30-half.json document 1 "
        f"replaces {at}10-canary.yaml document 3; {wins}",
        f"DestinationRule default/frontend unchanged: {at}40-twice.yaml document 1 "
        f"repeats {at}20-subsets.yaml document 1",
        f"VirtualService default/frontend configured: {at}40-twice.yaml document 2 "
        f"replaces {at}30-half.json document 1; {wins}",
        f"VirtualService default/frontend configured: {at}40-twice.yaml document 3 "
        f"replaces {at}40-twice.yaml document 2; {wins}",
    ]
    # What `mesh up` used to refuse ("is also defined in") now translates.
    snapshot = build_snapshot(resources, ENDPOINTS)
    assert len(snapshot.routes["virtual_hosts"]) == 1


def test_a_folder_reads_json_yaml_and_yml_files_only_and_no_subfolder() -> None:
    assert [f.name for f in manifest_files(REPEATED)] == [
        "10-canary.yaml",
        "20-subsets.yaml",
        "30-half.json",
        "40-twice.yaml",
    ]
    assert {p.name for p in REPEATED.iterdir()} >= {"50-upper.YAML", "notes.txt", "sub"}
    assert manifest_files(REPEATED / "notes.txt") == [REPEATED / "notes.txt"]  # named: read


def test_bad_input_stays_one_line_with_file_and_line(tmp_path: Path) -> None:
    shutil.copy(REPEATED / "10-canary.yaml", tmp_path / "10-canary.yaml")
    (tmp_path / "20-bad.yaml").write_text("kind: DestinationRule\nspec:\n  host: [oops\n")
    with pytest.raises(ManifestError) as err:
        load_manifests(tmp_path)
    assert str(err.value).startswith(f"{tmp_path}/20-bad.yaml: document: line 4: ")
    assert str(err.value).endswith("; fix the YAML syntax") and "\n" not in str(err.value)
    (tmp_path / "20-bad.yaml").unlink()
    (tmp_path / "30-bad.json").write_text('{\n\t"kind": "DestinationRule",\n\toops\n}\n')
    with pytest.raises(ManifestError) as err:
        load_manifests(tmp_path)
    assert str(err.value).startswith(f"{tmp_path}/30-bad.json: document: line 3: ")
    assert "fix the JSON syntax" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "30-bad.json").write_text(
        json.dumps({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule"})
    )
    with pytest.raises(ManifestError, match=r"30-bad.json: DestinationRule \?: metadata.name"):
        load_manifests(tmp_path)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "a.yaml").write_text("")
    (empty / "a.txt").write_text("")
    with pytest.raises(ConfigError, match=r"empty: no \.json, \.yaml or \.yml file in this folder"):
        load_manifests(empty)


# -- against the real kubectl ----------------------------------------------------------------
def kubectl_runner(kubeconfig: Path, cache: Path) -> Callable[..., str]:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is not on PATH: these tests compare meshload with it"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def run(*args: str) -> str:
        done = subprocess.run(
            [kubectl, "--cache-dir", str(cache), "--request-timeout", "10s", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    return run


def dr(name: str, subset: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"host": "frontend", "subsets": [{"name": subset, "labels": {"v": subset}}]},
    }


@pytest.mark.integration
def test_files_and_their_order_are_the_ones_kubectl_applies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "m"
    (folder / "sub").mkdir(parents=True)
    # Each file creates a DestinationRule named after it and sets the shared one, `order`.
    slugs = {
        ".hidden.yaml": "hidden",
        "10.yaml": "n10",
        "9.yaml": "n9",
        "B.yaml": "upper-b",
        "_u.yml": "under-u",
        "e.YAML": "upper-e",
        "notes.txt": "notes",
        "noext": "noext",
        "sub/z.yaml": "sub-z",
    }
    for name, slug in slugs.items():
        (folder / name).write_text(yaml.safe_dump_all([dr(f"f-{slug}", "x"), dr("order", slug)]))
    # A JSON stream (tab-indented, which YAML refuses) setting `order` twice in one file.
    stream = [dr("f-json", "x"), dr("order", "json1"), dr("order", "json2")]
    (folder / "a.json").write_text("".join(json.dumps(d, indent="\t") + "\n" for d in stream))
    with serve_in_thread() as api:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
        out = kubectl_runner(kubeconfig, tmp_path / "cache")("apply", "-f", str(folder))
        left = {o["metadata"]["name"]: o for o in api.objects() if o["kind"] == "DestinationRule"}
    lines = [line.split("/", 1)[1].split() for line in out.splitlines()]
    resources, said = read_folder(folder, caplog)
    assert sorted(r.name for r in resources) == sorted(left)
    assert [r.name for r in resources] == [n for n, verb in lines if verb == "created"]
    assert sorted(left) == [
        "f-hidden",
        "f-json",
        "f-n10",
        "f-n9",
        "f-under-u",
        "f-upper-b",
        "order",
    ]
    order = next(r for r in resources if r.name == "order")
    assert order.spec == left["order"]["spec"]
    assert order.spec["subsets"][0]["name"] == "json2"  # a.json is last: "." < "1" < "9" < "B"
    assert [line.split(": ")[0].split() for line in said] == [
        ["DestinationRule", "default/order", verb] for n, verb in lines if verb != "created"
    ]
    assert len(said) == 6


def istio_objects(run: Callable[..., str]) -> dict[tuple[str, str], Any]:
    """Every Istio object the API holds: (kind, name) -> spec."""
    out: dict[tuple[str, str], Any] = {}
    for kind in KINDS:
        for item in json.loads(run("get", kind, "-A", "-o", "json"))["items"]:
            out[(item["kind"], item["metadata"]["name"])] = item["spec"]
    return out


def served(gateway_url: str, want: str) -> dict[str | None, int]:
    """The versions 200 requests get, once (bounded) the gateway serves only `want`."""
    deadline = time.monotonic() + 5
    tally = hammer(gateway_url + "/_healthz", 200).header
    while set(tally) != {want} and time.monotonic() < deadline:
        time.sleep(0.05)
        tally = hammer(gateway_url + "/_healthz", 200).header
    return dict(tally)


@pytest.fixture
def mesh_up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], dict]]:
    args = ("--spec", str(SPEC), "--manifests", str(REPEATED))
    with support.mesh_up(*args, state_dir=tmp_path) as (proc, urls, env):
        assert "gateway" in urls, "mesh up did not start"
        yield proc, urls, env


@pytest.mark.integration
def test_mesh_up_and_mesh_apply_serve_what_kubectl_apply_leaves(
    mesh_up: tuple[subprocess.Popen[str], dict[str, str], dict], tmp_path: Path
) -> None:
    proc, urls, env = mesh_up
    from_up = kubectl_runner(Path(urls["kubeconfig"]), tmp_path / "cache-up")
    with Mesh(spec=SPEC, manifests=[], prometheus=False, tracing=False) as bare:
        kubectl = kubectl_runner(bare.kubeconfig, tmp_path / "cache-bare")
        out = kubectl("apply", "-f", str(REPEATED))
        assert [line.split(".", 1)[0] + " " + line.split()[-1] for line in out.splitlines()] == [
            "gateway created",
            "destinationrule created",
            "virtualservice created",
            "destinationrule configured",  # 20-subsets.yaml
            "virtualservice configured",  # 30-half.json
            "destinationrule unchanged",  # 40-twice.yaml, document 1
            "virtualservice configured",  # 40-twice.yaml, document 2
            "virtualservice configured",  # 40-twice.yaml, document 3
        ]
        left = istio_objects(kubectl)
        assert istio_objects(from_up) == left
        assert [s["name"] for s in left[("DestinationRule", "frontend")]["subsets"]] == ["v1", "v2"]
        assert weights({"spec": left[("VirtualService", "frontend")]}) == {"v1": 0, "v2": 100}
        assert served(urls["gateway"], "v2") == served(bare.gateway_url, "v2") == {"v2": 200}

        # `mesh apply DIR` to the mesh `mesh up` started, kubectl to the other.
        applied = subprocess.run(
            [sys.executable, "-m", "meshload.cli", "mesh", "apply", str(ROLLBACK)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.splitlines() == ["VirtualService default/frontend applied"]
        assert (
            f"WARNING: VirtualService default/frontend configured: {ROLLBACK}/20-stable.yaml "
            f"document 1 replaces {ROLLBACK}/10-half.yaml document 1" in applied.stderr
        )
        out = kubectl("apply", "-f", str(ROLLBACK))
        assert out.split() == ["virtualservice.networking.istio.io/frontend", "configured"] * 2
        assert istio_objects(from_up) == istio_objects(kubectl)
        assert served(urls["gateway"], "v1") == served(bare.gateway_url, "v1") == {"v1": 200}
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    _, stderr = proc.communicate(timeout=5)
    repeats = [line for line in stderr.splitlines() if "document" in line]
    assert [line.split()[1:4] for line in repeats] == [
        ["DestinationRule", "default/frontend", "configured:"],
        ["VirtualService", "default/frontend", "configured:"],
        ["DestinationRule", "default/frontend", "unchanged:"],
        ["VirtualService", "default/frontend", "configured:"],
        ["VirtualService", "default/frontend", "configured:"],
    ]
