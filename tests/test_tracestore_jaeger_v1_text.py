"""The v1 answer written as text (jaeger_v1_text) is byte for byte json.dumps of the dict model
(jaeger_v1), on seeded random spans that use every rare branch: typed and array attributes,
Jaeger warnings, events, links, error and OK status, trace state, zero and non-zero parents."""

from __future__ import annotations

import json
import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue

from meshsim.tracestore.jaeger_v1 import WARNINGS_ATTRIBUTE, envelope, trace_to_v1
from meshsim.tracestore.jaeger_v1_text import trace_text, traces_envelope_text
from meshsim.tracestore.receiver import TRACE_ID, Row, rows_from_request


def _value(rng: random.Random) -> AnyValue:
    pick = rng.randrange(7)
    if pick == 0:
        return AnyValue(int_value=rng.choice([3, -7, 1 << 60]))
    if pick == 1:
        return AnyValue(double_value=rng.choice([0.5, 2.0, -1e300]))
    if pick == 2:
        return AnyValue(bool_value=rng.random() < 0.5)
    if pick == 3:
        return AnyValue(bytes_value=rng.randbytes(5))
    if pick == 4:
        items = [AnyValue(string_value="a"), AnyValue(int_value=2)]
        return AnyValue(array_value=ArrayValue(values=items))
    return AnyValue(string_value=rng.choice(["plain", 'quo"te \\ ü \u2603', "", "ctl\n\t"]))


def _attributes(rng: random.Random, n: int) -> list[KeyValue]:
    keys = ["http.url", "zeta", "alpha", "event", "opentracing.ref_type", "é-key", "dup"]
    return [KeyValue(key=rng.choice(keys), value=_value(rng)) for _ in range(n)]


def _request(rng: random.Random, n_traces: int) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    trace_ids = [rng.randbytes(16) for _ in range(n_traces)]
    trace_ids[0] = bytes(8) + rng.randbytes(8)  # a zero high half is left out of the id
    for r in range(4):
        rs = request.resource_spans.add()
        if r != 3:  # one resource without service.name
            name = "frontend" if r < 2 else "reviews"
            rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=name))
        rs.resource.attributes.extend(_attributes(rng, r))
        ss = rs.scope_spans.add()
        ss.scope.name = rng.choice(["", "envoy"])
        ss.scope.version = rng.choice(["", "1.2"])
        for _ in range(12):
            span = ss.spans.add()
            span.trace_id = rng.choice(trace_ids)
            span.span_id = rng.randbytes(8)
            span.parent_span_id = rng.choice([b"", bytes(8), rng.randbytes(8)])
            span.name = rng.choice(["GET /", "ingress ü", ""])
            span.kind = rng.randrange(6)
            span.start_time_unix_nano = 1_700_000_000_000_000_000 + rng.randrange(10**9)
            span.end_time_unix_nano = span.start_time_unix_nano + rng.randrange(-5, 10**7)
            span.attributes.extend(_attributes(rng, rng.randrange(8)))
            if rng.random() < 0.2:
                skew = ArrayValue(values=[AnyValue(string_value="clock skew")])
                warned = AnyValue(array_value=skew)
                span.attributes.add(key=WARNINGS_ATTRIBUTE, value=warned)
            span.status.code = rng.randrange(3)
            span.status.message = rng.choice(["", "boom"])
            span.trace_state = rng.choice(["", "k=v"])
            for _ in range(rng.randrange(3)):
                event = span.events.add(time_unix_nano=span.start_time_unix_nano + 5)
                event.name = rng.choice(["", "retry"])
                event.attributes.extend(_attributes(rng, 2))
            for _ in range(rng.randrange(3)):
                link = span.links.add(trace_id=rng.choice(trace_ids), span_id=rng.randbytes(8))
                link.attributes.extend(_attributes(rng, 1))
            if span.links and rng.random() < 0.5:  # a link to the parent itself
                span.links[0].trace_id = span.trace_id
                span.links[0].span_id = span.parent_span_id
    return request


def _traces(rows: list[Row]) -> list[list[Row]]:
    by_trace: dict[bytes, list[Row]] = {}
    for row in rows:
        by_trace.setdefault(row[TRACE_ID], []).append(row)
    return list(by_trace.values())


def test_text_answer_is_json_dumps_of_the_dict_model() -> None:
    for seed in range(5):
        traces = _traces(rows_from_request(_request(random.Random(seed), 6)))
        expected = json.dumps(envelope([trace_to_v1(t) for t in traces]), separators=(",", ":"))
        assert traces_envelope_text(trace_text(t) for t in traces) == expected
        for one in traces:
            single = json.dumps(trace_to_v1(one), separators=(",", ":"))
            assert trace_text(one) == single


def test_text_envelope_carries_errors() -> None:
    errors = [{"msg": "trace not found", "traceID": "0bad"}]
    expected = json.dumps(envelope([], errors=errors), separators=(",", ":"))
    assert traces_envelope_text([], errors) == expected
    assert json.loads(traces_envelope_text([]))["errors"] is None
