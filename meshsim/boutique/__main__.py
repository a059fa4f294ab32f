"""`python -m meshsim.boutique`: serve a mesh spec's workloads until SIGTERM or SIGINT.

Writes the ports file (`{"pid": N, "port": P, "workloads": {"frontend-v1": 34567, ...}}`, `P`
the first workload's) once every workload listens; exits 0 promptly on SIGTERM/SIGINT, 2 with
one line on bad input (`meshsim.serving` has the exit codes).
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path

from meshsim.boutique.runtime import Runtime
from meshsim.boutique.server import serve
from meshsim.serving import Served, run_child
from meshsim.spec import load_spec


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
    p.add_argument(
        "--metrics",
        action="store_true",
        help="serve Istio's metrics on /metrics of every workload (and the ingress gateway's "
        "source-reported series on a port of their own, written to the ports file)",
    )
    p.add_argument(
        "--otlp-endpoint",
        default=None,
        metavar="URL",
        help="export a span per hop to this OTLP/HTTP traces URL "
        "(e.g. http://127.0.0.1:4318/v1/traces); implies --metrics",
    )
    p.add_argument(
        "--trace-sampling",
        type=_ratio,
        default=1.0,
        metavar="F",
        help="share in [0, 1] of requests without a traceparent that are traced (default 1.0; "
        "Istio's default is 0.01); a client's traceparent decides for its own request",
    )
    return p


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share between 0 and 1")
    return value


async def _start(args: argparse.Namespace) -> Served[Runtime]:
    spec = load_spec(args.spec)
    telemetry = None
    if args.metrics or args.otlp_endpoint:
        # Imported only when asked for: a bare workload process starts faster without it.
        from meshsim.telemetry.workloads import WorkloadTelemetry

        telemetry = WorkloadTelemetry(
            spec, otlp_endpoint=args.otlp_endpoint, sampling_ratio=args.trace_sampling
        )
    served = await serve(spec, args.seed, telemetry=telemetry)
    # Everything made so far lives as long as the process: kept out of the collector's full
    # passes, which otherwise walk it again and again under load.
    gc.freeze()
    return served


def _published(served: Served[Runtime]) -> dict[str, dict[str, int]]:
    """`workloads` {name: port}; `metrics` {INGRESS: port} when the gateway's series are served."""
    ports = dict(served.ports)
    doc = {"workloads": {name: ports.pop(name) for name in served.state.workloads}}
    if ports:
        doc["metrics"] = ports
    return doc


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_child(
        "boutique", lambda: _start(args), ports_file=args.ports_file, published=_published
    )


if __name__ == "__main__":
    sys.exit(main())
