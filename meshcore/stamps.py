"""What meshload stamps into the route it moves, so every response says what served it.

During a run, the moved http route gets a **twin** placed before it: the same matches (each
also matching the request header `x-meshload-run: <token>`, which only meshload's requests
carry), the same destinations and weights, plus response headers:

    <version header>      the destination's subset (only where the user sets none)
    x-meshload-config     `<token>.<step>`: the configuration generation that served it
    x-meshload-replica    `%ENVIRONMENT(POD_NAME)%`: the gateway replica that served it

The twin and the route change in one write, so they reach every gateway replica together;
users' requests never match the twin and never see a stamp. At the end of the run the twin
is removed and the route is left exactly as the user had it. Records keep the replica as a
short hash of its pod name (`replica_id`), mapped back to pods through the Kubernetes API.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

RUN_HEADER = "x-meshload-run"
CONFIG_HEADER = "x-meshload-config"
REPLICA_HEADER = "x-meshload-replica"
# Envoy's header formatting: the pod's name, from the environment every Istio proxy has
# (set from the downward API); the embedded mesh sets it per gateway replica.
REPLICA_VALUE = "%ENVIRONMENT(POD_NAME)%"
TWIN_SUFFIX = "-meshload"
_CONFIG = re.compile(r"^([0-9a-f]{8})\.(\d+)$")


@dataclass(frozen=True)
class Stamping:
    """What a rollout stamps into its route: the run's token, the version header its twin
    sets, and whether it names the gateway replica."""

    token: str
    version_header: str
    replica: bool = True

    def headers(self, step: int) -> dict[str, str]:
        """The response headers a twin sets for every version at `step`."""
        out = {CONFIG_HEADER: config_value(self.token, step)}
        if self.replica:
            out[REPLICA_HEADER] = REPLICA_VALUE
        return out


def run_token(run_id: str) -> str:
    """8 hex chars naming a run in its stamps: opaque, and different for every run."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:8]


def twin_name(route_name: str | None, index: int) -> str:
    """The twin's name: the moved route's (or `route<index>`), suffixed."""
    return f"{route_name or f'route{index}'}{TWIN_SUFFIX}"


def config_value(token: str, step: int) -> str:
    return f"{token}.{step}"


def config_step(value: str | None, token: str) -> int | None:
    """The step of a config stamp of this run's `token`; None for none, or another run's."""
    if not value:
        return None
    m = _CONFIG.match(value.strip())
    return int(m.group(2)) if m is not None and m.group(1) == token else None


def replica_id(pod_name: str | None) -> str | None:
    """A gateway replica as records name it: 8 hex chars of its pod name (None: no stamp, or
    Envoy could not expand the value)."""
    if not pod_name or pod_name.startswith("%") or pod_name.strip() == "-":
        return None  # Envoy writes "-" for an environment variable that is not set
    return hashlib.sha256(pod_name.strip().encode()).hexdigest()[:8]
