"""meshcore.traceparent: the W3C trace context meshload sends and the simulated mesh reads."""

from __future__ import annotations

import re

import pytest

from meshcore.traceparent import new_trace, parse_traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def test_traceparent_is_w3c_version_00() -> None:
    for _ in range(200):
        tc = new_trace()
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", tc.header)
        assert tc.header == f"00-{tc.trace_id}-{tc.span_id}-01"
        assert int(tc.trace_id, 16) != 0 and int(tc.span_id, 16) != 0
        assert parse_traceparent(tc.header) == tc


def test_sampling_share_is_respected() -> None:
    assert not any(new_trace(0.0).sampled for _ in range(200))
    sampled = sum(new_trace(0.25).sampled for _ in range(4000))
    # binomial(4000, 0.25): sd = 27.4; 4 sd either side
    assert abs(sampled - 1000) < 110
    assert new_trace(0.0).header.endswith("-00")


def test_trace_ids_do_not_repeat() -> None:
    ids = {new_trace().trace_id for _ in range(5000)}
    assert len(ids) == 5000


@pytest.mark.parametrize(
    "bad",
    ["", "00-xyz-1-01", "00-" + "a" * 32 + "-" + "b" * 16 + "-01-more", "01-" + "a" * 32 + "-b-01"],
)
def test_bad_traceparents_are_refused(bad: str) -> None:
    assert parse_traceparent(bad) is None


def test_a_higher_version_is_read_by_its_first_four_fields() -> None:
    ctx = parse_traceparent(f"01-{TRACE_ID}-{PARENT_ID}-03-what-comes-next")
    assert ctx is not None and (ctx.trace_id, ctx.span_id, ctx.sampled) == (
        TRACE_ID,
        PARENT_ID,
        True,
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (TRACEPARENT, (TRACE_ID, PARENT_ID, True)),
        (f"00-{TRACE_ID}-{PARENT_ID}-00", (TRACE_ID, PARENT_ID, False)),
        (f" 00-{TRACE_ID.upper()}-{PARENT_ID}-01 ", (TRACE_ID, PARENT_ID, True)),
        (f"ff-{TRACE_ID}-{PARENT_ID}-01", None),
        (f"00-{'0' * 32}-{PARENT_ID}-01", None),
        (f"00-{TRACE_ID}-{'0' * 16}-01", None),
        (f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_traceparent(header: str | None, expected: tuple[str, str, bool] | None) -> None:
    ctx = parse_traceparent(header)
    got = None if ctx is None else (ctx.trace_id, ctx.span_id, ctx.sampled)
    assert got == expected
