"""Benchmark of the memory of feature extraction on long files (issue 12.6): peak resident memory of the block-wise
`file_features` against the whole-file path (the signal loaded at once, then `log_mel` and `loudness` of the arrays),
measured in the same run, each in a fresh process, on synthetic 44.1-kHz stereo 16-bit FLAC files.

    .venv/bin/python bench/bench_memory.py [--minutes 1 10 60] [--whole-max-minutes 10] [--block-seconds 60]
                                           [--extra-samples 1234]

The whole-file path needs 0.2 GB per minute of audio (12.5 GB for an hour) when the length factors into small primes,
and 0.7 GB per minute when it does not (the FFTs of the whole signal then use Bluestein's algorithm), so it is run
only up to `--whole-max-minutes` and extrapolated linearly beyond (marked as such). The files are `--extra-samples`
longer than whole minutes (default 1234: a length like a real recording's; 0: the favourable case). Goal: under 1 GB for any length. Prints one
line per length: peak resident memory (MiB) of both paths, their ratio, seconds, and the largest difference between
the two paths' outputs where both ran (log-mel in dB, loudness in sone).
"""
import os
import shutil

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"                      # one core, before numpy/numba start their thread pools

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 44100

_CHILD = r"""
import json, math, os, resource, sys, time
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"): os.environ[v] = "1"
import numpy as np
from soundscaper.features import clip_features, file_features, load_audio, log_mel, quantise_16bit
from soundscaper.loudness import loudness
path, mode, block, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
clip_features(np.random.default_rng(0).normal(0, 0.1, 5 * 44100), 44100)      # load the compiled kernels, librosa
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if mode == "stream":
    f = file_features(path, block_seconds=block)
else:                                                                       # the whole-file path
    y, sr = load_audio(path, max_duration=math.inf)
    y = quantise_16bit(y)
    f = {"logmel": log_mel(y, sr), "loudness": loudness(y, sr)}
secs = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
np.save(out + ".logmel.npy", f["logmel"]); np.save(out + ".loudness.npy", f["loudness"])
print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024, "seconds": secs,
                  "frames": [len(f["logmel"]), len(f["loudness"])]}))
"""


def synthetic_flac(path: Path, minutes: float, extra: int, seed: int = 0) -> int:
    """A stereo 16-bit FLAC of `minutes` plus `extra` samples: noise whose level changes every 0.1 s, and a 440 Hz
    tone. Written a second at a time; returns the number of frames."""
    import soundfile as sf
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * SR) + extra
    with sf.SoundFile(path, "w", SR, 2, "PCM_16", format="FLAC") as f:
        for i in range(0, n, SR):
            k = min(SR, n - i)
            t = (i + np.arange(k)) / SR
            level = np.repeat(rng.uniform(0.01, 0.1, k // 4410 + 1), 4410)[:k]
            f.write(rng.normal(size=(k, 2)) * level[:, None] + 0.05 * np.sin(2 * np.pi * 440 * t)[:, None])
    return n


def run_child(path: Path, mode: str, block: float, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    r = subprocess.run([sys.executable, "-c", _CHILD, str(path), mode, str(block), str(out)], capture_output=True,
                       text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"{mode} child failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60], help="lengths to measure [1 10 60]")
    ap.add_argument("--whole-max-minutes", type=float, default=10,
                    help="run the whole-file path only up to this length, extrapolate beyond [10]")
    ap.add_argument("--block-seconds", type=float, default=60, help="block size of file_features [60]")
    ap.add_argument("--extra-samples", type=int, default=1234, help="samples beyond the whole minutes [1234]")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    rows = []
    try:
        for minutes in a.minutes:
            src = tmp / f"synthetic_{minutes:g}min.flac"
            t = time.perf_counter()
            n = synthetic_flac(src, minutes, a.extra_samples)
            made = time.perf_counter() - t
            s = run_child(src, "stream", a.block_seconds, tmp / "stream")
            w, diff = None, None
            if minutes <= a.whole_max_minutes:
                w = run_child(src, "whole", a.block_seconds, tmp / "whole")
                diff = {k: float(np.abs(np.load(tmp / f"stream.{k}.npy") - np.load(tmp / f"whole.{k}.npy")).max())
                        for k in ("logmel", "loudness")}
            rows.append((minutes, n, s, w, diff, made))
            src.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    measured = [(m, w["peak_mb"]) for m, _, _, w, _, _ in rows if w]
    fit = np.polyfit(*zip(*measured), 1) if len(measured) >= 2 else None
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load:.2f}; python "
          f"{platform.python_version()}, numpy {np.__version__}; block {a.block_seconds:g} s; one thread")
    print("length   frames(44.1k)  block-wise peak (s)       whole-file peak (s)            ratio  max |diff| "
          "log-mel / loudness")
    for minutes, n, s, w, diff, _ in rows:
        if w:
            whole, secs = f"{w['peak_mb']:7.0f} MiB", f"({w['seconds']:5.1f} s)"
        elif fit is not None:
            whole, secs = f"{np.polyval(fit, minutes):7.0f} MiB", "(extrapolated)"
        else:
            whole, secs = "      -    ", ""
        peak_w = w["peak_mb"] if w else (np.polyval(fit, minutes) if fit is not None else float("nan"))
        d = f"{diff['logmel']:.1g} dB / {diff['loudness']:.1g} sone" if diff else "-"
        print(f"{minutes:5g} min {n:13d}  {s['peak_mb']:7.0f} MiB ({s['seconds']:5.1f} s)   {whole} {secs:15s}"
              f" {peak_w / s['peak_mb']:6.1f}x  {d}")
    base = rows[0][2]["base_mb"]
    print(f"warmed-up interpreter (imports, compiled kernels, librosa): {base:.0f} MiB of every peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
