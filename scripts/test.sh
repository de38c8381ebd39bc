#!/usr/bin/env bash
# Installs what the tests need, then runs them. Extra arguments go to pytest (e.g. -m kafka).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
