"""The house: what every layer of meshload shares, and nothing else defines.

    meshcore.errors       the exception tree (one line per error, naming the fix)
    meshcore.exitcodes    the exit codes of Locust runs and `meshload` commands
    meshcore.runfolder    the run folder: file names, run.json's version, reading and writing
    meshcore.schemas      the parquet columns of requests, spans and metrics
    meshcore.files        atomic writes (temporary file + rename)
    meshcore.yamldoc      YAML reading with the line of a syntax error
    meshcore.durations    Go's duration syntax
    meshcore.traceparent  W3C trace context
    meshcore.figures      rules shared by live gates and the report (percentiles, roles, affinity)
    meshcore.spanrows     a received span as a row of the spans schema (trace store and analysis)
    meshcore.kube         the Kubernetes client stack for Istio resources

Layers above it (`loadgen`, `meshsim`, `analysis`) import it; it imports none of them. The
contract it implements is docs/design.md.
"""

from meshcore.errors import (
    BackendError,
    ConfigError,
    ManifestError,
    MeshloadError,
    RunFolderError,
    YamlError,
)
from meshcore.exitcodes import ExitCode

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ConfigError",
    "ExitCode",
    "ManifestError",
    "MeshloadError",
    "RunFolderError",
    "YamlError",
    "__version__",
]
