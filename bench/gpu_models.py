"""SoundAQnet on a CUDA GPU: CUDA vs CPU outputs on the demo clip (goal: within 1e-4) and CUDA throughput.

Runs in well under 2 minutes with only torch + numpy + this repository (pandas is not needed).

1. Prepare, on the development machine (needs the project venv and the weights in the cache):

       .venv/bin/python bench/gpu_models.py --pack .gl/gpu_models

   writes into the git-ignored folder .gl/gpu_models (about 12 MB): the default checkpoint
   SoundAQnet_ASC96_AEC94_PAQ1027.pth, the demo clip's normalised reference features, upstream's demo outputs and the
   outputs computed on this machine's CPU.

2. Run on the GPU machine, carrying that folder (`carry: [".gl/gpu_models"]`):

       python bench/gpu_models.py --from .gl/gpu_models

   or give the pieces explicitly: `--weights PATH.pth` (else the pack, else $SOUNDSCAPER_CACHE/checkpoints or
   ~/.cache/soundscaper/checkpoints) and `--features demo.npz` (keys logmel (1,3001,64), loudness (1,15000,1),
   normalised).

Prints: device; max |CUDA − CPU| over all 31 outputs in strict fp32 (TF32 off) with PASS/FAIL against 1e-4, the same
with TF32 on (PyTorch's default for cuDNN convolutions), the difference to upstream's demo output; clips/s for batch
sizes 1…128 (fp32, TF32, channels-last inference form) and the peak GPU memory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if not os.environ.get("SOUNDSCAPER_DATA") and (ROOT.parent / "shared" / "data").is_dir():
    os.environ["SOUNDSCAPER_DATA"] = str(ROOT.parent / "shared" / "data")
try:                                     # soundscaper.labels imports pandas; the model code does not use it
    import pandas  # noqa: F401
except ImportError:
    sys.modules["pandas"] = types.ModuleType("pandas")

from soundscaper.models.core import fuse_conv_blocks  # noqa: E402
from soundscaper.models.soundaqnet import SoundAQnet  # noqa: E402

CKPT = "SoundAQnet_ASC96_AEC94_PAQ1027.pth"
SHA256 = "1158309209bdbe4b0069b5fd237f25e213dff857a23f0f1afdcfd06acc51e69b"
DEMO = "reference/fold_1_participant_00056_stimulus_13"


def pack(dest: Path) -> None:
    "Collect weights, normalised demo features and reference outputs into `dest` (run with the project venv)."
    import shutil
    import warnings
    from soundscaper.data import fetch
    from soundscaper.feature_files import model_inputs
    from soundscaper.predictions import read_predictions
    from soundscaper.pretrained import checkpoint_path, load_model
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(checkpoint_path("SoundAQnet_ASC96_AEC94_PAQ1027"), dest / CKPT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mel, loud = model_inputs({"logmel": np.load(fetch(DEMO + "_logmel.npy")),
                                  "loudness": np.load(fetch(DEMO + "_loudness_iso532_1.npy"))})
    np.savez(dest / "demo_features.npz", logmel=mel[None], loudness=loud[None, :, None])
    with torch.no_grad():
        out = load_model("soundaqnet")(torch.from_numpy(mel[None]), torch.from_numpy(loud[None])).numpy()
    np.savez(dest / "cpu_outputs_dev_machine.npz", **out)
    ref = read_predictions(fetch(DEMO + "_event.txt"))
    from soundscaper.labels import EVENTS, PAQS
    up = {"event_probs": ref[list(EVENTS)].to_numpy(np.float64)[0].tolist(),
          "isop": float(ref["ISOPleasant"][0]), "isoe": float(ref["ISOEventful"][0]), "paq": ref[list(PAQS)].to_numpy()[0].tolist()}
    (dest / "upstream_demo.json").write_text(json.dumps(up))
    print(f"packed into {dest}: {', '.join(sorted(p.name for p in dest.iterdir()))}")


def _find_weights(arg: str | None, pack_dir: Path | None) -> Path:
    cands = [Path(arg)] if arg else []
    if pack_dir:
        cands.append(pack_dir / CKPT)
    cache = os.environ.get("SOUNDSCAPER_CACHE")
    cands += ([Path(cache) / "checkpoints" / CKPT] if cache else []) + [Path.home() / ".cache/soundscaper/checkpoints" / CKPT]
    for p in cands:
        if p.is_file():
            return p
    sys.exit(f"no weights found (tried {', '.join(map(str, cands))}); pass --weights or --from")


def _outputs(model, x, y) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {k: v.double().cpu().numpy() for k, v in model(x, y).items()}


def _maxdiff(a: dict, b: dict) -> float:
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def _sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _throughput(model, batch: int, dev, reps: int = 5) -> float:
    x = torch.randn(batch, 3001, 64, device=dev)
    y = torch.randn(batch, 15000, 1, device=dev)
    with torch.no_grad():
        for _ in range(2):
            model(x, y)
        _sync(dev)
        t = time.perf_counter()
        for _ in range(reps):
            model(x, y)
        _sync(dev)
    return batch * reps / (time.perf_counter() - t)


def run(weights: Path, features: Path, pack_dir: Path | None, batches: list[int], device: str = "cuda") -> int:
    import hashlib
    t0 = time.perf_counter()
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available on this machine")
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"{dev} (dry run of the script)"
    print(f"device: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    print(f"weights: {weights} (sha256 {'OK' if sha == SHA256 else 'DIFFERENT: ' + sha})")
    sd = torch.load(weights, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd)
    cpu_model = SoundAQnet().eval()
    cpu_model.load_state_dict(sd, strict=True)
    f = np.load(features)
    x, y = torch.from_numpy(f["logmel"]).float(), torch.from_numpy(f["loudness"]).float()

    cpu = _outputs(cpu_model, x, y)
    gpu_model = SoundAQnet().eval()
    gpu_model.load_state_dict(sd, strict=True)
    gpu_model = gpu_model.to(dev)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    strict = _outputs(gpu_model, x.to(dev), y.to(dev))
    d_strict = _maxdiff(strict, cpu)
    print(f"max |CUDA fp32 - CPU| over all outputs: {d_strict:.2e}  -> {'PASS' if d_strict <= 1e-4 else 'FAIL'} (<= 1e-4)")
    fused = fuse_conv_blocks(gpu_model)
    d_fused = _maxdiff(_outputs(fused, x.to(dev).contiguous(), y.to(dev)), cpu)
    print(f"max |CUDA fp32 fused/channels-last - CPU|: {d_fused:.2e}  -> {'PASS' if d_fused <= 1e-4 else 'FAIL'}")
    if pack_dir and (pack_dir / "cpu_outputs_dev_machine.npz").is_file():
        dev_cpu = dict(np.load(pack_dir / "cpu_outputs_dev_machine.npz"))
        print(f"max |CPU here - CPU of the development machine|: {_maxdiff(cpu, dev_cpu):.2e}")
    if pack_dir and (pack_dir / "upstream_demo.json").is_file():
        up = json.loads((pack_dir / "upstream_demo.json").read_text())
        d_up = max(np.abs(strict["event_probs"][0] - up["event_probs"]).max(),
                   abs(strict["isop"][0] - up["isop"]), abs(strict["isoe"][0] - up["isoe"]),
                   np.abs(strict["paq"][0] - up["paq"]).max())
        scene = ["public_square", "park", "street_traffic"][int(strict["scene_logits"].argmax())]
        print(f"CUDA vs upstream's demo output (float32 text files): max diff {d_up:.2e}, scene {scene}")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    d_tf32 = _maxdiff(_outputs(gpu_model, x.to(dev), y.to(dev)), cpu)
    print(f"max |CUDA TF32 - CPU| (PyTorch's default conv precision): {d_tf32:.2e}")

    torch.backends.cudnn.benchmark = True
    print(f"\n{'batch':>5s} {'fp32 clips/s':>13s} {'TF32 clips/s':>13s} {'TF32 fused+CL':>14s}")
    for b in batches:
        torch.backends.cudnn.allow_tf32 = False
        r32 = _throughput(gpu_model, b, dev)
        torch.backends.cudnn.allow_tf32 = True
        rtf = _throughput(gpu_model, b, dev)
        rcl = _throughput(fused, b, dev)
        print(f"{b:5d} {r32:13.1f} {rtf:13.1f} {rcl:14.1f}")
    mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")
    print(f"\npeak GPU memory {mem:.2f} GiB; paper (V100): 0.0189 s per clip; total time {time.perf_counter() - t0:.0f} s")
    return 0 if d_strict <= 1e-4 else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="SoundAQnet CUDA-vs-CPU parity and CUDA throughput")
    ap.add_argument("--pack", metavar="DIR", help="prepare DIR on the development machine and exit")
    ap.add_argument("--from", dest="pack_dir", metavar="DIR", help="a folder made with --pack")
    ap.add_argument("--weights", help="SoundAQnet_ASC96_AEC94_PAQ1027.pth")
    ap.add_argument("--features", help="npz with normalised logmel (1,3001,64) and loudness (1,15000,1)")
    ap.add_argument("--batch-sizes", default="1,8,32,128")
    ap.add_argument("--device", default="cuda", help="cuda (default); 'cpu' only to dry-run the script")
    a = ap.parse_args(argv)
    if a.pack:
        pack(Path(a.pack))
        return 0
    pack_dir = Path(a.pack_dir) if a.pack_dir else None
    feats = Path(a.features) if a.features else (pack_dir / "demo_features.npz" if pack_dir else None)
    if feats is None or not feats.is_file():
        sys.exit("no demo features: pass --from DIR (made with --pack) or --features FILE.npz")
    return run(_find_weights(a.weights, pack_dir), feats, pack_dir, [int(b) for b in a.batch_sizes.split(",")],
               a.device)


if __name__ == "__main__":
    sys.exit(main())
