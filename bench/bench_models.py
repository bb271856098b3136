"""Benchmark SoundAQnet inference on this CPU and `soundscaper.inference` end to end.

Prints, from one run on one machine:
  * the model's FLOPs per 30-s clip, counted from the modules (forward hooks on every Conv2d/Linear, on the meta
    device: shapes only);
  * this machine's fp32 matrix-multiply rate (torch.matmul, 2048x2048, measured right before and after every model
    timing, so that the ratio is taken under the same load);
  * SoundAQnet clips/s and achieved FLOP/s for precomputed (normalised) features: the plain model (NCHW, batch norm
    separate), the inference form (batch norm folded into the convolutions, ReLU fused, channels-last) with all cores
    as intra-op threads, and the form `predict` uses (the batch split over one single-threaded worker per core); ratio
    of achieved FLOP/s to the matmul rate of the same threads (goal >= 50%);
  * `predict` end to end on copies of the demo WAV (audio loading, resampling, log-mel, ISO 532-1 loudness,
    normalisation, model, table): clips/s, with the feature extraction time per clip.

Usage:  .venv/bin/python bench/bench_models.py [--batch-sizes 1,8,16] [--threads 2,1] [--e2e-clips 8] [--reps 2]
(about 1-2 minutes on 2 cores). Needs SOUNDSCAPER_DATA (or network) for the demo clip; uses the official weights
from the cache when present (random weights otherwise: same speed).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if not os.environ.get("SOUNDSCAPER_DATA") and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["SOUNDSCAPER_DATA"] = str(ROOT.parent / "shared" / "data")

from soundscaper.models.core import count_flops, forward_parallel, fuse_conv_blocks  # noqa: E402
from soundscaper.models.soundaqnet import SoundAQnet  # noqa: E402

MEL, LOUD = (3001, 64), (15000,)
_MM: dict[int, list[float]] = {}      # every matmul rate measured, by thread count


def matmul_rate(n: int = 2048, reps: int = 4) -> float:
    "fp32 FLOP/s of an n x n matrix product (best of `reps`)."
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def time_model(model, batch: int, reps: int, workers: int = 1) -> float:
    "Best wall time (s) of one forward pass on a batch of random 30-s features (`workers` > 1: forward_parallel)."
    x, y = torch.randn(batch, *MEL), torch.randn(batch, *LOUD)
    run = (lambda: forward_parallel(model, x, y, workers=workers)) if workers > 1 else (lambda: model(x, y))
    with torch.no_grad():
        run()                                              # warm-up (oneDNN primitive creation)
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t)
    return best


def load_weights() -> tuple[torch.nn.Module, str]:
    try:
        from soundscaper.pretrained import checkpoint_path, load_model
        checkpoint_path("soundaqnet", download=False)
        return load_model("soundaqnet"), "official SoundAQnet_ASC96_AEC94_PAQ1027"
    except Exception as err:  # noqa: BLE001 — speed does not depend on the weights
        return SoundAQnet().eval(), f"random weights ({type(err).__name__}: official weights not in the cache)"


def bench_e2e(n_clips: int, batch: int, jobs: int = 1) -> dict:
    "predict() end to end on n copies of the demo WAV (features in `jobs` processes); also one clip's features time."
    from soundscaper import features as feats
    from soundscaper.data import fetch
    from soundscaper.inference import predict
    wav = fetch("reference/fold_1_participant_00056_stimulus_13.wav")
    with tempfile.TemporaryDirectory() as d:
        for i in range(n_clips):
            shutil.copy(wav, Path(d) / f"clip_{i:03d}.wav")
        feats.clip_features(wav)                           # warm-up: numba compilation / caches
        t = time.perf_counter()
        feats.clip_features(Path(d) / "clip_000.wav")
        t_feat = time.perf_counter() - t
        predict({"logmel": np.zeros(MEL, np.float32), "loudness": np.zeros(LOUD)})   # warm-up: model load
        t = time.perf_counter()
        from functools import partial
        from soundscaper.cli.batch import ordered_map, worker_pool
        with warnings.catch_warnings(), worker_pool(jobs, ["soundscaper.feature_files"]) as pool:
            warnings.simplefilter("ignore")
            df = predict(d, batch_size=batch, mapper=partial(ordered_map, pool=pool) if pool else None)
        dt = time.perf_counter() - t
    assert len(df) == n_clips and (df["scene"] == "park").all()
    return {"clips": n_clips, "seconds": dt, "clips_per_s": n_clips / dt, "features_s_per_clip": t_feat}


def _row(name: str, threads: int, b: int, flops: int, model, reps: int, workers: int = 1,
         mm_threads: int | None = None) -> tuple[float, float, float]:
    """Time one configuration between two matmul measurements (with `mm_threads`, default `threads`: the whole
    machine's rate for the parallel form); print and return (clips/s, FLOP/s, matmul FLOP/s)."""
    torch.set_num_threads(mm_threads or threads)
    before = matmul_rate()
    torch.set_num_threads(threads)
    dt = time_model(model, b, reps, workers)
    torch.set_num_threads(mm_threads or threads)
    after = matmul_rate()
    mm = (before + after) / 2
    _MM.setdefault(mm_threads or threads, []).extend([before, after])
    rate = flops * b / dt
    label = f"{workers}x{threads}" if workers > 1 else str(threads)
    print(f"{name:44s} {label:>7s} {b:5d} {b / dt:8.2f} {rate / 1e9:8.1f} {mm / 1e9:15.1f} {rate / mm:6.2f}")
    return b / dt, rate, mm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-sizes", default="1,8,16", help="batch sizes for the inference form (default 1,8,16)")
    ap.add_argument("--threads", default=None,
                    help="comma-separated torch thread counts; the first is used for all rows, the others for the "
                         "best batch size only (default: '<cores>,1')")
    ap.add_argument("--e2e-clips", type=int, default=8)
    ap.add_argument("--e2e-jobs", type=int, default=0, help="also time predict(..., jobs=N) (feature processes)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--skip-plain", action="store_true", help="do not time the plain (unfused NCHW) model")
    a = ap.parse_args(argv)
    threads = [int(t) for t in a.threads.split(",")] if a.threads else [torch.get_num_threads(), 1]
    batches = [int(b) for b in a.batch_sizes.split(",")]

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {threads}, "
          f"load average {os.getloadavg()[0]:.1f} (other processes share this machine)")
    meta = SoundAQnet().to("meta").eval()
    flops = count_flops(meta, torch.zeros(1, *MEL, device="meta"), torch.zeros(1, *LOUD, 1, device="meta"))
    print(f"SoundAQnet FLOPs per 30-s clip (conv + linear, counted from the modules): {flops / 1e9:.2f} GFLOP")
    model, weights = load_weights()
    fused = fuse_conv_blocks(model)
    print(f"weights: {weights}")
    torch.set_num_threads(threads[0])
    peak = matmul_rate()
    print(f"fp32 matmul rate (2048^2, {threads[0]} threads): {peak / 1e9:.1f} GFLOP/s\n")
    print(f"{'model form':44s} {'threads':>7s} {'batch':>5s} {'clips/s':>8s} {'GFLOP/s':>8s} {'matmul GFLOP/s':>15s} "
          f"{'ratio':>6s}")
    n = threads[0]
    if not a.skip_plain:
        _row("plain NCHW (batch norm separate)", n, min(max(batches), 8), flops, model, a.reps)
    for b in batches:
        _row("fused + channels-last, intra-op threads", n, b, flops, fused, a.reps)
    for t in threads[1:]:
        _row("fused + channels-last, intra-op threads", t, min(max(batches), 8), flops, fused, a.reps)
    results = {}
    for b in batches:
        if b >= n and n > 1:
            results[b] = _row("fused + channels-last, workers (predict)", 1, b, flops, fused, a.reps, workers=n,
                              mm_threads=n)
    best_b = max(results, key=lambda b: results[b][0]) if results else None
    if best_b is not None:
        cps, rate, mm = results[best_b]
        top = max(_MM[n] + [peak])
        print(f"\nbest (predict's form: {n} workers x 1 thread, batch {best_b}): {cps:.2f} clips/s, {rate / 1e9:.1f} "
              f"GFLOP/s = {rate / mm:.0%} of the {n}-thread matmul rate measured alongside, {rate / top:.0%} of the "
              f"highest matmul rate of the run ({top / 1e9:.1f} GFLOP/s); goal >= 50%: "
              f"{'MET' if min(rate / mm, rate / top) >= 0.5 else 'NOT MET'}")
    torch.set_num_threads(n)

    if a.e2e_clips > 0:
        for jobs in [1] + ([a.e2e_jobs] if a.e2e_jobs > 1 else []):
            e = bench_e2e(a.e2e_clips, best_b or 8, jobs)
            print(f"predict end to end ({e['clips']} x 30-s WAV, batch {best_b or 8}, --jobs {jobs}): "
                  f"{e['clips_per_s']:.2f} clips/s ({e['seconds']:.1f} s; features alone {e['features_s_per_clip']:.2f} "
                  f"s/clip){' (includes starting the worker processes)' if jobs > 1 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
