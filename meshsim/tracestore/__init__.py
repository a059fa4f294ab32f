"""The embedded mesh's trace store: an OTLP/HTTP receiver answering Jaeger's query APIs.

It stands in for Jaeger: Envoy and the simulated services export spans to `POST /v1/traces`,
and analysis reads them back through `/api/...` (Jaeger v1) or `/api/v3/...` (Jaeger v2),
all on one 127.0.0.1 port. `serve()` returns a `meshsim.serving.Served` whose state is the
`SpanStore`. Given a run folder, it also records every span it receives there as the run goes
(`spans/*.parquet`, see `recording`).
"""

from meshsim.tracestore.server import serve
from meshsim.tracestore.store import SpanStore

__all__ = ["SpanStore", "serve"]
