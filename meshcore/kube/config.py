"""Connecting to the Kubernetes API as kubectl would: an explicit kubeconfig, else
$KUBECONFIG, else the pod's service account when running in a cluster (KUBERNETES_SERVICE_HOST
is set), else ~/.kube/config. Every problem is one ConfigError line naming the fix.

Requests carry the User-Agent `meshload/<version>`: the API server names the field manager of a
write after it (`managedFields`), so a cluster shows who moved the weights."""

from __future__ import annotations

import os
from typing import Any

from kubernetes import client, config

from meshcore import __version__
from meshcore.errors import ConfigError

USER_AGENT = f"meshload/{__version__}"


def connect(kubeconfig: str | os.PathLike[str] | None = None, context: str | None = None) -> Any:
    """An ApiClient: `kubeconfig`, else $KUBECONFIG, else in-cluster, else ~/.kube/config."""
    path = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or None
    if path is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException as exc:
            raise ConfigError(
                f"in a pod, but its service account cannot be read ({exc}); pass --kubeconfig PATH"
            ) from None
        return _named(client.ApiClient(cfg))
    where = path or "~/.kube/config"
    if kubeconfig and not os.path.isfile(path or ""):
        raise ConfigError(f"kubeconfig {where} does not exist; pass an existing --kubeconfig")
    try:
        return _named(config.new_client_from_config(config_file=path, context=context))
    except (config.ConfigException, OSError, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        ctx = f"context {context}" if context else "its current-context"
        raise ConfigError(f"kubeconfig {where}: {first}; check the file and {ctx}") from None


def _named(api: Any) -> Any:
    api.user_agent = USER_AGENT
    return api
