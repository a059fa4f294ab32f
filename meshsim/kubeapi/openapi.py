"""The OpenAPI v3 documents kubectl reads before `apply` and `create`.

kubectl asks `/openapi/v3` for one document per group version and looks there for two facts:
whether PATCH takes the `fieldValidation` query parameter (then it leaves schema validation to
the server instead of downloading the v2 schema), and whether PATCH accepts strategic merge
patch (custom resources do not, so `kubectl apply` sends a JSON merge patch). The documents
carry just enough for that, plus each kind's CRD schema for `kubectl explain`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from meshsim.kubeapi.crds import Catalog, ResourceType

PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json")
_QUERY = ("dryRun", "fieldManager", "fieldValidation")


def _gvk(rtype: ResourceType, version: str) -> dict[str, str]:
    return {"group": rtype.group, "version": version, "kind": rtype.kind}


def _operation(
    rtype: ResourceType, version: str, action: str, body_types: tuple[str, ...]
) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{_schema_name(rtype, version)}"}
    op: dict[str, Any] = {
        "operationId": f"{action}{rtype.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rtype, version),
        "parameters": [{"name": q, "in": "query", "schema": {"type": "string"}} for q in _QUERY],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ref}}}
        },
    }
    if body_types:
        op["requestBody"] = {"content": {t: {"schema": ref} for t in body_types}}
    return op


def _schema_name(rtype: ResourceType, version: str) -> str:
    # Reverse-domain names, as the API server publishes CRD schemas.
    return ".".join(reversed(rtype.group.split("."))) + f".{version}.{rtype.kind}"


def group_version_doc(catalog: Catalog, group: str, version: str) -> dict[str, Any] | None:
    types = [t for t in catalog.groups().get(group, []) if version in t.versions]
    if not types:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for t in types:
        base = f"/apis/{group}/{version}/namespaces/{{namespace}}/{t.plural}"
        paths[base] = {
            "get": _operation(t, version, "list", ()),
            "post": _operation(t, version, "post", ("application/json",)),
        }
        paths[base + "/{name}"] = {
            "get": _operation(t, version, "get", ()),
            "put": _operation(t, version, "put", ("application/json",)),
            "patch": _operation(t, version, "patch", PATCH_TYPES),
            "delete": _operation(t, version, "delete", ()),
        }
        schema = dict(t.schemas[version])
        schema["x-kubernetes-group-version-kind"] = [_gvk(t, version)]
        schemas[_schema_name(t, version)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _hash(catalog: Catalog, group: str, version: str) -> str:
    doc = group_version_doc(catalog, group, version)
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()


def root_doc(catalog: Catalog) -> dict[str, Any]:
    """`/openapi/v3`: where each group version's document lives (the hash busts caches)."""
    paths = {}
    for group in catalog.groups():
        for version in catalog.versions(group):
            key = f"apis/{group}/{version}"
            paths[key] = {
                "serverRelativeURL": f"/openapi/v3/{key}?hash={_hash(catalog, group, version)}"
            }
    return {"paths": paths}
