"""The custom-object verbs: list, watch, get, create, replace, patch (server-side apply too),
delete, deletecollection.

Each write goes schema check -> managedFields (`apply_patch`) -> store (semantic hook, commit,
on_change) and answers what the
real API server answers, including `Warning: 299 - "..."` headers for the hook's warnings.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from meshcore.errors import ConfigError, ManifestError
from meshsim.kubeapi import apply_patch, patch, status
from meshsim.kubeapi.core import CoreObjects
from meshsim.kubeapi.crds import ResourceType
from meshsim.kubeapi.schema import check_metadata, check_object, drop_nulls, prune_object
from meshsim.kubeapi.selectors import Matcher, matcher
from meshsim.kubeapi.store import Event, Store, now_rfc3339
from meshsim.kubeapi.tables import table, wants_table

DEFAULT_WATCH_S = 1800.0  # the real server picks 30-60 min; every watch ends on its own


@dataclass(frozen=True)
class Target:
    """What a custom-object URL names."""

    rtype: ResourceType
    version: str
    namespace: str | None
    name: str | None

    @property
    def api_version(self) -> str:
        return self.rtype.api_version(self.version)


def as_version(obj: dict[str, Any], target: Target) -> dict[str, Any]:
    # The served versions of Istio's CRDs share one schema, so conversion only renames.
    obj["apiVersion"] = target.api_version
    return obj


def warning_header(text: str) -> str:
    one_line = " ".join(text.split())
    return '299 - "' + one_line.replace("\\", "\\\\").replace('"', '\\"') + '"'


def reply(body: dict[str, Any], code: int = 200, warnings: list[str] | None = None) -> web.Response:
    resp = web.json_response(body, status=code)
    for w in warnings or []:
        resp.headers.add("Warning", warning_header(w))
    return resp


class ObjectHandlers:
    """Handlers bound to one store; `server` routes URLs to them."""

    def __init__(self, store: Store, core: CoreObjects) -> None:
        self.store = store
        self.core = core

    async def collection(self, request: web.Request, t: Target) -> web.StreamResponse:
        if request.method == "GET":
            if request.query.get("watch") in ("true", "1"):
                return await self._watch(request, t)
            return self._list(request, t)
        if request.method == "POST" and t.namespace is not None:
            return self._create(request, t, await _body(request))
        if request.method == "DELETE" and t.namespace is not None:
            return self._delete_collection(request, t)
        raise status.method_not_allowed()

    async def item(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.namespace is not None and t.name is not None
        if request.method == "GET":
            obj = self.store.get(t.rtype.group, t.rtype.plural, t.namespace, t.name)
            if obj is None:
                raise status.not_found(t.rtype.plural, t.rtype.group, t.name)
            if wants_table(request.headers.get("Accept", "")):
                return reply(self._table(request, t, [as_version(obj, t)]))
            return reply(as_version(obj, t))
        if request.method == "PUT":
            return self._replace(request, t, await _body(request))
        if request.method == "PATCH":
            return self._patch(request, t, await request.read())
        if request.method == "DELETE":
            return self._delete(request, t, await request.read())
        raise status.method_not_allowed()

    def _select(self, request: web.Request) -> Matcher:
        return matcher(request.query.get("labelSelector"), request.query.get("fieldSelector"))

    def _table(self, request: web.Request, t: Target, objs: list[dict[str, Any]]) -> dict[str, Any]:
        return table(
            objs,
            t.rtype.printer_columns.get(t.version, []),
            str(self.store.resource_version),
            request.query.get("includeObject", ""),
        )

    def _list(self, request: web.Request, t: Target) -> web.Response:
        select = self._select(request)
        items = [
            as_version(o, t)
            for o in self.store.list_objects(t.rtype.group, t.rtype.plural, t.namespace)
            if select(o)
        ]
        if wants_table(request.headers.get("Accept", "")):
            return reply(self._table(request, t, items))
        return reply(
            {
                "apiVersion": t.api_version,
                "kind": f"{t.rtype.kind}List",
                "metadata": {"resourceVersion": str(self.store.resource_version), "continue": ""},
                "items": items,
            }
        )

    def _admit(self, request: web.Request, t: Target, obj: dict[str, Any]) -> list[str]:
        """Schema checks of a candidate object; returns pruning warnings (fieldValidation)."""
        name = (obj.get("metadata") or {}).get("name") or ""
        mode = request.query.get("fieldValidation", "Strict")
        warnings: list[str] = []
        for part in ("spec", "status"):
            if part in obj and part in t.rtype.schemas[t.version].get("properties", {}):
                drop_nulls(t.rtype.schemas[t.version]["properties"][part], obj[part])
        if mode in ("Ignore", "Warn"):
            dropped = prune_object(t.rtype, t.version, obj)
            if mode == "Warn":
                warnings = [f'unknown field "{d}"' for d in dropped]
        causes = check_metadata(obj) + check_object(t.rtype, t.version, obj)
        if causes:
            raise status.invalid(t.rtype.kind, t.rtype.group, name, causes)
        return warnings

    def _check_identity(self, t: Target, obj: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise status.bad_request("the body of the request must be a JSON object")
        if obj.get("kind") != t.rtype.kind or obj.get("apiVersion") != t.api_version:
            raise status.bad_request(
                f"the API version in the data ({obj.get('apiVersion')}) and kind "
                f"({obj.get('kind')}) do not match the expected {t.api_version} {t.rtype.kind}"
            )
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise status.bad_request("metadata must be an object")
        if not t.rtype.namespaced:  # as the API server does: a cluster-scoped object has none
            meta.pop("namespace", None)
            return obj
        if meta.get("namespace") and meta["namespace"] != t.namespace:
            raise status.bad_request(
                "the namespace of the provided object does not match the "
                "namespace sent on the request"
            )
        meta["namespace"] = t.namespace
        return obj

    def _write(
        self,
        request: web.Request,
        t: Target,
        obj: dict[str, Any],
        create: bool,
        code: int,
        applied: bool = False,
    ) -> web.Response:
        warnings = self._admit(request, t, obj)
        if not applied:  # an apply has set managedFields already
            self._track(request, t, obj, create)
        dry_run = request.query.get("dryRun") == "All"
        try:
            if create:
                result, hook_warnings = self.store.create(t.rtype, obj, dry_run=dry_run)
            else:
                result, hook_warnings = self.store.update(t.rtype, obj, dry_run=dry_run)
        except ConfigError as exc:
            raise _denied(t, obj, exc) from None
        return reply(as_version(result, t), code, warnings + hook_warnings)

    def _track(self, request: web.Request, t: Target, obj: dict[str, Any], create: bool) -> None:
        assert t.namespace is not None
        name = obj["metadata"]["name"]
        live = None if create else self.store.get(t.rtype.group, t.rtype.plural, t.namespace, name)
        manager = apply_patch.manager_of(request.query, request.headers.get("User-Agent", ""))
        fields = apply_patch.updated(
            t.rtype, t.version, live, obj, manager=manager, now=now_rfc3339()
        )
        obj["metadata"]["managedFields"] = fields

    def _apply(self, request: web.Request, t: Target, raw: bytes) -> web.Response:
        assert t.namespace is not None and t.name is not None
        config, manager, force = apply_patch.parse(raw, request.query, t.name)
        config = self._check_identity(t, config)
        live = self.store.get(t.rtype.group, t.rtype.plural, t.namespace, t.name)
        if live is None and t.rtype.namespaced and not self.core.has_namespace(t.namespace):
            raise status.namespace_not_found(t.namespace)
        obj = apply_patch.apply(
            t.rtype,
            t.version,
            None if live is None else as_version(live, t),
            config,
            manager=manager,
            force=force,
            now=now_rfc3339(),
        )
        code = 201 if live is None else 200
        return self._write(request, t, obj, create=live is None, code=code, applied=True)

    def _create(self, request: web.Request, t: Target, body: Any) -> web.Response:
        obj = self._check_identity(t, body)
        assert t.namespace is not None
        if t.rtype.namespaced and not self.core.has_namespace(t.namespace):
            raise status.namespace_not_found(t.namespace)
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
            meta["name"] = f"{meta['generateName']}{suffix}"
        return self._write(request, t, obj, create=True, code=201)

    def _replace(self, request: web.Request, t: Target, body: Any) -> web.Response:
        obj = self._check_identity(t, body)
        if obj["metadata"].get("name") != t.name:
            raise status.bad_request(
                f"the name of the object ({obj['metadata'].get('name')}) "
                f"does not match the name on the URL ({t.name})"
            )
        return self._write(request, t, obj, create=False, code=200)

    def _patch(self, request: web.Request, t: Target, raw: bytes) -> web.Response:
        assert t.namespace is not None and t.name is not None
        ctype = request.content_type
        if ctype == patch.APPLY:
            return self._apply(request, t, raw)
        if ctype not in (patch.MERGE, patch.JSON_PATCH):
            raise status.unsupported_patch(ctype)
        current = self.store.get(t.rtype.group, t.rtype.plural, t.namespace, t.name)
        if current is None:
            raise status.not_found(t.rtype.plural, t.rtype.group, t.name)
        try:
            body = json.loads(raw)
        except ValueError:
            raise status.bad_request("the patch is not valid JSON") from None
        as_version(current, t)
        if ctype == patch.MERGE:
            patched = patch.merge_patch(current, body)
        else:
            patched = patch.json_patch(current, body)
        if not isinstance(patched, dict):
            raise status.bad_request("the patched object is not a JSON object")
        patched = self._check_identity(t, patched)
        if patched["metadata"].get("name") != t.name:
            raise status.bad_request("a patch cannot change metadata.name")
        return self._write(request, t, patched, create=False, code=200)

    def _delete(self, request: web.Request, t: Target, raw: bytes) -> web.Response:
        assert t.namespace is not None and t.name is not None
        pre: dict[str, Any] = {}
        if raw.strip():
            try:
                options = json.loads(raw)
            except ValueError:
                raise status.bad_request("DeleteOptions is not valid JSON") from None
            pre = (options or {}).get("preconditions") or {}
        gone = self.store.delete(
            t.rtype,
            t.namespace,
            t.name,
            precondition_rv=pre.get("resourceVersion"),
            precondition_uid=pre.get("uid"),
            dry_run=request.query.get("dryRun") == "All",
        )
        return reply(status.success(t.name, t.rtype.group, t.rtype.plural, gone["metadata"]["uid"]))

    def _delete_collection(self, request: web.Request, t: Target) -> web.Response:
        assert t.namespace is not None
        select = self._select(request)
        dry_run = request.query.get("dryRun") == "All"
        gone = [
            self.store.delete(t.rtype, t.namespace, o["metadata"]["name"], dry_run=dry_run)
            for o in self.store.list_objects(t.rtype.group, t.rtype.plural, t.namespace)
            if select(o)
        ]
        return reply(
            {
                "apiVersion": t.api_version,
                "kind": f"{t.rtype.kind}List",
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": [as_version(o, t) for o in gone],
            }
        )

    async def _watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        select = self._select(request)
        render: Render = lambda obj: obj  # noqa: E731
        if wants_table(request.headers.get("Accept", "")):
            # `kubectl get -w` asks for each event's object as a one-row Table.
            render = lambda obj: self._table(request, t, [obj])  # noqa: E731
        rv_text = request.query.get("resourceVersion") or ""
        if rv_text and not rv_text.isdigit():
            raise status.bad_request(f'resourceVersion "{rv_text}" is not a number')
        timeout_s = float(request.query.get("timeoutSeconds") or DEFAULT_WATCH_S)
        watcher, backlog = self.store.watch(
            t.rtype.group, t.rtype.plural, t.namespace, int(rv_text) if rv_text else None
        )
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        deadline = time.monotonic() + timeout_s
        try:
            for event in backlog:
                await _send(resp, event, select, t, render)
            while (left := deadline - time.monotonic()) > 0:
                try:
                    next_event = await asyncio.wait_for(watcher.queue.get(), timeout=left)
                except TimeoutError:
                    break
                if next_event is None:
                    break
                await _send(resp, next_event, select, t, render)
        except ConnectionResetError:
            pass
        finally:
            self.store.unwatch(watcher)
        return resp


Render = Callable[[dict[str, Any]], dict[str, Any]]


async def _send(
    resp: web.StreamResponse, event: Event, select: Matcher, t: Target, render: Render
) -> None:
    now, before = select(event.obj), event.prev is not None and select(event.prev)
    kind = event.type
    if kind == "MODIFIED" and now != before:
        # Leaving or entering the selection reads as a deletion or an addition to this watcher.
        kind = "ADDED" if now else "DELETED"
    elif not now and not (kind == "DELETED" and before):
        return
    obj = render(as_version(dict(event.obj), t))
    line = json.dumps({"type": kind, "object": obj}, separators=(",", ":")) + "\n"
    await resp.write(line.encode())


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError:
        raise status.bad_request("the body of the request is not valid JSON") from None


def _denied(t: Target, obj: dict[str, Any], exc: ConfigError) -> status.ApiError:
    """The semantic hook's refusal, worded as Istio's validating webhook words it."""
    name = (obj.get("metadata") or {}).get("name") or ""
    field = exc.field if isinstance(exc, ManifestError) else ""
    message = f'admission webhook "validation.istio.io" denied the request: {exc}'
    return status.ApiError(
        422,
        "Invalid",
        message,
        {
            "name": name,
            "group": t.rtype.group,
            "kind": t.rtype.kind,
            "causes": [{"reason": "FieldValueInvalid", "message": str(exc), "field": field}],
        },
    )
