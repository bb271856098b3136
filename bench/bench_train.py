"""Training throughput of SoundAQnet on this CPU (samples/s), with full-size 30-s features.

Measures, in one run and on the same synthetic ARAUS-shaped clips (3001x64 log-mel, 15000 loudness samples):

* data pipeline: clips/s read by `ARAUSDataset` (memory-mapped .npy, normalised) — the baseline the model is
  compared with, so it is visible whether the loader or the model limits training;
* forward only (eval mode, no gradients) samples/s;
* one training step (forward, the paper's multi-task loss with learnable weights, backward, Adam) samples/s;

then estimates one paper "epoch" (598 iterations x 32 clips, plus validation on 2,520 clips) and a 100-epoch run.

    .venv/bin/python bench/bench_train.py [--batch-size 8] [--steps 3] [--threads N]
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("SOUNDSCAPER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

from soundscaper.train import (ARAUSDataset, MultiTaskLoss, build_model, make_optimizer,  # noqa: E402
                               write_synthetic_araus)
from torch.utils.data import default_collate  # noqa: E402

EPOCH_ITERS, PAPER_BATCH, VAL_CLIPS, EPOCHS = 598, 32, 2520, 100


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=8, help="clips per step (paper: 32; default 8 to stay short)")
    ap.add_argument("--steps", type=int, default=3, help="timed training steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    bs = a.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        feats, labs = write_synthetic_araus(tmp, {"train": bs, "validation": 1}, frames=3001, loudness_samples=15000)
        ds = ARAUSDataset(feats, "train", labs)
        t = time.perf_counter()
        items = [ds[i] for i in range(len(ds))]
        load_s = (time.perf_counter() - t) / len(ds)
    batch = default_collate(items)

    model = build_model("SoundAQnet")
    loss_fn = MultiTaskLoss("uncertainty")
    opt = make_optimizer(model, loss_fn, 5e-4)

    model.eval()
    with torch.no_grad():
        model(batch["logmel"], batch["loudness"])                 # warm-up
        t = time.perf_counter()
        model(batch["logmel"], batch["loudness"])
        fwd_s = (time.perf_counter() - t) / bs

    model.train()
    def step():
        total, _ = loss_fn(model(batch["logmel"], batch["loudness"]), batch)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    step()                                                        # warm-up
    t, c = time.perf_counter(), time.process_time()
    for _ in range(a.steps):
        step()
    train_s = (time.perf_counter() - t) / (a.steps * bs)
    train_cpu = (time.process_time() - c) / (a.steps * bs)          # CPU seconds (all threads): robust to load

    epoch_s = EPOCH_ITERS * PAPER_BATCH * train_s + VAL_CLIPS * fwd_s
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"SoundAQnet training on CPU ({torch.get_num_threads()} threads, {os.cpu_count()} cores, load average "
          f"{load:.1f}, batch {bs}, full-size 30-s clips)")
    print(f"  data pipeline (mmap + normalise): {1 / load_s:8.1f} clips/s   (baseline)")
    print(f"  forward only (eval):              {1 / fwd_s:8.2f} samples/s = {fwd_s / load_s:6.1f}x the loading time")
    print(f"  training step (fwd+bwd+Adam):     {1 / train_s:8.2f} samples/s = {train_s / fwd_s:6.1f}x the forward time")
    print(f"  CPU time per training sample:     {train_cpu:8.2f} s (all threads; an idle machine needs about "
          f"{train_cpu / torch.get_num_threads():.2f} s of wall time at best)")
    print(f"  estimate: one paper epoch ({EPOCH_ITERS} x {PAPER_BATCH} clips + {VAL_CLIPS} validation clips) "
          f"{epoch_s / 3600:.1f} h; {EPOCHS} epochs {EPOCHS * epoch_s / 86400:.1f} days")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
