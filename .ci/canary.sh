#!/usr/bin/env bash
# The headless CI canary: run the canary scenario, then gate its run folder.
#   .ci/canary.sh                       embedded mesh, one-minute plan, meshload's CI gates
#   PLAN=... THRESHOLDS=... RESULTS=... .ci/canary.sh --mesh kubernetes --host http://GATEWAY
# Extra arguments go to Locust. Leaves RESULTS/<run>/ (report.html, summary.json, gates.xml)
# and exits non-zero when the run or a gate failed.
set -euo pipefail
cd "$(dirname "$0")/.."
PLAN=${PLAN:-scenarios/plans/ci.yaml}
THRESHOLDS=${THRESHOLDS:-.ci/thresholds.yaml}
RESULTS=${RESULTS:-results/ci-$(date +%Y%m%d-%H%M%S)}

locust -f scenarios/canary.py --headless --plan "$PLAN" --results-dir "$RESULTS" "$@"
run=$(find "$RESULTS" -mindepth 1 -maxdepth 1 -type d | sort | tail -n 1)
meshload check "$run" --thresholds "$THRESHOLDS" --junit "$run/gates.xml"
echo "run folder: $run"
