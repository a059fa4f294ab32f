"""Discovery documents: what `/version`, `/api`, `/apis` and each group version answer.

Only the legacy (unaggregated) forms are served: kubectl asks for aggregated discovery first
but falls back when the answer's content type is plain `application/json`, as it does against
any server older than 1.26.
"""

from __future__ import annotations

from typing import Any

from meshsim.kubeapi.core import CORE_TYPES
from meshsim.kubeapi.crds import Catalog

KUBERNETES_VERSION = ("1", "32")
CRD_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
CORE_VERBS = ["get", "list"]


def version_info() -> dict[str, str]:
    major, minor = KUBERNETES_VERSION
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{major}.{minor}.0-meshload",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def core_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def core_resources() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": CORE_VERBS,
                "shortNames": list(t.short_names),
            }
            for t in CORE_TYPES
        ],
    }


def _group(catalog: Catalog, group: str) -> dict[str, Any]:
    versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in catalog.versions(group)]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def group_list(catalog: Catalog) -> dict[str, Any]:
    groups = []
    for name in catalog.groups():
        g = _group(catalog, name)
        groups.append({k: v for k, v in g.items() if k not in ("kind", "apiVersion")})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(catalog: Catalog, name: str) -> dict[str, Any] | None:
    return _group(catalog, name) if name in catalog.groups() else None


def group_version_resources(catalog: Catalog, group: str, version: str) -> dict[str, Any] | None:
    types = [t for t in catalog.groups().get(group, []) if version in t.versions]
    if not types:
        return None
    resources: list[dict[str, Any]] = []
    for t in types:
        resources.append(
            {
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": CRD_VERBS,
                "shortNames": list(t.short_names),
                "categories": list(t.categories),
            }
        )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}",
        "resources": resources,
    }
