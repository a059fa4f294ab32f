"""The meshload tab in Locust's web UI, loaded by a real browser during a real run.

`locust -f scenarios/canary.py --autostart` (web UI on 127.0.0.1) on the embedded mesh; while
its second step runs, headless Chromium (Debian `chromium`; the test fails without it) opens
`/?tab=meshload` and renders it, JavaScript and the UI's polling of `/stats/requests`
included; the test reads the rendered table. After the run, `/meshload/report` serves the
run's report.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from meshsim.prometheus import free_port
from tests.support import REPO, start_in_session

pytestmark = pytest.mark.integration

PLAN = """users: 20
steps:
  - {weights: {v1: 100, v2: 0}, hold_s: 6}
  - {weights: {v1: 50, v2: 50}, hold_s: 11}
"""
SHOT = os.environ.get("MESHLOAD_WEBUI_SCREENSHOT")  # docs/: where the screenshot is kept


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not on PATH: `apt-get install chromium` (.ci/run installs it)"
    return found


def render(url: str, *extra: str) -> str:
    """The page as a browser renders it after 6 s of its own time (its polls included)."""
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1500,700",
         "--virtual-time-budget=6000", *extra, url],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def cells(dom: str) -> list[list[str]]:
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", dom, flags=re.S)
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
            for r in rows]  # fmt: skip


def step_started(results: Path, step: int) -> float | None:
    for run_json in results.glob("*/run.json"):
        events = json.loads(run_json.read_text()).get("events") or []
        for e in events:
            if e.get("kind") == "weights" and e.get("step") == step:
                return float(e["accepted_ns"]) / 1e9
    return None


def test_the_meshload_tab_shows_the_live_split_in_a_browser(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text(PLAN)
    port = free_port()
    results = tmp_path / "results"
    proc = start_in_session(
        [sys.executable, "-m", "locust", "-f", str(REPO / "scenarios" / "canary.py"),
         "--autostart", "--autoquit", "30", "--web-host", "127.0.0.1", "--web-port", str(port),
         "--plan", str(tmp_path / "plan.yaml"), "--results-dir", str(results)],
        tmp_path / "locust.log",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while (started := step_started(results, 1)) is None or time.time() < started + 4:
            assert time.monotonic() < deadline, (tmp_path / "locust.log").read_text()[-3000:]
            time.sleep(0.3)
        shot = ["--screenshot=" + str(Path(SHOT).resolve())] if SHOT else []
        dom = render(f"{base}/?tab=meshload", "--dump-dom")
        if shot:
            render(f"{base}/?tab=meshload", *shot)
        tabs = [
            re.sub(r"<[^>]+>", "", t) for t in re.findall(r'role="tab"[^>]*>(.*?)</button>', dom)
        ]
        assert "meshload" in tabs, tabs
        assert "Served so far (95 % interval)" in dom and "Propagation per gateway replica" in dom
        rows = {r[0]: r for r in cells(dom) if r}
        step0, step1 = rows["0"], rows["1"]
        assert step0[1] == "v1 100 %, v2 0 %" and step0[2].startswith("v1 100.0 % [")
        assert step0[6] == "pass" and int(step0[3].replace(",", "")) > 100, step0
        assert step0[5].startswith("initial weights"), step0
        assert step1[1] == "v1 50 %, v2 50 %" and "v2 " in step1[2] and "[" in step1[2], step1
        assert re.search(r"needs [\d,]+ s more for ±2 pp", step1[4]), step1
        assert re.search(r"[0-9a-f]{8} -?\d+ ms", step1[5]), step1  # per replica, stamped
        # the verdict the tab shows is the one its intervals say: a true 50/50 split fails at
        # 200 requests about once in 90 looks (an interval wholly outside 50 ± 2 by chance)
        shown = re.findall(r"(v\d) [\d.]+ % \[([\d.]+), ([\d.]+)\]", step1[2])
        bands = {v: (float(lo), float(hi)) for v, lo, hi in shown}
        assert set(bands) == {"v1", "v2"}, step1

        def verdict(shift: float) -> str:  # the bounds are shown to 0.1: either side of it
            moved = [(lo + shift, hi + shift) for lo, hi in bands.values()]
            if any(lo > 52.0 or hi < 48.0 for lo, hi in moved):
                return "fail"
            return "pass" if all(lo >= 48.0 and hi <= 52.0 for lo, hi in moved) else "inconclusive"

        assert step1[6] in {verdict(-0.05), verdict(0.0), verdict(0.05)}, step1
        assert "gates" in rows
        # the run ends; the report is one link away
        while step_started(results, 1) is not None and not list(results.glob("*/report.html")):
            (run_json,) = results.glob("*/run.json")
            if json.loads(run_json.read_text()).get("ended_ns"):
                break
            assert time.monotonic() < deadline + 60
            time.sleep(0.5)
        with urllib.request.urlopen(f"{base}/meshload/report", timeout=60) as answer:
            page = answer.read().decode()
        assert answer.status == 200 and "meshload report" in page
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
