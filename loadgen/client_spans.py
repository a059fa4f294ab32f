"""A client span for every request, the root of its trace, made with the OpenTelemetry SDK and
configured as its users configure it.

The standard variables decide: `OTEL_SDK_DISABLED=true` makes none; `OTEL_EXPORTER_OTLP_ENDPOINT`
(or `..._TRACES_ENDPOINT`) and `OTEL_EXPORTER_OTLP_HEADERS` say where they go (OTLP over HTTP,
protobuf); `OTEL_SERVICE_NAME` (default `meshload-client`) and `OTEL_RESOURCE_ATTRIBUTES` name
the client; `OTEL_TRACES_SAMPLER`/`_ARG` sample (default: `--trace-sampling`'s share, by trace
id). Without an endpoint, on the embedded mesh they go to its trace store, so the report's
traces start at the client; on a cluster nothing is made and nothing is logged per request.

The span's context is the request's `traceparent`, so the gateway's span is its child. It is
named by the request's grouped name (`/product/[id]`) and carries `http.request.method`,
`url.path`, `http.response.status_code` and meshload's own: `meshload.step` (the rollout step
at its start), `meshload.user_id`, `meshload.version` (the version that served it) and
`meshload.config_step` (the configuration that served it, in a stamped run).
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger("meshload")

ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
DEFAULT_SERVICE = "meshload-client"

_provider: Any = None


def disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def tracer_for(embedded_traces_url: str | None, sampling: float) -> Any:
    """This process's tracer (one provider per process), or None when no span is to be made."""
    global _provider
    if disabled():
        return None
    configured = any(os.environ.get(v) for v in ENDPOINT_VARS)
    if not configured and not embedded_traces_url:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    if _provider is None:
        named = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: DEFAULT_SERVICE}
        sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ParentBased(
            TraceIdRatioBased(min(max(sampling, 0.0), 1.0))
        )  # fmt: skip
        provider = TracerProvider(resource=Resource.create(named), sampler=sampler)
        exporter = OTLPSpanExporter() if configured else OTLPSpanExporter(embedded_traces_url)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        _provider = provider
        where = "the OTEL_EXPORTER_OTLP_* endpoint" if configured else embedded_traces_url
        log.info("client spans go to %s", where)
    return _provider.get_tracer("meshload")


def flush(timeout_ms: int = 5000) -> None:
    """Export what is buffered (at test stop; the process may end right after)."""
    if _provider is not None:
        try:
            _provider.force_flush(timeout_ms)
        except Exception as e:  # telemetry never stops a load test
            log.warning("client spans not all exported: %s", e)


def start(tracer: Any, name: str, method: str, path: str) -> Any:
    from opentelemetry.trace import SpanKind

    attributes = {"http.request.method": method, "url.path": path}
    return tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def trace_ids(span: Any) -> tuple[str, str, bool]:
    """(trace id, span id, sampled) of the span: the request's traceparent."""
    ctx = span.get_span_context()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", bool(ctx.trace_flags.sampled)


def end(span: Any, response: Any, attributes: dict[str, Any]) -> None:
    status = getattr(response, "status_code", None)
    told = {f"meshload.{key}": value for key, value in attributes.items() if value is not None}
    if status:
        told["http.response.status_code"] = int(status)
    span.set_attributes(told)  # one call: the SDK takes its lock once
    if not status or int(status) >= 500:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR))
    span.end()
