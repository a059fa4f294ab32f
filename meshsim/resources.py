"""Istio resources as read from manifests: one file or a folder, as `kubectl apply -f` reads them.

A folder's `.json`, `.yaml` and `.yml` files are read in lexical order (subfolders are not
read), each as a stream of documents; a text that starts with `{` is a JSON stream, as kubectl
decides. kubectl applies every document in that order, so when one object (group, kind,
namespace, name) appears again, in another file or the same one, the later copy wins and a line
says it is `configured` (or `unchanged` when identical), naming both places.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshcore.errors import ConfigError, ManifestError, YamlError
from meshcore.kube.istio import GROUP, ROUTING_KINDS, VERSIONS
from meshcore.yamldoc import load_yaml_documents

log = logging.getLogger(__name__)

# kubectl's choice of a folder's files; suffixes compare case-sensitively (`x.YAML` is skipped).
MANIFEST_SUFFIXES = (".json", ".yaml", ".yml")

# The Istio kinds the embedded API serves and stores (every kind of Istio's CRD file) that do
# not change the embedded mesh's Envoy configuration, each with what of it is not simulated.
NOT_SIMULATED: dict[tuple[str, str], str] = {
    ("networking.istio.io", "ServiceEntry"): "hosts outside the mesh (no egress is simulated)",
    ("networking.istio.io", "Sidecar"): "scoping of each workload's sidecar",
    ("networking.istio.io", "EnvoyFilter"): "patches to the generated Envoy configuration",
    ("networking.istio.io", "WorkloadEntry"): "workloads outside Kubernetes",
    ("networking.istio.io", "WorkloadGroup"): "workloads outside Kubernetes",
    ("networking.istio.io", "ProxyConfig"): "per-workload proxy settings",
    ("security.istio.io", "PeerAuthentication"): "mutual TLS (mesh traffic is plain text)",
    ("security.istio.io", "AuthorizationPolicy"): "access control (every request is allowed)",
    ("security.istio.io", "RequestAuthentication"): "JWT checks (tokens are not verified)",
    ("telemetry.istio.io", "Telemetry"): "telemetry settings (every request is traced)",
    ("extensions.istio.io", "WasmPlugin"): "Wasm filters in the proxies",
    ("extensions.istio.io", "TrafficExtension"): "Wasm and Lua filters in the proxies",
}


class _OncePerKind:
    """Which not-simulated kinds were already named: a long-running mesh re-reads every stored
    object on each change, and one line per kind says all there is to say."""

    def __init__(self) -> None:
        self._said: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def first(self, key: tuple[str, str]) -> bool:
        with self._lock:
            if key in self._said:
                return False
            self._said.add(key)
            return True

    def reset(self) -> None:
        with self._lock:
            self._said.clear()


NOT_SIMULATED_SAID = _OncePerKind()

# The Gateway API kinds the embedded mesh routes (`meshsim.httproutes`), in the versions the
# standard channel serves.
GATEWAY_API_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_KINDS = ("GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant")
CLUSTER_SCOPED = frozenset({(GATEWAY_API_GROUP, "GatewayClass")})  # namespace "" in a Resource
GATEWAY_API_VERSIONS = ("v1", "v1beta1")


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
    document: int = 0  # 1-based in its file (a `kind: List` counts as one); 0: not from a file

    @property
    def place(self) -> str:
        """Where the resource was read: `dir/10-canary.yaml document 2`."""
        return f"{self.source} document {self.document}" if self.document else self.source

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """What makes two manifests the same object for the API: group, kind, namespace, name
        (`v1` and `v1beta1` copies are one object)."""
        return (self.api_version.rpartition("/")[0], self.kind, self.namespace, self.name)

    @property
    def ref(self) -> str:
        """How messages name the resource: `VirtualService default/frontend`, `GatewayClass
        istio` (cluster-scoped)."""
        return (
            f"{self.kind} {self.namespace}/{self.name}"
            if self.namespace
            else f"{self.kind} {self.name}"
        )

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Group, kind, namespace, name: an Istio Gateway and a Gateway API one differ."""
        return (self.group, self.kind, self.namespace, self.name)

    def to_object(self) -> dict[str, Any]:
        """The resource as the Kubernetes API would hold it."""
        meta = {**self.metadata, "name": self.name, "namespace": self.namespace}
        if not self.namespace:
            del meta["namespace"]
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": meta,
            "spec": self.spec,
        }


def from_object(
    obj: Any, source: str, default_namespace: str = "default", document: int = 0
) -> Resource | None:
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
    ignored_part = NOT_SIMULATED.get((group, str(kind)))
    if ignored_part is not None:
        if NOT_SIMULATED_SAID.first((group, str(kind))):
            log.warning(
                "%s: %s: stored but not simulated: the embedded mesh ignores %s "
                "(said once for every %s)",
                source,
                ref,
                ignored_part,
                kind,
            )
        return None
    gateway_api = group == GATEWAY_API_GROUP and kind in GATEWAY_API_KINDS
    if gateway_api and version not in GATEWAY_API_VERSIONS:
        raise ManifestError(
            source, ref, "apiVersion", f"{api_version} is not served; use {group}/v1 or v1beta1"
        )
    if not gateway_api and (group != GROUP or kind not in ROUTING_KINDS):
        log.warning(
            "%s: %s: apiVersion %s kind %s is not a routing resource; ignored",
            source,
            ref,
            api_version or "?",
            kind or "?",
        )
        return None
    if not gateway_api and version not in VERSIONS:
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
    namespace = (
        "" if (group, kind) in CLUSTER_SCOPED else str(meta.get("namespace") or default_namespace)
    )
    return Resource(
        kind=str(kind),
        name=name,
        namespace=namespace,
        spec=spec,
        api_version=api_version,
        source=source,
        metadata=dict(meta),
        document=document,
    )


