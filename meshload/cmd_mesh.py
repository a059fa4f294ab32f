"""`meshload mesh up` and `meshload mesh apply`: run the embedded mesh, change its manifests."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from meshcore.errors import ConfigError
from meshcore.exitcodes import ExitCode


def state_file() -> Path:
    """Where a running `mesh up` says how to reach it (`mesh apply` reads it)."""
    base = os.environ.get("MESHLOAD_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "meshload"
    )
    return Path(base) / "mesh.json"


def register(sub: Any) -> None:
    mesh = sub.add_parser("mesh", help="run the embedded mesh")
    verbs = mesh.add_subparsers(dest="verb", metavar="VERB", required=True)
    up = verbs.add_parser("up", help="start the embedded mesh on 127.0.0.1 until Ctrl-C")
    up.add_argument(
        "--manifests",
        help="Istio YAML file or directory (default: scenarios/manifests/canary.yaml)",
    )
    up.add_argument("--spec", help="mesh spec YAML (default: the packaged Online Boutique)")
    up.add_argument("--seed", type=int, help="seed of the simulated latencies and errors")
    up.add_argument(
        "--gateway-port",
        type=int,
        default=0,
        help="port of the gateway on 127.0.0.1 (default: a free one)",
    )
    up.add_argument(
        "--gateway-replicas",
        type=int,
        default=1,
        metavar="N",
        help="gateway replicas (Envoy pods) behind the gateway's address (default: 1)",
    )
    up.add_argument(
        "--push-skew-ms",
        type=skews,
        default={},
        metavar="I=MS,...",
        help="push every change to replica I this many ms late, e.g. 1=800,2=50 (default: none)",
    )
    up.add_argument(
        "--gateway-balance",
        choices=("request", "connection"),
        default="request",
        help="with several replicas: round robin per request (default) or per connection",
    )
    up.set_defaults(run=run_up)
    apply = verbs.add_parser("apply", help="send changed manifests to the running mesh")
    apply.add_argument("path", help="Istio YAML file or directory")
    apply.set_defaults(run=run_apply)


def skews(text: str) -> dict[int, float]:
    """`--push-skew-ms 1=800,2=50` as {replica index: ms}; argparse's type, so a bad value is
    argparse's one line and exit code 2."""
    from meshsim.gateway import parse_skews

    try:
        return parse_skews(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run_up(args: argparse.Namespace) -> int:
    from meshsim.mesh import Mesh

    mesh = Mesh(
        manifests=args.manifests,
        spec=args.spec,
        seed=args.seed,
        gateway_port=args.gateway_port,
        gateway_replicas=args.gateway_replicas,
        push_skew_ms=args.push_skew_ms,
        gateway_balance=args.gateway_balance,
    )
    state = state_file()
    try:
        mesh.start()
        for name, url in mesh.urls().items():
            print(f"{name} {url}", flush=True)
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps(mesh.state()))
        print("ready; Ctrl-C stops the mesh", flush=True)
        while True:
            dead = mesh.dead_child()
            if dead is not None:
                print(
                    f"meshload: error: {dead.died_error()}; stopping the mesh",
                    file=sys.stderr,
                    flush=True,
                )
                return ExitCode.FAILED
            time.sleep(0.2)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (meshload.cli): the mesh's normal end
        return ExitCode.OK
    finally:
        mesh.stop()
        if state.exists() and json.loads(state.read_text() or "{}").get("pid") == os.getpid():
            state.unlink()


def run_apply(args: argparse.Namespace) -> int:
    from meshsim.apply import apply_resources, not_applied, wait_applied
    from meshsim.resources import read_manifests

    state = state_file()
    if not state.exists():
        raise ConfigError("no running mesh found; start one with `meshload mesh up`")
    info = json.loads(state.read_text())
    read = read_manifests(args.path)
    resources = read.resources
    warnings, resource_version = apply_resources(info["kubeconfig"], resources)
    wait_applied(Path(info["applied_file"]), resource_version)
    warnings += not_applied(read, args.path)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    for r in resources:
        print(f"{r.ref} applied")
    return ExitCode.OK
