"""Which fields of the Istio API the embedded mesh honours, and small value parsers.

Anything a manifest sets outside these trees is reported as a warning naming the field and the
resource, so a canary never relies on a setting the embedded mesh silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from meshcore.durations import DurationError, parse_duration_ns
from meshcore.errors import ManifestError

# A tree of supported keys: a dict maps key -> subtree ("*" matches any key), a one-element
# list means "a list of this", and True accepts any value below.
_STRING_MATCH = {"exact": True, "prefix": True, "regex": True}
_HEADER_OPS = {"set": True, "add": True, "remove": True}
_HEADERS = {"request": _HEADER_OPS, "response": _HEADER_OPS}
_PERCENT = {"value": True}
_DESTINATION = {"host": True, "subset": True, "port": {"number": True}}

VIRTUAL_SERVICE = {
    "hosts": True,
    "gateways": True,
    "exportTo": True,
    "http": [
        {
            "name": True,
            "match": [
                {
                    "name": True,
                    "uri": _STRING_MATCH,
                    "headers": {"*": _STRING_MATCH},
                    "queryParams": {"*": _STRING_MATCH},
                    "method": _STRING_MATCH,
                    "ignoreUriCase": True,
                }
            ],
            "route": [{"destination": _DESTINATION, "weight": True, "headers": _HEADERS}],
            "headers": _HEADERS,
            "timeout": True,
            "retries": {"attempts": True, "perTryTimeout": True, "retryOn": True},
            "fault": {
                "delay": {"fixedDelay": True, "percentage": _PERCENT, "percent": True},
                "abort": {"httpStatus": True, "percentage": _PERCENT},
            },
            "mirror": _DESTINATION,
            "mirrorPercentage": _PERCENT,
            "mirrorPercent": True,
            "mirrors": [{"destination": _DESTINATION, "percentage": _PERCENT}],
            "rewrite": {"uri": True, "authority": True},
        }
    ],
}

_TRAFFIC_POLICY = {
    "loadBalancer": {
        "simple": True,
        "consistentHash": {
            "httpHeaderName": True,
            "httpCookie": {"name": True, "ttl": True, "path": True},
            "httpQueryParameterName": True,
            "minimumRingSize": True,
            "ringHash": {"minimumRingSize": True},
            "maglev": {"tableSize": True},
        },
    },
    "connectionPool": {
        "tcp": {"maxConnections": True, "connectTimeout": True},
        "http": {
            "http1MaxPendingRequests": True,
            "http2MaxRequests": True,
            "maxRequestsPerConnection": True,
            "maxRetries": True,
            "idleTimeout": True,
        },
    },
    "outlierDetection": {
        "consecutive5xxErrors": True,
        "consecutiveGatewayErrors": True,
        "interval": True,
        "baseEjectionTime": True,
        "maxEjectionPercent": True,
        "minHealthPercent": True,
    },
}

DESTINATION_RULE = {
    "host": True,
    "exportTo": True,
    "trafficPolicy": _TRAFFIC_POLICY,
    "subsets": [{"name": True, "labels": True, "trafficPolicy": _TRAFFIC_POLICY}],
}

GATEWAY = {
    "selector": True,
    "servers": [
        {
            "port": {"number": True, "name": True, "protocol": True},
            "hosts": True,
            "name": True,
            # SIMPLE termination (meshsim.tls); the other modes are warned there
            "tls": {
                "mode": True,
                "credentialName": True,
                "httpsRedirect": True,
                "minProtocolVersion": True,
                "maxProtocolVersion": True,
                "cipherSuites": True,
            },
        }  # fmt: skip
    ],
}

SUPPORTED = {
    "VirtualService": VIRTUAL_SERVICE,
    "DestinationRule": DESTINATION_RULE,
    "Gateway": GATEWAY,
}


def unsupported(value: Any, tree: Any, path: str = "spec") -> Iterator[str]:
    """Paths of the fields set in `value` that `tree` does not list."""
    if tree is True:
        return
    if isinstance(tree, list):
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield from unsupported(item, tree[0], f"{path}[{i}]")
        return
    if isinstance(tree, dict) and isinstance(value, dict):
        for key, sub in value.items():
            if key in tree:
                yield from unsupported(sub, tree[key], f"{path}.{key}")
            elif "*" in tree:
                yield from unsupported(sub, tree["*"], f"{path}.{key}")
            else:
                yield f"{path}.{key}"


def duration_s(value: Any, where: tuple[str, str, str]) -> float:
    """Seconds of an Istio duration ("1s", "250ms", "1.5s", "1m30s"); refuses anything else."""
    try:
        ns = parse_duration_ns(str(value).strip())
    except DurationError:
        ns = -1
    if ns < 0:
        raise ManifestError(*where, f'{value!r} is not a duration; write e.g. "250ms" or "2s"')
    return ns / 1e9


def envoy_duration(seconds: float) -> str:
    """A protobuf Duration in its JSON form."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def percentage(spec: Any, where: tuple[str, str, str], default: float = 100.0) -> float:
    """An Istio Percent ({"value": 12.5}) as a float in [0, 100]."""
    if spec is None:
        return default
    value = spec.get("value", 0.0) if isinstance(spec, dict) else spec
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ManifestError(*where, f"{value!r} is not a number; give a percentage 0-100")
    if not 0.0 <= float(value) <= 100.0:
        raise ManifestError(*where, f"{value} is outside 0-100; give a percentage 0-100")
    return float(value)


def fraction(percent: float) -> dict[str, Any]:
    """An Envoy FractionalPercent keeping four decimals of an Istio percentage."""
    return {"numerator": round(percent * 10_000), "denominator": "MILLION"}
