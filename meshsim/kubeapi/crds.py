"""The resource types the embedded API serves, read from the projects' own CRD manifests.

Every CustomResourceDefinition of `meshsim/data/istio-crd-all.gen.yaml` (a byte-for-byte copy of
istio/istio's `crd-all.gen.yaml`) is served: networking, security, telemetry and extensions
kinds alike; so are the Gateway API's GatewayClass, Gateway, HTTPRoute and ReferenceGrant, from
byte-for-byte copies of gateway-api v1.6.1's standard-channel CRDs
(`meshsim/data/gateway-api-SOURCES.md`).
Names, versions, printer columns and schemas all come from those files, so the embedded API
answers discovery and validates exactly as a cluster with those CRDs installed would, including
for the kinds the mesh stores without simulating them.

A cluster-scoped type (GatewayClass) is served at `/apis/GROUP/VERSION/PLURAL[/NAME]`; its
objects have no `metadata.namespace` and the store keys them under the namespace "".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshcore.errors import ConfigError
from meshcore.yamldoc import load_yaml_documents

_DATA = Path(__file__).resolve().parent.parent / "data"
CRD_FILE = _DATA / "istio-crd-all.gen.yaml"
GATEWAY_API_FILES: tuple[Path, ...] = tuple(
    _DATA / f"gateway.networking.k8s.io_{plural}.yaml"
    for plural in ("gatewayclasses", "gateways", "httproutes", "referencegrants")
)

# The routing kinds the embedded mesh turns into Envoy config: a CRD file without them is not
# Istio's. Every other CRD of the file is served too.
REQUIRED_KINDS: tuple[tuple[str, str], ...] = (
    ("networking.istio.io", "VirtualService"),
    ("networking.istio.io", "DestinationRule"),
    ("networking.istio.io", "Gateway"),
)
_KUBE_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key of Kubernetes' version order: v2, v1, v1beta2, v1beta1, v1alpha1, then others
    alphabetically (the API server prefers the first of a group's versions)."""
    m = _KUBE_VERSION.match(version)
    if m is None:
        return (3, 0, 0, version)
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0), "")


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
    namespaced: bool = True

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
        """Served versions of a group in Kubernetes' order, the preferred one first."""
        found = {v for t in self.groups().get(group, []) for v in t.versions}
        return sorted(found, key=version_priority)


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
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
    )


def load_catalog(
    path: str | Path = CRD_FILE,
    required: Iterable[tuple[str, str]] = REQUIRED_KINDS,
    extra: Iterable[str | Path] = GATEWAY_API_FILES,
) -> Catalog:
    """Every type of a CRD manifest and of the `extra` ones, in file order;
    ConfigError if one of `required` is missing from `path`."""
    found: dict[tuple[str, str], ResourceType] = {}
    for p in extra:
        found.update(_load(str(p), ()))
    return Catalog({**_load(str(path), tuple(required)), **found}.values())


@functools.lru_cache(maxsize=8)
def _load(path: str, required: tuple[tuple[str, str], ...]) -> dict[tuple[str, str], ResourceType]:
    try:
        with open(path, encoding="utf-8") as f:
            docs = load_yaml_documents(f.read(), path)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the CRD manifest ({exc.strerror}); "
            "reinstall meshload (it ships meshsim/data)"
        ) from None
    found: dict[tuple[str, str], ResourceType] = {}
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
            t = _type_from_crd(doc)
            found[(t.group, t.kind)] = t
    missing = [f"{k}.{g}" for g, k in required if (g, k) not in found]
    if missing:
        raise ConfigError(
            f"{path}: no CustomResourceDefinition for {', '.join(missing)}; "
            "use Istio's crd-all.gen.yaml"
        )
    return found