def parse_documents(text: str, source: str, default_namespace: str = "default") -> list[Resource]:
    """All routing resources of a multi-document text (`kind: List` expanded), in order; a text
    that starts with `{` is read as a stream of JSON objects, as kubectl reads it."""
    return _routing(_documents(text, source), source, default_namespace)


def _routing(docs: list[Any], source: str, default_namespace: str) -> list[Resource]:
    return [
        r
        for n, doc in enumerate(docs, start=1)
        for r in _resources([doc], source, default_namespace, n)
        if r is not None
    ]


def _documents(text: str, source: str) -> list[Any]:
    if text.lstrip().startswith("{"):
        return _json_documents(text, source)
    try:
        return load_yaml_documents(text, source)
    except YamlError as exc:
        problem = f"{exc.problem}; fix the YAML syntax"
        raise ManifestError(source, "document", exc.where, problem) from None


def _unsimulated(
    docs: list[Any], default_namespace: str
) -> Iterator[tuple[tuple[str, str, str, str], dict[str, Any]]]:
    """(group, kind, namespace, name) and the object, as the API stores it, of each document of
    a kind the mesh stores but does not simulate."""
    for doc in _expanded(docs):
        if not isinstance(doc, dict):
            continue  # the routing reader refuses it
        group = str(doc.get("apiVersion", "")).rpartition("/")[0]
        meta = dict(doc.get("metadata") or {})
        if (group, str(doc.get("kind"))) not in NOT_SIMULATED or not meta.get("name"):
            continue
        meta["namespace"] = str(meta.get("namespace") or default_namespace)
        yield (
            (group, str(doc["kind"]), meta["namespace"], str(meta["name"])),
            {**doc, "metadata": meta},
        )


def _expanded(docs: Iterable[Any]) -> Iterator[Any]:
    """The documents with each `kind: List` replaced by its items, as kubectl reads them."""
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List":
            yield from _expanded(doc.get("items") or [])
        else:
            yield doc


def _json_documents(text: str, source: str) -> list[Any]:
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    pos = _skip_blank(text, 0)
    while pos < len(text):
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            where = f"line {exc.lineno}"
            problem = f"{exc.msg}; fix the JSON syntax (a file that starts with {{ is JSON)"
            raise ManifestError(source, "document", where, problem) from None
        docs.append(doc)
        pos = _skip_blank(text, pos)
    return docs


def _skip_blank(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _resources(
    docs: Iterable[Any], source: str, ns: str, document: int
) -> Iterator[Resource | None]:
    for doc in _expanded(docs):
        yield from_object(doc, source, ns, document)


def manifest_files(path: str | Path) -> list[Path]:
    """The files `kubectl apply -f PATH` reads: PATH itself, or a folder's `.json`, `.yaml` and
    `.yml` files (hidden ones too) in lexical order of their bytes, subfolders left out."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise ConfigError(f"{p}: no such file or directory; check the manifests path")
    files = sorted(
        (f for f in p.iterdir() if f.suffix in MANIFEST_SUFFIXES and f.is_file()),
        key=lambda f: os.fsencode(f.name),
    )
    if not files:
        raise ConfigError(
            f"{p}: no .json, .yaml or .yml file in this folder (subfolders are not read); "
            "give a manifest file or a folder that holds them"
        )
    return files


def later_wins(resources: Sequence[Resource]) -> tuple[list[Resource], list[str]]:
    """One resource per object, as kubectl leaves the API after applying them all in order:
    the last copy's content, and a line for each repeat (`configured`, or `unchanged` when it
    equals the copy before it)."""
    kept: dict[tuple[str, str, str, str], Resource] = {}
    said: list[str] = []
    for r in resources:
        before = kept.get(r.identity)
        if before is not None:
            if r.to_object() == before.to_object():
                said.append(f"{r.ref} unchanged: {r.place} repeats {before.place}")
            else:
                said.append(
                    f"{r.ref} configured: {r.place} replaces {before.place}; "
                    "the later one wins, as kubectl applies both in order"
                )
        # The dict keeps the first copy's position: the object was created there, and the
        # older of two VirtualServices claiming one host is the one that routes it.
        kept[r.identity] = r
    return list(kept.values()), said


@dataclass(frozen=True)
class Manifests:
    """A manifest file or folder, each file read once: its routing resources and the objects
    of kinds the mesh stores but does not simulate, as the Kubernetes API holds them after
    `kubectl apply` (so `mesh up` serves them as a cluster would)."""

    resources: list[Resource]
    unsimulated: list[dict[str, Any]]


def read_manifests(path: str | Path, default_namespace: str = "default") -> Manifests:
    """Read a manifest file or folder as `kubectl apply -f` does (`manifest_files`), the later
    copy of a repeated object winning (`later_wins` for the routing ones, each repeat logged)."""
    resources: list[Resource] = []
    stored: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for f in manifest_files(path):
        docs = _documents(f.read_text(encoding="utf-8"), str(f))
        resources.extend(_routing(docs, str(f), default_namespace))
        for key, obj in _unsimulated(docs, default_namespace):
            stored.pop(key, None)  # the later copy wins, in the later place
            stored[key] = obj
    kept, said = later_wins(resources)
    for line in said:
        log.warning("%s", line)
    return Manifests(kept, list(stored.values()))


def load_manifests(path: str | Path, default_namespace: str = "default") -> list[Resource]:
    """The routing resources of a manifest file or folder (`read_manifests`)."""
    return read_manifests(path, default_namespace).resources
