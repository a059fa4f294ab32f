"""What every child process of the embedded mesh does, written once.

    def main(argv=None) -> int:
        args = parser.parse_args(argv)
        return run_child("tracestore", lambda: serve(...), ports_file=args.ports_file)

`serve_sites` starts aiohttp apps on 127.0.0.1 and returns a `Served`: their ports, the
package's own object (`state`) and what to close after the sites. `run_child` is the child's
main: logging, SIGTERM/SIGINT, the ports file `{"pid": N, "port": P, ...}` (by rename, so the
parent's `procs.wait_for_json` never reads half of it) and the exit codes:

    OK 0           stopped by SIGTERM or SIGINT
    FAILED 1       an OSError (a port already taken, a folder not writable) or a BackendError
    BAD_INPUT 2    any other MeshloadError (bad input), or a ports file in a missing folder

each failure as one line on stderr.

A child never outlives its parent: `procs.Child` asks Linux to SIGTERM it when the parent dies
(PR_SET_PDEATHSIG, set before exec), which is an orderly stop like any other SIGTERM.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from aiohttp import web

from meshcore.errors import ConfigError, MeshloadError
from meshcore.exitcodes import ExitCode
from meshcore.files import write_json

__all__ = ["Served", "run_child", "serve_sites"]

HOST = "127.0.0.1"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

log = logging.getLogger(__name__)
T = TypeVar("T")
Closer = Callable[[], Awaitable[None] | None]


class Served(Generic[T]):
    """Sites served on 127.0.0.1 and what to close after them.

    `state` is the package's own object (the trace store's SpanStore, the Kubernetes API's
    Store, the boutique's Runtime); `ports` maps each site's name to its port, in start order.
    """

    def __init__(self, state: T, *, close_after: Iterable[Closer] = ()) -> None:
        self.state = state
        self._ports: dict[str, int] = {}
        self.ports: Mapping[str, int] = MappingProxyType(self._ports)
        self._runners: list[web.BaseRunner] = []
        self._close_after = list(close_after)

    @property
    def port(self) -> int:
        """The first site's port."""
        for port in self._ports.values():
            return port
        raise LookupError("no site is served")

    def url(self, site: str | None = None) -> str:
        """`http://127.0.0.1:PORT` of `site` (default: the first)."""
        return f"http://{HOST}:{self.port if site is None else self._ports[site]}"

    async def _start(
        self, site: str, app: web.Application, port: int, shutdown_timeout_s: float
    ) -> None:
        # No access log: formatting a line per request would cost more than the request.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout_s)
        await self.start_runner(site, runner, port)

    async def start_runner(self, site: str, runner: web.BaseRunner, port: int = 0) -> None:
        """Serve `runner` (an aiohttp Application's, or a low-level server's) as `site`."""
        if site in self._ports:
            raise ConfigError(f"two sites are named {site!r}; give each its own name")
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, HOST, port).start()
        self._ports[site] = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Stop every site (each app's on_shutdown ends its long requests), then the closers."""
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()
        closers, self._close_after = self._close_after, []
        for closer in closers:
            result = closer()
            if inspect.isawaitable(result):
                await result


async def serve_sites(
    state: T,
    apps: Mapping[str, web.Application],
    *,
    port: int = 0,
    close_after: Iterable[Closer] = (),
    shutdown_timeout_s: float = 60.0,
) -> Served[T]:
    """Start each app on 127.0.0.1, the first on `port` (0: a free one), the others on free
    ones; `shutdown_timeout_s` bounds how long close() waits for requests in flight.

    When one fails to start, what started is closed (closers too) and the error raised.
    """
    served = Served(state, close_after=close_after)
    try:
        for site, app in apps.items():
            await served._start(site, app, port, shutdown_timeout_s)
            port = 0
    except BaseException:
        await served.close()
        raise
    return served


def run_child(
    name: str,
    start: Callable[[], Awaitable[Served[T]]],
    *,
    ports_file: Path | None = None,
    published: Callable[[Served[T]], Mapping[str, Any]] | None = None,
    log_level: int = logging.INFO,
) -> ExitCode:
    """A child's main: `start()`, publish the ports file (`published` adds keys to it), serve
    until SIGTERM or SIGINT, close. `name` begins the one line of an OSError."""
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    if ports_file is not None and not ports_file.parent.is_dir():
        return _fail(
            ExitCode.BAD_INPUT,
            f"{ports_file}: its folder does not exist; create it or choose another --ports-file",
        )
    try:
        asyncio.run(_serve_until_stopped(name, start, ports_file, published))
    except MeshloadError as e:
        # A BackendError is also an OSError: a failure, not bad input.
        return _fail(ExitCode.FAILED if isinstance(e, OSError) else ExitCode.BAD_INPUT, str(e))
    except OSError as e:
        return _fail(ExitCode.FAILED, f"{name}: {e}")
    return ExitCode.OK


async def _serve_until_stopped(
    name: str,
    start: Callable[[], Awaitable[Served[T]]],
    ports_file: Path | None,
    published: Callable[[Served[T]], Mapping[str, Any]] | None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    served = await start()
    try:
        if ports_file is not None:
            extra = published(served) if published is not None else {}
            write_json(ports_file, {"pid": os.getpid(), "port": served.port, **extra})
        if served.ports:
            log.info("%s: serving %s", name, ", ".join(f"{s}={p}" for s, p in served.ports.items()))
        await stop.wait()
    finally:
        await served.close()


def _fail(code: ExitCode, line: str) -> ExitCode:
    print(line, file=sys.stderr)
    return code
