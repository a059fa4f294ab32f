"""Telemetry of the embedded mesh as Istio reports it: spans per hop over OTLP, Istio's
standard metrics per workload, and a scraper for when no Prometheus is installed.

Modules: `istio` (names and labels), `otlp` (hand-built OTLP protobuf), `spans` (the span
observer and its export thread), `metrics` (Istio metrics and their exposition), `exchange`
(per-request context around each handler), `workloads` (wiring into the boutique),
`scrape` (the embedded scraper). The lead decides the public names.
"""
