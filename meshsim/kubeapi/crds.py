"""The Istio resource types the embedded API serves, read from Istio's own CRD manifest.

Names, versions, printer columns and schemas all come from `meshsim/data/istio-crd-all.gen.yaml`
(a byte-for-byte copy of istio/istio's `crd-all.gen.yaml`), so the embedded API answers
discovery and validates exactly as a cluster with those CRDs installed would.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshcore.errors import ConfigError
from meshcore.yamldoc import load_yaml_documents

CRD_FILE = Path(__file__).resolve().parent.parent / "data" / "istio-crd-all.gen.yaml"

# The routing kinds the embedded mesh turns into Envoy config, plus Telemetry which canary
# manifests carry and the API stores without acting on it.
SERVED_KINDS: tuple[tuple[str, str], ...] = (
    ("networking.istio.io", "VirtualService"),
    ("networking.istio.io", "DestinationRule"),
    ("networking.istio.io", "Gateway"),
    ("telemetry.istio.io", "Telemetry"),
)


@dataclass(frozen=True, eq=False)
class ResourceType:
    """One custom resource type as its CustomResourceDefinition declares it.

    Compared and hashed by identity: the catalog holds one instance per type.
    """

    group: str
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    categories: tuple[str, ...]
    versions: tuple[str, ...]
    storage_version: str
    schemas: dict[str, dict[str, Any]]
    printer_columns: dict[str, list[dict[str, Any]]]

    @property
    def resource(self) -> str:
        """`virtualservices.networking.istio.io`."""
        return f"{self.plural}.{self.group}"

    def api_version(self, version: str | None = None) -> str:
        return f"{self.group}/{version or self.storage_version}"


class Catalog:
    """The served types, looked up by (group, plural) or (group, kind)."""

    def __init__(self, types: Iterable[ResourceType]) -> None:
        self.types = tuple(types)
        self._by_plural = {(t.group, t.plural): t for t in self.types}
        self._by_kind = {(t.group, t.kind): t for t in self.types}

    def by_plural(self, group: str, plural: str) -> ResourceType | None:
        return self._by_plural.get((group, plural))

    def by_kind(self, group: str, kind: str) -> ResourceType | None:
        return self._by_kind.get((group, kind))

    def groups(self) -> dict[str, list[ResourceType]]:
        out: dict[str, list[ResourceType]] = {}
        for t in self.types:
            out.setdefault(t.group, []).append(t)
        return out

    def versions(self, group: str) -> list[str]:
        """Served versions of a group, preferred (the storage version) first."""
        types = self.groups().get(group, [])
        if not types:
            return []
        preferred = types[0].storage_version
        found = {v for t in types for v in t.versions}
        return [preferred] + sorted(found - {preferred})


def _type_from_crd(crd: dict[str, Any]) -> ResourceType:
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec["versions"] if v.get("served", True)]
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    return ResourceType(
        group=spec["group"],
        kind=names["kind"],
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        versions=tuple(v["name"] for v in served),
        storage_version=storage,
        schemas={v["name"]: v["schema"]["openAPIV3Schema"] for v in served},
        printer_columns={v["name"]: list(v.get("additionalPrinterColumns") or []) for v in served},
    )


def load_catalog(
    path: str | Path = CRD_FILE, kinds: Iterable[tuple[str, str]] = SERVED_KINDS
) -> Catalog:
    """The served types of `kinds` from a CRD manifest; ConfigError if one is missing."""
    wanted = list(kinds)
    return _load(str(path), tuple(wanted))


@functools.lru_cache(maxsize=4)
def _load(path: str, wanted: tuple[tuple[str, str], ...]) -> Catalog:
    try:
        with open(path, encoding="utf-8") as f:
            docs = load_yaml_documents(f.read(), path)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the Istio CRD manifest ({exc.strerror}); "
            "reinstall meshload (it ships meshsim/data)"
        ) from None
    found: dict[tuple[str, str], ResourceType] = {}
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
            t = _type_from_crd(doc)
            found[(t.group, t.kind)] = t
    missing = [f"{k}.{g}" for g, k in wanted if (g, k) not in found]
    if missing:
        raise ConfigError(
            f"{path}: no CustomResourceDefinition for {', '.join(missing)}; "
            "use Istio's crd-all.gen.yaml"
        )
    return Catalog(found[k] for k in wanted)
