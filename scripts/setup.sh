#!/usr/bin/env bash
# Set up everything nbflow's demo and tests need on a fresh Debian machine:
# system packages (Chromium for browser tests, Graphviz for server-side SVG), a virtualenv with
# nbflow installed editable with its test extras, and the JupyterLab extension built with npm.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing system packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
# the labextension build calls jupyter-builder, which lives in the venv
export PATH="$PWD/.venv/bin:$PATH"
.venv/bin/python -m pip install -q --upgrade pip
echo "== installing build tools"
.venv/bin/pip install -q "hatchling>=1.21" editables "hatch-jupyter-builder>=0.9" "jupyterlab>=4.0,<5"
echo "== building the labextension and installing nbflow (editable, with test extras)"
.venv/bin/pip install -q --no-build-isolation -e ".[test]"
# the editable install does not place the prebuilt extension where JupyterLab looks: link it
.venv/bin/jupyter labextension develop --overwrite . >/dev/null 2>&1 || \
  .venv/bin/jupyter-builder develop --overwrite . >/dev/null
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
.venv/bin/jupyter labextension list 2>&1 | grep -q "nbflow-labextension.*enabled.*OK" \
  || { echo "nbflow-labextension is not enabled in JupyterLab" >&2; exit 1; }
echo "== setup done"
