"""The OpenAPI v3 documents kubectl reads before `apply` and `create`.

kubectl asks `/openapi/v3` for one document per group version and looks there for two facts:
whether PATCH takes the `fieldValidation` query parameter (then it leaves schema validation to
the server instead of downloading the v2 schema), and whether PATCH accepts strategic merge
patch (custom resources do not, so `kubectl apply` sends a JSON merge patch). The documents
carry just enough for that, plus each kind's CRD schema for `kubectl explain`.

For a kind that no v3 document lists (a Gateway API GRPCRoute, say) kubectl downloads
`/openapi/v2` as protobuf instead. That document declares no definitions, so kubectl skips
client-side validation and reports `no matches for kind`, as against a cluster without that
CRD; the served kinds are all validated from v3 and by the server.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

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
        scope = "/namespaces/{namespace}" if t.namespaced else ""
        base = f"/apis/{group}/{version}{scope}/{t.plural}"
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


V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
# The API server answers with a dot for the `@`, which Go's media type parser refuses.
_V2_PROTOBUF_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_V2_INFO = {"title": "Kubernetes", "version": "v1.32.0"}


def v2_doc() -> dict[str, Any]:
    """`/openapi/v2` as JSON."""
    return {"swagger": "2.0", "info": dict(_V2_INFO), "paths": {}, "definitions": {}}


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    out = bytearray([number << 3 | 2])
    n = len(payload)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


def v2_protobuf() -> bytes:
    """`v2_doc()` as the gnostic `openapi_v2.Document` message kubectl unmarshals: swagger (1),
    info (2: title 1, version 2) and empty paths (8), numbered as gnostic's OpenAPIv2.proto."""
    info = _field(1, _V2_INFO["title"].encode()) + _field(2, _V2_INFO["version"].encode())
    return _field(1, b"2.0") + _field(2, info) + _field(8, b"")


async def serve_v2(request: web.Request) -> web.Response:
    """`GET /openapi/v2`: protobuf when asked for (kubectl does), JSON otherwise."""
    if V2_PROTOBUF in request.headers.get("Accept", ""):
        return web.Response(body=v2_protobuf(), content_type=_V2_PROTOBUF_TYPE)
    return web.json_response(v2_doc())
