"""The control-plane process: the embedded Kubernetes API, and a pusher that programs Envoy.

    python -m meshsim.controld --config CONFIG.json --ports-file PORTS.json

Like istiod, it accepts a change when the API validates it, answers, and then pushes the new
configuration to the gateway: the API's answer comes before Envoy serves the change, so the
propagation delay meshload measures here is real. A refused change never reaches Envoy.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshcore.errors import ConfigError, MeshloadError
from meshcore.files import write_json
from meshsim.envoy import ConfigFiles, EnvoyAdmin
from meshsim.hosts import Endpoint
from meshsim.kubeapi.server import serve
from meshsim.kubeapi.store import Store
from meshsim.resources import Resource, from_object
from meshsim.serving import Served, run_child
from meshsim.translate import build_snapshot

log = logging.getLogger("meshsim.controld")


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


class Pusher:
    """Pushes the newest accepted set to Envoy from a thread of its own, coalescing bursts."""

    def __init__(
        self, endpoints: list[Endpoint], files: ConfigFiles, admin: EnvoyAdmin, applied_file: Path
    ) -> None:
        self.endpoints = endpoints
        self.files = files
        self.admin = admin
        self.applied_file = applied_file
        files.observe(admin)  # the refusal counters a first push compares against
        self._pending: list[dict[str, Any]] | None = None
        self._wake = threading.Condition()
        threading.Thread(target=self._run, name="envoy-pusher", daemon=True).start()

    def validate(self, objects: list[dict[str, Any]]) -> list[str]:
        return build_snapshot(to_resources(objects), self.endpoints).warnings

    def on_change(self, objects: list[dict[str, Any]]) -> None:
        with self._wake:
            self._pending = objects
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._pending is None:
                    self._wake.wait()
                objects, self._pending = self._pending, None
            try:
                snapshot = build_snapshot(to_resources(objects), self.endpoints)
                self.files.apply(snapshot, self.admin)
                self.write_applied(objects)
            except MeshloadError as exc:
                log.error("%s", exc)

    def write_applied(self, objects: Sequence[dict[str, Any]]) -> None:
        """Tell the parent which resource version Envoy serves, and in which config version."""
        write_json(
            self.applied_file,
            {
                "resource_version": max_resource_version(objects),
                "envoy_version": self.files.version,
            },
        )


async def start(config_file: Path) -> Served[Store]:
    """The pusher, then the API it validates and pushes for; `state` is the API's store."""
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{config_file}: not a control-plane config ({exc}); `meshsim.Mesh` writes it"
        ) from None
    endpoints = [
        Endpoint(e["workload"], e["service"], e["namespace"], e["labels"], e["port"])
        for e in config["endpoints"]
    ]
    workdir = Path(config["envoy_workdir"])
    pusher = Pusher(
        endpoints,
        ConfigFiles(workdir),
        EnvoyAdmin(config["envoy_admin"]),
        Path(config["applied_file"]),
    )
    served = await serve(
        objects=config["objects"],
        validate=pusher.validate,
        on_change=pusher.on_change,
        core_objects=config["core_objects"],
    )
    # The parent wrote the initial configuration before Envoy started: it is already pushed.
    pusher.write_applied(served.state.all_objects())
    return served


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshsim.controld")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--ports-file", required=True, type=Path)
    args = parser.parse_args(argv)
    return run_child(
        "controlplane",
        lambda: start(args.config),
        ports_file=args.ports_file,
        log_level=logging.WARNING,
    )


if __name__ == "__main__":
    sys.exit(main())
