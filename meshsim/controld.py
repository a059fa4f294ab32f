"""The control-plane process: the embedded Kubernetes API, and a pusher that programs Envoy.

    python -m meshsim.controld --config CONFIG.json --ports-file PORTS.json

Like istiod, it accepts a change when the API validates it, answers, and then pushes the new
configuration to the gateway: the API's answer comes before Envoy serves the change, so the
propagation delay meshload measures here is real. A refused change never reaches Envoy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshcore.errors import MeshloadError
from meshsim.envoy import ConfigFiles, EnvoyAdmin
from meshsim.hosts import Endpoint
from meshsim.kubeapi.server import serve
from meshsim.procs import publish_port, write_atomically
from meshsim.resources import Resource, from_object
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
                write_atomically(
                    self.applied_file,
                    json.dumps(
                        {
                            "resource_version": max_resource_version(objects),
                            "envoy_version": self.files.version,
                        }
                    ),
                )
            except MeshloadError as exc:
                log.error("%s", exc)


async def main_async(config: dict[str, Any], ports_file: Path) -> None:
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
    running = await serve(
        objects=config["objects"],
        validate=pusher.validate,
        on_change=pusher.on_change,
        core_objects=config["core_objects"],
    )
    # The parent wrote the initial configuration before Envoy started: it is already pushed.
    write_atomically(
        pusher.applied_file,
        json.dumps(
            {
                "resource_version": max_resource_version(running.objects()),
                "envoy_version": pusher.files.version,
            }
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    publish_port(ports_file, running.port)
    await stop.wait()
    await running.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m meshsim.controld")
    parser.add_argument("--config", required=True)
    parser.add_argument("--ports-file", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    config = json.loads(Path(args.config).read_text())
    asyncio.run(main_async(config, Path(args.ports_file)))


if __name__ == "__main__":
    main()
