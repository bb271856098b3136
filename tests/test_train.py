"""Training and evaluation (soundscaper.train) on a small synthetic ARAUS-shaped dataset, and evaluation of the
official SoundAQnet checkpoint on the demo clip's reference features."""
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from soundscaper.cli import main as cli
from soundscaper.base import SoundscaperError
from soundscaper.data import fetch, load_araus
from soundscaper.labels import EVENTS, ISO_COLUMNS, PAQS
from soundscaper.predictions import read_predictions
from soundscaper.train import ARAUSDataset, TrainConfig, UpstreamBatchSampler, train, write_synthetic_araus

# A SoundAQnet with every part of the real one (mel and loudness branches, graph layer, 12 heads), but small.
TINY = {"kernels": [3, 5], "channels": [4, 8, 8], "common_dim": 16, "fused_dim": 8, "gnn_hidden": 8, "gnn_out": 8,
        "head_hidden": [["scene", 8], ["event", 8], ["ISOPls", 8], ["ISOEvs", 8]] + [[p, 8] for p in PAQS]}
DEMO = "fold_1_participant_00056_stimulus_13"


def quiet(_):
    pass


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    feats, labs = write_synthetic_araus(root, {"train": 48, "validation": 16, "test": 16}, frames=160,
                                        loudness_samples=800, seed=3)
    return feats, labs


def config(**kw):
    base = dict(model="SoundAQnet", model_options=TINY, batch_size=8, iterations_per_epoch=6, max_epochs=4,
                early_stop_after=1, lr=2e-3, seed=7)
    return TrainConfig(**(base | kw))


def test_label_files_have_the_real_format(synth):
    _, labs = synth
    raw = (labs / "training_set_audio_event_labels.txt").read_bytes()
    assert raw.endswith(b"\r\n") and b"\t" in raw and raw.count(b"\r\n") == 48
    assert b"" in raw.split(b"\r\n")[:-1]                      # an empty line = a clip without events
    paq_line = (labs / "training_set_PAQ_8D_AQs.txt").read_bytes().split(b"\r\n")[0].decode()
    assert len(paq_line.split(" ")) == 8 and all(len(v.split("e")[0].split(".")[1]) == 18 for v in paq_line.split())
    t = load_araus("train", labs)
    assert len(t) == 48 and set(t.scene) <= {"public_square", "park", "street_traffic"}
    assert (t[list(EVENTS)].sum(axis=1) == 0).any()          # some clips without any event, as in ARAUS


def test_upstream_sampler_stream():
    # 19152 clips: 599 batches per pass, the last with 16; an epoch is 598 iterations
    sizes = [len(b) for b in UpstreamBatchSampler(19152, 32, length=600)]
    assert sizes[597] == 32 and sizes[598] == 16 and sizes[599] == 32
    full = list(UpstreamBatchSampler(100, 32, length=12))
    assert list(UpstreamBatchSampler(100, 32, start=5, length=7)) == full[5:]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    "Tiny tensors: one thread is as fast and does not suffer when other jobs share the cores."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def run_a(synth, tmp_path_factory):
    "An uninterrupted 4-epoch run (24 iterations)."
    feats, labs = synth
    out = tmp_path_factory.mktemp("run_a")
    return out, train(config(), feats, out, labs, progress=False, log=quiet)


def test_training_decreases_the_loss(run_a):
    out, rec = run_a
    losses = [h["train_loss"]["tasks_sum"] for h in rec["history"]]
    assert len(losses) == 4
    assert losses[-1] < 0.8 * losses[0], losses
    assert rec["history"][-1]["validation"]["paq_mse_mean"] < rec["history"][0]["validation"]["paq_mse_mean"]
    # checkpoints are plain state_dicts / tensors-only dicts, loadable with weights_only=True
    for name in ("last.pth", "final.pth", "resume.pth"):
        torch.load(out / name, weights_only=True)
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["train_clips"] == 48 and run["config"]["loss_weighting"] == "uncertainty"
    assert not list(out.glob(".*tmp"))                          # no temporary files left behind


def _stop_at(n):
    def hook(iteration, total, losses):
        if iteration == n:
            raise KeyboardInterrupt
    return hook


