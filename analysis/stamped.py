"""When did a weight change take effect? Exactly, from the stamps; else the change-point estimate.

A stamped run (`meshcore.stamps`) records with every response the configuration generation
that served it (`config_step`) and the gateway replica (`replica`). Generation k is "new" for
change k, anything below it "old". Per change, overall and per replica:

- `first_new_ns`: the first request start answered by generation >= k; `delay_ms` is from the
  API's `accepted_ns` to it;
- `last_old_ns`: the last request start still answered by an older generation; `stale_ms` is
  from `accepted_ns` to it (a replica that kept the old routes shows as a long tail);
- `resolution_ms`: how precisely the data places the switch: from the last old-generation
  request start before `first_new_ns` (or the change's `requested_ns`, when later: nothing
  switches before it was asked) to `first_new_ns`. Overall, the earliest switch lies after the
  lowest of the replicas' bounds.

Without stamps (older runs, `--no-stamp`, a stamp the API refused) the change-point estimate of
`analysis.changepoint` stands, labelled `method: "estimate"`: a maximum-likelihood position with
its support interval, never the delay itself. The decision is per change: stamps count for a
change when run.json still says the run is stamped or some response carries its generation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from analysis.changepoint import CHANGE_COLUMNS, change_frame, weight_events
from analysis.changepoint import propagation as estimate_propagation
from meshcore.errors import RunFolderError

STAMPED, ESTIMATE = "stamped", "estimate"
_NEVER = np.iinfo(np.int64).max


def config_steps(requests: pd.DataFrame) -> np.ndarray:
    """The config_step column as float64 (NaN: no stamp); all NaN when not recorded."""
    if "config_step" not in requests.columns:
        return np.full(len(requests), np.nan)
    return requests["config_step"].to_numpy(dtype="float64", na_value=np.nan)


def replica_codes(requests: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The replica column as integer codes into its names (-1: no stamp, or an empty name)."""
    if "replica" not in requests.columns:
        return np.full(len(requests), -1, dtype=np.int64), []
    codes, names = pd.factorize(requests["replica"])
    texts = [str(n) for n in names]
    empty = [i for i, t in enumerate(texts) if not t]
    return np.where(np.isin(codes, empty), -1, codes).astype(np.int64), texts


def stamped_changes(run: Mapping[str, Any], requests: pd.DataFrame) -> set[int]:
    """The steps whose change the stamps measure (see the module docstring)."""
    cs = config_steps(requests)
    seen = cs[~np.isnan(cs)]
    if not len(seen):
        return set()
    on = isinstance(run.get("stamps"), Mapping)
    steps = weight_events(run)["step"].tolist()
    return {int(k) for k in steps if on or k <= seen.max()}


def propagation(
    requests: pd.DataFrame, run: Mapping[str, Any], *, margin_ms: float = 1000.0
) -> pd.DataFrame:
    """Per weight change: the columns of `analysis.changepoint.propagation` and `method`,
    `resolution_ms`, `last_old_ns`, `stale_ms`, `by_replica` (a list of dicts per change)."""
    stamped = stamped_changes(run, requests)
    events = weight_events(run)
    if stamped and stamped >= set(events["step"].tolist()):
        rows = [_unmeasured(ev) for ev in events.itertuples(index=False)]
    else:
        rows = estimate_propagation(requests, run, margin_ms=margin_ms).to_dict("records")
    for row in rows:
        row.update(method=ESTIMATE, resolution_ms=np.nan, last_old_ns=None, stale_ms=np.nan)
        row["by_replica"] = []
    if stamped:
        pods = run.get("replica_pods")
        data = _Stamps(
            requests["start_ns"].to_numpy(dtype=np.int64),
            config_steps(requests),
            *replica_codes(requests),
            {str(k): str(v) for k, v in pods.items()} if isinstance(pods, Mapping) else {},
        )
        pairs = zip(events["accepted_ns"], events["requested_ns"], strict=True)
        accepted = [_time(a, r) for a, r in pairs]
        for i, ev in enumerate(events.itertuples(index=False)):
            if int(ev.step) not in stamped:
                continue
            at = accepted[i]
            if at is None:
                raise RunFolderError(
                    f"run.json: the weights event of step {ev.step} has no accepted_ns; "
                    "record accepted_ns (or requested_ns) for every weight change"
                )
            window = (
                next((a for a in reversed(accepted[:i]) if a is not None), -_NEVER),
                next((a for a in accepted[i + 1 :] if a is not None), _NEVER),
            )
            requested = _time(ev.requested_ns, ev.accepted_ns)
            rows[i].update(
                data.change(int(ev.step), at, requested, window, margin_ms, first=i == 0)
            )
    return change_frame(rows, COLUMNS)


COLUMNS = (*CHANGE_COLUMNS, "method", "resolution_ms", "last_old_ns", "stale_ms", "by_replica")


