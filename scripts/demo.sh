#!/usr/bin/env bash
# Set up (see setup.sh) and run the demo: an example notebook executed for real, twice; the
# second run is served from nbflow's cache.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python example_notebooks/run_demo.py "$@"
