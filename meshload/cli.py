"""The `meshload` command: one sub-command per job, each a module of its own.

Every error a user can cause ends as one line on stderr and a non-zero exit code
(`meshcore.exitcodes`): 2 for bad input (ConfigError), 1 for a failing backend.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from meshcore import __version__
from meshcore.errors import ConfigError, MeshloadError
from meshcore.exitcodes import ExitCode


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def add_kube_flags(parser: argparse.ArgumentParser) -> None:
    """--kubeconfig and --context, as `meshcore.kube.config.connect` reads them."""
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: $KUBECONFIG, the pod's service account inside a "
        "cluster, else ~/.kube/config)",
    )
    parser.add_argument("--context", help="kubeconfig context (default: its current-context)")


def build_parser() -> argparse.ArgumentParser:
    from meshload import cmd_mesh, cmd_plan, cmd_portforward, cmd_preflight, cmd_report

    parser = argparse.ArgumentParser(
        prog="meshload",
        description=(
            "Measure what an Istio canary rollout really does: split accuracy, propagation delay, "
            "latency and errors per version."
        ),
    )
    parser.add_argument("--version", action="version", version=f"meshload {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    cmd_mesh.register(sub)
    cmd_preflight.register(sub)
    cmd_portforward.register(sub)
    cmd_report.register(sub)
    cmd_plan.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    # SIGTERM ends a command as Ctrl-C does: commands that run until stopped (mesh up,
    # port-forward) clean up and return; the others end with 130.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        code: int = args.run(args)
        return code
    except ConfigError as exc:
        print(f"meshload: error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except MeshloadError as exc:
        print(f"meshload: error: {exc}", file=sys.stderr)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
