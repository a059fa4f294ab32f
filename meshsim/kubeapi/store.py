"""Custom objects with Kubernetes bookkeeping: resourceVersion, generation, uid, watch fan-out.

All methods run on the API server's event loop, one request at a time between awaits, so a
write (validate hook, commit, event fan-out, on_change hook) is atomic without locks.
`resourceVersion` is one global counter, as etcd's revision is; `generation` moves only when
something outside `metadata` and `status` changes, as for CRDs with a status subresource.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from meshsim.kubeapi import status
from meshsim.kubeapi.crds import ResourceType

log = logging.getLogger(__name__)

Validate = Callable[[list[dict[str, Any]]], "list[str] | None"]
OnChange = Callable[[list[dict[str, Any]]], None]
Key = tuple[str, str, str, str]  # group, plural, namespace ("" when cluster-scoped), name
_SYSTEM_META = ("uid", "creationTimestamp", "generation", "resourceVersion")
_DROPPED_META = ("selfLink", "deletionTimestamp", "deletionGracePeriodSeconds")
# The server's handlers compute managedFields (see apply_patch); initial objects start without.
_LOADED_META = ("managedFields",)
WATCH_QUEUE_LIMIT = 10_000


def no_validate(objects: list[dict[str, Any]]) -> list[str]:
    return []


def no_change(objects: list[dict[str, Any]]) -> None:
    return None


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Event:
    """One committed change, kept for watchers that resume from a resourceVersion."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: Key
    obj: dict[str, Any]
    prev: dict[str, Any] | None = None


