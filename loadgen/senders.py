"""The processes that send load, seen from this one: its request capture, where the capture's
records go, and Locust's own count of each process's requests.

    local      the capture writes its parts into the run folder itself
    worker     the capture sends its parts to the master (`loadgen.records_link.MasterLink`),
               whatever machine it runs on; with a writable `--results-dir` of its own, it
               notes each acknowledged part there (`<run id>/acked/<worker>-<pid>.jsonl`)
    master     writes every worker's parts into the run folder (`RecordIntake`) and counts
               each worker's requests from its stats reports

One path for every layout: `--processes N`, `--master`/`--worker` on one machine or several.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import gevent
from locust.runners import LocalRunner, MasterRunner, WorkerRunner

from loadgen import client_spans, client_tls, options, records_link
from loadgen.capture import RequestCapture
from loadgen.journeys import TracedSession
from loadgen.steps import StepClock
from meshcore.runfolder import RunFolder

log = logging.getLogger("meshload")

ACKED_DIR = "acked"


class Senders:
    """This process's capture and, on a master, every worker's records and counts."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock
        self.capture: RequestCapture | None = None
        self.link: records_link.MasterLink | None = None
        self.intake: records_link.RecordIntake | None = None
        self.locust_counts: dict[str, int] = {}  # Locust's request count per worker
        self.sent_reported: dict[str, int] = {}  # records each worker said it had sent
        self.tls_reported: dict[str, dict[str, Any]] = {}  # each worker's TLS handshakes
        self.own_results_dir: str | None = None  # a worker's own --results-dir
        self._flusher: Any = None

    def on_init(self, environment: Any, runner: Any) -> None:
        """Listen for records (master) or their acknowledgements (worker)."""
        if isinstance(runner, MasterRunner):
            self.intake = records_link.RecordIntake(runner)
            runner.register_message(records_link.RECORDS, self.intake.on_records)
            runner.register_message(records_link.DONE, self.intake.on_done)
        elif isinstance(runner, WorkerRunner):
            # The master's options replace a worker's custom ones with each spawn message:
            # keep the worker's own folder now.
            self.own_results_dir = getattr(environment.parsed_options, "results_dir", None)
            runner.register_message(records_link.ACK, self._on_ack)

    def start_run(self, folder: RunFolder) -> None:
        """Master: a new run's folder receives the workers' records from now on."""
        if self.intake is not None:
            self.intake.start(folder)
        self.locust_counts, self.sent_reported, self.tls_reported = {}, {}, {}

    # -- the capture of this process ---------------------------------------------------------
    def start_capture(self, environment: Any, settings: options.Settings) -> None:
        opts = environment.parsed_options
        run_dir = getattr(opts, "meshload_run_dir", None)
        if not run_dir:
            log.error("no run folder from the master (is it a meshload scenario?); not recording")
            return
        TracedSession.sampling = settings.trace_sampling
        token = getattr(opts, "meshload_stamp", "") or None
        TracedSession.stamp = token
        TracedSession.authority = getattr(opts, "meshload_authority", "") or None
        TracedSession.clock, TracedSession.version_header = self.clock, settings.version_header
        if not isinstance(environment.runner, LocalRunner):  # a local one has the master's
            pem = getattr(opts, "meshload_ca_pem", "") or None
            client_tls.configure(
                client_tls.ClientTls(None, settings.insecure, TracedSession.authority, pem)
            )
            client_tls.reset()
        embedded = getattr(opts, "meshload_otlp", "") or None
        TracedSession.tracer = client_spans.tracer_for(embedded, settings.trace_sampling)
        runner = environment.runner
        worker = f"worker{runner.worker_index}" if isinstance(runner, WorkerRunner) else "local"
        buffer_bytes = settings.record_buffer_mb * 2**20
        self.capture = RequestCapture(
            clock=self.clock,
            version_header=settings.version_header,
            open_model=bool(getattr(opts, "meshload_open_model", False)),
            buffer_bytes=buffer_bytes,
            token=token,
        )
        folder: Any = RunFolder(run_dir)
        if isinstance(runner, WorkerRunner):
            ledger = self._ledger(Path(run_dir).name, worker)
            self.link = records_link.MasterLink(
                runner, buffer_bytes // 2, ledger=ledger, run_id=Path(run_dir).name
            )
            folder = self.link
        self.capture.open(folder, worker)
        self._flusher = gevent.spawn(self.capture.flusher(gevent.sleep))

    def _ledger(self, run_id: str, worker: str) -> Path | None:
        """Where this worker notes what the master acknowledged; None when it cannot."""
        if not self.own_results_dir:
            return None
        path = Path(self.own_results_dir) / run_id / ACKED_DIR / f"{worker}-{os.getpid()}.jsonl"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("", encoding="utf-8")
        except OSError as e:
            log.warning("not noting acknowledged records in %s: %s", path.parent, e)
            return None
        return path

    def _on_ack(self, environment: Any = None, msg: Any = None, **_: Any) -> None:
        if self.link is not None:
            self.link.on_ack(environment, msg)

    def on_request(self, **kwargs: Any) -> None:
        if self.capture is not None:
            self.capture.on_request(**kwargs)

    def close_capture(self) -> None:
        """Flush and mark the capture done (a worker's parts go to the master), and export the
        client spans still buffered; repeatable."""
        if self.capture is not None:
            self.capture.close()
        client_spans.flush()
        if self._flusher is not None and self._flusher is not gevent.getcurrent():
            self._flusher.kill(block=False)

    # -- Locust's own count of the requests, per process that sends load ---------------------
    def on_report_to_master(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        """Worker side: name this worker's records in its stats reports, and what it sent."""
        if self.capture is not None:
            data["meshload_worker"] = self.capture.worker
            data["meshload_sent"] = self.capture.rows_written
            data["meshload_tls"] = client_tls.counts()

    def on_worker_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        """Master side: each report carries the requests since the last one."""
        count = int((data.get("stats_total") or {}).get("num_requests") or 0)
        if count or data.get("meshload_worker"):  # reports before a worker's capture: nothing
            worker = str(data.get("meshload_worker") or client_id)
            self.locust_counts[worker] = self.locust_counts.get(worker, 0) + count
            if data.get("meshload_sent") is not None:
                self.sent_reported[worker] = int(data["meshload_sent"])
            if data.get("meshload_tls") is not None:
                self.tls_reported[worker] = data["meshload_tls"]

    def tls_counts(self, environment: Any) -> list[dict[str, Any]]:
        """The TLS handshakes of every process that spoke to the gateway: this one (its
        users, or a master's probes) and each worker's last report."""
        own = [client_tls.counts()]
        return own + list(self.tls_reported.values()) if self.intake is not None else own

    def counts(self, environment: Any) -> dict[str, int] | None:
        """Locust's request count per process that sent load."""
        if isinstance(environment.runner, MasterRunner):
            return dict(self.locust_counts)
        if isinstance(environment.runner, LocalRunner):
            stats = getattr(environment, "stats", None)
            return {"local": int(stats.total.num_requests)} if stats is not None else None
        return None
