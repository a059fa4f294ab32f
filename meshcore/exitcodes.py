"""Exit codes, the contract CI jobs rely on: every command returns one of these members.

A Locust run (`locust -f scenarios/...`):
    OK 0            the plan ran and every gate and check passed
    BAD_INPUT 2     bad input at start (plan, manifests, options, an unreachable --host)
    GATE_FAILED 3   a live gate tripped (the canary was rolled back) or an end-of-run check failed
    INTERRUPTED 130 Ctrl-C

`meshload` sub-commands:
    OK 0            done; every gate or check passed
    FAILED 1        `check`: a gate failed; `compare`: B regressed; `preflight`: a check failed;
                    a backend (Kubernetes API, Jaeger, Prometheus) failed
    BAD_INPUT 2     bad input: flags, a missing or broken run folder, a broken thresholds file
    INTERRUPTED 130 Ctrl-C
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    GATE_FAILED = 3
    INTERRUPTED = 130
