"""The children's scaffold (meshsim.serving) in a real child process: this file run as a script
serves one app through `run_child`, and the tests signal it, take its port or its folder away."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from meshcore.errors import ConfigError
from meshsim.serving import Served, run_child, serve_sites

pytestmark = pytest.mark.integration  # every test binds 127.0.0.1 or starts a child


# -- the child -------------------------------------------------------------------------------
async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def _start(args: argparse.Namespace) -> Served[str]:
    if args.bad:
        raise ConfigError("--bad: refused as asked; leave it out")
    app = web.Application()
    app.router.add_get("/", _hello)
    return await serve_sites(
        "hello state",
        {"hello": app},
        port=args.port,
        close_after=[lambda: (args.ports_file.parent / "closed").write_text("closed")],
    )


def _child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports-file", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bad", action="store_true")
    args = parser.parse_args(argv)
    return run_child(
        "hello",
        lambda: _start(args),
        ports_file=args.ports_file,
        published=lambda served: {"sites": dict(served.ports)},
    )


# -- the tests -------------------------------------------------------------------------------
def _spawn(ports_file: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "--ports-file", str(ports_file), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def _published(proc: subprocess.Popen[bytes], ports_file: Path) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while not ports_file.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline, "the child did not publish its ports file"
        time.sleep(0.02)
    doc: dict[str, object] = json.loads(ports_file.read_text())
    return doc


def _finished(proc: subprocess.Popen[bytes]) -> tuple[int, list[str]]:
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err.decode().splitlines()


def test_the_bound_port_is_published_with_the_pid_and_answers(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    ports_file = tmp_path / "ports.json"
    children.append(proc := _spawn(ports_file))
    doc = _published(proc, ports_file)
    port = doc["port"]
    assert doc == {"pid": proc.pid, "port": port, "sites": {"hello": port}}
    assert isinstance(port, int) and port > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
        assert resp.read() == b"hello"
    assert [p.name for p in tmp_path.iterdir()] == ["ports.json"]  # no temporary file left


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_closes_everything_and_exits_0_promptly(
    signum: int, tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    ports_file = tmp_path / "ports.json"
    children.append(proc := _spawn(ports_file))
    _published(proc, ports_file)
    assert not (tmp_path / "closed").exists()
    began = time.monotonic()
    os.kill(proc.pid, signum)
    code, _ = _finished(proc)
    assert code == 0
    assert time.monotonic() - began < 3
    assert (tmp_path / "closed").read_text() == "closed"  # the closers ran: an orderly stop


def test_a_ports_file_in_a_missing_folder_is_one_line_and_exit_2(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    ports_file = tmp_path / "nowhere" / "ports.json"
    children.append(proc := _spawn(ports_file))
    assert _finished(proc) == (
        2,
        [f"{ports_file}: its folder does not exist; create it or choose another --ports-file"],
    )


def test_a_busy_port_is_one_line_and_exit_1(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    ports_file = tmp_path / "ports.json"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        children.append(proc := _spawn(ports_file, "--port", str(busy)))
        code, lines = _finished(proc)
    assert code == 1
    (line,) = lines
    assert line.startswith("hello: ") and str(busy) in line
    assert not ports_file.exists()
    assert (tmp_path / "closed").read_text() == "closed"  # what did start was closed


def test_bad_input_is_its_one_line_and_exit_2(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    ports_file = tmp_path / "ports.json"
    children.append(proc := _spawn(ports_file, "--bad"))
    assert _finished(proc) == (2, ["--bad: refused as asked; leave it out"])
    assert not ports_file.exists()


def test_sites_get_their_own_ports_and_close_before_the_closers() -> None:
    order: list[str] = []

    async def main() -> None:
        apps = {}
        for name in ("a", "b"):
            app = web.Application()
            app.router.add_get("/", _hello)
            app.on_shutdown.append(lambda app, name=name: _note(order, f"shutdown {name}"))
            apps[name] = app
        closers = [lambda: order.append("closer"), lambda: _note(order, "async closer")]
        served = await serve_sites("state", apps, close_after=closers)
        assert served.state == "state"
        assert list(served.ports) == ["a", "b"] and len(set(served.ports.values())) == 2
        assert served.port == served.ports["a"]
        assert served.url("b") == f"http://127.0.0.1:{served.ports['b']}"
        await served.close()
        await served.close()  # a second close does nothing

    asyncio.run(asyncio.wait_for(main(), 20))
    assert order == ["shutdown a", "shutdown b", "closer", "async closer"]


async def _note(order: list[str], what: str) -> None:
    order.append(what)


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
