"""The benchmarks' /proc readings, against processes whose CPU use is known."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.procfs import cpu_s, tree_cpu_s

pytestmark = pytest.mark.integration

# A parent that sleeps while its child spins for 0.6 s of CPU, then both sleep until killed.
SPIN = (
    "import time\n"
    "end = time.process_time() + 0.6\n"
    "while time.process_time() < end: pass\n"
    "open(__import__('sys').argv[1], 'w').close()\n"
    "time.sleep(60)\n"
)
PARENT = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]])\n"
    "time.sleep(60)\n"
)


def test_a_tree_counts_the_cpu_of_a_child_its_root_did_not_use(tmp_path: Path) -> None:
    done = tmp_path / "spun"
    proc = subprocess.Popen([sys.executable, "-c", PARENT, SPIN, str(done)], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not done.exists():
            assert time.monotonic() < deadline, "the child never finished spinning"
            time.sleep(0.05)
        own, tree = cpu_s(proc.pid), tree_cpu_s(proc.pid)
        assert own is not None and own < 0.3
        assert tree - own >= 0.6 - 0.02  # the child's spin (clock ticks of 10 ms)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the child too
        proc.wait()