def test_interrupted_run_resumes_to_identical_weights(synth, run_a, tmp_path):
    feats, labs = synth
    out_a, a = run_a
    with pytest.raises(KeyboardInterrupt):                      # killed in the middle of epoch 2
        train(config(), feats, tmp_path / "b", labs, progress=False, log=quiet, on_step=_stop_at(9))
    assert torch.load(tmp_path / "b" / "resume.pth", weights_only=True)["epoch"] == 1
    b = train(config(), feats, tmp_path / "b", labs, progress=False, log=quiet)
    wa = torch.load(out_a / "final.pth", weights_only=True)
    wb = torch.load(tmp_path / "b" / "final.pth", weights_only=True)
    assert wa.keys() == wb.keys()
    diff = max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa if wa[k].numel())
    assert diff == 0.0, f"resumed weights differ by {diff}"         # bit-identical on the CPU
    sa = torch.load(out_a / "resume.pth", weights_only=True)
    sb = torch.load(tmp_path / "b" / "resume.pth", weights_only=True)
    assert torch.equal(sa["loss"]["params"], sb["loss"]["params"])
    assert [h["validation"] for h in a["history"]] == [h["validation"] for h in b["history"]]


def test_evaluate_reproduces_its_own_numbers(synth, run_a, tmp_path):
    feats, labs = synth
    out_a, rec = run_a
    best = rec["best"]["validation"]
    out = tmp_path / "eval.json"
    code = cli(["evaluate", "--checkpoint", str(out_a), "--features", str(feats), "--labels", str(labs),
                "--split", "validation", "--out", str(out), "--no-progress", "--predictions", str(tmp_path / "p.csv")])
    assert code == 0
    got = json.loads(out.read_text())
    assert got["checkpoint"].endswith("best.pth")
    assert got["clips_used"] == 16 and got["clips_missing"] == 0 and got["model"] == "SoundAQnet"
    for k in ("scene_balanced_accuracy", "event_auc_samplewise", "paq_mse_mean", "isop_mse", "isoe_mse"):
        assert got["metrics"][k] == pytest.approx(best[k], abs=1e-9), k
    assert got["metrics"]["paq_mse"] == pytest.approx(best["paq_mse"], abs=1e-9)
    assert len(read_predictions(tmp_path / "p.csv")) == 16


def test_config_file_and_cli_train(synth, tmp_path, capsys):
    feats, labs = synth
    cfg = tmp_path / "ablation.toml"
    cfg.write_text('model = "SoundAQnet"\nloss_weighting = "fixed"\nbatch_size = 8\niterations_per_epoch = 2\n'
                   'loss_alpha = [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]\n'
                   '[model_options]\nkernels = [3]\nchannels = [4, 8, 8]\nuse_graph = false\n')
    out = tmp_path / "run"
    args = ["train", "--config", str(cfg), "--features", str(feats), "--labels", str(labs), "--out", str(out),
            "--epochs", "1", "--no-progress"]
    assert cli(args) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["model_options"] == {"kernels": [3], "channels": [4, 8, 8], "use_graph": False}
    assert run["config"]["loss_weighting"] == "fixed" and run["status"] == "finished"
    # a different setting in the same folder is refused with a one-line error; --restart starts over
    assert cli(args + ["--lr", "0.1"]) == 2
    assert "different settings" in capsys.readouterr().err
    assert cli(args + ["--lr", "0.1", "--restart"]) == 0
    # user errors: missing features folder, unknown model
    assert cli(["train", "--features", str(tmp_path / "nope"), "--labels", str(labs), "--out", str(out)]) == 2
    assert cli(["train", "--model", "ResNet", "--features", str(feats), "--labels", str(labs),
                "--out", str(tmp_path / "r")]) == 2


def test_a_baseline_trains_by_name(tmp_path):
    feats, labs = write_synthetic_araus(tmp_path, {"train": 8, "validation": 4}, frames=400, loudness_samples=10)
    cfg = TrainConfig("Baseline_CNN", batch_size=4, iterations_per_epoch=1, max_epochs=1)
    rec = train(cfg, feats, tmp_path / "run", labs, progress=False, log=quiet)
    assert rec["config"]["loss_weighting"] == "sum" and rec["n_parameters"] == 1_009_900
    assert math.isfinite(rec["history"][0]["train_loss"]["total"])


def test_dataset_reads_our_layout_and_uses_the_available_subset(synth, tmp_path):
    feats, labs = synth
    ours = tmp_path / "feats"
    (ours / "logmel").mkdir(parents=True)
    (ours / "loudness").mkdir()
    clips = load_araus("test", labs)["clip"].tolist()
    for c in clips[:5]:
        os.symlink(feats / "Dataset_mel" / f"{c}.npy", ours / "logmel" / f"{c}.npy")
        os.symlink(feats / "Dataset_wav_loudness" / f"{c}.npy", ours / "loudness" / f"{c}.npy")
    ds = ARAUSDataset(ours, "test", labs)
    assert len(ds) == 5 and len(ds.missing) == 11 and "5 of 16 clips" in ds.summary()
    up = ARAUSDataset(feats, "test", labs)
    assert torch.equal(ds[2]["logmel"], up[2]["logmel"]) and torch.equal(ds[2]["loudness"], up[2]["loudness"])


