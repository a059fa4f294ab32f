"""analysis.backends: the frontend's pod versions named by the plan's backends."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.backends import by_backend, label_to_backend, renamed
from analysis.runfolder import Run

NAMES = {"frontend-v1": "v1", "frontend-v2": "v2"}


def labels(app: str, version: str, **more: str) -> str:
    lb = {"destination_app": app, "destination_version": version, "reporter": "destination"}
    return json.dumps(dict(sorted({**lb, **more}.items())), separators=(",", ":"))


def a_run(meta: dict[str, object]) -> Run:
    requests = pd.DataFrame(
        {"version": pd.Categorical(["frontend-v1", "v2", None, "v1", "frontend-v2"])}
    )
    spans = pd.DataFrame(
        {
            "service": pd.Categorical(["frontend", "frontend", "currencyservice", "frontend"]),
            "version": pd.Categorical(["v1", "v2", "v1", None]),
        }
    )
    metrics = pd.DataFrame(
        {
            "t": [1.0, 1.0, 1.0],
            "metric": ["istio_requests_total"] * 3,
            "labels": pd.Categorical(
                [
                    labels("frontend", "v1"),
                    labels("currencyservice", "v1", source_app="frontend", source_version="v2"),
                    labels("frontend", "v3"),
                ]
            ),
            "value": [5.0, 6.0, 7.0],
        }
    )
    return Run(Path("."), meta, requests, spans, metrics, [], {})


def test_only_the_frontends_versions_take_their_backends_names() -> None:
    run, notes = by_backend(a_run({"backend_versions": NAMES}))
    assert list(run.requests["version"].astype(object)) == [
        "frontend-v1", "frontend-v2", np.nan, "frontend-v1", "frontend-v2"
    ]  # fmt: skip
    assert isinstance(run.requests["version"].dtype, pd.CategoricalDtype)
    # currencyservice's v1 is its own; a span without a version stays without one
    assert list(run.spans["version"].astype(object)) == ["frontend-v1", "frontend-v2", "v1", np.nan]
    got = [json.loads(x) for x in run.metrics["labels"].astype(str)]
    assert got[0]["destination_version"] == "frontend-v1"
    assert got[1]["destination_version"] == "v1" and got[1]["source_version"] == "frontend-v2"
    assert got[2]["destination_version"] == "v3"  # no backend selects it
    assert run.metrics["labels"].astype(str).iloc[2] == labels("frontend", "v3")  # untouched
    assert notes == [
        "versions named by the route's backends (run.json backend_versions): "
        "v1 as frontend-v1, v2 as frontend-v2"
    ]


def test_nothing_is_renamed_without_a_one_to_one_translation() -> None:
    assert label_to_backend({}) == {}
    assert label_to_backend({"backend_versions": {"v1": "v1", "v2": "v2"}}) == {}  # identity
    assert label_to_backend({"backend_versions": {"a": "v1", "b": "v1"}}) == {}  # ambiguous
    assert label_to_backend({"backend_versions": ["v1"]}) == {}
    run = a_run({"backend_versions": {"a": "v1", "b": "v1"}})
    same, notes = by_backend(run)
    assert same is run and notes == []


def test_renamed_keeps_rows_outside_the_mask_and_plain_strings_work() -> None:
    plain = pd.Series(["v1", "v2", None, "v1"], dtype=object)
    out = renamed(plain, {"v1": "frontend-v1"}, np.array([True, True, True, False]))
    assert list(out) == ["frontend-v1", "v2", None, "v1"]
    cat = pd.Series(pd.Categorical(["v1", "frontend-v1", "v1"]))
    out = renamed(cat, {"v1": "frontend-v1"}, np.array([True, True, False]))
    assert list(out.astype(str)) == ["frontend-v1", "frontend-v1", "v1"]
    assert sorted(out.cat.categories) == ["frontend-v1", "v1"]
