"""JSON over HTTP from a telemetry backend (a trace store's query API, Prometheus): one GET,
a 404 as "not there", and anything else wrong as a `BackendError` of one line that says what
the backend answered or why it could not be reached."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from meshcore.errors import BackendError


def get_json(
    url: str, params: Mapping[str, Any] | None = None, *, timeout_s: float, what: str
) -> Any | None:
    """GET and decode JSON; None for 404; BackendError (one line) for anything else wrong."""
    full = f"{url}?{urllib.parse.urlencode(params)}" if params else url
    request = urllib.request.Request(full, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise BackendError(
            f"{what} at {url} answered HTTP {exc.code}: {_error_detail(exc.read(2000))}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BackendError(
            f"{what} at {url} is unreachable ({reason}); check the URL and that it runs"
        ) from None
    try:
        return json.loads(body)
    except ValueError:
        raise BackendError(f"{what} at {url} answered something that is not JSON") from None


def _error_detail(body: bytes) -> str:
    """The reason inside a JSON error body (Prometheus, Jaeger), else the body's start."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        inner = doc.get("error")
        if isinstance(inner, dict):  # Jaeger v2: {"error": {"httpCode": .., "message": ..}}
            inner = inner.get("message")
        if inner:
            return str(inner).replace("\n", " ")[:300]
    return " ".join(text.split())[:300] or "no body"
