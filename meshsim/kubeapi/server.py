"""The embedded Kubernetes API: aiohttp app, URL routing, and `serve()`.

Serves what the `kubernetes` Python client and kubectl need for Istio's VirtualService,
DestinationRule, Gateway (networking.istio.io v1, v1beta1, v1alpha3) and Telemetry, plus
read-only namespaces, pods, services and endpoints. It binds 127.0.0.1 and accepts any bearer
token: it stands in for a cluster on the local machine, not for its access control.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from meshcore.errors import ManifestError
from meshsim.kubeapi import discovery, openapi, status
from meshsim.kubeapi.core import CoreObjects
from meshsim.kubeapi.crds import CRD_FILE, Catalog, ResourceType, load_catalog
from meshsim.kubeapi.objects import ObjectHandlers, Target, reply
from meshsim.kubeapi.schema import check_metadata, check_object
from meshsim.kubeapi.selectors import matcher
from meshsim.kubeapi.store import OnChange, Store, Validate, no_change, no_validate
from meshsim.kubeapi.tables import AGE_COLUMN, pod_columns, table, wants_table
from meshsim.serving import Served, serve_sites

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _no_route() -> status.ApiError:
    return status.ApiError(404, "NotFound", "the server could not find the requested resource")


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except status.ApiError as exc:
        return reply(exc.to_status(), exc.code)
    except web.HTTPException:
        raise
    except Exception as exc:  # one bad request must not take the API down
        log.exception("kubeapi: %s %s failed", request.method, request.path)
        err = status.ApiError(500, "InternalError", f"Internal error occurred: {exc}")
        return reply(err.to_status(), 500)


class KubeApp:
    """Routing of every served URL to discovery, core or custom-object handlers."""

    def __init__(self, catalog: Catalog, store: Store, core: CoreObjects) -> None:
        self.catalog = catalog
        self.store = store
        self.core = core
        self.objects = ObjectHandlers(store, core)

    def build(self) -> web.Application:
        app = web.Application(middlewares=[_errors])
        app.on_shutdown.append(self._end_watches)
        app.router.add_get("/version", self._version)
        app.router.add_get("/api", self._api)
        app.router.add_route("*", "/api/v1{tail:.*}", self._core)
        app.router.add_get("/apis", self._apis)
        app.router.add_get("/openapi/v3", self._openapi_root)
        app.router.add_get("/openapi/v3/apis/{group}/{version}", self._openapi_gv)
        app.router.add_get("/openapi/v2", openapi.serve_v2)
        app.router.add_post(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", self._access_review
        )
        app.router.add_route("*", "/apis/{tail:.+}", self._custom)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        return app

    async def _end_watches(self, app: web.Application) -> None:
        self.store.close_watches()

    async def _version(self, request: web.Request) -> web.Response:
        return reply(discovery.version_info())

    async def _api(self, request: web.Request) -> web.Response:
        return reply(discovery.core_versions(request.host))

    async def _apis(self, request: web.Request) -> web.Response:
        return reply(discovery.group_list(self.catalog))

    async def _openapi_root(self, request: web.Request) -> web.Response:
        return reply(openapi.root_doc(self.catalog))

    async def _openapi_gv(self, request: web.Request) -> web.Response:
        info = request.match_info
        doc = openapi.group_version_doc(self.catalog, info["group"], info["version"])
        if doc is None:
            raise _no_route()
        return reply(doc)

    async def _access_review(self, request: web.Request) -> web.Response:
        """`kubectl auth can-i` and preflight ask what they may do: anything, here (the API
        accepts any token on 127.0.0.1), for the resource types it serves."""
        review = await request.json()
        attrs = (review.get("spec") or {}).get("resourceAttributes") or {}
        served = attrs.get("group") in {t.group for t in self.catalog.types} | {""}
        status: dict[str, Any] = {"allowed": served}
        if not served:
            status["reason"] = f"the embedded API does not serve {attrs.get('group')}"
        return reply({**review, "status": status}, 201)

    async def _unknown(self, request: web.Request) -> web.Response:
        raise _no_route()

    async def _core(self, request: web.Request) -> web.Response:
        parts = [p for p in request.match_info["tail"].split("/") if p]
        if not parts:
            return reply(discovery.core_resources())
        if request.method != "GET":
            raise status.method_not_allowed()
        namespace: str | None = None
        if parts[0] == "namespaces" and len(parts) >= 3:
            namespace, parts = parts[1], parts[2:]
        if parts[0] not in self.core.types or len(parts) > 2:
            raise _no_route()
        ctype = self.core.types[parts[0]]
        if request.query.get("watch") in ("true", "1"):
            raise status.method_not_allowed()
        if len(parts) == 2:
            obj = self.core.get(ctype.plural, namespace if ctype.namespaced else None, parts[1])
            if obj is None:
                raise status.not_found(ctype.plural, "", parts[1])
            return reply(obj)
        select = matcher(request.query.get("labelSelector"), request.query.get("fieldSelector"))
        items = [o for o in self.core.list_objects(ctype.plural, namespace) if select(o)]
        if wants_table(request.headers.get("Accept", "")):
            columns = pod_columns() if ctype.plural == "pods" else [AGE_COLUMN]
            return reply(
                table(
                    items,
                    columns,
                    str(self.core.resource_version),
                    request.query.get("includeObject", ""),
                )
            )
        for o in items:
            o.pop("apiVersion", None)
        return reply(
            {
                "apiVersion": "v1",
                "kind": f"{ctype.kind}List",
                "metadata": {"resourceVersion": str(self.core.resource_version)},
                "items": [{"kind": ctype.kind, "apiVersion": "v1", **o} for o in items],
            }
        )

    async def _custom(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.match_info["tail"].split("/") if p]
        group = parts[0]
        if len(parts) == 1:
            doc = discovery.group(self.catalog, group)
            if doc is None:
                raise _no_route()
            return reply(doc)
        version = parts[1]
        if len(parts) == 2:
            doc = discovery.group_version_resources(self.catalog, group, version)
            if doc is None:
                raise _no_route()
            return reply(doc)
        rest = parts[2:]
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        rtype = self.catalog.by_plural(group, rest[0])
        if rtype is None or version not in rtype.versions or len(rest) > 2:
            raise _no_route()
        if not rtype.namespaced:
            if namespace is not None:
                raise _no_route()
            namespace = ""  # the store's namespace of a cluster-scoped object
        if len(rest) == 2:
            if namespace is None:
                raise _no_route()
            return await self.objects.item(request, Target(rtype, version, namespace, rest[1]))
        return await self.objects.collection(request, Target(rtype, version, namespace, None))


def _initial(
    catalog: Catalog, objects: Iterable[dict[str, Any]]
) -> list[tuple[ResourceType, dict[str, Any]]]:
    out = []
    for obj in objects:
        api_version = str(obj.get("apiVersion", ""))
        group, _, version = api_version.rpartition("/")
        meta = obj.get("metadata") or {}
        ref = f"{obj.get('kind', '?')} {meta.get('namespace', 'default')}/{meta.get('name', '?')}"
        rtype = catalog.by_kind(group, str(obj.get("kind")))
        if rtype is None or version not in rtype.versions:
            raise ManifestError(
                "<kubeapi>",
                ref,
                "apiVersion",
                f"{api_version} {obj.get('kind')} is not served; use one of "
                + ", ".join(
                    f"{t.api_version(v)} {t.kind}" for t in catalog.types for v in t.versions[:1]
                ),
            )
        scoped = {"namespace": meta.get("namespace") or "default"} if rtype.namespaced else {}
        item = dict(obj, metadata={**{k: v for k, v in meta.items() if k != "namespace"}, **scoped})
        for field, problem in check_metadata(item) + check_object(rtype, version, item):
            raise ManifestError("<kubeapi>", ref, field, problem)
        out.append((rtype, item))
    return out


async def serve(
    *,
    port: int = 0,
    objects: Iterable[dict[str, Any]] = (),
    validate: Validate = no_validate,
    on_change: OnChange = no_change,
    core_objects: Iterable[dict[str, Any]] = (),
    crd_file: str | Path = CRD_FILE,
) -> Served[Store]:
    """Serve the embedded API on 127.0.0.1 in the running loop; `state` is the object store.
    `objects` are stored without on_change; closing ends open watches.

    Raises ManifestError when an initial object fails its schema or the validate hook.
    """
    catalog = load_catalog(crd_file)
    initial = _initial(catalog, objects)
    namespaces = {o["metadata"]["namespace"] for t, o in initial if t.namespaced}
    core = CoreObjects(core_objects, namespaces=namespaces)
    store = Store(validate=validate, on_change=on_change, first_rv=core.resource_version)
    for warning in store.load(initial):
        log.warning("kubeapi: initial objects: %s", warning)
    app = KubeApp(catalog, store, core).build()
    return await serve_sites(store, {"kubeapi": app}, port=port, shutdown_timeout_s=2.0)