class _Stamps:
    """A run's stamped records, sliced per change."""

    def __init__(
        self,
        start: np.ndarray,
        cs: np.ndarray,
        reps: np.ndarray,
        rep_names: list[str],
        pods: Mapping[str, str],
    ) -> None:
        self.start, self.cs, self.pods = start, cs, pods
        self.reps, self.rep_names = reps, rep_names  # replica codes (-1: none) and their names
        self.stamped = ~np.isnan(cs)

    def change(
        self,
        step: int,
        accepted: int,
        requested: int | None,
        window: tuple[int, int],
        margin_ms: float,
        *,
        first: bool,
    ) -> dict[str, Any]:
        start = self.start
        new = self.stamped & (self.cs >= step)
        old = self.stamped & (self.cs < step)
        inside = self.stamped & (start >= window[0]) & (start < window[1])
        floor = requested if requested is not None else accepted
        overall = _switch(start, new, old, floor)
        by_replica = []
        bounds = []
        served = self.reps[inside | (old & (start >= accepted))]
        seen = np.flatnonzero(np.bincount(served + 1, minlength=len(self.rep_names) + 1)[1:])
        names = sorted((self.rep_names[c], c) for c in seen.tolist())
        for name, code in names:
            mine = self.reps == code
            sw = _switch(start, new & mine, old & mine, floor)
            bounds.append(sw["bound"])
            by_replica.append(
                {
                    "replica": name,
                    **({"pod": self.pods[name]} if name in self.pods else {}),
                    "first_new_ns": sw["first_new"],
                    "delay_ms": _ms(sw["first_new"], accepted),
                    "last_old_ns": sw["last_old"],
                    "stale_ms": _ms(sw["last_old"], accepted),
                    "resolution_ms": _ms(sw["first_new"], sw["bound"]),
                    "n": int((inside & mine).sum()),
                }
            )
        # the earliest switch of any replica lies after the lowest of their bounds
        bound = min(bounds) if bounds else overall["bound"]
        first_new = overall["first_new"]
        detected = first_new is not None and not first
        reason = ""
        if first:
            reason = "the initial weights: no earlier configuration to switch from"
        elif first_new is None:
            reason = f"no response carried this change's configuration (generation {step})"
        effective = first_new if first_new is not None else accepted + round(margin_ms * 1e6)
        return {
            "method": STAMPED,
            "window_start_ns": None if window[0] == -_NEVER else window[0],
            "window_end_ns": None if window[1] == _NEVER else window[1],
            "n_window": int(inside.sum()),
            "detected": detected,
            "effective_ns": effective,
            "change_index": -1,
            "llr": np.nan,
            "delay_ms": _ms(first_new, accepted) if detected else np.nan,
            "delay_lo_ms": _ms(bound, accepted) if detected else np.nan,
            "delay_hi_ms": _ms(first_new, accepted) if detected else np.nan,
            "resolution_ms": _ms(first_new, bound) if detected else np.nan,
            "last_old_ns": None if first else overall["last_old"],
            "stale_ms": np.nan if first else _ms(overall["last_old"], accepted),
            "by_replica": [] if first else by_replica,
            "reason": reason,
        }


def _switch(start: np.ndarray, new: np.ndarray, old: np.ndarray, floor: int) -> dict[str, Any]:
    """The first new-generation start, the last old-generation one, and the bound below the
    switch: the last old-generation start before the first new one (the last old one when none
    came), never before `floor` (the change was requested then)."""
    first_new = int(start[new].min()) if new.any() else None
    last_old = int(start[old].max()) if old.any() else None
    before = start[old & (start < first_new)] if first_new is not None else start[old]
    bound = max(int(before.max()), floor) if len(before) else floor
    return {"first_new": first_new, "last_old": last_old, "bound": bound}


def _ms(t_ns: int | None, since_ns: int | None) -> float:
    return (t_ns - since_ns) / 1e6 if t_ns is not None and since_ns is not None else np.nan


def _time(value: Any, fallback: Any) -> int | None:
    for v in (value, fallback):
        if v is not None and not pd.isna(v):
            return int(v)
    return None


def _unmeasured(ev: Any) -> dict[str, Any]:
    """A change's row before the stamps fill it in (every change is stamped: no estimate)."""
    accepted = _time(ev.accepted_ns, ev.requested_ns)
    return {
        "step": int(ev.step),
        "requested_ns": _time(ev.requested_ns, None),
        "accepted_ns": accepted,
        "window_start_ns": None,
        "window_end_ns": None,
        "n_window": 0,
        "change_index": -1,
        "llr": np.nan,
        "detected": False,
        "effective_ns": accepted,
        "delay_ms": np.nan,
        "delay_lo_ms": np.nan,
        "delay_hi_ms": np.nan,
        "reason": "",
    }
