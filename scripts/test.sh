#!/usr/bin/env bash
# Set up (see setup.sh) and run the whole test suite: lint, types, unit, real-kernel
# integration, real-browser, stress. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== ruff"
.venv/bin/ruff check nbflow tests bench example_notebooks
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
mkdir -p test-artifacts
.venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
