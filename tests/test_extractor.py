"""`soundscaper features`: bad inputs, resumability after a kill, layouts, parallel workers, locking."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import filelock
import numpy as np
import pytest
import soundfile as sf

from soundscaper.cli import main as cli_main
from soundscaper.feature_files import feature_paths, is_done
from soundscaper.features import clip_features, expected_frames

SR = 44100


def _noise(seconds, seed, level=0.05):
    return np.random.default_rng(seed).normal(0, level, int(seconds * SR))


def _clips(folder: Path, n: int, seconds: float = 1.2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"clip_{i:02d}.wav"
        sf.write(p, _noise(seconds, i), SR, subtype="PCM_16")
        paths.append(p)
    return paths


def _temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def _mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*.npy")}


def test_bad_inputs_get_one_line_each(tmp_path, capsys):
    good = _clips(tmp_path / "in", 2)
    d = tmp_path / "in"
    (d / "empty.wav").write_bytes(b"")
    full = (d / "clip_00.wav").read_bytes()
    (d / "truncated.wav").write_bytes(full[: len(full) // 3])
    sf.write(d / "nan.wav", np.where(np.arange(SR * 2) == 5, np.inf, _noise(2, 9)), SR, subtype="FLOAT")
    sf.write(d / "silent.wav", np.zeros(SR * 2), SR)
    sf.write(d / "short.wav", _noise(0.1, 3), SR)
    sf.write(d / "long.wav", _noise(4, 4), SR)
    (d / "notes.txt").write_text("these are not sounds")
    sf.write(d / "mislabelled.wav", _noise(2, 5), SR, format="FLAC")
    (d / "garbage.flac").write_bytes(os.urandom(5000))
    bad = {"empty.wav": "empty file", "truncated.wav": "truncated", "nan.wav": "NaN or infinite",
           "silent.wav": "silent", "short.wav": "too short", "long.wav": "too long", "notes.txt": "unsupported extension",
           "mislabelled.wav": "wrong extension", "garbage.flac": "unreadable", "missing.wav": "no such file"}
    out = tmp_path / "out"
    rc = cli_main(["features", *map(str, good), *(str(d / n) for n in bad), "--out", str(out), "--max-duration", "3"])
    cap = capsys.readouterr()
    assert rc == 1
    failed = [line for line in cap.err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == len(bad), cap.err
    for name, problem in bad.items():
        lines = [line for line in failed if f"{d / name}:" in line]
        assert len(lines) == 1 and problem in lines[0], (name, lines)
    assert f"{len(good) + len(bad)} inputs: 2 computed, 0 already done (verified), {len(bad)} failed" in cap.out
    # the good clips are complete, nothing at all exists for the bad ones, no temporary files
    assert sorted(p.name for p in (out / "logmel").iterdir()) == ["clip_00.npy", "clip_01.npy"]
    assert sorted(p.name for p in (out / "loudness").iterdir()) == ["clip_00.npy", "clip_01.npy"]
    assert not _temporaries(out)
    f = clip_features(good[1])
    np.testing.assert_array_equal(np.load(out / "logmel/clip_01.npy"), f["logmel"])
    np.testing.assert_array_equal(np.load(out / "loudness/clip_01.npy"), f["loudness"])


def test_hidden_files_in_folders_are_not_inputs(tmp_path, capsys):
    """macOS `._name.wav` resource forks and other dot-files in a scanned folder are skipped (as `predict` does);
    a dot-file named explicitly is still an input."""
    _clips(tmp_path / "in", 1)
    fork = tmp_path / "in" / "._clip_00.wav"
    fork.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(4000))
    out = tmp_path / "out"
    assert cli_main(["features", str(tmp_path / "in"), "--out", str(out)]) == 0
    assert "1 inputs: 1 computed, 0 already done (verified), 0 failed" in capsys.readouterr().out
    assert cli_main(["features", str(fork), "--out", str(out)]) == 1
    assert f"FAILED {fork}: unreadable" in capsys.readouterr().err


def test_resume_after_kill(tmp_path):
    clips = _clips(tmp_path / "clips", 30)
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "import sys; from soundscaper.cli import main; sys.exit(main(sys.argv[1:]))",
           "features", str(tmp_path / "clips"), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (out / "provenance").is_dir() and any((out / "provenance").glob("*.json")):   # written last
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)                    # no chance to clean up
    finally:
        proc.wait(30)
    done = [c for c in clips if is_done(c, out)]
    assert 1 <= len(done) < len(clips), f"{len(done)} clips finished before the kill"
    before = _mtimes(out)
    finished = {k: v for k, v in before.items() if Path(k).stem in {c.stem for c in done}}

    rc = cli_main(["features", str(tmp_path / "clips"), "--out", str(out)])
    assert rc == 0
    after = _mtimes(out)
    assert all(after[k] == v for k, v in finished.items())          # nothing finished was recomputed
    assert all(is_done(c, out) for c in clips)                      # everything is complete and valid
    assert not _temporaries(out)                                    # leftovers of the killed run are gone
    assert len(after) == 2 * len(clips)

    # a damaged output is detected and recomputed; intact ones are not touched
    victim = out / "loudness" / "clip_05.npy"
    victim.write_bytes(victim.read_bytes()[:200])
    rc = cli_main(["features", str(tmp_path / "clips"), "--out", str(out)])
    assert rc == 0 and is_done(clips[5], out)
    again = _mtimes(out)
    assert all(again[k] == after[k] for k in after if "clip_05" not in k)


def test_upstream_layout_on_the_demo_clip(tmp_path, capsys):
    from soundscaper.data import fetch
    src = fetch("reference/fold_1_participant_00056_stimulus_13.flac")
    rc = cli_main(["features", str(src), "--out", str(tmp_path), "--layout", "upstream"])
    assert rc == 0
    mel_p, loud_p = feature_paths(tmp_path, src.stem, "upstream")
    assert mel_p == tmp_path / "Dataset_mel" / f"{src.stem}.npy"
    mel, loud = np.load(mel_p), np.load(loud_p)
    assert (mel.shape, mel.dtype, loud.shape, loud.dtype) == ((3001, 64), np.float32, (15000, 1), np.float64)
    ref = np.load(fetch("reference/fold_1_participant_00056_stimulus_13_logmel.npy"))
    assert np.abs(mel - ref).max() <= 0.5
    assert is_done(src, tmp_path, "upstream") and not is_done(src, tmp_path, "ours")
    assert "1 computed" in capsys.readouterr().out


def test_parallel_jobs_give_the_same_arrays(tmp_path):
    clips = _clips(tmp_path / "clips", 4, seconds=1.5)
    assert cli_main(["features", str(tmp_path / "clips"), "--out", str(tmp_path / "a"), "--jobs", "2"]) == 0
    assert cli_main(["features", str(tmp_path / "clips"), "--out", str(tmp_path / "b"), "--jobs", "1"]) == 0
    for c in clips:
        for sub in ("logmel", "loudness"):
            np.testing.assert_array_equal(np.load(tmp_path / "a" / sub / f"{c.stem}.npy"),
                                          np.load(tmp_path / "b" / sub / f"{c.stem}.npy"))
    n_mel, n_loud = expected_frames(int(1.5 * SR), SR)
    assert np.load(tmp_path / "a" / "logmel" / "clip_00.npy").shape == (n_mel, 64)


def test_overwrite_duplicates_and_lock(tmp_path, capsys):
    clips = _clips(tmp_path / "x", 1) + _clips(tmp_path / "y", 1)      # same id "clip_00" twice
    out = tmp_path / "out"
    assert cli_main(["features", str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(out)]) == 1
    assert "duplicate clip id 'clip_00'" in capsys.readouterr().err
    m0 = _mtimes(out)
    time.sleep(0.01)
    assert cli_main(["features", str(clips[0]), "--out", str(out), "--overwrite"]) == 0
    assert all(v != m0[k] for k, v in _mtimes(out).items())
    with filelock.FileLock(str(out / ".soundscaper-features.lock")):
        assert cli_main(["features", str(clips[0]), "--out", str(out)]) == 2
        assert "error: another `soundscaper features` is writing to" in capsys.readouterr().err
    assert cli_main(["features", "--help"]) == 0
    assert "--layout" in capsys.readouterr().out
    assert cli_main(["features", str(clips[0])]) == 2                 # --out is required


def test_busy_lock_closes_its_file(tmp_path, capsys):
    """When another run holds the folder's lock, `soundscaper features` stops without leaking the lock file's handle."""
    import gc
    import warnings
    clip = _clips(tmp_path / "x", 1)[0]
    out = tmp_path / "out"
    out.mkdir()
    with filelock.FileLock(str(out / ".soundscaper-features.lock")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            assert cli_main(["features", str(clip), "--out", str(out)]) == 2
            gc.collect()
    assert "another `soundscaper features`" in capsys.readouterr().err
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]


def test_stale_outputs_are_recomputed(tmp_path, capsys):
    """Each output records what it was made from (source size, mtime, sha256, settings): a changed source is
    recomputed even when the old outputs look complete; a source that was only touched is not."""
    (clip,) = _clips(tmp_path / "in", 1, seconds=1.5)
    out = tmp_path / "out"
    assert cli_main(["features", str(clip), "--out", str(out)]) == 0
    m0 = _mtimes(out)
    os.utime(clip, ns=(time.time_ns(), time.time_ns() + 10**9))                   # touched, same content
    assert cli_main(["features", str(clip), "--out", str(out)]) == 0
    assert "0 computed, 1 already done" in capsys.readouterr().out and _mtimes(out) == m0
    sf.write(clip, _noise(1.5, 99), SR, subtype="PCM_16")                          # same name and length, new audio
    assert is_done(clip, out) is False
    assert cli_main(["features", str(clip), "--out", str(out)]) == 0
    assert "1 computed, 0 already done" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(out / "logmel" / "clip_00.npy"), clip_features(clip)["logmel"])
    st = clip.stat()
    sf.write(clip, _noise(1.5, 7), SR, subtype="PCM_16")                           # new audio, old size and mtime
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert is_done(clip, out) is True                                              # size and mtime trusted ...
    (out / "provenance" / "clip_00.json").unlink()
    assert is_done(clip, out) is False                                             # ... a missing record is not


def test_files_longer_than_ten_minutes_are_computed_by_default(tmp_path):
    "Features are computed in blocks (bounded memory), so `features` takes a long file without --max-duration."
    sr, seconds = 8000, 601
    x = 0.05 * np.random.default_rng(0).standard_normal(sr * seconds)
    sf.write(tmp_path / "long.wav", x.astype(np.float32), sr, subtype="PCM_16")
    assert cli_main(["features", str(tmp_path / "long.wav"), "--out", str(tmp_path / "out")]) == 0
    mel, loud = (np.load(p) for p in feature_paths(tmp_path / "out", "long"))
    assert (mel.shape[0], len(loud)) == expected_frames(sr * seconds, sr) and mel.shape[1] == 64
    assert cli_main(["features", str(tmp_path / "long.wav"), "--out", str(tmp_path / "o2"), "--max-duration", "600"]) == 1
