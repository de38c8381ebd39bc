#!/usr/bin/env bash
# Installs what the tests need, then runs them. Extra arguments go to pytest (e.g. -m kafka).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The live alert page is tested in headless Chromium: install it where we may (root on Debian).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the page test will skip"
fi
# House rules before the tests: lint and the wings' import contracts.
.venv/bin/ruff check stream_app training benchmarks tests
.venv/bin/lint-imports
# Types (pyproject.toml [tool.mypy]: stream_app.core as strict as --strict, the rest at mypy's
# default level). Only the modules clean today are named; the rest joins as each becomes clean,
# and the list becomes `stream_app training` once all are. --follow-imports=silent: a module not
# named is read for its types, but its own errors are not reported.
mypy_clean=(
  # stream_app.core, strict
  stream_app/core/__init__.py stream_app/core/accuracy.py stream_app/core/alerts.py
  stream_app/core/calibration.py stream_app/core/evidence.py
  stream_app/core/dtw.py stream_app/core/errors.py stream_app/core/grid.py
  stream_app/core/inference.py stream_app/core/isolation_forest.py stream_app/core/manifest.py
  stream_app/core/meter_state.py stream_app/core/meter_window.py stream_app/core/model_bundle.py
  stream_app/core/offline.py stream_app/core/preprocessing.py
  stream_app/core/profiles/__init__.py stream_app/core/records.py stream_app/core/series.py
  stream_app/core/stream_scoring.py stream_app/core/thresholds.py stream_app/core/timestamps.py
  # the rest
  stream_app/__init__.py stream_app/cli.py stream_app/models/__init__.py
  stream_app/stream/__init__.py stream_app/stream/agents.py stream_app/stream/app.py stream_app/stream/context.py
  stream_app/stream/dead_letters.py stream_app/stream/feedback.py stream_app/stream/guard.py
  stream_app/stream/metrics.py stream_app/stream/pages.py stream_app/stream/patches.py
  stream_app/stream/registry.py stream_app/stream/rekey.py stream_app/stream/reload.py
  stream_app/stream/retention.py stream_app/stream/settings.py stream_app/stream/silence.py
  stream_app/stream/timers.py stream_app/stream/topics.py stream_app/stream/worker.py
  stream_app/io/__init__.py stream_app/io/alerts_cli.py stream_app/io/greenbutton.py
  stream_app/io/replay.py stream_app/io/series_io.py
  stream_app/devtools/__init__.py stream_app/devtools/anomalies.py stream_app/devtools/brokers.py
  stream_app/devtools/demo.py stream_app/devtools/evaluate.py stream_app/devtools/kafka_broker.py
  stream_app/devtools/simulator.py stream_app/devtools/sweep.py
  training/__init__.py training/adversarial.py training/export.py training/models.py
  training/pipeline.py training/train.py
)
.venv/bin/mypy --follow-imports=silent "${mypy_clean[@]}"
# The Numba kernels also run as plain Python, so that their logic is tested, not only their compile.
NUMBA_DISABLE_JIT=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/core/test_dtw.py tests/core/test_isolation_forest.py
exec .venv/bin/python -m pytest -q "$@"
