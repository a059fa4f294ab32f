"""`python -m meshsim.tracestore --ports-file PATH [--max-spans N] [--spill-dir DIR]
[--record-dir RUN_FOLDER] [--record-flush-s S]`

Serves OTLP/HTTP (`POST /v1/traces`) and the Jaeger query APIs (`/api/...`, `/api/v3/...`) on
one port of 127.0.0.1 (real Jaeger splits them over 4318 and 16686). Once listening it writes
`{"pid": N, "port": P}` to the ports file and runs until SIGTERM or SIGINT, then writes what it
records and exits 0 (`meshsim.serving` has the exit codes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from meshsim.serving import run_child
from meshsim.tracestore.recording import DEFAULT_FLUSH_S
from meshsim.tracestore.server import serve
from meshsim.tracestore.store import DEFAULT_MAX_SPANS


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"{text!r} is not a span count >= 2")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m meshsim.tracestore",
        description="Embedded Jaeger stand-in: OTLP receiver and "
        "Jaeger query API on one 127.0.0.1 port.",
    )
    parser.add_argument(
        "--ports-file",
        required=True,
        type=Path,
        help='where to write {"pid": N, "port": P} once listening',
    )
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    parser.add_argument(
        "--max-spans",
        type=_positive,
        default=DEFAULT_MAX_SPANS,
        help=f"spans kept in memory before older ones spill to disk (default {DEFAULT_MAX_SPANS})",
    )
    parser.add_argument(
        "--spill-dir",
        type=Path,
        default=None,
        help="directory for spilled span segments (default: a temp dir, removed on exit)",
    )
    parser.add_argument(
        "--record-dir",
        type=Path,
        default=None,
        help="a run folder to record every span received into, as spans/*.parquet parts",
    )
    parser.add_argument(
        "--record-flush-s",
        type=float,
        default=DEFAULT_FLUSH_S,
        help=f"seconds between two recorded parts (default {DEFAULT_FLUSH_S:g})",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_child(
        "tracestore",
        lambda: serve(
            port=args.port,
            max_spans=args.max_spans,
            spill_dir=args.spill_dir,
            record_dir=args.record_dir,
            record_flush_s=args.record_flush_s,
        ),
        ports_file=args.ports_file,
    )


if __name__ == "__main__":
    sys.exit(main())
