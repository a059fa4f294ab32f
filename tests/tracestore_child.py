"""The trace store as a child process for integration tests: started, waited for, stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def wait_for(path: Path, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return json.loads(path.read_text())
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear within {timeout_s} s")


def start_store(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m meshsim.tracestore ARGS` logging to tmp_path/tracestore.log; the process and
    its URL once it listens."""
    ports = tmp_path / "tracestore.json"
    with open(tmp_path / "tracestore.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "meshsim.tracestore", "--ports-file", str(ports), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        info = wait_for(ports, timeout_s=20)
    except AssertionError:
        stop(proc)
        raise
    assert info["pid"] == proc.pid
    return proc, f"http://127.0.0.1:{info['port']}"


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
