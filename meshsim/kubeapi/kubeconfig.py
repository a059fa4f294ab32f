"""A kubeconfig that points kubectl and the `kubernetes` client at the embedded API."""

from __future__ import annotations

from pathlib import Path

import yaml

from meshcore.files import write_atomic

CONTEXT = "meshload-embedded"
# The embedded API accepts any bearer token; a token is still written because clients insist
# on some credential before they talk to a server.
DUMMY_TOKEN = "meshload-embedded-no-auth"


def kubeconfig(server_url: str, namespace: str = "default") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": CONTEXT, "cluster": {"server": server_url}}],
        "users": [{"name": CONTEXT, "user": {"token": DUMMY_TOKEN}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT,
    }


def write_kubeconfig(path: str | Path, server_url: str, namespace: str = "default") -> Path:
    """Write (mode 0600) a kubeconfig whose current context is `meshload-embedded`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(kubeconfig(server_url, namespace), sort_keys=False)
    return write_atomic(p, text, mode=0o600)
