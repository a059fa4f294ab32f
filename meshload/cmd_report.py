"""`meshload report`, `meshload compare` and `meshload check`: a run folder's outputs and gates.

Exit codes: 0 fine, 1 a gate failed (check) or B regressed (compare), 2 bad input (no run
folder, no run.json, a broken thresholds file, runs that should not be compared).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from meshcore.errors import ConfigError, RunFolderError
from meshcore.exitcodes import ExitCode


def register(sub: Any) -> None:
    report = sub.add_parser(
        "report", help="build summary.json, the charts and report.html in a run folder"
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (results/<run-id>)")
    report.add_argument("--jaeger-url", help="fetch the run's traces from this Jaeger first")
    report.add_argument(
        "--prometheus-url", help="fetch the run's Istio/Envoy metrics from this Prometheus first"
    )
    report.add_argument(
        "--tolerance-pp",
        type=float,
        default=2.0,
        help="a step's split passes within this many percentage points (default: 2)",
    )
    report.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes reading the spans of a large run (default: one per core, at most 4; "
        "runs under 10 M spans are read in one)",
    )
    report.set_defaults(run=run_report)

    compare = sub.add_parser("compare", help="what changed between two runs; exit 1 on regression")
    compare.add_argument("run_a", metavar="RUN_A", help="the reference run folder")
    compare.add_argument("run_b", metavar="RUN_B", help="the run folder to judge against it")
    compare.add_argument(
        "--force", action="store_true", help="compare runs of different scenarios or schemas"
    )
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")
    compare.set_defaults(run=run_compare)

    check = sub.add_parser("check", help="CI gates on a run: exit 0 pass, 1 failed, 2 bad input")
    check.add_argument("run_dir", metavar="RUN_DIR", help="the run folder (results/<run-id>)")
    check.add_argument(
        "--thresholds",
        required=True,
        metavar="FILE",
        help="thresholds YAML (see scenarios/thresholds/ci.yaml)",
    )
    check.add_argument("--junit", metavar="PATH", help="also write JUnit XML, one case per gate")
    check.set_defaults(run=run_check)


def _bad_folder(exc: RunFolderError) -> ConfigError:
    # A folder that cannot be read is bad input to these commands: exit 2, one line.
    return ConfigError(str(exc))


def run_report(args: argparse.Namespace) -> int:
    from analysis.report import build_report
    from analysis.span_reading import default_workers

    if args.tolerance_pp < 0:
        raise ConfigError(f"--tolerance-pp must be >= 0, got {args.tolerance_pp:g}")
    if args.workers is None:
        args.workers = default_workers()
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    try:
        result = build_report(
            args.run_dir,
            jaeger_url=args.jaeger_url,
            prometheus_url=args.prometheus_url,
            tolerance_pp=args.tolerance_pp,
            workers=args.workers,
        )
    except RunFolderError as exc:
        raise _bad_folder(exc) from None
    summary = result.summary
    split = summary.get("split") or []
    passed = sum(1 for s in split if s.get("passed"))
    verdict = (summary.get("judge") or {}).get("verdict")
    print((summary.get("run_health") or {}).get("line") or "run status unknown")
    print(f"report: {result.html_path}")
    print(f"summary: {result.summary_path}")
    print(f"split: {passed} of {len(split)} steps passed; judge: {verdict}")
    for note in result.notes:
        print(f"note: {note}")
    return ExitCode.OK


def run_compare(args: argparse.Namespace) -> int:
    from analysis.compare import compare_runs, format_comparison
    from analysis.report import load_summary

    try:
        a, b = load_summary(args.run_a), load_summary(args.run_b)
    except RunFolderError as exc:
        raise _bad_folder(exc) from None
    result = compare_runs(a, b, force=args.force)
    if args.json:
        print(json.dumps(result, indent=1, allow_nan=False))
    else:
        print(format_comparison(result))
    return ExitCode.FAILED if result["regressions"] else ExitCode.OK


def run_check(args: argparse.Namespace) -> int:
    from analysis.gates import check_run, write_junit

    try:
        result = check_run(args.run_dir, args.thresholds)
    except RunFolderError as exc:
        raise _bad_folder(exc) from None
    for gate in result.gates:
        mark = "PASS" if gate.passed else "FAIL"
        print(f"{mark} {gate.group}: {gate.name}: {gate.message}")
    if args.junit:
        try:
            write_junit(result, args.junit)
        except OSError as exc:
            raise ConfigError(
                f"{args.junit}: cannot write the JUnit file ({exc.strerror})"
            ) from None
    failed = len(result.failures)
    print(f"{len(result.gates) - failed} of {len(result.gates)} gates passed", file=sys.stderr)
    return ExitCode.FAILED if failed else ExitCode.OK
