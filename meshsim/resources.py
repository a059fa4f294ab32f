"""Istio resources as read from YAML manifests (one file or a directory, multi-document)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshcore.errors import ConfigError, ManifestError, YamlError
from meshcore.kube.istio import GROUP, ROUTING_KINDS, VERSIONS
from meshcore.yamldoc import load_yaml_documents

log = logging.getLogger(__name__)

# Kinds that a canary's manifests carry beside the routing ones; the embedded mesh keeps them
# (the Kubernetes API serves them) but they do not change Envoy's configuration.
STORED_KINDS = {"telemetry.istio.io": ("Telemetry",)}


@dataclass(frozen=True)
class Resource:
    """One Istio object: its identity, its spec and the file it came from."""

    kind: str
    name: str
    namespace: str
    spec: dict[str, Any]
    api_version: str = f"{GROUP}/v1"
    source: str = "<api>"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """How messages name the resource: `VirtualService default/frontend`."""
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    def to_object(self) -> dict[str, Any]:
        """The resource as the Kubernetes API would hold it."""
        meta = {**self.metadata, "name": self.name, "namespace": self.namespace}
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": meta,
            "spec": self.spec,
        }


def from_object(obj: Any, source: str, default_namespace: str = "default") -> Resource | None:
    """Turn one parsed YAML document into a Resource; None for kinds the mesh does not route."""
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ManifestError(
            source,
            "document",
            "(top level)",
            "is not a mapping; each YAML document must be one Kubernetes object",
        )
    kind = obj.get("kind")
    api_version = str(obj.get("apiVersion", ""))
    group, _, version = api_version.rpartition("/")
    meta = obj.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    ref = f"{kind or '?'} {name or '?'}"
    if kind in STORED_KINDS.get(group, ()):
        return None
    if group != GROUP or kind not in ROUTING_KINDS:
        log.warning(
            "%s: %s: apiVersion %s kind %s is not an Istio routing resource; ignored",
            source,
            ref,
            api_version or "?",
            kind or "?",
        )
        return None
    if version not in VERSIONS:
        raise ManifestError(
            source,
            ref,
            "apiVersion",
            f"{api_version} is not served; use {GROUP}/v1, v1beta1 or v1alpha3",
        )
    if not isinstance(name, str) or not name:
        raise ManifestError(source, ref, "metadata.name", "is missing; give the resource a name")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise ManifestError(source, f"{kind} {name}", "spec", "is missing or not a mapping")
    namespace = str(meta.get("namespace") or default_namespace)
    return Resource(
        kind=kind,
        name=name,
        namespace=namespace,
        spec=spec,
        api_version=api_version,
        source=source,
        metadata=dict(meta),
    )


def parse_documents(text: str, source: str, default_namespace: str = "default") -> list[Resource]:
    """All routing resources of a multi-document YAML text (`kind: List` expanded)."""
    try:
        docs = load_yaml_documents(text, source)
    except YamlError as exc:
        problem = f"{exc.problem}; fix the YAML syntax"
        raise ManifestError(source, "document", exc.where, problem) from None
    return [r for r in _resources(docs, source, default_namespace) if r is not None]


def _resources(docs: Iterable[Any], source: str, ns: str) -> Iterator[Resource | None]:
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List":
            yield from _resources(doc.get("items") or [], source, ns)
        else:
            yield from_object(doc, source, ns)


def load_manifests(path: str | Path, default_namespace: str = "default") -> list[Resource]:
    """Read one YAML file or every *.yaml / *.yml file of a directory (sorted, not recursive)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".yaml", ".yml") and f.is_file())
        if not files:
            raise ConfigError(
                f"{p}: no *.yaml files found; point --manifests at a YAML file "
                "or a directory of them"
            )
    elif p.is_file():
        files = [p]
    else:
        raise ConfigError(f"{p}: no such file or directory; check the --manifests path")
    resources: list[Resource] = []
    for f in files:
        resources.extend(parse_documents(f.read_text(encoding="utf-8"), str(f), default_namespace))
    return resources
