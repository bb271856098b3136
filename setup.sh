#!/usr/bin/env bash
# One command to set up a fresh machine: makes .venv/ at the repository root and installs the project (editable, with
# the `dev` extra: tests, notebooks with JupyterLab, figures, LLM client, docs) into it. Safe to rerun.
#
# PyTorch: by default the CPU build (torch==2.13.0) from PyTorch's own CPU wheel index when that is reachable, which
# avoids several GB of CUDA wheels on a plain Linux machine; otherwise from the default package index. Set
# SOUNDSCAPER_TORCH to another requirement to choose yourself, e.g. SOUNDSCAPER_TORCH=torch (pip's choice: the CUDA
# build on Linux) or SOUNDSCAPER_TORCH="torch==2.13.0"; it is then installed from the default index.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
TORCH_CPU_INDEX=${SOUNDSCAPER_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade pip
if [ -n "${SOUNDSCAPER_TORCH:-}" ]; then
  pip install -q "$SOUNDSCAPER_TORCH"
elif ! pip install -q --timeout 15 --retries 0 --index-url "$TORCH_CPU_INDEX" "torch==2.13.0" 2>/dev/null; then
  echo "PyTorch's CPU index is not reachable; installing torch==2.13.0 from the default index"
  pip install -q "torch==2.13.0"
fi
pip install -q -e '.[dev]'
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "soundscaper installed in $(pwd)/.venv (notebooks: .venv/bin/jupyter lab nbs/)"
