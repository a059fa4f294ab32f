"""The embedded scraper: what Prometheus would record, into the run folder as it goes.

`python -m meshsim.telemetry.scrape --targets FILE --out-dir DIR [--status-file FILE]` runs it
as a child of the mesh (never in Locust's gevent process, where parsing would stall the
event loop) until SIGTERM, then scrapes once more, writes the last part and exits 0 (a child
of `meshsim.serving` with no site and no ports file).

A thread scrapes every target (all at once) each `interval_s` into Arrow batches of
`meshcore.schemas.METRIC_SCHEMA`; every `part_every_s` they become one part of the run folder,
`metrics/scraper-<pid>-<seq>.parquet` (by rename, so a reader never sees half a file), and are
dropped: memory stays flat however long the run, and a crash loses at most the last
`part_every_s`. The scraper's state (`metrics/_scraper-<pid>.json`: rows, parts, lost, done)
is rewritten with every part. Between rounds it watches the folder's run.json and scrapes at
once when a weight change is recorded there (`weight_watch`), so the per-step counts of the
consistency table are taken at the step's boundaries, not up to half an interval off. A
target that fails is logged once and scraped again next time; a part that cannot be written is
logged once and tried again with the next one (samples waiting beyond `max_pending_rounds` are
dropped and counted as lost); the mesh's traffic never waits for either.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from meshcore.errors import ConfigError
from meshcore.runfolder import METRICS_DIR, RecorderState, RunFolder
from meshcore.schemas import METRIC_SCHEMA
from meshsim.prometheus import Target
from meshsim.serving import Served, run_child
from meshsim.telemetry.exposition import ExpositionReader
from meshsim.telemetry.scrape_files import read_targets, write_status
from meshsim.telemetry.weight_watch import POLL_S, WeightChanges

log = logging.getLogger(__name__)

WRITER = "scraper"
MAX_PARALLEL = 16  # targets fetched at once (the embedded mesh has about a dozen)


class Scraper:
    """Scrapes `targets` from a thread until `close()`; samples go to parts of `out_dir`."""

    def __init__(
        self,
        targets: Sequence[Target],
        out_dir: str | os.PathLike[str] | None,
        *,
        interval_s: float = 1.0,
        part_every_s: float = 5.0,
        max_pending_rounds: int = 600,
        timeout_s: float = 1.0,
        status_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.targets = list(targets)
        self.readers = [
            ExpositionReader({"job": t.job, "instance": _instance(t.url), **t.labels})
            for t in self.targets
        ]
        # Another process (the mesh) learns of finished rounds from this file.
        self.status_file = Path(status_file) if status_file is not None else None
        self.folder = RunFolder(out_dir) if out_dir is not None else None
        self.weights = WeightChanges(out_dir) if out_dir is not None else None
        self.interval_s = interval_s
        self.part_every_s = part_every_s
        self.max_pending_rounds = max_pending_rounds
        self.timeout_s = timeout_s
        self.state = RecorderState(WRITER, os.getpid())
        self.scrapes = 0
        self.failures = 0
        self.written_rounds = 0  # rounds whose samples are in parts on disk
        self._batches: list[pa.RecordBatch] = []
        self._pending_rounds = 0
        self._lock = threading.Lock()
        self._failed: set[str] = set()
        self._stop = threading.Event()
        workers = min(MAX_PARALLEL, max(len(self.targets), 1))
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="metrics-fetch")
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_part = time.monotonic() + self.part_every_s
        while not self._stop.is_set():
            started = time.monotonic()
            self.scrape_once()
            if time.monotonic() >= next_part:
                next_part = time.monotonic() + self.part_every_s
                self.write_part()
            self._wait_until(started + self.interval_s)

    def _wait_until(self, due: float) -> None:
        """Until the next round is due, the scraper is closed, or the run's weights change."""
        while (left := due - time.monotonic()) > 0:
            if self._stop.wait(min(left, POLL_S)):
                return
            if self.weights is not None and self.weights.changed():
                return

    def scrape_once(self) -> None:
        times: list[float] = []
        names: list[str] = []
        labels: list[str] = []
        values: list[float] = []
        # Every target at once: each sample is taken within a fetch of the round's start (a
        # round at a weight change samples the frontend then, not after Envoy's long stats).
        fetched = self._pool.map(self._fetch, self.targets)
        for target, reader, (t_s, body) in zip(self.targets, self.readers, fetched, strict=True):
            try:
                if isinstance(body, Exception):
                    raise body
                n, lab, v = reader.read(body)
            except (urllib.error.URLError, OSError, ValueError) as e:
                self.failures += 1
                self._warn_once(
                    target.url, "scraping %s failed (%s); will keep trying", target.url, e
                )
                continue
            times += [t_s] * len(n)
            names += n
            labels += lab
            values += v
        with self._lock:
            if names:
                # One batch per round: building Arrow arrays per target cost more than parsing.
                self._batches.append(
                    pa.RecordBatch.from_arrays(
                        [
                            pa.array(times, pa.float64()),
                            pa.array(names).dictionary_encode(),
                            pa.array(labels).dictionary_encode(),
                            pa.array(values, pa.float64()),
                        ],
                        schema=METRIC_SCHEMA,
                    )
                )
            self._pending_rounds += 1
            self.scrapes += 1
        self._write_status()

    def _fetch(self, target: Target) -> tuple[float, str | Exception]:
        """When the scrape began (epoch s) and the body, or why it failed."""
        t_s = time.time()
        try:
            with urllib.request.urlopen(target.url, timeout=self.timeout_s) as resp:
                return t_s, resp.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError, ValueError) as e:
            return t_s, e

    def _write_status(self) -> None:
        if self.status_file is not None:
            write_status(self.status_file, self.scrapes, self.failures, self.written_rounds)

    def wait_scraped(self, timeout_s: float = 10.0) -> None:
        """Wait until a whole scrape round has begun and ended after this call."""
        target = self.scrapes + 2
        deadline = time.monotonic() + timeout_s
        while self.scrapes < target and time.monotonic() < deadline:
            if not self._thread.is_alive():
                return
            time.sleep(0.05)

    def write_part(self) -> Path | None:
        """The samples not yet written, as the next part; None when there were none (or no
        folder). A failed write keeps them for the next part and is logged once."""
        with self._lock:
            batches, self._batches = self._batches, []
            rounds, self._pending_rounds = self._pending_rounds, 0
        path = None
        if batches and self.folder is not None:
            table = pa.Table.from_batches(batches, schema=METRIC_SCHEMA).unify_dictionaries()
            try:
                path = self.folder.write_telemetry_part(
                    METRICS_DIR, table, WRITER, self.state.pid, self.state.parts
                )
            except OSError as e:
                self._warn_once(
                    "write", "writing into %s failed (%s); will retry", self.folder.path, e
                )
                self._keep_for_retry(batches, rounds)
                return None
            self.state.rows += table.num_rows
            self.state.parts += 1
        self.written_rounds += rounds
        self._save_state()
        self._write_status()
        return path

    def _keep_for_retry(self, batches: list[pa.RecordBatch], rounds: int) -> None:
        with self._lock:
            self._batches[:0] = batches
            self._pending_rounds += rounds
            over = len(self._batches) - self.max_pending_rounds
            if over > 0:
                self.state.lost += sum(b.num_rows for b in self._batches[:over])
                del self._batches[:over]

    def _save_state(self) -> None:
        if self.folder is None:
            return
        try:
            self.folder.write_recording(METRICS_DIR, self.state)
        except OSError as e:
            self._warn_once("write", "writing into %s failed (%s); will retry", self.folder.path, e)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._failed:
            self._failed.add(key)
            log.warning(message, *args)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop scraping (after one last scrape), write the last part, mark the state done."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout_s)
        self.scrape_once()
        self.write_part()
        with self._lock:
            self.state.lost += sum(b.num_rows for b in self._batches)
            self._batches = []
        self.state.done = True
        self._save_state()
        self._pool.shutdown(wait=False)


def _instance(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


async def _start(args: argparse.Namespace) -> Served[Scraper]:
    try:
        targets = read_targets(args.targets)
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(
            f"{args.targets}: not a targets file ({e}); write it with write_targets"
        ) from None
    scraper = Scraper(
        targets,
        args.out_dir,
        interval_s=args.interval_s,
        part_every_s=args.part_every_s,
        status_file=args.status_file,
    )
    return Served(scraper, close_after=[scraper.close])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshsim.telemetry.scrape",
        description="Scrape Prometheus endpoints every interval into DIR/metrics/*.parquet.",
    )
    parser.add_argument("--targets", required=True, help='JSON {"targets": [{url, job, labels}]}')
    parser.add_argument("--out-dir", required=True, help="the run folder the parts go into")
    parser.add_argument("--status-file", default=None, help="rewritten after every round")
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--part-every-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    return run_child("scraper", lambda: _start(args))


if __name__ == "__main__":
    sys.exit(main())
