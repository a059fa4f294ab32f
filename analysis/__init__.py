"""meshload's analysis: a run folder and telemetry backends -> tidy frames -> figures -> report.

The entry points are `load_run(path)` (a run folder's metadata and frames, as a `Run`) and
`load_spans(source)` (a trace backend or file into the spans frame); the figures, the report
(`analysis.report`, which loads matplotlib) and the gates are imported from their modules.
analysis never imports loadgen, meshsim or meshload: it reads only the run folder and the
backends, through `meshcore`.
"""

from analysis.runfolder import Run, load_run
from analysis.spans import load_spans

__all__ = ["Run", "load_run", "load_spans"]
