"""Seconds per clip for `soundscaper caption` end to end on this CPU: audio -> features -> SoundAQnet -> caption.

Goal (issue 6): at most 5 s per 30-s clip, features and model included. The first clip is timed apart (it pays for
numba compilation and model loading); the others give the steady-state rate. The template captioner is timed on its
own as the in-run baseline, so the share of the captioner in the total is visible.

    .venv/bin/python bench/bench_caption.py [--clips 4] [--threads N]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

os.environ.setdefault("SOUNDSCAPER_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

from soundscaper.captions import inputs_from_predictions, read_captions, template_caption  # noqa: E402
from soundscaper.cli.caption import caption_main  # noqa: E402
from soundscaper.data import fetch  # noqa: E402

GOAL_S = 5.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=4, help="number of 30-s D1 assessment clips (default 4)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    a = ap.parse_args()
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    try:
        from soundscaper.inference import predict
    except ImportError as err:
        print(f"soundscaper.inference is not available ({err}); nothing to benchmark", file=sys.stderr)
        return 2
    clips = [fetch(f"assessment_audio/{i}.flac") for i in range(4, 4 + a.clips)]
    durations = [sf.info(str(c)).duration for c in clips]

    # 1. the whole command, one clip per call as a user would run it on a folder
    load0 = os.getloadavg()[0]
    totals, cpu = [], []
    with tempfile.TemporaryDirectory() as d:
        for c in clips:
            t0, c0 = time.perf_counter(), time.process_time()
            rc = caption_main([str(c), "--out", str(Path(d) / f"{c.stem}.jsonl")])
            totals.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
            if rc != 0:
                print(f"caption failed on {c}", file=sys.stderr)
                return 1
        checks = [read_captions(Path(d) / f"{c.stem}.jsonl")["check"][0] for c in clips]

    # 2. the stages apart (warm): predict, then the template captioner
    t_pred, t_cap = [], []
    for c in clips[1:] or clips:
        t0 = time.perf_counter(); df = predict([c]); t_pred.append(time.perf_counter() - t0)
        inp = inputs_from_predictions(df)[0]
        t0 = time.perf_counter()
        for _ in range(100): template_caption(inp)
        t_cap.append((time.perf_counter() - t0) / 100)

    steady = totals[1:] or totals
    per30 = [t / dur * 30 for t, dur in zip(totals[1:] or totals, durations[1:] or durations)]
    print(f"cpu cores: {os.cpu_count()}, load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end "
          f"(above the core count, other processes slow the wall-clock numbers down)")
    print(f"clips: {len(clips)} x {statistics.mean(durations):.1f} s audio")
    print(f"first clip (compile + model load): {totals[0]:.2f} s")
    print(f"steady state, end to end:           {statistics.mean(steady):.2f} s per clip "
          f"({statistics.mean(per30):.2f} s per 30 s of audio; {statistics.mean(per30) / GOAL_S:.2f} x the "
          f"{GOAL_S:.0f} s goal; {statistics.mean(per30) / 30:.3f} x real time)")
    print(f"  CPU time, steady state:           {statistics.mean(cpu[1:] or cpu):.2f} s per clip (all threads)")
    print(f"  predict (features + SoundAQnet):  {statistics.mean(t_pred):.2f} s per clip")
    print(f"  template captioner (baseline):    {statistics.mean(t_cap) * 1e3:.2f} ms per clip "
          f"({statistics.mean(t_cap) / statistics.mean(steady) * 100:.3f} % of the total)")
    print(f"faithfulness check: {checks.count('pass')}/{len(checks)} pass")
    print("goal met" if statistics.mean(per30) <= GOAL_S else "goal NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
