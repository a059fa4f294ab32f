"""The one exception tree of meshload, shared by every layer.

    MeshloadError                      str(e) is the single line shown to the user
    ├── ConfigError (ValueError)       bad user input: flags, plans, specs, thresholds
    │   ├── YamlError                  a YAML text that does not parse: names source and line
    │   └── ManifestError              an Istio resource refused: names file, resource, field
    ├── BackendError (ConnectionError) Envoy, Jaeger, Prometheus or the Kubernetes API failing
    └── RunFolderError                 a run folder with missing or broken parts

Every message names what was wrong and how to fix it.
"""

from __future__ import annotations


class MeshloadError(Exception):
    """Base of every error meshload reports to its user."""


class ConfigError(MeshloadError, ValueError):
    """User input that cannot be used as given."""


class YamlError(ConfigError):
    """YAML that does not parse; `where` is "line N" (or "YAML" when the parser gave no line)."""

    def __init__(self, source: str, where: str, problem: str) -> None:
        self.source = source
        self.where = where
        self.problem = problem
        super().__init__(f"{source}: {where}: {problem}; fix the YAML syntax")


class ManifestError(ConfigError):
    """An Istio resource refused; the running mesh keeps its last good config."""

    def __init__(self, source: str, resource: str, field: str, problem: str) -> None:
        self.source = source
        self.resource = resource
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: {resource}: {field}: {problem}")


class BackendError(MeshloadError, ConnectionError):
    """A process or service meshload depends on is unreachable or failing."""


class RunFolderError(MeshloadError):
    """A run folder that lacks a part or holds a broken one."""
