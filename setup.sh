#!/usr/bin/env bash
# One command to set up a fresh machine: makes .venv/ at the repository root and installs the project
# (editable, with the developer/test extras) into it. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# CPU build of PyTorch first: on a machine without a GPU this avoids pulling several GB of CUDA wheels.
# Set SOUNDSCAPER_TORCH to another requirement (e.g. "torch") to let pip choose.
.venv/bin/python -m pip install -q "${SOUNDSCAPER_TORCH:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e '.[dev]'
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "soundscaper installed in $(pwd)/.venv"
