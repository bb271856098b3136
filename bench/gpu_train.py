"""GPU training throughput and peak memory of SoundAQnet (or another model), to size a full ARAUS run.

Runs a few hundred training steps of the trainer's own loop (`soundscaper.train.train_epoch`: forward, the paper's
multi-task loss, backward, Adam) on synthetic full-size batches already on the GPU (32 clips of 3001x64 log-mel and
15000 loudness samples, fp32 like the paper), then a few validation-style forward passes, and prints samples/s,
ms per step, peak GPU memory and an estimate of one paper epoch (598 iterations + 2,520 validation clips) and of a
100-epoch run. The paper trained on a Tesla V100 (32 GB) with 13.54 GB of GPU memory. Reading real features from
disk is not timed here (bench_train.py measures the data pipeline on a CPU): in a real run the loader
(`soundscaper train --workers N`) must keep up with the printed samples/s.

Finishes in well under 2 minutes (time capped by --seconds):

    python bench/gpu_train.py [--model SoundAQnet] [--steps 300] [--batch-size 32] [--seconds 60] [--amp]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from soundscaper.train import MultiTaskLoss, build_model, make_optimizer, train_epoch  # noqa: E402
from soundscaper.labels import EVENTS, PAQS  # noqa: E402

EPOCH_ITERS, VAL_CLIPS, EPOCHS, PAPER_GB = 598, 2520, 100, 13.54


def synthetic_batch(bs: int, device: torch.device, g: torch.Generator) -> dict:
    return {"logmel": torch.randn(bs, 3001, 64, generator=g).to(device),
            "loudness": torch.randn(bs, 15000, generator=g).to(device),
            "scene": torch.randint(0, 3, (bs,), generator=g).to(device),
            "events": (torch.rand(bs, len(EVENTS), generator=g) < 0.4).float().to(device),
            "isop": (torch.rand(bs, generator=g) * 2 - 1).to(device),
            "isoe": (torch.rand(bs, generator=g) * 2 - 1).to(device),
            "paq": torch.randint(1, 6, (bs, len(PAQS)), generator=g).float().to(device)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="SoundAQnet")
    ap.add_argument("--steps", type=int, default=300, help="timed training steps (default 300)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32, help="paper: 32")
    ap.add_argument("--seconds", type=float, default=60.0, help="stop timing after this many seconds")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast around the steps (the paper used fp32)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN pick the fastest algorithms")
    ap.add_argument("--device", default="cuda", help="cuda (default); cpu only to smoke-test this script")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (use bench/bench_train.py on a CPU)")
        return 1
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.backends.cudnn.benchmark = a.cudnn_benchmark
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build_model(a.model).to(dev)
    weighting = "uncertainty" if a.model.lower() == "soundaqnet" else "sum"
    loss_fn = MultiTaskLoss(weighting).to(dev)
    opt = make_optimizer(model, loss_fn, 5e-4)
    batches = [synthetic_batch(a.batch_size, dev, g) for _ in range(4)]
    inputs = tuple(model.inputs)

    def steps(n):
        "n iterations of the trainer's own loop (soundscaper.train.train_epoch), cycling over the batches."
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.amp):
            return train_epoch(model, loss_fn, opt, (batches[i % 4] for i in range(n)), inputs, dev)

    t_start = time.perf_counter()
    steps(a.warmup)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0, n, sums = time.perf_counter(), 0, None
    chunk = 10
    while n < a.steps and time.perf_counter() - t0 < a.seconds:
        k, s = steps(min(chunk, a.steps - n))
        n += k
        sums = s if sums is None else sums + s
    sync()
    train_s = (time.perf_counter() - t0) / n
    peak_alloc = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    peak_res = torch.cuda.max_memory_reserved() / 2**30 if cuda else float("nan")
    loss = sums[0] / n

    model.eval()
    n_eval = 10 if cuda else 1
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.amp):
        model(*[batches[0][k] for k in inputs])
        sync()
        t0 = time.perf_counter()
        for i in range(n_eval):
            model(*[batches[i % 4][k] for k in inputs])
        sync()
    eval_s = (time.perf_counter() - t0) / (n_eval * a.batch_size)

    epoch_s = EPOCH_ITERS * train_s + VAL_CLIPS * eval_s
    print(f"device: {torch.cuda.get_device_name(dev) if cuda else 'cpu'}; torch {torch.__version__}; model {a.model} "
          f"({sum(p.numel() for p in model.parameters()):,} parameters); batch {a.batch_size}; "
          f"{'bf16 autocast' if a.amp else 'fp32'}; cudnn.benchmark={a.cudnn_benchmark}")
    print(f"training: {n} steps, {train_s * 1e3:.1f} ms/step, {a.batch_size / train_s:.1f} samples/s "
          f"(mean loss {loss.item():.3f}, finite={bool(torch.isfinite(loss))})")
    print(f"evaluation forward: {1 / eval_s:.1f} samples/s")
    print(f"peak GPU memory: {peak_alloc:.2f} GiB allocated, {peak_res:.2f} GiB reserved (paper, V100: {PAPER_GB} GB)")
    print(f"estimate: one paper epoch ({EPOCH_ITERS} iterations + {VAL_CLIPS} validation clips) {epoch_s / 60:.1f} min; "
          f"{EPOCHS} epochs {EPOCHS * epoch_s / 3600:.1f} h (GPU compute only; features read from disk must keep up "
          f"at {a.batch_size / train_s:.0f} clips/s)")
    print(f"total benchmark time {time.perf_counter() - t_start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
