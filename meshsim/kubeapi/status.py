"""Kubernetes `Status` errors, worded as the real API server words them.

Clients match on `reason` and `code` (the kubernetes client raises ApiException with both;
kubectl prints `message`), so the wording follows k8s.io/apimachinery/pkg/api/errors.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answer of the API: HTTP code, Kubernetes reason, one-line message."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def qualified(plural: str, group: str) -> str:
    """`virtualservices.networking.istio.io`, or `pods` for the core group."""
    return f"{plural}.{group}" if group else plural


def _about(code: int, reason: str, plural: str, group: str, name: str, text: str) -> ApiError:
    """An error about one object; `text` follows its quoted name."""
    details = {"name": name, "group": group, "kind": plural}
    return ApiError(code, reason, f'{qualified(plural, group)} "{name}" {text}', details)


def not_found(plural: str, group: str, name: str) -> ApiError:
    return _about(404, "NotFound", plural, group, name, "not found")


def namespace_not_found(namespace: str) -> ApiError:
    details = {"name": namespace, "kind": "namespaces"}
    return ApiError(404, "NotFound", f'namespaces "{namespace}" not found', details)


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return _about(409, "AlreadyExists", plural, group, name, "already exists")


def conflict(plural: str, group: str, name: str, why: str) -> ApiError:
    what = f'{qualified(plural, group)} "{name}"'
    return ApiError(
        409,
        "Conflict",
        f"Operation cannot be fulfilled on {what}: {why}",
        {"name": name, "group": group, "kind": plural},
    )


def stale(plural: str, group: str, name: str) -> ApiError:
    return conflict(
        plural,
        group,
        name,
        "the object has been modified; please apply your "
        "changes to the latest version and try again",
    )


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 with one cause per (field, message); the message lists them as the API server does."""
    texts = [f"{field}: {text}" if field else text for field, text in causes]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    who = f"{kind}.{group}" if group else kind
    return ApiError(
        422,
        "Invalid",
        f'{who} "{name}" is invalid: {joined}',
        {
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [
                {"reason": "FieldValueInvalid", "message": t, "field": f} for f, t in causes
            ],
        },
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def unsupported_patch(content_type: str) -> ApiError:
    # kubectl prefixes "<type> is not supported by <gvk>: " itself, so the server does not.
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, "
        f"application/apply-patch+yaml (not {content_type})",
    )


def expired(requested_rv: int, oldest_rv: int) -> ApiError:
    return ApiError(410, "Expired", f"too old resource version: {requested_rv} ({oldest_rv})")


def success(name: str, group: str, plural: str, uid: str) -> dict[str, Any]:
    """What DELETE of a custom object answers (the real server does not echo the object)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": group, "kind": plural, "uid": uid},
    }
