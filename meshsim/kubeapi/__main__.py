"""`python -m meshsim.kubeapi --ports-file PATH [--manifests PATH] [--kubeconfig PATH]`

Serves the embedded Kubernetes API for Istio resources on 127.0.0.1. Once listening it writes
`{"pid": N, "port": P}` to the ports file (a temp file renamed over it, so a reader never sees
half of it), optionally a kubeconfig for kubectl, and runs until SIGTERM or SIGINT, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from meshload.errors import ConfigError, MeshloadError
from meshsim.kubeapi.kubeconfig import write_kubeconfig
from meshsim.kubeapi.server import serve
from meshsim.procs import publish_port

log = logging.getLogger(__name__)
ISTIO_GROUPS = ("networking.istio.io/", "telemetry.istio.io/")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m meshsim.kubeapi",
        description="Embedded Kubernetes API serving Istio VirtualService, DestinationRule, "
        "Gateway and Telemetry on one 127.0.0.1 port.",
    )
    parser.add_argument(
        "--ports-file",
        required=True,
        type=Path,
        help='where to write {"pid": N, "port": P} once listening',
    )
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    parser.add_argument(
        "--manifests",
        type=Path,
        default=None,
        help="YAML file or directory of Istio resources to start with",
    )
    parser.add_argument(
        "--core",
        type=Path,
        default=None,
        help="YAML of Namespace/Pod/Service/Endpoints objects to serve read-only",
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="also write a kubeconfig (context meshload-embedded) here",
    )
    return parser.parse_args(argv)


def read_documents(path: Path) -> list[dict[str, Any]]:
    """Every mapping document of a YAML file, or of each *.yaml/*.yml file of a directory."""
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.suffix in (".yaml", ".yml"))
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"{path}: no such file or directory; check the path")
    docs: list[dict[str, Any]] = []
    for f in files:
        try:
            loaded = list(yaml.safe_load_all(f.read_text(encoding="utf-8")))
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{f}: not valid YAML ({exc.__class__.__name__}); fix the syntax"
            ) from None
        for doc in loaded:
            if isinstance(doc, dict) and doc.get("kind") == "List":
                docs.extend(d for d in doc.get("items") or [] if isinstance(d, dict))
            elif isinstance(doc, dict):
                docs.append(doc)
    return docs


def istio_objects(docs: list[dict[str, Any]], source: Path) -> list[dict[str, Any]]:
    keep = [d for d in docs if str(d.get("apiVersion", "")).startswith(ISTIO_GROUPS)]
    for d in docs:
        if d not in keep:
            log.warning(
                "%s: %s %s is not an Istio resource; not loaded",
                source,
                d.get("apiVersion"),
                d.get("kind"),
            )
    return keep


async def run(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    objects = (
        istio_objects(read_documents(args.manifests), args.manifests) if args.manifests else []
    )
    core = read_documents(args.core) if args.core else []
    running = await serve(port=args.port, objects=objects, core_objects=core)
    try:
        if args.kubeconfig:
            write_kubeconfig(args.kubeconfig, running.url)
        publish_port(args.ports_file, running.port)
        log.info("kubeapi on %s with %d objects", running.url, len(objects))
        await stop.wait()
    finally:
        await running.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s kubeapi %(message)s")
    if not args.ports_file.parent.is_dir():
        print(
            f"kubeapi: {args.ports_file}: its folder does not exist; create it or choose "
            "another --ports-file",
            file=sys.stderr,
        )
        return 2
    try:
        asyncio.run(run(args))
    except (MeshloadError, OSError) as exc:
        print(f"kubeapi: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
