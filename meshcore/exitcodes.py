"""Exit codes, the contract CI jobs rely on: every command returns one of these members.

A Locust run (`locust -f scenarios/...`):
    OK 0            the plan ran, was measured, and every gate and check passed
    FAILED 1        requests failed and `--exit-code-on-error 1` was given (Locust's own rule)
    BAD_INPUT 2     bad input at start (plan, manifests, options, an unreachable --host)
    GATE_FAILED 3   a live gate tripped (the canary was rolled back) or an end-of-run check failed
    NOT_MEASURED 4  the run could not be measured as planned: a process of the embedded mesh
                    exited, a weight change failed, the plan did not reach its last step, a
                    step's failed requests exceeded the broken-step share (the target became
                    unreachable or answered errors), a worker was lost, records were lost
    INTERRUPTED 130 Ctrl-C or SIGTERM: what was measured so far is kept

`meshload` sub-commands:
    OK 0            done; every gate or check passed
    FAILED 1        `check`: a gate failed (a broken run fails its `run` gate); `compare`: B
                    regressed; `preflight`: a check failed; a backend failed
    BAD_INPUT 2     bad input: flags, a missing or broken run folder, a broken thresholds file
    INTERRUPTED 130 Ctrl-C or SIGTERM
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    GATE_FAILED = 3
    NOT_MEASURED = 4
    INTERRUPTED = 130
