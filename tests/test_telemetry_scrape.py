"""The embedded scraper streams into the run folder: parts while it runs, nothing kept once
written (flat memory), every round in a part at the end, a failing write retried, not lost."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from meshcore.runfolder import METRICS_DIR, RunFolder
from meshsim.prometheus import Target
from meshsim.telemetry.scrape import Scraper
from meshsim.telemetry.scrape_files import read_rounds

pytestmark = pytest.mark.integration  # the scraper reads a real HTTP endpoint on 127.0.0.1

SERIES = 20


class _Exposition(http.server.BaseHTTPRequestHandler):
    scrapes = 0

    def do_GET(self) -> None:
        type(self).scrapes += 1
        lines = [f'm_total{{a="{i}"}} {type(self).scrapes}' for i in range(SERIES)]
        body = ("# TYPE m_total counter\n" + "\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def target() -> Iterator[Target]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Target(f"http://127.0.0.1:{server.server_port}/metrics", "app", {"pod": "p-0"})
    server.shutdown()
    thread.join(5)
    server.server_close()


def frame(folder: RunFolder) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in folder.metric_parts()], ignore_index=True)


def test_parts_while_running_and_nothing_kept_once_written(target: Target, tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    status = tmp_path / "status.json"
    scraper = Scraper([target], tmp_path, interval_s=0.05, part_every_s=0.25, status_file=status)
    pending = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        pending.append(len(scraper._batches))
        time.sleep(0.02)
    assert len(folder.metric_parts()) >= 3  # written as it goes, not at the end
    assert max(pending) <= 0.25 / 0.05 + 2  # at most one part's rounds in memory
    scraper.close()
    got = frame(folder)
    assert len(got) == scraper.scrapes * SERIES == scraper.state.rows
    assert read_rounds(status, "written") == read_rounds(status) == scraper.scrapes
    labels = json.loads(got["labels"].astype(str).iloc[0])
    assert labels["job"] == "app" and labels["pod"] == "p-0" and "instance" in labels
    # Every round's counter value, once each: no round lost or written twice.
    values = sorted(
        got.loc[got["labels"].astype(str) == got["labels"].astype(str).iloc[0], "value"]
    )
    assert len(values) == len(set(values)) == scraper.scrapes
    [state] = folder.recordings(METRICS_DIR)
    assert state["done"] and state["rows"] == len(got) and state["parts"] == scraper.state.parts


def test_a_failing_write_is_logged_once_and_its_samples_go_into_the_next_part(
    target: Target, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / METRICS_DIR
    blocker.write_text("a file where the parts folder goes")
    with caplog.at_level(logging.WARNING, logger="meshsim.telemetry.scrape"):
        scraper = Scraper([target], tmp_path, interval_s=0.05, part_every_s=0.1)
        time.sleep(0.6)
        assert scraper.state.parts == 0 and scraper.state.rows == 0 and len(scraper._batches) > 2
        blocker.unlink()  # the disk is back
        scraper.close()
    assert len([r for r in caplog.records if "writing into" in r.message]) == 1
    assert scraper.state.lost == 0 and len(frame(RunFolder(tmp_path))) == scraper.scrapes * SERIES


def test_samples_beyond_the_pending_bound_are_counted_as_lost(
    target: Target, tmp_path: Path
) -> None:
    (tmp_path / METRICS_DIR).write_text("never a folder")
    scraper = Scraper([target], tmp_path, interval_s=0.05, part_every_s=0.1, max_pending_rounds=3)
    time.sleep(0.6)
    assert len(scraper._batches) <= 3 + 2  # bounded however long the disk stays full
    scraper.close()
    assert scraper.state.rows == 0 and scraper.state.lost == scraper.scrapes * SERIES
