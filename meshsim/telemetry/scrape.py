"""The embedded scraper: what Prometheus would record, into the run folder.

`python -m meshsim.telemetry.scrape --targets FILE --out-dir DIR [--status-file FILE]` runs it
as a child of the mesh (never in Locust's gevent process, where parsing would stall the
event loop) until SIGTERM, then scrapes once more, writes the file and exits 0 (a child of
`meshsim.serving` with no site and no ports file).

A thread scrapes every target each `interval_s` and keeps the samples as Arrow batches of
`meshcore.schemas.METRIC_SCHEMA`; `write()` puts them in the run folder's `metrics.parquet`
(by rename, so a reader never sees half a file), which happens every `write_every_s` and on
`close()`. A target that fails is logged once and scraped again next time; the mesh's traffic
never waits for it.
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
from pathlib import Path

import pyarrow as pa

from meshcore.errors import ConfigError
from meshcore.runfolder import METRICS_FILE, write_parquet
from meshcore.schemas import METRIC_SCHEMA
from meshsim.prometheus import Target
from meshsim.serving import Served, run_child
from meshsim.telemetry.exposition import ExpositionReader
from meshsim.telemetry.scrape_files import read_targets, write_status

log = logging.getLogger(__name__)


class Scraper:
    """Scrapes `targets` from a thread until `close()`; samples go to `out_dir/metrics.parquet`."""

    def __init__(
        self,
        targets: Sequence[Target],
        out_dir: str | os.PathLike[str] | None,
        *,
        interval_s: float = 1.0,
        write_every_s: float = 30.0,
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
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.interval_s = interval_s
        self.write_every_s = write_every_s
        self.timeout_s = timeout_s
        self.scrapes = 0
        self.failures = 0
        self._batches: list[pa.RecordBatch] = []
        self._lock = threading.Lock()
        self._failed: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_write = time.monotonic() + self.write_every_s
        while not self._stop.is_set():
            started = time.monotonic()
            self.scrape_once()
            if self.out_dir is not None and time.monotonic() >= next_write:
                next_write = time.monotonic() + self.write_every_s
                self._write_logged()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def scrape_once(self) -> None:
        times: list[float] = []
        names: list[str] = []
        labels: list[str] = []
        values: list[float] = []
        for target, reader in zip(self.targets, self.readers, strict=True):
            t_s = time.time()
            try:
                with urllib.request.urlopen(target.url, timeout=self.timeout_s) as resp:
                    text = resp.read().decode("utf-8", "replace")
                n, lab, v = reader.read(text)
            except (urllib.error.URLError, OSError, ValueError) as e:
                self.failures += 1
                if target.url not in self._failed:
                    self._failed.add(target.url)
                    log.warning("scraping %s failed (%s); will keep trying", target.url, e)
                continue
            times += [t_s] * len(n)
            names += n
            labels += lab
            values += v
        if names:
            # One batch per round: building Arrow arrays per target cost more than parsing.
            batch = pa.RecordBatch.from_arrays(
                [
                    pa.array(times, pa.float64()),
                    pa.array(names).dictionary_encode(),
                    pa.array(labels).dictionary_encode(),
                    pa.array(values, pa.float64()),
                ],
                schema=METRIC_SCHEMA,
            )
            with self._lock:
                self._batches.append(batch)
        self.scrapes += 1
        if self.status_file is not None:
            write_status(self.status_file, self.scrapes, self.failures)

    def wait_scraped(self, timeout_s: float = 10.0) -> None:
        """Wait until a whole scrape round has begun and ended after this call."""
        target = self.scrapes + 2
        deadline = time.monotonic() + timeout_s
        while self.scrapes < target and time.monotonic() < deadline:
            if not self._thread.is_alive():
                return
            time.sleep(0.05)

    def table(self) -> pa.Table:
        with self._lock:
            batches = list(self._batches)
        return pa.Table.from_batches(batches, schema=METRIC_SCHEMA).unify_dictionaries()

    def write(self) -> Path | None:
        """Write every sample so far to `metrics.parquet` (renamed into place)."""
        if self.out_dir is None:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return write_parquet(self.out_dir / METRICS_FILE, self.table())

    def _write_logged(self) -> None:
        try:
            self.write()
        except OSError as e:
            if "write" not in self._failed:
                self._failed.add("write")
                log.warning("writing %s failed (%s); will retry", self.out_dir, e)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop scraping (after one last scrape) and write the file."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout_s)
        self.scrape_once()
        self._write_logged()


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
        targets, args.out_dir, interval_s=args.interval_s, status_file=args.status_file
    )
    return Served(scraper, close_after=[scraper.close])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshsim.telemetry.scrape",
        description="Scrape Prometheus endpoints every interval into DIR/metrics.parquet.",
    )
    parser.add_argument("--targets", required=True, help='JSON {"targets": [{url, job, labels}]}')
    parser.add_argument("--out-dir", required=True, help="where metrics.parquet is written")
    parser.add_argument("--status-file", default=None, help="rewritten after every round")
    parser.add_argument("--interval-s", type=float, default=1.0)
    args = parser.parse_args(argv)
    return run_child("scraper", lambda: _start(args))


if __name__ == "__main__":
    sys.exit(main())