@dataclass(eq=False)
class Watcher:
    """A subscription to one resource type (one namespace or all); filtered by the server."""

    group: str
    plural: str
    namespace: str | None
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def wants(self, key: Key) -> bool:
        return key[:2] == (self.group, self.plural) and self.namespace in (None, key[2])


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    """The objects of every served custom type; see the module docstring for the guarantees."""

    def __init__(
        self,
        *,
        validate: Validate = no_validate,
        on_change: OnChange = no_change,
        history: int = 1000,
        first_rv: int = 1000,
    ) -> None:
        self._validate = validate
        self._on_change = on_change
        self._objects: dict[Key, dict[str, Any]] = {}
        self._rv = first_rv
        self._history: deque[Event] = deque(maxlen=history)
        self._floor_rv = first_rv
        self._watchers: set[Watcher] = set()

    @property
    def resource_version(self) -> int:
        return self._rv

    def all_objects(self) -> list[dict[str, Any]]:
        """Deep copies of every object, ordered by group, kind, namespace and name."""
        items = sorted(self._objects.items(), key=lambda kv: (kv[0][0], kv[1]["kind"], kv[0][2:]))
        return [copy.deepcopy(obj) for _, obj in items]

    def list_objects(self, group: str, plural: str, namespace: str | None) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for key, obj in sorted(self._objects.items())
            if key[:2] == (group, plural) and namespace in (None, key[2])
        ]

    def get(self, group: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self._objects.get((group, plural, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def create(
        self, rtype: ResourceType, obj: dict[str, Any], *, dry_run: bool = False
    ) -> tuple[dict[str, Any], list[str]]:
        meta = obj["metadata"]
        key = (rtype.group, rtype.plural, meta.get("namespace", ""), meta["name"])
        if key in self._objects:
            raise status.already_exists(rtype.plural, rtype.group, meta["name"])
        new = copy.deepcopy(obj)
        new["apiVersion"] = rtype.api_version()
        new["kind"] = rtype.kind
        for name in _SYSTEM_META + _DROPPED_META:
            new["metadata"].pop(name, None)
        new["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
        return self._commit(key, new, None, dry_run)

    def update(
        self, rtype: ResourceType, obj: dict[str, Any], *, dry_run: bool = False
    ) -> tuple[dict[str, Any], list[str]]:
        """A replace (PUT) with optimistic concurrency on metadata.resourceVersion."""
        meta = obj["metadata"]
        key = (rtype.group, rtype.plural, meta.get("namespace", ""), meta["name"])
        old = self._objects.get(key)
        if old is None:
            raise status.not_found(rtype.plural, rtype.group, meta["name"])
        sent_rv = meta.get("resourceVersion")
        if not sent_rv:
            raise status.invalid(
                rtype.kind,
                rtype.group,
                meta["name"],
                [
                    (
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        if str(sent_rv) != old["metadata"]["resourceVersion"]:
            raise status.stale(rtype.plural, rtype.group, meta["name"])
        new = copy.deepcopy(obj)
        new["apiVersion"] = rtype.api_version()
        new["kind"] = rtype.kind
        for name in _DROPPED_META:
            new["metadata"].pop(name, None)
        for name in _SYSTEM_META:
            new["metadata"][name] = old["metadata"][name]
        if "managedFields" not in new["metadata"] and "managedFields" in old["metadata"]:
            new["metadata"]["managedFields"] = copy.deepcopy(old["metadata"]["managedFields"])
        # The status subresource owns status: a write to the main resource leaves it alone.
        new.pop("status", None)
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        if new == old:
            return copy.deepcopy(old), []
        if _spec_part(new) != _spec_part(old):
            new["metadata"]["generation"] = int(old["metadata"]["generation"]) + 1
        return self._commit(key, new, old, dry_run)

    def set_status(self, key: Key, new_status: dict[str, Any]) -> bool:
        """The status subresource as a controller writes it: the object's status replaced, a
        new resourceVersion and a MODIFIED event; spec, generation and the on_change hook left
        alone (a status never changes what the mesh serves). False when the object is gone or
        its status is already that."""
        old = self._objects.get(key)
        if old is None or old.get("status") == new_status:
            return False
        new = copy.deepcopy(old)
        new["status"] = copy.deepcopy(new_status)
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[key] = new
        self._publish(Event(self._rv, "MODIFIED", key, copy.deepcopy(new), old))
        return True

    def delete(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        *,
        precondition_rv: str | None = None,
        precondition_uid: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        key = (rtype.group, rtype.plural, namespace, name)
        old = self._objects.get(key)
        if old is None:
            raise status.not_found(rtype.plural, rtype.group, name)
        meta = old["metadata"]
        for what, wanted, have in (
            ("UID", precondition_uid, meta["uid"]),
            ("ResourceVersion", precondition_rv, meta["resourceVersion"]),
        ):
            if wanted and wanted != have:
                why = f"{what} in precondition: {wanted}, {what} in object meta: {have}"
                why = f"Precondition failed: {why}"
                raise status.conflict(rtype.plural, rtype.group, name, why)
        if dry_run:
            return copy.deepcopy(old)
        # No validate hook: like Istio's admission webhook, deletions are never refused.
        self._rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        del self._objects[key]
        self._publish(Event(self._rv, "DELETED", key, gone, old))
        self._notify()
        return copy.deepcopy(gone)

    def load(self, objects: list[tuple[ResourceType, dict[str, Any]]]) -> list[str]:
        """Initial objects, validated as one set; the on_change hook is not called for them."""
        staged: dict[Key, dict[str, Any]] = {}
        for rtype, obj in objects:
            meta = obj["metadata"]
            new = copy.deepcopy(obj)
            new["apiVersion"] = rtype.api_version()
            for name in _SYSTEM_META + _DROPPED_META + _LOADED_META:
                new["metadata"].pop(name, None)
            self._rv += 1
            new["metadata"].update(
                uid=str(uuid.uuid4()),
                creationTimestamp=now_rfc3339(),
                generation=1,
                resourceVersion=str(self._rv),
            )
            staged[(rtype.group, rtype.plural, meta.get("namespace", ""), meta["name"])] = new
        warnings = self._validate(copy.deepcopy(list(staged.values()))) or []
        self._objects.update(staged)
        self._floor_rv = self._rv
        return list(warnings)

    def watch(
        self, group: str, plural: str, namespace: str | None, since_rv: int | None
    ) -> tuple[Watcher, list[Event]]:
        """Subscribe; returns the events to send first (current objects, or missed history)."""
        watcher = Watcher(group, plural, namespace)
        if since_rv is None or since_rv == 0:
            backlog = [
                Event(int(obj["metadata"]["resourceVersion"]), "ADDED", key, copy.deepcopy(obj))
                for key, obj in sorted(self._objects.items())
                if watcher.wants(key)
            ]
        elif since_rv < self._floor_rv:
            raise status.expired(since_rv, self._floor_rv)
        else:
            backlog = [e for e in self._history if e.rv > since_rv and watcher.wants(e.key)]
        self._watchers.add(watcher)
        return watcher, backlog

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close_watches(self) -> None:
        for w in list(self._watchers):
            w.queue.put_nowait(None)
        self._watchers.clear()

    def _commit(
        self, key: Key, new: dict[str, Any], old: dict[str, Any] | None, dry_run: bool
    ) -> tuple[dict[str, Any], list[str]]:
        candidate = [copy.deepcopy(o) for k, o in self._objects.items() if k != key]
        candidate.append(copy.deepcopy(new))
        warnings = list(self._validate(candidate) or [])
        if dry_run:
            return copy.deepcopy(new), warnings
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[key] = new
        self._publish(
            Event(self._rv, "ADDED" if old is None else "MODIFIED", key, copy.deepcopy(new), old)
        )
        self._notify()
        return copy.deepcopy(new), warnings

    def _publish(self, event: Event) -> None:
        if len(self._history) == self._history.maxlen:
            self._floor_rv = self._history[0].rv
        self._history.append(event)
        for w in list(self._watchers):
            if not w.wants(event.key):
                continue
            if w.queue.qsize() >= WATCH_QUEUE_LIMIT:
                # A consumer this far behind is cut off, as the API server closes slow watches;
                # it resumes from its last resourceVersion.
                w.overflowed = True
                self._watchers.discard(w)
                w.queue.put_nowait(None)
            else:
                w.queue.put_nowait(event)

    def _notify(self) -> None:
        try:
            self._on_change(self.all_objects())
        except Exception as exc:  # the write stands; the mesh keeps its last good config
            log.error(
                "kubeapi: on_change hook failed (%s: %s); the stored objects changed but "
                "the mesh may not have applied them",
                type(exc).__name__,
                exc,
            )
