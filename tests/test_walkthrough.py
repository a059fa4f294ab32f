"""docs/cluster.md: its commands are ones meshload and Locust accept, its files exist."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meshload.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "cluster.md"
SHELL_LANGS = ("sh", "bash", "shell")
REPO_DIRS = ("scenarios", "docs", "meshload", "loadgen", "meshsim", "analysis", "tests")
SEPARATORS = {"&&", "||", "|", ";", "&"}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every ``` block."""
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)]


def shell_commands() -> list[list[str]]:
    """Every command of the shell blocks, continuation lines joined, split at && | ;."""
    commands: list[list[str]] = []
    for lang, body in fenced_blocks(DOC.read_text()):
        if lang not in SHELL_LANGS:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            current: list[str] = []
            for token in shlex.split(line, comments=True):
                if token in SEPARATORS:
                    commands.append(current)
                    current = []
                else:
                    current.append(token)
            commands.append(current)
    return [c for c in commands if c]


def starting_with(program: str) -> list[list[str]]:
    return [c for c in shell_commands() if c[0] == program]


def test_the_doc_has_shell_blocks_with_meshload_and_locust() -> None:
    programs = {c[0] for c in shell_commands()}
    assert {"minikube", "istioctl", "kubectl", "meshload", "locust"} <= programs
    verbs = {c[1] for c in starting_with("meshload")}
    assert {"preflight", "port-forward"} <= verbs


@pytest.mark.parametrize("argv", starting_with("meshload"), ids=" ".join)
def test_meshload_commands_parse(argv: list[str]) -> None:
    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit as exc:  # argparse's way of refusing
        pytest.fail(f"`{' '.join(argv)}` does not parse (exit {exc.code})")
    assert callable(args.run)


# Locust monkey-patches the standard library on import: its parser runs in a child process.
PARSE = """
import json, sys
from locust.argument_parser import get_parser
from loadgen import options
out = []
for argv in json.loads(sys.argv[1]):
    parser = get_parser()
    options.add_arguments(parser)
    out.append(vars(parser.parse_args(argv)))
print(json.dumps(out))
"""


@pytest.mark.integration
def test_locust_commands_parse_with_meshload_options() -> None:
    commands = starting_with("locust")
    assert commands
    done = subprocess.run(
        [sys.executable, "-c", PARSE, json.dumps([c[1:] for c in commands])],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for parsed in json.loads(done.stdout):
        assert parsed["mesh"] == "kubernetes" and parsed["host"].startswith(("http://", "https://"))
        assert parsed["jaeger_url"] and parsed["prometheus_url"]
        assert (REPO / parsed["locustfile"]).is_file()


def repo_paths(text: str) -> set[str]:
    """Tokens that name a file or folder of this repository (placeholders left out)."""
    tokens = re.split(r"[\s`'\"()|]+|--[\w-]+=(?:[\w.-]+=)?", text)
    found = set()
    for token in tokens:
        token = token.rstrip(".,:;")
        if token.split("/")[0] in REPO_DIRS and "/" in token and not re.search(r"[$<*{]", token):
            found.add(token)
    return found


def test_every_repository_path_exists() -> None:
    paths = repo_paths(DOC.read_text())
    assert "scenarios/manifests/cluster/patches/frontend-v1.yaml" in paths
    assert "scenarios/plans/canary.yaml" in paths  # from --from-file=KEY=PATH
    missing = sorted(p for p in paths if not (REPO / p).exists())
    assert missing == []


def test_configmap_keys_are_the_ones_the_pods_mount() -> None:
    [create] = [c for c in starting_with("kubectl") if c[1:3] == ["create", "configmap"]]
    sources = dict(a.removeprefix("--from-file=").split("=", 1) for a in create if "=" in a)
    sources = {k: v for k, v in sources.items() if not k.startswith("-")}
    for name in ("master.yaml", "workers.yaml"):
        docs = yaml.safe_load_all((REPO / "scenarios/manifests/cluster/locust" / name).read_text())
        [deployment] = [d for d in docs if d["kind"] == "Deployment"]
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        [scenarios] = [v for v in volumes if v["name"] == "scenarios"]
        assert scenarios["configMap"]["name"] == create[3]
        items = {i["key"]: i["path"] for i in scenarios["configMap"]["items"]}
        assert set(items) == set(sources)
        for key, path in items.items():  # each file lands where canary.py looks for it
            assert sources[key].removeprefix("scenarios/") == path


def test_shown_port_forward_output_is_what_the_command_prints_by_default() -> None:
    from meshload.cmd_portforward import locust_command

    args = build_parser().parse_args(["port-forward"])
    urls = {
        "gateway": f"http://127.0.0.1:{args.gateway_port}",
        "jaeger": f"http://127.0.0.1:{args.jaeger_port}",
        "prometheus": f"http://127.0.0.1:{args.prometheus_port}",
    }
    shown = [body for lang, body in fenced_blocks(DOC.read_text()) if lang == "console"]
    assert f"run: {locust_command(urls)}\n" in shown[0]
    for name, url in urls.items():
        assert f"\n{name} {url}  (pod istio-system/" in "\n" + shown[0]
