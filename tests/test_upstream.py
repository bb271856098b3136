"""Upstream's published files: the safe pickle reader and the feature converter on small pickles built with upstream's
structure (and on hostile ones), and the three baseline checkpoints pinned by git blob id, end to end against a
loopback HTTP server: register -> fetch -> blob-id check -> sha256 recorded -> torch.load(weights_only) -> upstream's
module names renamed -> strict load -> predict on the demo log-mel.

The real CNN-Transformer, MobileNetV2 and YAMNet files cannot be downloaded here; the checkpoints served below are
written from the project's own classes in upstream's form (upstream's key names, a plain state_dict)."""
import dataclasses
import hashlib
import http.server
import json
import os
import pickle
import shutil
import subprocess
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from soundscaper import base, data, pretrained
from soundscaper import inference as predict_module
from soundscaper.base import DataError, SoundscaperError, git_blob_id
from soundscaper.data import entry, sha256_record
from soundscaper.features import normalise_log_mel
from soundscaper.labels import EVENTS, PAQS
from soundscaper.models.core import count_parameters, create_model
from soundscaper.upstream import UPSTREAM_SETS, UnsafePickleError, convert_upstream_features, safe_load, upstream_labels

HERE = Path(__file__).resolve().parent
UPSTREAM_KEYS = json.loads((HERE / "data" / "upstream_state_dict_keys.json").read_text())
PINNED = ["CNN_Transformer", "MobileNetV2", "YAMNet"]
DEMO = "reference/fold_1_participant_00056_stimulus_13_logmel.npy"


# --------------------------------------------------------------------------------------------------- model names
@pytest.mark.parametrize("name", PINNED)
def test_state_dict_matches_upstreams_classes(name):
    m = create_model(name)
    assert count_parameters(m) == UPSTREAM_KEYS[name]["params"] == type(m).paper_params
    renamed = pretrained.to_upstream_names(m.state_dict(), m)
    assert {k: list(v.shape) for k, v in renamed.items()} == UPSTREAM_KEYS[name]["keys"]


# --------------------------------------------------------------------------------------------------- HTTP fixture
class Handler(http.server.SimpleHTTPRequestHandler):
    requests: list = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        Handler.requests.append(self.path)
        super().do_GET()


@pytest.fixture()
def served(tmp_path, monkeypatch):
    "A loopback HTTP server for tmp_path/served, the cache in tmp_path/cache, no mirror, no SOUNDSCAPER_WEIGHTS."
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: Handler(*a, directory=str(root), **k))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.delenv("SOUNDSCAPER_DATA", raising=False)
    monkeypatch.delenv("SOUNDSCAPER_WEIGHTS", raising=False)
    monkeypatch.setenv("SOUNDSCAPER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SOUNDSCAPER_DOWNLOAD_URL", f"http://127.0.0.1:{httpd.server_port}/")
    monkeypatch.setattr(base, "_verified", {})
    monkeypatch.setattr(predict_module, "_MODELS", {})               # predict() keeps loaded models per process
    Handler.requests = []
    yield root
    httpd.shutdown()


def _blob(path: Path) -> str:
    "Git's blob id of a file, from git itself when it is installed (an independent oracle), else ours."
    if shutil.which("git"):
        return subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()
    return git_blob_id(path)


