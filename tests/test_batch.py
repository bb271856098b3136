"""The batch layer (`soundscaper.cli.batch`) under stress: killed or terminated runs, concurrent runs, stale outputs,
file-system errors, the exit rule, and Dask."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf

SR = 44100


def _clips(folder: Path, n: int, seconds: float = 3.0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"clip_{i:02d}.wav"
        sf.write(p, np.random.default_rng(i).normal(0, 0.05, int(seconds * SR)), SR, subtype="PCM_16")
        out.append(p)
    return out


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "soundscaper.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def _wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _npy_state(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*.npy")}


@pytest.mark.parametrize("command", ["features", "predict"])
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_workers_die_with_their_parent(tmp_path, command, how):
    _clips(tmp_path / "in", 24, seconds=4.0)           # long enough for the Baseline CNN (3.39 s)
    out = tmp_path / "out"
    extra = ["--model", "Baseline_CNN", "--batch-size", "2"] if command == "predict" else []
    proc = _cli(command, str(tmp_path / "in"), "--out", str(out), "--jobs", "2", *extra)
    workers: list[psutil.Process] = []
    try:
        def busy():
            kids = psutil.Process(proc.pid).children(recursive=True)
            workers[:] = kids
            return len(kids) >= 3 and (command == "predict" or any((out / "loudness").glob("*.npy")))
        _wait_for(busy, 120, "the workers to start")
        os.kill(proc.pid, how)
        rc = proc.wait(30)
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"{len(alive)} worker process(es) outlived the parent: {[p.cmdline()[:3] for p in alive]}"
        err = proc.stderr.read()
        if how == signal.SIGTERM:                      # handled like Ctrl-C: a message, no traceback, 128 + 15
            assert rc == 143 and "interrupted" in err and "Traceback" not in err, (rc, err[-2000:])
        if command == "features":
            before = _npy_state(out)
            time.sleep(1.0)
            assert _npy_state(out) == before          # nobody writes once the run (and its lock) is gone
    finally:
        for p in [psutil.Process(proc.pid), *workers] if proc.poll() is None else workers:
            try:
                p.kill()
            except psutil.Error:
                pass


def test_a_signal_while_work_is_submitted_is_one_clean_interrupt(monkeypatch):
    """The first `submit` starts the pool's manager thread; a SIGTERM that lands inside `Thread.start` used to leave a
    thread that was never started, and the pool's shutdown then failed with RuntimeError instead of `Interrupted`."""
    from concurrent.futures import process
    from soundscaper.cli.batch import Interrupted, ordered_map, signals_as_interrupts, worker_pool
    start = process._ExecutorManagerThread.start
    def signal_then_start(self):
        os.kill(os.getpid(), signal.SIGTERM)          # the handler runs at the next call, before the thread starts
        start(self)
    monkeypatch.setattr(process._ExecutorManagerThread, "start", signal_then_start)
    with pytest.raises(Interrupted) as caught:
        with signals_as_interrupts(), worker_pool(2) as pool:
            list(ordered_map(abs, [-1, -2, -3], pool))
    assert caught.value.signum == signal.SIGTERM


def _predictions_csv(path: Path, prefix: str, n: int) -> None:
    import pandas as pd
    from soundscaper.labels import EVENTS, ISO_COLUMNS, PAQS, SCENES
    rng = np.random.default_rng(len(prefix) + n)
    rows = [{"clip": f"{prefix}{i:04d}", "scene": SCENES[i % 3], **dict(zip(EVENTS, rng.beta(0.5, 0.7, len(EVENTS)))),
             **dict.fromkeys(ISO_COLUMNS, 0.0), **dict(zip(PAQS, rng.uniform(1, 5, len(PAQS))))} for i in range(n)]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_two_caption_runs_on_one_output_lose_no_rows(tmp_path):
    from soundscaper.captions import read_captions
    n = 400
    for prefix in ("a", "b"):
        _predictions_csv(tmp_path / f"{prefix}.csv", prefix, n)
    out = tmp_path / "caps.jsonl"
    runs = {p: _cli("caption", str(tmp_path / f"{p}.csv"), "--out", str(out)) for p in ("a", "b")}
    codes = {p: r.wait(300) for p, r in runs.items()}
    errs = {p: r.stderr.read() for p, r in runs.items()}
    done = set(read_captions(out)["clip"])
    for p, rc in codes.items():
        if rc == 0:                                   # a run that says it succeeded has all its rows in the file
            assert {f"{p}{i:04d}" for i in range(n)} <= done, (p, len(done))
        else:                                         # the other one was refused while the first held the output
            assert rc == 2 and "another `soundscaper caption` is writing to" in errs[p], errs[p][-500:]
    for p, rc in codes.items():                       # running the refused one again completes the table
        if rc != 0:
            assert subprocess.run([sys.executable, "-m", "soundscaper.cli", "caption", str(tmp_path / f"{p}.csv"),
                                   "--out", str(out)], capture_output=True).returncode == 0
    clips = read_captions(out)["clip"].tolist()
    assert sorted(clips) == sorted(f"{p}{i:04d}" for p in "ab" for i in range(n))     # each clip exactly once


