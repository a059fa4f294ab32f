"""Keeps the mesh's Istio resources and Envoy in step: a refused change leaves both as they were."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from meshsim.envoy import Envoy
from meshsim.hosts import Endpoint
from meshsim.resources import Resource
from meshsim.translate import Snapshot, build_snapshot

log = logging.getLogger(__name__)


class ControlPlane:
    """The last good set of resources, and the Envoy that serves it."""

    def __init__(self, endpoints: Sequence[Endpoint], resources: Sequence[Resource]) -> None:
        self.endpoints = list(endpoints)
        self.snapshot = build_snapshot(resources, self.endpoints)
        self.envoy: Envoy | None = None
        self._lock = threading.Lock()

    @property
    def resources(self) -> list[Resource]:
        return list(self.snapshot.resources)

    def check(self, resources: Sequence[Resource]) -> Snapshot:
        """Validate a candidate set without applying it; raises ManifestError."""
        return build_snapshot(resources, self.endpoints)

    def replace_all(self, resources: Sequence[Resource]) -> list[str]:
        """Make `resources` the whole configuration; returns its warnings."""
        with self._lock:
            snapshot = build_snapshot(resources, self.endpoints)
            if self.envoy is not None:
                self.envoy.apply(snapshot)
            self.snapshot = snapshot
            for w in snapshot.warnings:
                log.warning("%s", w)
            return snapshot.warnings

    def apply(self, changed: Sequence[Resource]) -> list[str]:
        """Create or replace the given resources (as `kubectl apply`), keeping the others."""
        keys = {r.key for r in changed}
        kept = [r for r in self.snapshot.resources if r.key not in keys]
        return self.replace_all([*kept, *changed])

    def delete(self, kind: str, namespace: str, name: str) -> list[str]:
        kept = [r for r in self.snapshot.resources if r.key != (kind, namespace, name)]
        return self.replace_all(kept)
