"""meshload's settings, each declared once: Locust flag, environment variable, default, help.

`add_arguments` puts them on Locust's parser (they then show in the web UI where `web_ui` is
set, and reach workers with the master's spawn messages; Locust's `--help` does not load the
locustfile, so it does not list them);
`Settings.from_options` reads them back, typed, from `environment.parsed_options`. Options
that pick the target and the plan are read once at start and so stay out of the web UI; the
others are read again at each start, so the web UI's values apply to the next run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from meshcore.errors import ConfigError
from meshcore.figures import DEFAULT_BROKEN_STEP_ERROR_RATE


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    default: Any
    help: str
    web_ui: bool = True
    type: type = str
    choices: tuple[str, ...] | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option(
        "--mesh",
        "MESHLOAD_MESH",
        "",
        "embedded or kubernetes (default: embedded unless --host is given)",
        web_ui=False,
        choices=("", "embedded", "kubernetes"),
    ),
    Option(
        "--plan",
        "MESHLOAD_PLAN",
        "",
        "rollout plan YAML (default: the scenario's own)",
        web_ui=False,
    ),
    Option(
        "--kubeconfig",
        "MESHLOAD_KUBECONFIG",
        "",
        "kubeconfig for --mesh kubernetes (default: $KUBECONFIG or ~/.kube/config)",
        web_ui=False,
    ),
    Option("--kube-context", "MESHLOAD_KUBE_CONTEXT", "", "kubeconfig context", web_ui=False),
    Option(
        "--namespace",
        "MESHLOAD_NAMESPACE",
        "",
        "namespace of the VirtualService (default: the plan's, else default)",
        web_ui=False,
    ),
    Option(
        "--virtual-service",
        "MESHLOAD_VIRTUAL_SERVICE",
        "",
        "VirtualService whose weights the plan moves (default: the plan's, else frontend)",
        web_ui=False,
    ),
    Option("--jaeger-url", "MESHLOAD_JAEGER_URL", "", "Jaeger query URL recorded for the report"),
    Option(
        "--prometheus-url", "MESHLOAD_PROMETHEUS_URL", "", "Prometheus URL recorded for the report"
    ),
    Option("--results-dir", "MESHLOAD_RESULTS_DIR", "results", "where run folders go"),
    Option(
        "--trace-sampling",
        "MESHLOAD_TRACE_SAMPLING",
        1.0,
        "share of requests whose traceparent is sampled (0..1)",
        type=float,
    ),
    Option(
        "--arrival-rate",
        "MESHLOAD_ARRIVAL_RATE",
        0.0,
        "open model: requests per second (0: closed model, users with think time)",
        type=float,
    ),
    Option(
        "--version-header",
        "MESHLOAD_VERSION_HEADER",
        "x-version",
        "response header naming the serving version",
    ),
    Option(
        "--gate-error-rate",
        "MESHLOAD_GATE_ERROR_RATE",
        0.0,
        "live gate: roll back when the canary's error share over the window exceeds this (0: off)",
        type=float,
    ),
    Option(
        "--gate-p99-ms",
        "MESHLOAD_GATE_P99_MS",
        0.0,
        "live gate: roll back when the canary's p99 latency over the window exceeds this (0: off)",
        type=float,
    ),
    Option(
        "--gate-window-s", "MESHLOAD_GATE_WINDOW_S", 10.0, "live gate window in seconds", type=float
    ),
    Option(
        "--host-header",
        "MESHLOAD_HOST_HEADER",
        "",
        "Host (authority) sent to the gateway (default: the VirtualService's first host that "
        "its Gateway serves, when it names no '*' host)",
        web_ui=False,
    ),
    Option(
        "--ca-bundle",
        "MESHLOAD_CA_BUNDLE",
        "",
        "PEM file of the CA that signed an https:// gateway's certificate (default: the "
        "embedded mesh's own CA, else the system's trust store)",
        web_ui=False,
    ),
    Option(
        "--insecure",
        "MESHLOAD_INSECURE",
        False,
        "do not verify an https:// gateway's certificate (the report says so)",
        type=bool,
        web_ui=False,
    ),
    Option(
        "--no-stamp",
        "MESHLOAD_NO_STAMP",
        False,
        "do not stamp the moved route (version, configuration, replica response headers on "
        "meshload's requests only); the report then estimates split and propagation",
        type=bool,
        web_ui=False,
    ),
    Option(
        "--no-replica-stamp",
        "MESHLOAD_NO_REPLICA_STAMP",
        False,
        "stamp no gateway replica (its pod name) into responses",
        type=bool,
        web_ui=False,
    ),
    Option(
        "--gateway-replicas",
        "MESHLOAD_GATEWAY_REPLICAS",
        1,
        "embedded mesh: gateway replicas (Envoy pods) behind the gateway's address",
        type=int,
        web_ui=False,
    ),
    Option(
        "--push-skew-ms",
        "MESHLOAD_PUSH_SKEW_MS",
        "",
        "embedded mesh: push every change to replica I this many ms late, as I=MS,... (e.g. 1=800)",
        web_ui=False,
    ),
    Option(
        "--broken-step-error-rate",
        "MESHLOAD_BROKEN_STEP_ERROR_RATE",
        DEFAULT_BROKEN_STEP_ERROR_RATE,
        "a step whose failed requests exceed this share was not measured (exit code 4)",
        type=float,
    ),
    Option(
        "--keep-going",
        "MESHLOAD_KEEP_GOING",
        False,
        "go on when a process of the embedded mesh exits (the run still ends with exit code 4)",
        type=bool,
    ),
    Option(
        "--record-buffer-mb",
        "MESHLOAD_RECORD_BUFFER_MB",
        256,
        "request records kept in memory while the run folder cannot be written",
        type=int,
    ),
)


def add_arguments(parser: Any) -> None:
    """Register every option on Locust's (configargparse) parser, once."""
    for o in OPTIONS:
        kwargs: dict[str, Any] = {
            "env_var": o.env,
            "default": o.default,
            "help": o.help,
            "include_in_web_ui": o.web_ui,
        }
        if o.type is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = o.type
        if o.choices is not None:
            kwargs["choices"] = list(o.choices)
        parser.add_argument(o.flag, **kwargs)
    # A canary's failed requests are what meshload measures, not a reason to fail the run: the
    # exit code comes from gates and checks (3) and bad input (2). An explicit
    # --exit-code-on-error still wins.
    parser.set_defaults(exit_code_on_error=0)


