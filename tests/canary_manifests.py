"""Tests: the canary scenario's Istio objects (scenarios/manifests/canary.yaml) as API dicts."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CANARY = Path(__file__).resolve().parent.parent / "scenarios" / "manifests" / "canary.yaml"


def manifests() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(CANARY.read_text()) if d]


def by_kind(kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(d for d in manifests() if d["kind"] == kind))


def weights_of(vs: dict[str, Any], route: int = 0) -> dict[str, int]:
    return {d["destination"]["subset"]: d["weight"] for d in vs["spec"]["http"][route]["route"]}
