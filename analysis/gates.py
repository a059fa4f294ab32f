"""CI gates on a run's summary.json, and their JUnit XML (one test case per gate).

Thresholds file (YAML; every section optional, an empty file checks nothing; an example with
comments is scenarios/thresholds/ci.yaml):

    split:                    # one gate per step: its verdict at this tolerance must be pass:
      tolerance_pp: 2         #   every version's 95 % interval inside its weight ± 2 pp
      steps: [1, 2, 3]        #   optional: only these steps (default: every step)
    propagation:              # one gate per weight change that was detected
      max_delay_ms: 5000      #   stamped: every replica served it by then; estimated: the
                              #   whole support interval of the change point within it
    latency:                  # one gate per version and figure, client-side exact percentiles
      v2: {p99_ms: 250, p50_ms: 40}
      "*": {max_ms: 5000}     #   "*": every version that served requests
    judge:                    # one gate: the canary judge's verdict is one of these
      verdict: pass           #   or a list, e.g. [pass, inconclusive]
    errors:                   # one gate per version: failed requests / requests
      v2: {max_rate: 0.01}
    consistency:              # one gate: share of client requests whose trace was found
      min_trace_share: 0.9

Whatever the file asks, the first gate is `run`: it fails when the run was not measured as
planned (summary.json's `run_health`: a process of the mesh died, a weight change failed, the
run was cut short or interrupted, records were lost).

Latency figures: n is not a figure; p50_ms, p90_ms, p95_ms, p99_ms, p999_ms, max_ms, mean_ms.
A gate whose figure is missing from the summary (a version that served nothing, no traces)
fails, and says so: a CI gate must not pass on data it never saw. So does a split step whose
verdict is inconclusive (it says how many requests it needs) and an estimated propagation delay
whose support interval reaches past the limit.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.verdicts import FAIL, PASS, record_verdict
from meshcore.errors import ConfigError
from meshcore.yamldoc import load_yaml

SECTIONS = ("split", "propagation", "latency", "judge", "errors", "consistency")
LATENCY_FIGURES = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms")
VERDICTS = ("pass", "fail", "inconclusive")


@dataclass(frozen=True)
class Gate:
    group: str  # the thresholds section: split, latency, ...
    name: str
    passed: bool
    message: str


@dataclass(frozen=True)
class CheckResult:
    gates: list[Gate] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def failures(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]


def _number(where: str, value: Any, lo: float = 0.0, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"thresholds: {where} must be a number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo:g} and {hi:g}" if hi is not None else f">= {lo:g}"
        raise ConfigError(f"thresholds: {where} must be {bound}, got {value!r}")
    return float(value)


def _mapping(where: str, value: Any, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"thresholds: {where} must be a mapping, got {value!r}")
    unknown = [str(k) for k in value if allowed is not None and k not in allowed]
    if unknown:
        raise ConfigError(
            f"thresholds: {where} has unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed or ())}"
        )
    return {str(k): v for k, v in value.items()}


def parse_thresholds(data: Any) -> dict[str, Any]:
    """Validate a thresholds document; ConfigError names the offending key."""
    if data is None:
        return {}
    top = _mapping("the file", data, SECTIONS)
    out: dict[str, Any] = {}
    if "split" in top:
        split = _mapping("split", top["split"], ("tolerance_pp", "steps"))
        steps = split.get("steps")
        if steps is not None and not (
            isinstance(steps, list) and all(isinstance(s, int) for s in steps)
        ):
            raise ConfigError(f"thresholds: split.steps must be a list of step numbers: {steps!r}")
        out["split"] = {
            "tolerance_pp": _number("split.tolerance_pp", split.get("tolerance_pp", 2.0)),
            "steps": steps,
        }
    if "propagation" in top:
        prop = _mapping("propagation", top["propagation"], ("max_delay_ms",))
        out["propagation"] = {
            "max_delay_ms": _number("propagation.max_delay_ms", prop.get("max_delay_ms"))
        }
    if "latency" in top:
        out["latency"] = {
            v: {
                k: _number(f"latency.{v}.{k}", x)
                for k, x in _mapping(f"latency.{v}", limits, LATENCY_FIGURES).items()
            }
            for v, limits in _mapping("latency", top["latency"]).items()
        }
    if "judge" in top:
        verdict = _mapping("judge", top["judge"], ("verdict",)).get("verdict", "pass")
        allowed = [verdict] if isinstance(verdict, str) else verdict
        if not isinstance(allowed, list) or not allowed or any(a not in VERDICTS for a in allowed):
            raise ConfigError(
                f"thresholds: judge.verdict must be one of {', '.join(VERDICTS)} or a list of "
                f"them, got {verdict!r}"
            )
        out["judge"] = {"verdict": allowed}
    if "errors" in top:
        out["errors"] = {
            v: _number(
                f"errors.{v}.max_rate",
                _mapping(f"errors.{v}", limits, ("max_rate",)).get("max_rate"),
                0.0,
                1.0,
            )
            for v, limits in _mapping("errors", top["errors"]).items()
        }
    if "consistency" in top:
        cons = _mapping("consistency", top["consistency"], ("min_trace_share",))
        share = _number("consistency.min_trace_share", cons.get("min_trace_share"), 0.0, 1.0)
        out["consistency"] = {"min_trace_share": share}
    return out


def load_thresholds(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(
            f"{path}: cannot read the thresholds file ({reason}); pass --thresholds FILE"
        ) from None
    data = load_yaml(text, str(path))
    try:
        return parse_thresholds(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{x * 100:.2f} %"


def _split_gates(summary: Mapping[str, Any], rule: Mapping[str, Any]) -> Iterator[Gate]:
    tol, wanted = rule["tolerance_pp"], rule.get("steps")
    steps = [s for s in summary.get("split") or [] if wanted is None or s["step"] in wanted]
    missing = sorted(set(wanted or []) - {s["step"] for s in steps})
    if not steps and not missing:
        yield Gate("split", "split", False, "no split figures (run.json has no weight events)")
    for step in missing:
        yield Gate("split", f"step {step}", False, f"step {step} is not in the summary")
    for s in steps:
        name = f"step {s['step']}"
        if s.get("applied") is False or s.get("broken"):
            yield Gate("split", name, False, str(s.get("reason")))
            continue
        result = record_verdict(s, tol)
        n = int(s.get("n") or 0)
        if result.verdict == PASS:
            msg = f"every version's 95 % interval within {tol:g} pp of its weight (n={n:,})"
            yield Gate("split", name, True, msg)
            continue
        shown = [v for v, x in result.versions.items() if x != PASS] or list(result.versions)
        details = [_share_line(s, v) for v in shown if v in (s.get("configured") or {})]
        reasons = list(result.reasons)
        if result.verdict != FAIL:  # a gate must not pass on data it never saw
            reasons = [f"{r} at {tol:g} pp" for r in reasons]
        yield Gate("split", name, False, "; ".join(reasons + details))


def _share_line(s: Mapping[str, Any], v: str) -> str:
    cfg = (s.get("configured") or {}).get(v)
    obs = (s.get("observed") or {}).get(v)
    err = (s.get("error_pp") or {}).get(v)
    lo, hi = ((s.get("ci95") or {}).get(v) or [None, None])[:2]
    if err is None:
        return f"{v} has no observed share"
    return (
        f"{v} served {_pct(obs)} vs {_pct(cfg)} configured "
        f"({err:+.2f} pp; 95 % CI {_pct(lo)} to {_pct(hi)})"
    )


def _propagation_gate(p: Mapping[str, Any], limit: float) -> Gate | None:
    """Stamped: the last replica to serve the change did so within the limit (a replica that
    never did fails). Estimated: the whole support interval within it passes, wholly past it
    fails, straddling it fails as undecided. None for a change not detected."""
    name = f"step {p['step']}"
    delay = p.get("delay_ms")
    if delay is None:
        return None
    if p.get("method") == "stamped":
        replicas = p.get("by_replica") or []
        late = [r for r in replicas if r.get("delay_ms") is None]
        if late:
            which = ", ".join(str(r.get("pod") or r.get("replica")) for r in late)
            return Gate("propagation", name, False, f"replica(s) {which} never served it")
        slowest = max([r["delay_ms"] for r in replicas] + [delay])
        msg = f"every replica served it {slowest:.1f} ms after acceptance (limit {limit:g} ms)"
        return Gate("propagation", name, slowest <= limit, msg)
    lo, hi = (p.get("delay_range_ms") or [None, None])[:2]
    if hi is None or lo is None:  # an older summary: the estimate alone
        msg = f"took effect {delay:.1f} ms after acceptance (limit {limit:g} ms)"
        return Gate("propagation", name, delay <= limit, msg)
    estimate = f"estimated {delay:.1f} ms after acceptance, between {lo:.1f} and {hi:.1f} ms"
    if hi <= limit:
        return Gate("propagation", name, True, f"{estimate} (limit {limit:g} ms)")
    if lo > limit:
        return Gate("propagation", name, False, f"{estimate}: past the limit {limit:g} ms")
    return Gate("propagation", name, False,
                f"inconclusive: {estimate}, across the limit {limit:g} ms; a stamped run "
                "measures the delay")  # fmt: skip


def _bound(
    kind: str,
    name: str,
    value: float | None,
    limit: float,
    shown: str,
    missing: str,
    *,
    at_least: bool = False,
) -> Gate:
    """Passes when `value` is at most (or `at_least`) `limit`, saying `shown` formatted with it;
    fails saying `missing` when there is no value."""
    if value is None:
        return Gate(kind, name, False, missing)
    return Gate(kind, name, value >= limit if at_least else value <= limit, shown.format(value))


def _gates(summary: Mapping[str, Any], th: Mapping[str, Any]) -> Iterator[Gate]:
    # Always first: a run that was not measured as planned fails, whatever else passes.
    health = summary.get("run_health")
    if health is None:
        yield Gate("run", "measured as planned", False,
                   "summary.json has no run_health; rebuild it with `meshload report`")  # fmt: skip
    else:
        yield Gate("run", "measured as planned", bool(health.get("ok")), str(health.get("line")))
    if "split" in th:
        yield from _split_gates(summary, th["split"])
    if "propagation" in th:
        for p in summary.get("propagation") or []:
            gate = _propagation_gate(p, th["propagation"]["max_delay_ms"])
            if gate is not None:
                yield gate
    latency = summary.get("latency") or {}
    for version, limits in (th.get("latency") or {}).items():
        versions = [v for v in latency if v != "unknown"] if version == "*" else [version]
        for v in versions:
            for figure, limit in limits.items():
                value = (latency.get(v) or {}).get(figure)
                yield _bound("latency", f"{v} {figure} <= {limit:g}", value, limit,
                             f"{figure} of {v} is {{:.2f}}",
                             f"no {figure} of {v}: it served nothing")  # fmt: skip
    if "judge" in th:
        judge = summary.get("judge") or {}
        verdict = judge.get("verdict")
        why = "; ".join(judge.get("reasons") or [])
        allowed = th["judge"]["verdict"]
        msg = f"verdict {verdict} (allowed: {', '.join(allowed)}): {why}"
        yield Gate("judge", "verdict", verdict in allowed, msg)
    errors = summary.get("errors") or {}
    for v, max_rate in (th.get("errors") or {}).items():
        rate = (errors.get(v) or {}).get("rate")
        if rate is None:
            rate = ((summary.get("judge") or {}).get("error_rate") or {}).get(v)
        yield _bound("errors", f"{v} error rate <= {max_rate:g}", rate, max_rate,
                     f"error rate of {v} is {{:.4f}}", f"no requests of {v}")  # fmt: skip
    if "consistency" in th:
        share = (summary.get("consistency") or {}).get("trace_coverage")
        want = th["consistency"]["min_trace_share"]
        yield _bound("consistency", f"trace share >= {want:g}", share, want,
                     "{:.4f} of requests traced", "no traces to compare with the client records",
                     at_least=True)  # fmt: skip


def check_summary(summary: Mapping[str, Any], thresholds: Mapping[str, Any]) -> CheckResult:
    """Every gate the (validated) thresholds ask for, evaluated on one summary."""
    return CheckResult(list(_gates(summary, thresholds)))


def check_run(
    run_dir: str | os.PathLike[str], thresholds_file: str | os.PathLike[str]
) -> CheckResult:
    """Gates of a run folder; its summary.json is built first when missing."""
    from analysis.report import load_summary  # report imports the plotting stack: load late

    thresholds = load_thresholds(thresholds_file)
    return check_summary(load_summary(run_dir), thresholds)


def _xml_text(text: str) -> str:
    # XML 1.0 cannot carry most control characters, and a message may quote outside strings
    return "".join(c if c >= " " or c in "\t\n\r" else "?" for c in text)


def junit_xml(result: CheckResult, *, suite: str = "meshload.check") -> bytes:
    """JUnit XML: one <testcase> per gate, a <failure> in each failed one."""
    root = ET.Element("testsuites", name=suite)
    ts = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(result.gates)),
        failures=str(len(result.failures)),
        errors="0",
        skipped="0",
        time="0",
    )
    for gate in result.gates:
        case = ET.SubElement(
            ts, "testcase", classname=f"{suite}.{gate.group}", name=gate.name, time="0"
        )
        if gate.passed:
            ET.SubElement(case, "system-out").text = _xml_text(gate.message)
        else:
            message = _xml_text(gate.message)
            ET.SubElement(case, "failure", message=message, type="GateFailed").text = message
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(result: CheckResult, path: str | os.PathLike[str]) -> None:
    Path(path).write_bytes(junit_xml(result))
