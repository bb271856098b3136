"""Time a cold `soundscaper reproduce` (fresh process and kernels, empty output folder) against the 2-minute goal.

Usage: python bench/bench_reproduce.py [--quick] [--serial]
  --serial  also time one notebook at a time (--jobs 1) in the same run, as the baseline of the parallel default.
Prints the wall time of each run, the per-notebook times, and the ratio to the 120 s budget (< 1 is within it).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 120.0
ROOT = Path(__file__).resolve().parents[1]


def run(extra: list[str]) -> tuple[float, int, dict[str, float]]:
    "One cold run into an empty temporary folder: (wall seconds, exit code, seconds per notebook)."
    env = dict(os.environ)
    env.setdefault("SOUNDSCAPER_DATA", str(ROOT.parent / "shared" / "data"))
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-c", "import sys; from soundscaper.cli import main; sys.exit(main())",
               "reproduce", "--out", out, *extra]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
    per = {m.group(2): float(m.group(3)) for m in re.finditer(r"(ok|FAILED)\s+(\S+) \(([\d.]+) s\)", p.stderr)}
    if p.returncode:
        print(p.stdout[-2000:], p.stderr[-2000:], sep="\n", file=sys.stderr)
    return dt, p.returncode, per


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="time `reproduce --quick` (low-resolution PNGs)")
    ap.add_argument("--serial", action="store_true", help="also time --jobs 1 as a baseline")
    a = ap.parse_args()
    extra = ["--quick"] if a.quick else []
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f} (other jobs on the machine slow this down)")
    runs = [("default (parallel)", extra)] + ([("serial --jobs 1", [*extra, "--jobs", "1"])] if a.serial else [])
    results = {}
    for label, args in runs:
        dt, rc, per = run(args)
        results[label] = dt
        print(f"{label:20s} {dt:6.1f} s  exit {rc}  ratio to the {BUDGET_S:.0f} s budget: {dt / BUDGET_S:.2f}")
        for name, s in per.items():
            print(f"    {name:20s} {s:6.1f} s")
        if rc:
            return rc
    if a.serial:
        print(f"speed-up of the parallel default over serial: {results['serial --jobs 1'] / results['default (parallel)']:.2f}x")
    return 0 if all(v <= BUDGET_S for v in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