@pytest.fixture(scope="module")
def official_checkpoint():
    from soundscaper import pretrained
    try:
        return pretrained.checkpoint_path("soundaqnet")
    except SoundscaperError as err:
        pytest.skip(f"official SoundAQnet checkpoint unavailable: {err}")


@pytest.mark.parity
def test_evaluate_official_checkpoint_on_the_demo_clip(official_checkpoint, tmp_path, capsys):
    feats = tmp_path / "feats"
    (feats / "Dataset_mel").mkdir(parents=True)
    (feats / "Dataset_wav_loudness").mkdir()
    os.symlink(fetch("demo_logmel"), feats / "Dataset_mel" / f"{DEMO}.npy")
    os.symlink(fetch("demo_loudness"), feats / "Dataset_wav_loudness" / f"{DEMO}.npy")
    out, pred = tmp_path / "eval.json", tmp_path / "pred.csv"
    assert cli(["evaluate", "--model", "SoundAQnet", "--features", str(feats), "--split", "test", "--out", str(out),
                          "--predictions", str(pred), "--no-progress"]) == 0
    report = capsys.readouterr().out
    assert "Parameters num: 2.701812 M" in report and "1 of 3576 clips" in report
    r = json.loads(out.read_text())
    assert (r["clips_used"], r["clips_missing"]) == (1, 3575)
    # the outputs are upstream's demo outputs (llm_captioning.md §1.3) ...
    p = read_predictions(pred).iloc[0]
    golden_events = np.loadtxt(fetch("demo_event"))
    assert p["scene"] == "park"
    np.testing.assert_allclose(p[list(EVENTS)].to_numpy(float), golden_events, atol=1e-5)
    golden_paq = [4.108083, 3.0842495, 2.0122054, 3.4061074, 2.813982, 4.00237, 1.8789594, 2.4632325]
    np.testing.assert_allclose(p[list(PAQS)].to_numpy(float), golden_paq, atol=1e-5)
    assert p[ISO_COLUMNS[0]] == pytest.approx(0.42336637, abs=1e-5) and p[ISO_COLUMNS[1]] == pytest.approx(-0.10498028, abs=1e-5)
    # ... and the metrics are those of that one clip against its labels (4,3,2,4,3,4,2,3; park; 4 events)
    truth = np.array([4, 3, 2, 4, 3, 4, 2, 3], float)
    m = r["metrics"]
    assert m["paq_mse"] == pytest.approx(dict(zip(PAQS, (np.array(golden_paq) - truth) ** 2)), abs=1e-4)
    assert m["scene_balanced_accuracy"] == 1.0 and m["event_auc_samplewise"] == 1.0
    assert m["isop_mse"] == pytest.approx((0.42336637 - 0.4267766952966369) ** 2, abs=1e-6)


@pytest.mark.parametrize("name,millions", [("blocks_2", 1.53), ("soundaqnet", 2.70), ("blocks_4", 7.36),
                                           ("blocks_5", 25.92), ("kernels_3", None), ("dilation_2_3_5", 2.70)])
def test_ablations_build_with_the_paper_sizes(name, millions):
    from soundscaper.models.core import count_parameters
    from soundscaper.train import ABLATIONS, build_model
    cfg = TrainConfig.for_ablation(name).resolved()
    n = count_parameters(build_model(cfg.model, cfg.model_options))
    if millions is not None:
        assert round(n / 1e6, 2) == millions
    assert len(ABLATIONS[name]["paper"]) == 3


def test_corrupt_resume_file_is_reported(synth, tmp_path):
    feats, labs = synth
    (tmp_path / "resume.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(SoundscaperError, match="--restart"):
        train(config(), feats, tmp_path, labs, progress=False, log=quiet)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_unusable_device_is_a_user_error(synth, tmp_path, capsys):
    """--device cuda without a GPU, or a misspelt device, is a one-line error (exit 2), not a traceback."""
    feats, labs = synth
    for dev, msg in (("cuda", "no CUDA"), ("gpu", "unknown device")):
        assert cli(["train", "--model", "Baseline_CNN", "--features", str(feats), "--labels", str(labs),
                    "--out", str(tmp_path / "r"), "--epochs", "1", "--no-progress", "--device", dev]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "r").exists()                  # no empty run folder left behind
