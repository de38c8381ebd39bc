#!/usr/bin/env bash
# Every benchmark, full size, one after the other; each appends its table to docs/BENCHMARKS.md
# (quality writes docs/EVALUATION.md). `--quick` runs each in under a minute instead.
# The broker for the worker benchmarks: Apache Kafka where Java and Maven exist, else Tansu.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
broker=tansu
if command -v java >/dev/null && command -v mvn >/dev/null; then broker=kafka; fi
run() { echo "== python -m benchmarks.$*"; .venv/bin/python -m "benchmarks.$@"; }
run dtw_speed "$@"
run onnx_vs_torch "$@"
run pipeline_ceiling "$@"
run ingest "$@"
run worker_e2e --broker "$broker" "$@"
run latency --broker "$broker" "$@"
run memory --broker "$broker" "$@"
run quality "$@"
