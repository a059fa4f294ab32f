"""When a run's weights change, as its run.json says: the embedded scraper scrapes at once.

Prometheus counts per step are taken between the samples nearest each step's boundaries
(`analysis.consistency`), so a scrape every second places a boundary only within half a
second: at 50 requests/s, some 12 requests fall on the wrong side, enough for the consistency
table to flag a step that agrees. The scraper records into the run folder whose run.json the
master rewrites with every weight change, so it can take one more sample right then (within a
poll and a scrape of the change being accepted) and the counts follow the step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from meshcore.runfolder import RUN_JSON

POLL_S = 0.002  # how often the scraper looks at run.json between its rounds: one stat() call


class WeightChanges:
    """Counts the `weights` events of a run folder's run.json; `changed()` is True once per
    new one. A missing or unreadable run.json is no change: the next look reads it again."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / RUN_JSON
        self.seen = 0
        self._stamp: tuple[int, int, int] | None = None

    def changed(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)  # written by rename: a new inode
        if stamp == self._stamp:
            return False
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        self._stamp = stamp
        events = doc.get("events") if isinstance(doc, dict) else None
        n = sum(1 for e in events or [] if isinstance(e, dict) and e.get("kind") == "weights")
        new, self.seen = n > self.seen, max(n, self.seen)
        return new
