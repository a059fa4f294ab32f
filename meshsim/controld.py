"""The control-plane process: the embedded Kubernetes API, and a pusher that programs every
gateway replica's Envoy (`meshsim.pusher`).

    python -m meshsim.controld --config CONFIG.json --ports-file PORTS.json

Like istiod, it accepts a change when the API validates it, answers, and then pushes the new
configuration to each gateway replica (after that replica's push skew): the API's answer comes
before Envoy serves the change, so the propagation delay meshload measures here is real. A
refused change never reaches Envoy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from meshcore.errors import ConfigError
from meshsim.hosts import Endpoint
from meshsim.kubeapi.server import serve
from meshsim.kubeapi.store import Store
from meshsim.pusher import Pusher, Replica, to_resources
from meshsim.route_status import write_route_status
from meshsim.serving import Served, run_child
from meshsim.translate import Snapshot, build_snapshot

__all__ = ["main", "start", "to_resources"]


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
    replicas = [Replica.from_json(r) for r in config["gateway_replicas"]]
    pusher = Pusher(endpoints, replicas, Path(config["applied_file"]))
    served = await serve(
        objects=config["objects"],
        validate=pusher.validate,
        on_change=pusher.on_change,
        core_objects=config["core_objects"],
    )
    store = served.state
    pusher.initial(store.all_objects())
    # Route status, as a controller writes it: now for the initial set, then for each accepted
    # set once a replica serves it (on the API's loop: the store is not thread-safe).
    initial = build_snapshot(to_resources(store.all_objects()), endpoints)
    write_route_status(store, initial.route_status, initial.gateway_status)
    loop = asyncio.get_running_loop()

    def report(snapshot: Snapshot) -> None:
        loop.call_soon_threadsafe(
            write_route_status, store, snapshot.route_status, snapshot.gateway_status
        )

    pusher.report = report
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
