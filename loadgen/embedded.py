"""Starting the embedded mesh for a scenario run with no --host, and finding out what it is.

Only the master (or the local runner) calls this; the mesh's servers are child processes of
their own, so they never share Locust's gevent loop, and `stop()` ends them by PID.
"""

from __future__ import annotations

import logging
import re
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadgen.client_tls import ClientTls, make_context
from loadgen.options import TLS_FIX
from meshcore.errors import BackendError, ConfigError
from meshcore.tools import find_tool

log = logging.getLogger(__name__)


def start_mesh(
    manifests: Path | None,
    spec: Path | None = None,
    *,
    gateway_replicas: int = 1,
    push_skew_ms: Mapping[int, float] | None = None,
) -> Any:
    """A started `meshsim.mesh.Mesh` serving the scenario's manifests, its gateway as
    `gateway_replicas` Envoys, replica i receiving every push `push_skew_ms[i]` late."""
    from meshsim.mesh import Mesh

    mesh = Mesh(
        manifests=manifests,
        spec=spec,
        gateway_replicas=gateway_replicas,
        push_skew_ms=push_skew_ms,
    )
    mesh.start()
    return mesh


def mesh_urls(mesh: Any) -> dict[str, str]:
    try:
        return dict(mesh.urls())
    except Exception:
        return {}


def gateway_target(mesh: Any) -> str:
    """The embedded gateway's address meshload drives: HTTPS when a Gateway server
    terminates TLS (the plain listener still serves), else HTTP."""
    return str(mesh.gateway.https_url or mesh.gateway_url)


def is_url(host: str) -> bool:
    return re.match(r"^https?://", host) is not None


def check_reachable(host: str, tls: ClientTls | None = None, timeout_s: float = 5.0) -> None:
    """Any HTTP answer from `host` will do; no answer at all ends the run at start. An
    `https://` host is checked as meshload's users connect (`tls`)."""
    if not is_url(host):
        raise ConfigError(f"--host {host}: not a URL; give http://HOST:PORT of the gateway")
    context = make_context(tls or ClientTls()) if host.startswith("https://") else None
    try:
        with urllib.request.urlopen(host.rstrip("/") + "/", timeout=timeout_s, context=context):
            pass
    except urllib.error.HTTPError:
        return  # the gateway answered; an error page still proves it is there
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, ssl.SSLError):
            raise BackendError(
                f"--host {host}: TLS failed ({getattr(reason, 'verify_message', '') or reason}); "
                f"{TLS_FIX}"
            ) from None
        raise BackendError(
            f"--host {host} is unreachable ({reason}); start the gateway (or port-forward it) "
            "or drop --host to use the embedded mesh"
        ) from None


def envoy_version() -> str | None:
    """`envoy --version` as a short string, for run.json; None when there is no envoy."""
    exe = find_tool("envoy")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"version: \S+/(\d+\.\d+\.\d+)", out)
    if m:
        return m.group(1)
    lines = out.strip().splitlines()
    return lines[-1] if lines else None
