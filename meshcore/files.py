"""Files that appear whole or not at all: every writer of the project goes through here.

A file is written beside its target under a hidden name (`.NAME.PID.THREAD.tmp`: a leading dot,
so the run folder's readers and pyarrow's dataset readers skip it), then renamed over the
target. A reader, a watcher (Envoy watches its config directory for renames) or a run cut
short by SIGKILL never sees half a file.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends
    without an error, removed when it raises."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(
    path: str | os.PathLike[str], data: bytes | str, *, mode: int = 0o644, durable: bool = False
) -> Path:
    """Write `data` (text is UTF-8) to `path` by rename; `durable` also fsyncs it first."""
    target = Path(path)
    body = data.encode("utf-8") if isinstance(data, str) else data
    with replacing(target) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            if durable:
                f.flush()
                os.fsync(f.fileno())
    return target


def write_json(path: str | os.PathLike[str], doc: Mapping[str, Any], **kwargs: Any) -> Path:
    """`doc` as JSON (one trailing newline), by rename; `kwargs` go to write_atomic."""
    return write_atomic(path, json.dumps(doc, indent=1, default=str) + "\n", **kwargs)