# ---- file-system errors: one `error:` line, checked before any work ----

def _one_error_line(err: str, where) -> None:
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith(("features:", "predict:", "captioning:"))]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(where) in lines[0], err[-3000:]
    assert "Traceback" not in err


def _commands(tmp_path: Path, out) -> dict[str, list[str]]:
    clip = _clips(tmp_path / "in", 1, seconds=1.5)[0]
    _predictions_csv(tmp_path / "p.csv", "c", 3)
    return {"features": ["features", str(clip), "--out", str(out)],
            "predict": ["predict", str(clip), "--model", "Baseline_CNN", "--out", str(out)],
            "caption": ["caption", str(tmp_path / "p.csv"), "--out", str(Path(out) / "caps.jsonl")]}


@pytest.mark.parametrize("command", ["features", "predict", "caption"])
@pytest.mark.parametrize("case", ["under_a_file", "name_too_long", "read_only"])
def test_unwritable_output_is_one_error_line(tmp_path, capsys, command, case):
    from soundscaper.cli import main as cli_main
    if case == "under_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub"
    elif case == "name_too_long":
        out = tmp_path / ("n" * 300)
    else:
        if os.geteuid() == 0:
            pytest.skip("root ignores file permissions")
        (tmp_path / "ro").mkdir(mode=0o555)
        out = tmp_path / "ro" / "out"
    args = _commands(tmp_path, out)[command]
    assert cli_main(args) == 2
    _one_error_line(capsys.readouterr().err, out)


@pytest.mark.parametrize("command", ["features", "predict", "caption"])
def test_disk_full_is_one_error_line(tmp_path, capsys, monkeypatch, command):
    import errno
    import tempfile
    from soundscaper.cli import main as cli_main
    args = _commands(tmp_path, tmp_path / "out")[command]
    real = tempfile.mkstemp

    def full(*a, **k):                                    # every new file on this disk: no space left
        if str(tmp_path / "out") in str(k.get("dir", a[2] if len(a) > 2 else "")):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(k.get("dir")))
        return real(*a, **k)
    monkeypatch.setattr(tempfile, "mkstemp", full)
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    _one_error_line(err, tmp_path / "out")
    assert "No space left on device" in err


def test_predict_resumes_after_a_kill(tmp_path, capsys):
    from soundscaper.cli import main as cli_main
    from soundscaper.predictions import read_predictions
    _clips(tmp_path / "in", 10, seconds=8.0)           # long enough for the Baseline CNN
    out = tmp_path / "out"
    args = ["predict", str(tmp_path / "in"), "--model", "Baseline_CNN", "--batch-size", "1", "--out", str(out)]
    proc = _cli(*args)
    try:
        journal = out / ".predictions.partial.csv"
        _wait_for(lambda: journal.is_file() and journal.read_text().count("\n") >= 3, 120, "two predicted clips")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert not (out / "predictions.csv").exists()
    assert cli_main(args) == 0
    summary = capsys.readouterr().out
    m = re.search(r"(\d+) resumed", summary)
    assert m and 2 <= int(m.group(1)) < 10, summary
    resumed = read_predictions(out)
    assert cli_main([*args[:-1], str(tmp_path / "fresh")]) == 0                    # the same inputs from scratch
    fresh = read_predictions(tmp_path / "fresh")
    assert resumed["clip"].tolist() == fresh["clip"].tolist() == [f"clip_{i:02d}" for i in range(10)]
    np.testing.assert_array_equal(resumed.drop(columns=["clip", "path", "scene", "model"]).to_numpy(),
                                  fresh.drop(columns=["clip", "path", "scene", "model"]).to_numpy())
    assert not journal.exists()


