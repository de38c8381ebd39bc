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
# default level), every module of the runtime and of training.
.venv/bin/mypy stream_app training
# The Numba kernels also run as plain Python, so that their logic is tested, not only their compile.
NUMBA_DISABLE_JIT=1 .venv/bin/python -m pytest -q -p no:cacheprovider tests/core/test_dtw.py tests/core/test_isolation_forest.py
exec .venv/bin/python -m pytest -q "$@"
