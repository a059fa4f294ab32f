"""The moved service's versions named as the plan names them.

A Gateway API canary names each version by its Service (`frontend-v1`, `frontend-v2`), while
the traces (`istio.canonical_revision`) and Prometheus (`destination_version`) name the pods'
`version` label (`v1`, `v2`). run.json's `backend_versions` ({backend: label}, read from the
backend Services' selectors at start) gives the translation: the frontend's spans and its
series in the metrics take the backend's name, as do records whose version header gave the
label. Only the frontend's names change (other services keep their own), and only when the
translation is one to one; a record already naming a backend keeps it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analysis.runfolder import Run


def label_to_backend(meta: Mapping[str, Any]) -> dict[str, str]:
    """{pod version label: backend name} from run.json, {} when it says nothing, names a
    label twice, or names each backend by its own label."""
    given = meta.get("backend_versions") or {}
    if not isinstance(given, Mapping):
        return {}
    pairs = {str(label): str(backend) for backend, label in given.items() if label}
    if len(pairs) != len(given) or all(label == b for label, b in pairs.items()):
        return {}
    return pairs


def by_backend(run: Run, frontend: str = "frontend") -> tuple[Run, list[str]]:
    """The run with the frontend's versions named by backend, and a note saying so."""
    names = label_to_backend(run.meta)
    if not names:
        return run, []
    backends = set(names.values())
    requests, spans, metrics = run.requests, run.spans, run.metrics
    if "version" in requests.columns and len(requests):
        mine = ~requests["version"].astype("string").isin(backends).fillna(False).to_numpy()
        requests = requests.assign(version=renamed(requests["version"], names, mine))
    if len(spans) and "service" in spans.columns:
        spans = spans_by_backend(spans, names, frontend)
    if len(metrics) and "labels" in metrics.columns:
        metrics = metrics.assign(labels=_relabelled(metrics["labels"], names, frontend))
    said = ", ".join(f"{label} as {b}" for label, b in sorted(names.items()))
    note = f"versions named by the route's backends (run.json backend_versions): {said}"
    return dataclasses.replace(run, requests=requests, spans=spans, metrics=metrics), [note]


def spans_by_backend(
    spans: pd.DataFrame, names: Mapping[str, str], frontend: str = "frontend"
) -> pd.DataFrame:
    """The frontend's spans with their versions named by backend (`label_to_backend`)."""
    mine = (spans["service"].astype("string") == frontend).fillna(False).to_numpy()
    return spans.assign(version=renamed(spans["version"], names, mine))


def renamed(values: pd.Series, names: Mapping[str, str], rows: np.ndarray) -> pd.Series:
    """`values` with each of `names` renamed in `rows` (a categorical stays categorical)."""
    if not isinstance(values.dtype, pd.CategoricalDtype):
        return values.mask(rows & values.isin(list(names)).to_numpy(), values.map(names))
    cats = [str(c) for c in values.cat.categories]
    every = pd.Index(list(dict.fromkeys([*cats, *names.values()])))
    old_codes = values.cat.codes.to_numpy()
    to_every = every.get_indexer(cats)
    to_named = every.get_indexer([names.get(c, c) for c in cats])
    present = old_codes >= 0
    codes = np.full(len(values), -1, dtype=np.int64)
    codes[present] = np.where(
        rows[present], to_named[old_codes[present]], to_every[old_codes[present]]
    )
    return pd.Series(pd.Categorical.from_codes(codes, every), index=values.index, name=values.name)


def _relabelled(labels: pd.Series, names: Mapping[str, str], app: str) -> pd.Series:
    """The metrics' label sets (JSON, keys sorted) with `app`'s destination and source
    versions renamed; each distinct set parsed once."""
    codes, uniques = pd.factorize(labels.astype(str))
    new = []
    for text in uniques:
        lb = json.loads(text)
        sides = [
            s
            for s in ("destination", "source")
            if lb.get(f"{s}_app") == app and lb.get(f"{s}_version") in names
        ]
        for side in sides:
            lb[f"{side}_version"] = names[lb[f"{side}_version"]]
        new.append(json.dumps(lb, sort_keys=True, separators=(",", ":")) if sides else text)
    relabelled = np.asarray(new, dtype=object)[codes]
    return pd.Series(pd.Categorical(relabelled), index=labels.index, name=labels.name)