def _upstream_style_checkpoint(name: str, path: Path, seed: int = 0) -> torch.nn.Module:
    "Write `name`'s weights (random, BN statistics too) as upstream saved them: a plain state_dict with its key names."
    torch.manual_seed(seed)
    net = create_model(name).eval()
    with torch.no_grad():
        for k, v in net.state_dict().items():
            if k.endswith("running_var"):
                v.uniform_(0.5, 2.0)
            elif k.endswith("running_mean"):
                v.normal_(0.0, 0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(OrderedDict(pretrained.to_upstream_names(net.state_dict(), net)), path)
    return net


def _pin(tmp_path: Path, monkeypatch, name: str, blob: str) -> None:
    "A copy of the manifest whose row for `name`'s checkpoint carries `blob` as its git blob id."
    c = pretrained.CHECKPOINTS[name]
    rows = base.read_resource("manifest.tsv").splitlines()
    i = next(i for i, r in enumerate(rows) if r.startswith(c.data_name + "\t"))
    cols = rows[i].split("\t")
    assert cols[3] == "" and cols[5] == c.git_blob                      # registered by blob id, sha256 not known
    rows[i] = "\t".join(cols[:5] + [blob])
    (tmp_path / "manifest.tsv").write_text("\n".join(rows) + "\n")
    monkeypatch.setenv("SOUNDSCAPER_MANIFEST", str(tmp_path / "manifest.tsv"))
    monkeypatch.setitem(pretrained.CHECKPOINTS, name, dataclasses.replace(c, git_blob=blob))


def _demo(mirror: Path) -> torch.Tensor:
    return torch.from_numpy(normalise_log_mel(np.load(mirror / DEMO)))[None]


# --------------------------------------------------------------------------------------------------- pinned weights
@pytest.mark.parametrize("name", PINNED)
def test_pinned_checkpoint_end_to_end(name, served, tmp_path, monkeypatch, mirror):
    c = pretrained.CHECKPOINTS[name]
    f = served / entry(c.data_name).path
    net = _upstream_style_checkpoint(name, f)
    _pin(tmp_path, monkeypatch, name, _blob(f))
    model = pretrained.load_model(name)                              # fetch, blob check, rename, strict load
    cached = tmp_path / "cache" / "data" / entry(c.data_name).path
    assert model.checkpoint_name == name and cached.read_bytes() == f.read_bytes()
    assert sha256_record(cached).read_text().strip() == hashlib.sha256(f.read_bytes()).hexdigest()
    assert not [p for p in cached.parent.iterdir() if p.suffix in (".part", ".unverified")]
    x = _demo(mirror)
    with torch.no_grad():
        got, want = model(x), net(x)
    for k in ("scene_logits", "event_logits", "isop", "isoe", "paq"):
        assert torch.equal(got[k], want[k]), k
    n = len(Handler.requests)
    from soundscaper.inference import predict
    df = predict([{"logmel": np.load(mirror / DEMO), "clip": "demo"}], name)    # the user's path; cache hit
    assert len(Handler.requests) == n == 1
    assert np.allclose(df.loc[0, list(EVENTS)].to_numpy(float), want["event_probs"][0].numpy(), atol=1e-5)
    assert np.allclose(df.loc[0, list(PAQS)].to_numpy(float), want["paq"][0].numpy(), atol=1e-4)


def test_tampered_download_is_refused_and_removed(served, tmp_path, monkeypatch):
    f = served / entry("yamnet").path
    _upstream_style_checkpoint("YAMNet", f)
    _pin(tmp_path, monkeypatch, "YAMNet", _blob(f))
    b = bytearray(f.read_bytes()); b[len(b) // 2] ^= 1; f.write_bytes(bytes(b))
    with pytest.raises(DataError, match="checksum mismatch for yamnet .*git blob id .* differs"):
        pretrained.checkpoint_path("YAMNet")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_tampered_cache_is_fetched_again(served, tmp_path, monkeypatch):
    f = served / entry("mobilenetv2").path
    _upstream_style_checkpoint("MobileNetV2", f)
    _pin(tmp_path, monkeypatch, "MobileNetV2", _blob(f))
    p = pretrained.checkpoint_path("MobileNetV2")
    p.write_bytes(b"x" * p.stat().st_size)                           # same size, other content
    monkeypatch.setattr(base, "_verified", {})
    assert pretrained.checkpoint_path("MobileNetV2") == p and p.read_bytes() == f.read_bytes()
    assert len(Handler.requests) == 2


def test_weights_folder_is_checked_by_blob_id(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    _upstream_style_checkpoint("YAMNet", d / "yamnet.pth")
    monkeypatch.setenv("SOUNDSCAPER_WEIGHTS", str(d))
    monkeypatch.setitem(pretrained.CHECKPOINTS, "YAMNet",
                        dataclasses.replace(pretrained.CHECKPOINTS["YAMNet"], git_blob=_blob(d / "yamnet.pth")))
    assert pretrained.checkpoint_path("YAMNet") == d / "yamnet.pth"
    assert type(pretrained.load_model("YAMNet")).model_name == "YAMNet"
    (d / "yamnet.pth").write_bytes(b"tampered")
    with pytest.raises(SoundscaperError, match="git blob id differs from the registry"):
        pretrained.checkpoint_path("YAMNet")


def test_upstream_file_loads_by_path_and_is_recognised(tmp_path, mirror):
    net = _upstream_style_checkpoint("YAMNet", tmp_path / "final_model.pth")
    m = pretrained.load_model(tmp_path / "final_model.pth")          # architecture recognised from upstream's keys
    x = _demo(mirror)
    with torch.no_grad():
        assert torch.equal(m(x)["paq"], net(x)["paq"])
    _upstream_style_checkpoint("MobileNetV2", tmp_path / "mob.pth")
    assert type(pretrained.load_model(tmp_path / "mob.pth", model="MobileNetV2")).model_name == "MobileNetV2"


def test_without_network_the_error_says_what_to_do(served, monkeypatch):
    monkeypatch.setenv("SOUNDSCAPER_DOWNLOAD_URL", "http://127.0.0.1:9/")          # nothing listens on port 9
    from soundscaper.inference import predict
    with pytest.raises(SoundscaperError, match=r"could not download yamnet .*SOUNDSCAPER_DATA.*yamnet.pth.*WEIGHTS"):
        predict([{"logmel": np.zeros((3001, 64), np.float32)}], "YAMNet")


def test_fetch_all_skips_blob_pinned_files(mirror, monkeypatch, capsys):
    monkeypatch.setenv("SOUNDSCAPER_DATA", str(mirror))
    from soundscaper.cli import main
    assert main(["fetch", "--all"]) == 0
    n = sum(bool(e.sha256) for e in data.manifest().values())
    assert n == len(data.manifest()) - 3 and capsys.readouterr().out.strip().endswith(f"{n} verified, 0 failed")


# --------------------------------------------------------------------------------------------------- pickles
def _write_set(root: Path, split: str = "test", folder: str | None = None, n: int = 3, **override) -> dict:
    folder_name, prefix = UPSTREAM_SETS[split]
    d = root / (folder or folder_name)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    names = [f"fold_3_participant_{10001 + i:05d}_stimulus_02" for i in range(n)]
    labels = {"soundscape": [f"R{i + 1:04d}_segment_binaural_44100_1" for i in range(n)], "feature_names": names,
              "masker": ["silence_00001"] * n,
              "USotW_acoustic_scene_labels": {f"R{i + 1:04d}_segment_binaural": "park" for i in range(n)},
              "event_labels": [["Bird", "Wind"]] + [[]] * (n - 1), "all_events": list(EVENTS),
              **{p: [3] * n for p in PAQS}} | override
    feats = {"log_mel": {nm: rng.normal(size=(3001, 64)).astype(np.float32) for nm in names},
             "loudness": {nm: rng.gamma(4, 2, (15000, 1)) for nm in names}}
    for kind, obj in (("scene_event_PAQs", labels), *feats.items()):
        (d / f"{prefix}_{kind}.pickle").write_bytes(pickle.dumps(obj, protocol=4))
    return feats


def test_upstream_layout_and_case_insensitive_folder(tmp_path):
    feats = _write_set(tmp_path / "Dataset", "validation", folder="Validation_set")
    rep = convert_upstream_features(tmp_path / "Dataset", tmp_path / "out", "val", layout="upstream")
    assert (rep[["logmel", "loudness"]] == "written").all().all() and rep["labelled"].all()
    name = rep["feature_name"][0]
    loud = np.load(tmp_path / "out" / "Dataset_wav_loudness" / f"{rep['clip'][0]}.npy")
    assert loud.shape == (15000, 1) and np.array_equal(loud, feats["loudness"][name])
    labs = pd.read_csv(tmp_path / "out" / "validation_labels.csv")
    assert labs.loc[0, "Bird"] == 1 and labs.loc[0, "Wind"] == 1 and labs.loc[1, list(EVENTS)].sum() == 0


def test_labels_are_checked(tmp_path):
    _write_set(tmp_path, all_events=list(EVENTS)[::-1])
    with pytest.raises(DataError, match="all_events differs"):
        upstream_labels(tmp_path / "Testing_set" / "testing_scene_event_PAQs.pickle")
    _write_set(tmp_path, event_labels=[["Birds"], [], []])
    with pytest.raises(DataError, match="unknown event 'Birds'"):
        upstream_labels(tmp_path / "Testing_set" / "testing_scene_event_PAQs.pickle")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no testing_log_mel.pickle"):
        convert_upstream_features(tmp_path / "empty", tmp_path / "o")


class _Evil:
    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


HOSTILE = {
    "reduce_os_system": None,                                       # built per test: touches a file if run
    "builtins_eval": b"cbuiltins\neval\n(S'1+1'\ntR.",
    "numpy_load": b"cnumpy\nload\n(S'/etc/passwd'\ntR.",
    "copyreg_reconstructor": b"ccopyreg\n_reconstructor\n(cbuiltins\nobject\ncbuiltins\nobject\nNtR.",
    "reconstruct_huge": b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n(I99999999999\ntS'b'\ntR.",
    "newobj_ndarray": b"\x80\x02cnumpy\nndarray\nJ\x00\xe1\xf5\x05\x85\x81.",
    "object_array": pickle.dumps({"clip": np.array([{"a": 1}, None], dtype=object)}),
    "object_field": pickle.dumps(np.zeros(2, dtype=[("a", "f4"), ("b", "O")])),
    "persistent_id": b"\x80\x02X\x01\x00\x00\x00aQ.",
    "out_of_band_buffer": b"\x80\x05\x97.",
    "deep_nesting": b"(" * 50 + b"l" * 50 + b".",
    "truncated": pickle.dumps({"clip": np.zeros((100, 64), np.float32)})[:-100],
    "empty_file": b"",
}


WHY = {"reduce_os_system": ".system (only numpy arrays", "builtins_eval": "refuses the global builtins.eval",
       "numpy_load": "refuses the global numpy.load", "copyreg_reconstructor": "refuses the global copyreg.",
       "reconstruct_huge": "_reconstruct with arguments numpy never writes", "newobj_ndarray": "call numpy.ndarray",
       "object_array": "refuses an object array", "object_field": "refuses an object array",
       "persistent_id": "refuses persistent ids", "out_of_band_buffer": "truncated or damaged",
       "deep_nesting": "nested deeper than 32", "truncated": "truncated or damaged", "empty_file": "truncated or damaged"}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_pickles_are_refused(case, tmp_path):
    p = tmp_path / "testing_log_mel.pickle"
    flag = tmp_path / "owned"
    p.write_bytes(HOSTILE[case] if HOSTILE[case] is not None else pickle.dumps({"clip": _Evil(flag)}))
    with pytest.raises(UnsafePickleError) as err:
        safe_load(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: ") and "\n" not in msg and WHY[case] in msg, msg
    assert not flag.exists()                                          # nothing in the pickle ran
    with pytest.raises(UnsafePickleError):                            # the converter stops on it, writes nothing
        convert_upstream_features(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_evaluate_loads_upstream_named_checkpoint_files(tmp_path):
    "`soundscaper evaluate --checkpoint final_model.pth` takes upstream's own files (its module names) as they are."
    from soundscaper.train import load_for_evaluation
    net = create_model("YAMNet").eval()
    path = tmp_path / "final_model.pth"
    torch.save(pretrained.to_upstream_names(net.state_dict(), net), path)
    loaded, label = load_for_evaluation("YAMNet", path)
    assert label == str(path)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
