"""Tests: the embedded API on its own event loop in a background thread, for synchronous code.

Locust users, the mesh's synchronous code and tests talk to it over HTTP only; the hooks run on
the API's thread, so a caller whose hooks touch shared state must make that state thread-safe.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from meshsim.kubeapi.server import serve
from meshsim.kubeapi.store import Store
from meshsim.serving import Served


class ThreadedServer:
    """`serve(**kwargs)` running in a daemon thread; use as a context manager or call close()."""

    def __init__(self, **serve_kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._running: Served[Store] | None = None
        self._thread = threading.Thread(
            target=self._run, args=(serve_kwargs,), name="meshload-kubeapi", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _run(self, serve_kwargs: dict[str, Any]) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._running = self._loop.run_until_complete(serve(**serve_kwargs))
        except BaseException as exc:  # handed to the constructor's caller
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    @property
    def running(self) -> Served[Store]:
        assert self._running is not None
        return self._running

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def url(self) -> str:
        return self.running.url()

    def objects(self) -> list[dict[str, Any]]:
        """The stored objects, read on the API's own loop."""
        future = asyncio.run_coroutine_threadsafe(_objects(self.running), self._loop)
        return future.result(timeout=10)

    def close(self, timeout_s: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.running.close(), self._loop).result(timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)

    def __enter__(self) -> ThreadedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _objects(running: Served[Store]) -> list[dict[str, Any]]:
    return running.state.all_objects()


def serve_in_thread(**serve_kwargs: Any) -> ThreadedServer:
    """Start the embedded API in a background thread; raises what `serve` raises."""
    return ThreadedServer(**serve_kwargs)
