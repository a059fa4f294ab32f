"""Helpers for integration tests: a bounded concurrent HTTP client aimed at 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Tally:
    """What came back: status codes and the value of one response header, counted."""

    statuses: Counter[int] = field(default_factory=Counter)
    header: Counter[str | None] = field(default_factory=Counter)
    n: int = 0


async def _hammer(
    url: str, n: int, concurrency: int, header: str, headers: Mapping[str, str] | None
) -> Tally:
    assert url.startswith("http://127.0.0.1:"), "tests only ever target the loopback"
    tally = Tally()
    remaining = n
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                async with session.get(url, headers=headers, allow_redirects=False) as resp:
                    await resp.read()
                    tally.statuses[resp.status] += 1
                    tally.header[resp.headers.get(header)] += 1
                    tally.n += 1

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 120)
    return tally


def hammer(
    url: str,
    n: int,
    *,
    concurrency: int = 32,
    header: str = "x-version",
    headers: Mapping[str, str] | None = None,
) -> Tally:
    """Send exactly `n` GETs (bounded in count and time) and tally the answers."""
    return asyncio.run(_hammer(url, n, concurrency, header, headers))


def canary_against(mesh: Any, plan: Path, results: Path, *args: str) -> list[str]:
    """`locust -f scenarios/canary.py --headless` with a plan, driving a running embedded mesh
    as a cluster (`--mesh kubernetes --host --kubeconfig`), as a user types it."""
    return [
        sys.executable, "-m", "locust", "-f", str(REPO / "scenarios" / "canary.py"), "--headless",
        "--plan", str(plan), "--results-dir", str(results), "--mesh", "kubernetes",
        "--host", mesh.gateway_url, "--kubeconfig", str(mesh.kubeconfig), *args,
    ]  # fmt: skip


Kubectl = Callable[..., tuple[int, str]]


def kubectl_runner(api_url: str, tmp: Path) -> Kubectl:
    """The real kubectl (v1.32, on PATH: a test fails without it) aimed at `api_url`, with its
    own kubeconfig and cache under `tmp`: `run(*args, stdin=...)` -> (exit code, output)."""
    from meshsim.kubeapi.kubeconfig import write_kubeconfig

    found = shutil.which("kubectl")
    assert found is not None, "kubectl (v1.32) is not on PATH: these tests run the real one"
    env = {**os.environ, "KUBECONFIG": str(write_kubeconfig(tmp / "config", api_url))}
    base = [found, "--cache-dir", str(tmp / "cache"), "--request-timeout", "10s"]

    def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
        done = subprocess.run([*base, *args], env=env, input=stdin, capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    return run


def local_processes(n: int) -> tuple[str, ...]:
    """Locust's `--processes n`, its master bound to the loopback on a free port of its own
    (Locust binds every address's port 5557 by default, which two runs at once share): the
    benchmarks' own (`benchmarks.distributed.processes_args`)."""
    from benchmarks.distributed import processes_args

    return processes_args(n)


def start_in_session(cmd: list[str], log_path: Path, cwd: Path = REPO) -> subprocess.Popen[bytes]:
    """`cmd` run from `cwd` (the repository) in a session of its own (so it and whatever it
    starts are stopped as one group), its output into `log_path`."""
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def finish_in_session(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Its exit code; past `timeout_s` the whole session is SIGKILLed and TimeoutExpired raised."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def within_se(count: int, n: int, share: float, k: float = 5.0) -> bool:
    """`count` of `n` independent draws is within `k` standard errors of `share`: a true share
    misses at 5 (the default) once in 1.7 million (at 3, once in 370: too often for a suite
    of a dozen such checks run on every change)."""
    return abs(count / n - share) <= k * math.sqrt(share * (1 - share) / n)


@contextlib.contextmanager
def mesh_up(
    *args: str, state_dir: Path
) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], dict[str, str]]]:
    """`meshload mesh up ARGS` in a session of its own, its state in `state_dir`: the process,
    the endpoints it printed before `ready` ({name: url}) and its environment; at the end
    SIGTERM (if it still runs) and its pipes closed."""
    env = {**os.environ, "MESHLOAD_STATE_DIR": str(state_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "meshload.cli", "mesh", "up", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    urls: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ready"):
                break
            name, _, url = line.strip().partition(" ")
            urls[name] = url
        yield proc, urls, env
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=20)  # also closes the pipes
