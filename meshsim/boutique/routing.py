"""A workload's routes on aiohttp's low-level server: exact paths, one-segment prefixes, any.

Why not `web.Application`: measured under P2, its per-request machinery (router coroutines,
match info, the middleware chain, the response-prepare signal) cost about a tenth of the
workloads' CPU, and every workload serves a handful of fixed paths that a dict routes. The
answers are aiohttp's router's: 404 for an unknown path, 405 with `Allow` for a known path
asked with another method, HEAD served by the GET handler (aiohttp drops the body). Every
answer, those included, carries the `x-workload` header.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]

WORKLOAD_HEADER = "x-workload"
_SEGMENT_STOP = frozenset("/{}")  # what aiohttp's `{name}` placeholder never matches


class Routes:
    """The handlers of one workload by path and method; call it as the server's handler."""

    def __init__(self, workload: str) -> None:
        self.workload = workload
        self._exact: dict[str, dict[str, Handler]] = {}
        self._prefixes: list[tuple[str, dict[str, Handler]]] = []
        self._any: Handler | None = None

    def add(self, method: str, path: str, handler: Handler, *, allow_head: bool = True) -> None:
        """`path` exactly; a path ending in `/{}` matches one non-empty segment there."""
        if path.endswith("/{}"):
            prefix = path[:-2]
            methods = next((m for p, m in self._prefixes if p == prefix), None)
            if methods is None:
                methods = {}
                self._prefixes.append((prefix, methods))
        else:
            methods = self._exact.setdefault(path, {})
        methods[method] = handler
        if method == "GET" and allow_head:
            methods["HEAD"] = handler

    def add_any(self, handler: Handler) -> None:
        """Every path and method that no other route takes."""
        self._any = handler

    def _methods(self, path: str) -> dict[str, Handler] | None:
        methods = self._exact.get(path)
        if methods is not None:
            return methods
        for prefix, methods in self._prefixes:
            if path.startswith(prefix):
                rest = path[len(prefix) :]
                if rest and _SEGMENT_STOP.isdisjoint(rest):
                    return methods
        return None

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        methods = self._methods(request.path)
        handler = methods.get(request.method) if methods is not None else None
        try:
            if handler is not None:
                response = await handler(request)
            elif self._any is not None:
                response = await self._any(request)
            elif methods is not None:
                raise web.HTTPMethodNotAllowed(request.method, methods)
            else:
                raise web.HTTPNotFound()
        except web.HTTPException as e:
            e.headers[WORKLOAD_HEADER] = self.workload
            raise
        response.headers[WORKLOAD_HEADER] = self.workload
        return response


def path_segment(request: web.BaseRequest) -> str:
    """The segment a `/{}` route matched: the path's last one."""
    return request.path.rpartition("/")[2]
