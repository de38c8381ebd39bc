#!/usr/bin/env bash
# The demo: installs the runtime into .venv (first run only), then starts an embedded broker and
# a worker, streams simulated factory meters with injected anomalies and prints the alerts.
# Extra arguments go to `meterwatch demo` (e.g. --meters 16 --days 14 --broker kafka).
set -euo pipefail
cd "$(dirname "$0")/.."
MW_EXTRAS="${MW_EXTRAS:-cpu,demo}" bash scripts/setup.sh
exec .venv/bin/meterwatch demo "$@"
