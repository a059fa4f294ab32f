"""The columns of the run folder's parquet files, declared once (docs/design.md explains each).

Writers build their tables with these schemas (`loadgen.capture` the request parts, the
embedded scraper and `analysis.fetch` metrics.parquet, `analysis.fetch` spans.parquet) and
readers convert from them (`analysis.frames`), so a column cannot be renamed, retyped or
forgotten on one side only. Conventions:

- a `not null` field is never null; parquet refuses to write a null there;
- `dictionary<string>` marks a string repeated across rows (endpoint, version, worker): stored
  once per part and read back as a pandas categorical;
- units are in the names: `_ns` epoch nanoseconds (wall clock), `_ms` milliseconds (float,
  exact), `t` epoch seconds.

New columns may be added (readers keep columns they do not know); existing ones are never
renamed.
"""

from __future__ import annotations

import pyarrow as pa

REPEATED = pa.dictionary(pa.int32(), pa.string())


def _field(name: str, type_: pa.DataType, *, null: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=null)


REQUEST_SCHEMA = pa.schema(
    [
        _field("start_ns", pa.int64(), null=False),  # when the request started
        _field("latency_ms", pa.float64(), null=False),  # Locust's response_time; NaN if none
        _field("name", REPEATED, null=False),  # endpoint, grouped: /product/[id]
        _field("method", REPEATED, null=False),
        _field("status", pa.int64(), null=False),  # HTTP status; 0 when no response came
        _field("ok", pa.bool_(), null=False),  # Locust's verdict: no exception raised
        _field("error", pa.string()),  # "<ExceptionType>: <text>", at most 300 chars
        _field("version", REPEATED),  # the version response header; null when absent
        _field("trace_id", pa.string()),  # 32 hex chars of the traceparent sent
        _field("sampled", pa.bool_()),  # the traceparent's sampled flag
        _field("step", pa.int64(), null=False),  # rollout step at start_ns; -1 before step 0
        _field("worker", REPEATED, null=False),  # "local" or "worker<N>"
        _field("user_id", pa.int64()),  # the simulated user, unique within its worker
        _field("cohort", REPEATED),  # the user class's cohort (A/B scenarios)
        _field("response_length", pa.int64(), null=False),  # body bytes
        _field("config_step", pa.int64()),  # the step of the config stamp that served it
        _field("replica", REPEATED),  # the gateway replica that served it (a short hash)
    ]
)

# Open-model runs (an arrival rate) add these two.
OPEN_MODEL_FIELDS = (
    _field("intended_ns", pa.int64()),  # when the schedule wanted the task to start
    _field("co_latency_ms", pa.float64(), null=False),  # lateness + latency
)
OPEN_MODEL_SCHEMA = pa.schema([*REQUEST_SCHEMA, *OPEN_MODEL_FIELDS])

SPAN_SCHEMA = pa.schema(
    [
        _field("trace_id", pa.string(), null=False),  # 32 hex chars
        _field("span_id", pa.string(), null=False),  # 16 hex chars
        _field("parent_id", pa.string()),  # null for a root span
        _field("service", REPEATED),  # istio.canonical_service, else the process's service
        _field("operation", REPEATED),
        _field("kind", REPEATED),  # server, client, internal, producer, consumer
        _field("start_ns", pa.int64(), null=False),
        _field("duration_ms", pa.float64(), null=False),
        _field("version", REPEATED),  # istio.canonical_revision; null when not stamped
        _field("status_code", pa.int64()),  # http.status_code; null when absent
        _field("attributes", pa.string()),  # every other tag, as one JSON object
    ]
)
SPAN_KINDS = ("server", "client", "internal", "producer", "consumer")

METRIC_SCHEMA = pa.schema(
    [
        _field("t", pa.float64(), null=False),  # scrape time, epoch seconds
        _field("metric", REPEATED, null=False),  # e.g. istio_requests_total
        _field("labels", REPEATED, null=False),  # the label set as JSON, keys sorted
        _field("value", pa.float64(), null=False),
    ]
)
