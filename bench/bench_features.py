"""Benchmark of the feature extraction (issue 4): our ISO 532-1 loudness against stock mosqito on the same excerpt,
and the whole per-clip pipeline on a 30-s ARAUS clip, in one run on one machine.

    .venv/bin/python bench/bench_features.py [--excerpt 5] [--repeat 3]

Prints the loudness speed-up over mosqito (goal >= 100x), seconds per 30-s clip for loudness on one core (goal
<= 0.5 s) and for the whole pipeline including FLAC decoding, mono mix, 16-bit quantisation, kaiser_best resampling,
log-mel and loudness (goal <= 0.7 s), and the peak memory of the pipeline. Everything is pinned to one thread.
"""
import os
from pathlib import Path

_mirror = Path(__file__).resolve().parents[2] / "shared" / "data"      # the reference data beside the checkout
if not os.environ.get("SOUNDSCAPER_DATA") and _mirror.is_dir():
    os.environ["SOUNDSCAPER_DATA"] = str(_mirror)
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_v] = "1"                      # one core, before numpy/numba start their thread pools

import argparse
import json
import platform
import subprocess
import sys
import time
import warnings

import numpy as np

DEMO_FLAC = "reference/fold_1_participant_00056_stimulus_13.flac"


def best_of(fn, repeat: int) -> tuple[float, float]:
    "Shortest wall time and shortest CPU time of `repeat` calls (the least disturbed by other processes)."
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


_CHILD = r"""
import os, sys, json, resource
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"): os.environ[v] = "1"
from soundscaper.data import fetch
from soundscaper.features import clip_features
import numpy as np
src = fetch(sys.argv[1])
clip_features(np.random.default_rng(0).normal(0, 0.1, 44100), 44100)      # load the compiled kernels
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
f = clip_features(src)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import tracemalloc
tracemalloc.start()
f = clip_features(src)
arrays = tracemalloc.get_traced_memory()[1]
print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024, "arrays_mb": arrays / 2**20}))
"""


def pipeline_memory() -> dict:
    "Peak resident memory of a fresh process running the pipeline on the 30-s clip (Linux ru_maxrss, MiB)."
    out = subprocess.run([sys.executable, "-c", _CHILD, DEMO_FLAC], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--excerpt", type=float, default=5.0, help="seconds of audio for the mosqito comparison [5]")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of our timings (best is kept) [3]")
    ap.add_argument("--check", action="store_true", help="also run mosqito a second time to compare the values")
    a = ap.parse_args(argv)

    from soundscaper.data import fetch
    from soundscaper.features import clip_features, load_audio, quantise_16bit
    from soundscaper.loudness import PAPER_PA_PER_FS, loudness

    src = fetch(DEMO_FLAC)
    y, sr = load_audio(src)
    y = quantise_16bit(y).astype(np.float64)
    assert len(y) == 30 * sr
    x = y[: int(a.excerpt * sr)]

    t = time.perf_counter()
    clip_features(y[:sr], sr)                                    # first call: load (or compile) the kernels
    warm = time.perf_counter() - t

    ours_excerpt = best_of(lambda: loudness(x, sr), a.repeat)
    ours_30 = best_of(lambda: loudness(y, sr), a.repeat)
    pipe_30 = best_of(lambda: clip_features(src), a.repeat)
    mem = pipeline_memory()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mosqito.sq_metrics import loudness_zwtv
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()):        # mosqito prints a resampling warning
            mosqito_excerpt = best_of(lambda: loudness_zwtv(x * PAPER_PA_PER_FS, sr, field_type="free"), 1)
            n_mosqito = loudness_zwtv(x * PAPER_PA_PER_FS, sr, field_type="free")[0] if a.check else None
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load:.2f} (above the core count, "
          f"wall times are inflated by other processes: CPU times are the per-clip cost); python "
          f"{platform.python_version()}, numpy {np.__version__}")
    print(f"first call (kernel cache load or compile): {warm:.2f} s")
    print("                                      wall        CPU")
    print(f"loudness {a.excerpt:g}-s excerpt, ours      {ours_excerpt[0]:8.3f} s {ours_excerpt[1]:8.3f} s")
    print(f"loudness {a.excerpt:g}-s excerpt, mosqito   {mosqito_excerpt[0]:8.3f} s {mosqito_excerpt[1]:8.3f} s")
    print(f"  -> speed-up over mosqito: {mosqito_excerpt[0] / ours_excerpt[0]:.0f}x wall, "
          f"{mosqito_excerpt[1] / ours_excerpt[1]:.0f}x CPU (goal >= 100x)")
    print(f"loudness, 30-s clip, one core        {ours_30[0]:8.3f} s {ours_30[1]:8.3f} s   (goal <= 0.5 s per clip; "
          f"mosqito projected {mosqito_excerpt[1] * 30 / a.excerpt:.0f} s CPU)")
    print(f"whole pipeline, 30-s FLAC clip       {pipe_30[0]:8.3f} s {pipe_30[1]:8.3f} s   (goal <= 0.7 s per clip; "
          f"decode + mono + 16-bit + kaiser_best 44.1->16 kHz + log-mel + loudness)")
    print(f"peak memory of the pipeline on a 30-s clip (fresh process): {mem['peak_mb']:.0f} MiB resident, "
          f"{mem['peak_mb'] - mem['base_mb']:.0f} MiB above the warmed-up interpreter; numpy arrays peak at "
          f"{mem['arrays_mb']:.0f} MiB")
    print(f"ARAUS (25 248 clips) at this CPU time: {25248 * pipe_30[1] / 3600:.1f} core-hours")
    if n_mosqito is not None:
        print(f"check: max |ours - mosqito| from frame 10 on the excerpt: {np.abs(loudness(x, sr) - n_mosqito)[10:].max():.4f} sone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
