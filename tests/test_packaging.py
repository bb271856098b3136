"""Packaging: a non-editable install outside the checkout predicts and captions the demo clip; the bundled files come
from the package; nothing needs `fcntl` (Windows); reading predictions and `import soundscaper` need no torch."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from soundscaper.base import SoundscaperError
from soundscaper.data import fetch

ROOT = Path(__file__).resolve().parents[1]
DEMO_FLAC = "reference/fold_1_participant_00056_stimulus_13.flac"
CLIP = "fold_1_participant_00056_stimulus_13"


def _run(cmd, cwd, env=None, timeout=600):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    "The project built as a wheel (from a copy of its files) and installed with `pip install --target`."
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "soundscaper", src / "soundscaper", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels, target = tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("target")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(wheels)],
         cwd=src)
    (wheel,) = wheels.glob("soundscaper-*.whl")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], cwd=wheels)
    return target


@pytest.fixture()
def outside(installed, tmp_path):
    "(cwd outside the checkout, environment importing the installed copy first)."
    cwd = tmp_path / "work"
    cwd.mkdir()
    return cwd, {**os.environ, "PYTHONPATH": str(installed)}


def _weights_or_skip():
    from soundscaper.pretrained import checkpoint_path
    try:
        checkpoint_path("soundaqnet")
    except SoundscaperError as err:
        pytest.skip(f"official SoundAQnet weights unavailable (no network and not in the cache): {err}")


def test_the_installed_copy_is_used_and_carries_its_data(installed, outside):
    cwd, env = outside
    code = ("import soundscaper, soundscaper.base as b, soundscaper.data as d; print(soundscaper.__file__); "
            "print(len(d.manifest())); from soundscaper.features import load_normalisation; load_normalisation()\n"
            "try:\n    b.project_root()\nexcept b.SoundscaperError as e:\n    print('no checkout:', e)")
    out = _run([sys.executable, "-c", code], cwd, env).stdout.splitlines()
    assert Path(out[0]).is_relative_to(installed) and int(out[1]) > 100
    assert out[2].startswith("no checkout: this needs a source checkout")


def test_installed_predict_and_caption_the_demo_clip(outside):
    _weights_or_skip()
    cwd, env = outside
    demo = str(fetch(DEMO_FLAC))
    r = _run([sys.executable, "-m", "soundscaper.cli", "predict", demo, "--out", "preds"], cwd, env)
    assert f"{CLIP}: park" in r.stdout
    from soundscaper.predictions import read_predictions
    df = read_predictions(cwd / "preds")
    assert df["clip"].tolist() == [CLIP] and df.scene[0] == "park"
    r = _run([sys.executable, "-m", "soundscaper.cli", "caption", demo], cwd, env)
    assert r.stdout.startswith(f"{CLIP}\tIn this park, ")


def test_nothing_imports_fcntl():
    sources = [p for p in (ROOT / "soundscaper").rglob("*.py")]
    assert not [p for p in sources if re.search(r"^\s*(import fcntl|from fcntl)", p.read_text(), re.M)]
    # as on Windows, where there is no fcntl: every module of the pipeline and the command line still imports
    code = ("import sys; sys.modules['fcntl'] = None\n"
            "import soundscaper.features, soundscaper.feature_files, soundscaper.inference, soundscaper.captions\n"
            "import soundscaper.cli.features, soundscaper.cli.predict, soundscaper.cli.caption")
    _run([sys.executable, "-c", code], ROOT)


def test_reading_predictions_needs_no_torch():
    code = ("import sys, soundscaper, soundscaper.predictions as p\n"
            f"df = p.read_predictions({str(fetch('demo_event'))!r})\n"
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:3]")
    _run([sys.executable, "-c", code], ROOT)