# ---- one exit rule, a closed pipe, names that are not one line ----

def test_names_with_newlines_are_quoted_and_failures_set_the_exit_status(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    sf.write(d / "good\nclip.wav", np.random.default_rng(0).normal(0, 0.05, 8 * SR), SR, subtype="PCM_16")
    (d / "bad\nclip.wav").write_bytes(b"")
    for command, extra in (("features", []), ("predict", ["--model", "Baseline_CNN"])):
        r = subprocess.run([sys.executable, "-m", "soundscaper.cli", command, str(d), "--out", str(tmp_path / command),
                            *extra], capture_output=True, text=True, timeout=600)
        assert r.returncode == 1, (command, r.stderr[-2000:])                  # one input failed
        lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
        assert not [l for l in lines if l.startswith("clip")], lines           # no name printed raw across lines
        failed = [l for l in lines if "FAILED" in l]
        assert len(failed) == 1 and repr(str(d / "bad\nclip.wav")) in failed[0], failed
        assert any("1 failed" in l for l in lines), lines                      # ... and the summary says so
    assert "'good\\nclip': park" in r.stdout or "'good\\nclip': " in r.stdout, r.stdout


@pytest.mark.parametrize("args", [["fetch", "--list"], ["--help"]])
def test_a_closed_pipe_is_not_a_traceback(args):
    proc = subprocess.Popen([sys.executable, "-m", "soundscaper.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()                              # like `| head`: the reader is gone before the first line
    err = proc.stderr.read().decode()
    rc = proc.wait(60)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert rc in (0, 141), rc


# ---- Dask ----

def test_features_on_a_dask_local_cluster(tmp_path, capsys):
    import distributed  # noqa: F401  (the dask extra, part of dev: a missing one is a failure)
    import filelock
    from soundscaper.cli import main as cli_main
    clips = _clips(tmp_path / "in", 4, seconds=1.5)
    (tmp_path / "in" / "empty.wav").write_bytes(b"")
    plain, on_dask = tmp_path / "plain", tmp_path / "dask"
    assert cli_main(["features", str(tmp_path / "in"), "--out", str(plain)]) == 1
    capsys.readouterr()
    assert cli_main(["features", str(tmp_path / "in"), "--out", str(on_dask), "--dask", "--jobs", "2"]) == 1
    cap = capsys.readouterr()
    assert "5 inputs: 4 computed, 0 already done (verified), 1 failed" in cap.out, cap.out
    assert [l for l in cap.err.splitlines() if l.startswith("FAILED")] == [f"FAILED {tmp_path / 'in' / 'empty.wav'}: "
                                                                             "empty file (0 bytes)"]
    for c in clips:                                                   # the same arrays as without Dask
        for sub in ("logmel", "loudness"):
            np.testing.assert_array_equal(np.load(on_dask / sub / f"{c.stem}.npy"), np.load(plain / sub / f"{c.stem}.npy"))
    os.unlink(on_dask / "loudness" / "clip_01.npy")                   # resumed like any run: only clip_01 again
    assert cli_main(["features", str(tmp_path / "in"), "--out", str(on_dask), "--dask", "--jobs", "2"]) == 1
    assert "1 computed, 3 already done (verified), 1 failed" in capsys.readouterr().out
    with filelock.FileLock(str(on_dask / ".soundscaper-features.lock")):   # and locked like any run
        assert cli_main(["features", str(tmp_path / "in"), "--out", str(on_dask), "--dask"]) == 2
        assert "another `soundscaper features` is writing to" in capsys.readouterr().err
    assert cli_main(["features", str(tmp_path / "in"), "--out", str(tmp_path / "x"), "--dask", "tcp://127.0.0.1:9"]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
