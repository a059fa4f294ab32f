"""meshload: measure what an Istio canary rollout really does."""

from meshload.errors import (
    BackendError,
    ConfigError,
    ManifestError,
    MeshloadError,
    RunFolderError,
)

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ConfigError",
    "ManifestError",
    "MeshloadError",
    "RunFolderError",
    "__version__",
]