# How to mend a gateway certificate that did not verify: every TLS failure message ends so.
TLS_FIX = "pass --ca-bundle with the CA that signed the gateway's certificate, or --insecure"


def check_tls_flags(ca_bundle: str, insecure: bool) -> None:
    """--ca-bundle and --insecure as a run and `meshload preflight` take them."""
    if ca_bundle and insecure:
        raise ConfigError("--ca-bundle and --insecure: give one (verify with it, or not)")
    if ca_bundle and not os.path.isfile(ca_bundle):
        raise ConfigError(
            f"--ca-bundle {ca_bundle}: no such file; give the PEM file of the CA that signed "
            "the gateway's certificate"
        )


def _truth(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(text)


@dataclass(frozen=True)
class Settings:
    mesh: str = ""
    plan: str = ""
    kubeconfig: str = ""
    kube_context: str = ""
    namespace: str = ""
    virtual_service: str = ""
    jaeger_url: str = ""
    prometheus_url: str = ""
    results_dir: str = "results"
    trace_sampling: float = 1.0
    arrival_rate: float = 0.0
    version_header: str = "x-version"
    gate_error_rate: float = 0.0
    gate_p99_ms: float = 0.0
    gate_window_s: float = 10.0
    host_header: str = ""
    ca_bundle: str = ""
    insecure: bool = False
    no_stamp: bool = False
    no_replica_stamp: bool = False
    gateway_replicas: int = 1
    push_skew_ms: str = ""
    broken_step_error_rate: float = DEFAULT_BROKEN_STEP_ERROR_RATE
    keep_going: bool = False
    record_buffer_mb: int = 256

    @classmethod
    def from_options(cls, parsed: Any) -> Settings:
        values: dict[str, Any] = {}
        for o in OPTIONS:
            raw = getattr(parsed, o.dest, None) if parsed is not None else None
            if raw is None:
                values[o.dest] = o.default
                continue
            try:  # the web UI's start form sends strings
                values[o.dest] = _truth(raw) if o.type is bool else o.type(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"{o.flag} {raw!r}: not a {o.type.__name__}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.mesh not in ("", "embedded", "kubernetes"):
            raise ConfigError(f"--mesh {self.mesh}: unknown; use embedded or kubernetes")
        if not 0.0 <= self.trace_sampling <= 1.0:
            raise ConfigError(
                f"--trace-sampling {self.trace_sampling}: out of range; give a share in 0..1"
            )
        if self.arrival_rate < 0:
            raise ConfigError(f"--arrival-rate {self.arrival_rate}: negative; give 0 or more")
        for flag, value in (
            ("--gate-error-rate", self.gate_error_rate),
            ("--gate-p99-ms", self.gate_p99_ms),
        ):
            if value < 0:
                raise ConfigError(f"{flag} {value}: negative; give 0 (off) or a threshold")
        if not 0.0 < self.broken_step_error_rate <= 1.0:
            raise ConfigError(
                f"--broken-step-error-rate {self.broken_step_error_rate}: give a share in (0, 1]"
            )
        if self.record_buffer_mb < 1:
            raise ConfigError(f"--record-buffer-mb {self.record_buffer_mb}: give 1 or more")
        if self.gate_window_s <= 0:
            raise ConfigError(f"--gate-window-s {self.gate_window_s}: give a positive window")
        if not self.version_header.strip():
            raise ConfigError("--version-header is empty; name the header, e.g. x-version")
        if self.gateway_replicas < 1:
            raise ConfigError(f"--gateway-replicas {self.gateway_replicas}: give 1 or more")
        check_tls_flags(self.ca_bundle, self.insecure)
        self.push_skews()

    def push_skews(self) -> dict[int, float]:
        """--push-skew-ms as {replica index: ms}, checked against --gateway-replicas."""
        if not self.push_skew_ms.strip():
            return {}
        # Only a run that sets a skew pays for importing the mesh's gateway module here.
        from meshsim.gateway import check_replicas, parse_skews

        try:
            skews = parse_skews(self.push_skew_ms)
        except ConfigError as e:
            raise ConfigError(f"--push-skew-ms: {e}") from None
        try:
            check_replicas(self.gateway_replicas, skews, "request")
        except ConfigError as e:
            raise ConfigError(
                f"--push-skew-ms with --gateway-replicas {self.gateway_replicas}: {e}"
            ) from None
        return skews

    def mesh_mode(self, host: str | None) -> str:
        """embedded unless a host is given or kubernetes is asked for."""
        if self.mesh:
            return self.mesh
        return "kubernetes" if host else "embedded"
