"""A meshload tab in Locust's web UI, through its documented extension points.

`template_args` gives the UI a tab and the structure of its table (`extendedTabs`,
`extendedTables`); every `/stats/requests` answer, which the UI polls every couple of seconds,
carries the table's rows in `extendedStats`. The rows: each applied step's configured weights,
the split served so far with 95 % intervals, its requests, the precision it has reached and
how much longer it needs ("needs 30 s more for ±2 pp"), each replica's propagation delay, and
the verdict so far (`loadgen.live`); then the live gates' state, and once the run has ended a
link to its report (`/meshload/report`, built on first request when the run ended in the UI).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from loadgen.live import LiveSplit
from meshcore.figures import DEFAULT_TOLERANCE_PP
from meshcore.runfolder import REPORT_FILE

log = logging.getLogger("meshload")

TAB = "meshload"
REPORT_PATH = "/meshload/report"
COLUMNS = (
    ("step", "Step"),
    ("configured", "Configured"),
    ("served", "Served so far (95 % interval)"),
    ("requests", "Requests"),
    ("precision", "Precision"),
    ("propagation", "Propagation per gateway replica"),
    ("verdict", "Verdict so far"),
)


class MeshloadTab:
    """The tab's rows for the harness's current (or last) run."""

    def __init__(self, harness: Any) -> None:
        self.harness = harness
        self._live: LiveSplit | None = None
        self.folder: Path | None = None

    def rows(self) -> list[dict[str, str]]:
        run = self.harness.run
        if run is not None:
            self.folder = run.folder.path
            if self._live is None or self._live.folder.path != run.folder.path:
                self._live = LiveSplit(run.folder, stamped=bool(run.info.get("stamps")))
        if self._live is None:
            return [{"step": "–", "served": "no run yet: start one"}]
        self._live.update()
        info = run.info if run is not None else (self.harness.last_info or {})
        stats = getattr(self.harness.environment, "stats", None)
        rate = float(stats.total.current_rps) if stats is not None else 0.0
        rows = self._live.steps(info.get("events") or [], DEFAULT_TOLERANCE_PP, rate)
        rows.append({"step": "gates", "served": _gates(run, info)})
        if run is None and self.folder is not None:
            rows.append({"step": "report", "served": f"the run has ended: {REPORT_PATH}"})
        return rows


def _gates(run: Any, info: dict[str, Any]) -> str:
    tripped = [e for e in info.get("events") or [] if e.get("kind") == "gate"]
    if tripped:
        e = tripped[-1]
        return (
            f"tripped: {e.get('gate')} of {e.get('subset')} {e.get('value')} > {e.get('threshold')}"
        )
    gates = getattr(run, "gates", None) if run is not None else None
    if gates is None:
        return "no live gate set (--gate-error-rate, --gate-p99-ms)"
    on = [f"error rate ≤ {gates.error_rate:g}" if gates.error_rate else "",
          f"p99 ≤ {gates.p99_ms:g} ms" if gates.p99_ms else ""]  # fmt: skip
    return f"holding ({', '.join(x for x in on if x)} over {gates.window_s:g} s of {gates.canary})"


def install(web_ui: Any, harness: Any) -> MeshloadTab:
    """Add the tab to Locust's web UI."""
    from flask import Response, request, send_file

    tab = MeshloadTab(harness)
    args = web_ui.template_args
    args["extendedTabs"] = [*(args.get("extendedTabs") or []), {"title": "meshload", "key": TAB}]
    structure = [{"key": k, "title": t} for k, t in COLUMNS]
    args["extendedTables"] = [
        *(args.get("extendedTables") or []),
        {"key": TAB, "structure": structure},
    ]

    @web_ui.app.after_request
    def with_meshload_rows(response: Response) -> Response:
        if request.path != "/stats/requests" or response.mimetype != "application/json":
            return response
        try:
            data = json.loads(response.get_data())
            rows = tab.rows()
        except Exception as e:  # the tab never breaks Locust's own stats
            log.warning("meshload tab: %s", e)
            return response
        data["extendedStats"] = [*(data.get("extendedStats") or []), {"key": TAB, "data": rows}]
        response.set_data(json.dumps(data))
        return response

    @web_ui.app.route(REPORT_PATH)
    def meshload_report() -> Any:
        if tab.folder is None or harness.run is not None:
            return Response("the report comes once the run has ended\n", 404, mimetype="text/plain")
        report = tab.folder / REPORT_FILE
        if not report.is_file():
            from analysis.report import build_report

            build_report(tab.folder, progress=False)
        return send_file(report)

    return tab
