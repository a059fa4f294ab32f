"""`python -m meshsim.boutique`: serve a mesh spec's workloads until SIGTERM or SIGINT.

Writes the ports file (`{"pid": N, "workloads": {"frontend-v1": 34567, ...}}`) once every
workload listens; exits 0 promptly on SIGTERM/SIGINT, 2 with one line on bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from meshload.errors import MeshloadError
from meshsim.boutique.server import serve, write_ports_file
from meshsim.spec import load_spec

log = logging.getLogger("meshsim.boutique")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m meshsim.boutique",
        description="Serve the simulated Online Boutique: every workload of a mesh spec, "
        "each on its own 127.0.0.1 port.",
    )
    p.add_argument(
        "--spec",
        type=Path,
        default=None,
        help="mesh spec YAML (default: the packaged Online Boutique spec)",
    )
    p.add_argument(
        "--ports-file",
        type=Path,
        required=True,
        help="where to write {pid, workloads: {name: port}} once all listen",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed for latencies, errors and choices (default: the spec's)",
    )
    return p


async def _run(args: argparse.Namespace) -> None:
    spec = load_spec(args.spec)
    running = await serve(spec, args.seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        write_ports_file(args.ports_file, running.ports)
        log.info(
            "serving %d workloads: %s",
            len(running.ports),
            ", ".join(f"{n}={p}" for n, p in running.ports.items()),
        )
        await stop.wait()
    finally:
        await running.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.ports_file.parent.is_dir():
        print(
            f"{args.ports_file}: its folder does not exist; create it or choose another "
            "--ports-file",
            file=sys.stderr,
        )
        return 2
    try:
        asyncio.run(_run(args))
    except MeshloadError as e:
        print(str(e), file=sys.stderr)
        return 2
    except OSError as e:
        print(f"cannot serve the mesh: {e}; check that 127.0.0.1 is available", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
