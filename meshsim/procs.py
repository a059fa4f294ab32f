"""Child processes of the embedded mesh: started in their own session, stopped by PID."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshcore.errors import BackendError


class Child:
    """A process we started, with its log file, stopped by its PID and nothing else."""

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        # A session of its own: a shell or a Locust process group that exits must not take
        # the mesh down with it, and Ctrl-C reaches the children only through us.
        self.proc = subprocess.Popen(
            list(argv),
            preexec_fn=_die_with_parent,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, "rb") as f:
                last = deque(f, maxlen=lines)
        except OSError:
            return ""
        return " | ".join(line.decode("utf-8", "replace").rstrip() for line in last)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
            except ProcessLookupError:
                pass
        self._log.close()

    def died_error(self) -> BackendError:
        return BackendError(
            f"{self.name} exited unexpectedly (code {self.proc.returncode}); "
            f"last log lines: {self.tail()}"
        )


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM us when our parent dies, so a Locust or a
    `mesh up` killed with SIGKILL leaves no orphaned server behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: children are still stopped by PID on every orderly exit


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_for_json(path: Path, child: Child, timeout_s: float = 20.0) -> dict[str, Any]:
    """Wait for a child to publish its ports file (written by atomic rename) and read it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        if not child.alive():
            raise child.died_error()
        time.sleep(0.02)
    raise BackendError(
        f"{child.name} did not start within {timeout_s:.0f} s; last log lines: {child.tail()}"
    )


def start_tracestore(workdir: Path) -> tuple[Child, int]:
    """The trace store as the mesh runs it: a child with its ports file, spill folder and log
    in `workdir`; returns it once its port is known (a failure to start stops it)."""
    ports_file = workdir / "tracestore.json"
    argv = python_module(
        "meshsim.tracestore", "--ports-file", str(ports_file), "--spill-dir", str(workdir / "spans")
    )
    child = Child("tracestore", argv, workdir / "tracestore.log")
    try:
        return child, int(wait_for_json(ports_file, child)["port"])
    except BaseException:
        child.stop()
        raise
