#!/usr/bin/env bash
# `soundscaper predict` end to end on a GPU machine vs the CPU of the same machine (goal: within 1e-4), and the one-line
# error for a device that is not there. Prepare a pack folder (default .gpu/, git-ignored) holding the default
# checkpoint SoundAQnet_ASC96_AEC94_PAQ1027.pth and the demo clip fold_1_participant_00056_stimulus_13.flac, plus wheels
# of what the GPU image lacks (soundfile, cffi, pycparser, platformdirs) in .whl/; then run `bash bench/gpu_predict.sh`
# there with $OUT naming an output folder.
PACK=${PACK:-.gpu}
OUT=${OUT:-/tmp/gpu_predict}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD SOUNDSCAPER_WEIGHTS=$PWD/$PACK SOUNDSCAPER_CACHE=/tmp/sc PYTHONUNBUFFERED=1 OUT
sc() { python3 -c 'import sys; from soundscaper.cli import main; sys.exit(main())' "$@"; }
for d in cuda cpu; do sc predict --device $d "$PACK/fold_1_participant_00056_stimulus_13.flac" --out "$OUT/pred_$d"; done
sc predict --device cuda:7 "$PACK/fold_1_participant_00056_stimulus_13.flac" --out /tmp/x; echo "exit status for cuda:7 = $?"
python3 - <<'PY'
import os, numpy as np, pandas as pd
a, b = (pd.read_csv(f"{os.environ['OUT']}/pred_{d}/predictions.csv") for d in ("cuda", "cpu"))
num = a.select_dtypes("number").columns
d = float(np.abs(a[num].to_numpy() - b[num].to_numpy()).max())
print(f"predict end to end, CUDA vs CPU: max |diff| over {len(num)} numbers: {d:.2e} -> {'PASS' if d <= 1e-4 else 'FAIL'}")
PY
