"""`meshload plan`: per step, the precision and the time the tolerance needs, without running."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from meshload.cli import main

ROOT = Path(__file__).resolve().parent.parent
Z = 1.959963984540054


def by_hand_half_width_pp(shares: list[float], n: int) -> float:
    widths = [
        100 * Z * Z / (n + Z * Z) if s in (0.0, 1.0) else 100 * Z * math.sqrt(s * (1 - s) / n)
        for s in shares
    ]
    return max(widths)


def by_hand_needed(shares: list[float], tol_pp: float) -> int:
    """z² s (1 - s) / tol², s the share 2.5 tolerances nearer 50 % (not past it)."""
    out = []
    for s in shares:
        by = 2.5 * tol_pp / 100
        moved = min(s + by, 0.5) if s < 0.5 else max(s - by, 0.5)
        out.append(math.ceil((Z * 100) ** 2 * moved * (1 - moved) / tol_pp**2))
    return max(out)


def test_the_canary_plan_at_40_requests_a_second(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(ROOT / "scenarios" / "plans" / "canary.yaml"), "--rate", "40"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("canary.yaml: 6 steps, 120 s; precision: the widest 95 % interval "
                           "among a step's versions; tolerance 2 pp")  # fmt: skip
    steps = [line for line in out if line.startswith("step ")]
    assert len(steps) == 6
    assert steps[4].startswith(
        "step 4 (v1 50 %, v2 50 %): ±3.5 pp at 40 req/s × 20 s (800 requests); "
        "tolerance 2 pp needs 61 s, passes at 241 s: too short"
    )
    weights = [(1.0, 0.0), (0.95, 0.05), (0.9, 0.1), (0.75, 0.25), (0.5, 0.5), (0.0, 1.0)]
    for line, shares in zip(steps, weights, strict=True):
        m = re.search(r"±([\d.]+) pp at 40 req/s × 20 s \(800 requests\); tolerance 2 pp needs "
                      r"([\d,]+) s", line)  # fmt: skip
        assert m, line
        assert float(m.group(1)) == round(by_hand_half_width_pp(list(shares), 800), 1)
        assert int(m.group(2).replace(",", "")) == math.ceil(by_hand_needed(list(shares), 2) / 40)
    assert out[-1].startswith("total: 4,800 requests in 120 s.")


def test_a_steps_arrival_rate_and_the_tolerance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(
        "steps:\n"
        "  - {weights: {v1: 100, v2: 0}, hold_s: 10}\n"
        "  - {weights: {v1: 50, v2: 50}, hold_s: 300, arrival_rate: 100}\n"
    )
    assert main(["plan", str(plan), "--rate", "40", "--tolerance-pp", "3"]) == 0
    steps = [x for x in capsys.readouterr().out.splitlines() if x.startswith("step ")]
    assert steps[0].startswith("step 0 (v1 100 %): ±1.0 pp at 40 req/s × 10 s (400 requests)")
    assert steps[0].endswith("long enough to pass")  # 124 requests pass 100 % within 3 pp
    assert " at 100 req/s × 300 s (30,000 requests)" in steps[1]
    assert steps[1].endswith("long enough to pass")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["plan", "/no/such/plan.yaml", "--rate", "40"], "cannot read the plan"),
        (["plan", "PLAN", "--rate", "0"], "--rate must be a number of requests per second > 0"),
        (["plan", "PLAN", "--rate", "40", "--tolerance-pp", "0"], "--tolerance-pp must be > 0"),
        (["plan", "BAD", "--rate", "40"], "step 0: hold_s: is missing"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("steps:\n  - {weights: {v1: 1}, hold_s: 5}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - {weights: {v1: 1}}\n")
    args = [str(good) if a == "PLAN" else str(bad) if a == "BAD" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("meshload: error: ") and words in err[0], err
