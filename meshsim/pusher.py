"""The control plane's pushes: each accepted set of resources to every gateway replica.

Like istiod, the control plane answers the API first and pushes right after, and every replica
receives the push on its own: replica i writes a change into its Envoy `push_skew_ms[i]` after
the API accepted it (a stale replica, reproduced), each from a thread of its own. A replica
still busy or still waiting when newer sets arrive pushes only the newest whose time has come
(bursts coalesce, as istiod debounces), and a set is translated once whichever replica needs it
first. The applied file says what every replica serves (`meshsim.apply.wait_applied` reads it):

    {"resource_version": N,            the newest set every replica serves (what apply waits for)
     "replicas": [{"pod", "push_skew_ms", "resource_version", "envoy_version",
                   "refused": null | {"resource_version", "error"}}]}
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshcore.errors import MeshloadError
from meshcore.files import write_json
from meshsim.envoy import ConfigFiles, EnvoyAdmin
from meshsim.hosts import Endpoint
from meshsim.resources import Resource, from_object
from meshsim.translate import Snapshot, build_snapshot

log = logging.getLogger("meshsim.controld")


@dataclass(frozen=True)
class Replica:
    """What the control plane knows of one gateway replica."""

    pod: str
    envoy_workdir: Path
    envoy_admin: str
    push_skew_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "envoy_workdir": str(self.envoy_workdir),
            "envoy_admin": self.envoy_admin,
            "push_skew_ms": self.push_skew_ms,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Replica:
        return cls(
            str(doc["pod"]),
            Path(doc["envoy_workdir"]),
            str(doc["envoy_admin"]),
            float(doc.get("push_skew_ms") or 0.0),
        )


def to_resources(objects: Sequence[dict[str, Any]]) -> list[Resource]:
    """The routing resources among stored objects; the file named in an annotation, if any."""
    out = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        source = (meta.get("annotations") or {}).get("meshload.io/source") or "kubernetes API"
        r = from_object(obj, source)
        if r is not None:
            out.append(r)
    return out


def max_resource_version(objects: Sequence[dict[str, Any]]) -> int:
    return max(
        (int((o.get("metadata") or {}).get("resourceVersion") or 0) for o in objects), default=0
    )


class Change:
    """One set the API accepted, translated once, when the first replica pushes it."""

    def __init__(self, objects: list[dict[str, Any]], endpoints: Sequence[Endpoint]) -> None:
        self.objects = objects
        self.resource_version = max_resource_version(objects)
        self._endpoints = endpoints
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._reported = False

    def claim_report(self) -> bool:
        """True once: for the first replica that serves this set (`Pusher.report`)."""
        with self._lock:
            first, self._reported = not self._reported, True
            return first

    def snapshot(self) -> Snapshot:
        with self._lock:
            if self._snapshot is None:
                self._snapshot = build_snapshot(to_resources(self.objects), self._endpoints)
            return self._snapshot


class AppliedFile:
    """The applied file, rewritten (whole, by rename) whenever a replica's state changes."""

    def __init__(self, path: Path, replicas: Sequence[Replica]) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._states: list[dict[str, Any]] = [
            {
                "pod": r.pod,
                "push_skew_ms": r.push_skew_ms,
                "resource_version": 0,
                "envoy_version": 0,
                "refused": None,
            }
            for r in replicas
        ]

    def served(self, index: int, resource_version: int, envoy_version: int) -> None:
        self._update(index, resource_version=resource_version, envoy_version=envoy_version)

    def refused(self, index: int, resource_version: int, error: str) -> None:
        self._update(index, refused={"resource_version": resource_version, "error": error})

    def _update(self, index: int, **state: Any) -> None:
        with self._lock:
            if "resource_version" in state:
                state["refused"] = None
            self._states[index].update(state)
            write_json(
                self.path,
                {
                    "resource_version": min(s["resource_version"] for s in self._states),
                    "replicas": self._states,
                },
            )


class ReplicaPusher:
    """Pushes to one replica from a thread of its own, each set `push_skew_ms` after the API
    accepted it."""

    def __init__(self, index: int, replica: Replica, applied: AppliedFile) -> None:
        self.index = index
        self.replica = replica
        self.files = ConfigFiles(replica.envoy_workdir)
        self.admin = EnvoyAdmin(replica.envoy_admin)
        self.files.observe(self.admin)  # the refusal counters a first push compares against
        self._applied = applied
        self._skew_s = replica.push_skew_ms / 1000.0
        self._due: list[tuple[float, Change]] = []  # in acceptance order, so in due order
        self._wake = threading.Condition()
        self.on_served: Callable[[Change], None] | None = None
        threading.Thread(target=self._run, name=f"push-{replica.pod}", daemon=True).start()

    def offer(self, change: Change, accepted_s: float) -> None:
        with self._wake:
            self._due.append((accepted_s + self._skew_s, change))
            self._wake.notify()

    def _next(self) -> Change:
        """The newest change whose time has come; older ones due by then are dropped."""
        with self._wake:
            while True:
                now = time.monotonic()
                ready = [c for due, c in self._due if due <= now]
                if ready:
                    self._due = self._due[len(ready) :]
                    return ready[-1]
                self._wake.wait(self._due[0][0] - now if self._due else None)

    def _run(self) -> None:
        while True:
            change = self._next()
            try:
                self.files.apply(change.snapshot(), self.admin)
            except MeshloadError as exc:
                log.error("%s: %s", self.replica.pod, exc)
                self._applied.refused(self.index, change.resource_version, str(exc))
            else:
                self._applied.served(self.index, change.resource_version, self.files.version)
                if self.on_served is not None:
                    self.on_served(change)


class Pusher:
    """Validates for the API, then pushes every accepted set to every replica."""

    def __init__(
        self, endpoints: list[Endpoint], replicas: Sequence[Replica], applied_file: Path
    ) -> None:
        self.endpoints = endpoints
        self.applied = AppliedFile(applied_file, replicas)
        self.replicas = [ReplicaPusher(i, r, self.applied) for i, r in enumerate(replicas)]
        # Told of each accepted set's translation once a replica serves it, as a controller
        # writes status after programming the proxies (`meshsim.route_status`).
        self.report: Callable[[Snapshot], None] | None = None
        for r in self.replicas:
            r.on_served = self._served

    def _served(self, change: Change) -> None:
        if change.claim_report() and self.report is not None:
            self.report(change.snapshot())

    def validate(self, objects: list[dict[str, Any]]) -> list[str]:
        return build_snapshot(to_resources(objects), self.endpoints).warnings

    def on_change(self, objects: list[dict[str, Any]]) -> None:
        accepted_s = time.monotonic()
        change = Change(objects, self.endpoints)
        for r in self.replicas:
            r.offer(change, accepted_s)

    def initial(self, objects: Sequence[dict[str, Any]]) -> None:
        """The parent wrote the initial configuration before the replicas started: every
        replica already serves it."""
        rv = max_resource_version(objects)
        for r in self.replicas:
            self.applied.served(r.index, rv, r.files.version)
