"""The caption rules on the paper's demo clip, their edge cases, the template captioner, the faithfulness check and the
`soundscaper caption` command (prediction files; one audio clip end to end)."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from soundscaper import captions as C
from soundscaper.captions import (CaptionError, CaptionInputs, caption_inputs, caption_problems,
                                  inputs_from_predictions, read_captions, select_events, template_caption)
from soundscaper.cli import main as cli_main
from soundscaper.data import fetch
from soundscaper.labels import EVENTS, ISO_COLUMNS, PAQS, SCENES
from soundscaper.predictions import read_predictions

DEMO_CLIP = "fold_1_participant_00056_stimulus_13"


@pytest.fixture(scope="module")
def demo():
    return inputs_from_predictions(read_predictions(fetch("demo_event")))[0]     # upstream's two text files


def _table(n, seed=0, **over):
    "A synthetic predictions table (`soundscaper.predictions` layout)."
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        scene = SCENES[i % 3]
        rows.append({"clip": f"c{i}", "path": f"/x/c{i}.wav", "scene": scene,
                     **{f"scene_{s}": float(s == scene) for s in SCENES},
                     **dict(zip(EVENTS, rng.beta(0.5, 0.7, len(EVENTS)))), **dict.fromkeys(ISO_COLUMNS, 0.0),
                     **dict(zip(PAQS, rng.uniform(1, 5, len(PAQS)))), "model": "synthetic", **over})
    return pd.DataFrame(rows)


# ---- the paper's rules on the demo clip (spec llm_captioning.md §3.1-3.2) ----

def test_demo_clip_inputs_match_the_spec(demo):
    assert demo.clip == DEMO_CLIP and demo.scene == "park" and demo.threshold == 0.4
    assert demo.event_labels == ["Animal", "Human sounds", "Speech", "Bird", "Environment and background",
                                 "Outside, rural or natural", "Sounds of things", "Vehicle"]
    assert demo.event_probabilities == [1.0, 1.0, 1.0, 1.0, 0.8, 0.69, 0.5, 0.49]
    assert all(type(p) is float for p in demo.event_probabilities)      # printed as 1.0, never np.float64(1.0)
    assert demo.phrases == ["I Agree with pleasant", "I Disagree with chaotic", "I Agree with calm",
                            "I Disagree with annoying", "I Disagree with monotonous"]


def test_both_upstream_readers_agree(demo):
    d = inputs_from_predictions(read_predictions(fetch("dict_data_labels")))[0]
    assert d == demo


def test_demo_prompt_lists_are_upstream_literals(demo):
    p = C.build_prompt(demo)
    assert repr(demo.event_probabilities) in p and "np.float64" not in p
    assert p.count("In this park,") == 1


# ---- edge cases ----

def test_all_probabilities_low():
    inp = caption_inputs("park", np.full(15, 0.2), [4] * 8)          # 0.2 is not *above* 0.2
    assert inp.events == () and inp.threshold is None
    cap = template_caption(inp)
    assert cap.startswith("In this park, no ") and caption_problems(cap, inp) == []
    top = caption_inputs("park", np.linspace(0.01, 0.15, 15), [4] * 8, no_event="top")
    assert top.events == (("Animal", 0.15),)


@pytest.mark.parametrize("probs,expected", [
    ({"Bird": 0.41, "Water": 0.4}, (0.4, ["Bird", "Water"])),        # 0.4 kept once 0.4 is the threshold
    ({"Bird": 0.4, "Water": 0.35}, (0.3, ["Bird", "Water"])),
    ({"Bird": 0.3, "Water": 0.21}, (0.2, ["Bird", "Water"])),
    ({"Bird": 0.9, "Water": 0.39}, (0.4, ["Bird"])),
])
def test_threshold_cascade(probs, expected):
    p = pd.Series(0.0, index=list(EVENTS)) + pd.Series(probs)
    ev, t = select_events(p.fillna(0.0))
    assert (t, [e for e, _ in ev]) == expected


def test_ties_sort_by_label_descending_and_round_after_sorting():
    p = dict.fromkeys(EVENTS, 0.0) | {"Bird": 0.5, "Animal": 0.5, "Music": 0.5, "Water": 0.504, "Wind": 0.496}
    ev, _ = select_events(p)
    # Water 0.504 > the three 0.5 ties (Music > Bird > Animal by label, descending) > Wind 0.496; then rounded
    assert ev == [("Water", 0.5), ("Music", 0.5), ("Bird", 0.5), ("Animal", 0.5), ("Wind", 0.5)]


def test_all_ratings_neutral_keep_pleasant():
    inp = caption_inputs("street_traffic", np.eye(15)[7], [2.6, 3, 3.5, 3, 3, 3, 3, 3.4])
    assert inp.attitudes == (("pleasant", "Neutral"),) and inp.phrases == ["I Neutral with pleasant"]
    cap = template_caption(inp)
    assert "neutral" in cap and caption_problems(cap, inp) == []


@pytest.mark.parametrize("bad,message", [
    ({"event": ("Bird", np.nan)}, "'Bird' is NaN"),
    ({"event": ("Bird", np.inf)}, "'Bird' is NaN or infinite"),
    ({"paq": ("calm", np.nan)}, "'calm' is NaN"),
    ({"scene": None}, "unknown scene None"),
])
def test_nan_and_garbage_give_clear_errors(bad, message):
    df = _table(1)
    if "event" in bad: df.loc[0, bad["event"][0]] = bad["event"][1]
    if "paq" in bad: df.loc[0, bad["paq"][0]] = bad["paq"][1]
    if "scene" in bad: df.loc[0, "scene"] = bad["scene"]
    with pytest.raises(CaptionError, match=re.escape(message)) as e:
        inputs_from_predictions(df)
    assert "clip 'c0'" in str(e.value)


# ---- template and check ----

def test_template_is_faithful_on_many_random_clips():
    rng = np.random.default_rng(42)
    captions = set()
    for i in range(4000):
        scale = rng.choice([1.0, 0.45, 0.33, 0.22])
        inp = caption_inputs(rng.choice(SCENES), rng.beta(0.3, 0.5, 15) * scale, rng.uniform(0.5, 5.5, 8),
                             clip=f"r{i}", no_event=rng.choice(["none", "top"]))
        cap = template_caption(inp)
        assert caption_problems(cap, inp) == [], (inp, cap)
        assert not re.search(r"\d|_|\bthe the\b|\ba the\b|\bsome the\b|\bsome a\b|  ", cap), cap
        captions.add(cap)
    assert len(captions) == 4000


def test_template_variety_on_one_clip(demo):
    caps = {template_caption(CaptionInputs(f"clip{i}", demo.scene, demo.events, demo.attitudes)) for i in range(60)}
    firsts = {" ".join(c.split(",")[1].split()[:2]) for c in caps}
    assert len(caps) >= 20 and len(firsts) >= 3


@pytest.mark.parametrize("caption,problem", [
    ("In this park, you hear birds. It feels pleasant and calm, not chaotic, annoying or monotonous.", None),
    ("In the park, you hear birds. It feels pleasant and calm, not chaotic, annoying or monotonous.", "start"),
    ("In this park, you hear 4 birds. It feels pleasant and calm, not chaotic, annoying or monotonous.", "digits"),
    ("In this park, birds have a high probability. It feels pleasant and calm, not chaotic, annoying or monotonous.",
     "probabilities"),
    ("In this park, you hear birds and a siren. It feels pleasant and calm, not chaotic, annoying or monotonous.",
     "siren"),
    ("In this park, you hear birds and a fountain. It feels pleasant and calm, not chaotic, annoying or monotonous.",
     "fountain"),
    ("In this park, you hear birds and water. It feels pleasant and calm, not chaotic, annoying or monotonous.",
     "water"),
    ("In this park, you hear birds. It feels pleasant and calm, not annoying or monotonous.", "chaotic"),
    ("In this park, you hear birds. It feels pleasant and not calm, chaotic, annoying or monotonous.", "calm"),
    ("In this park, you hear birds. It feels unpleasant and calm, not chaotic, annoying or monotonous.", "pleasant"),
    ("In this park, you hear birds. It isn't pleasant; it is calm, not chaotic, annoying or monotonous.", "pleasant"),
    ("In this park, you hear birds. It feels pleasant, calm and eventful, not chaotic, annoying or monotonous.",
     "eventful"),
    ("In this park, you hear birds. " + "It is calm. " * 60 + "It feels pleasant, not chaotic, annoying or monotonous.",
     "too long"),
    ("In this park, you hear birds. It feels pleasant and peaceful; it is neither chaotic nor annoying, and far "
     "from monotonous.", None),
    ("In this park, you hear birds. It is pleasant and calm rather than chaotic; it lacks anything annoying or "
     "monotonous.", "annoying"),                                   # 'anything' closes the scope: conservative fail
])
def test_check_cases(demo, caption, problem):
    problems = caption_problems(caption, demo)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


# ---- the command ----

def test_cli_predictions_resumable_csv_and_jsonl(tmp_path, capsys):
    df = _table(5)
    pin = tmp_path / "p.csv"
    df.iloc[:3].to_csv(pin, index=False)
    for ext in ("csv", "jsonl"):
        out = tmp_path / f"caps.{ext}"
        assert cli_main(["caption", str(pin), "--out", str(out)]) == 0
        first = out.read_bytes()
        df.to_csv(pin, index=False)
        assert cli_main(["caption", str(pin), "--out", str(out)]) == 0        # resumed: only c3, c4 are new
        assert "2 captioned, 3 already in" in capsys.readouterr().err
        rows = read_captions(out)
        assert rows["clip"].tolist() == [f"c{i}" for i in range(5)] and (rows["check"] == "pass").all()
        assert out.read_bytes().startswith(first)
        df.iloc[:3].to_csv(pin, index=False)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))      # the run's lock files stay
    assert left == ["caps.csv", "caps.jsonl", "p.csv"]                                     # no temp files
    j = [json.loads(l) for l in (tmp_path / "caps.jsonl").read_text().splitlines()]
    assert set(j[0]) >= {"clip", "scene", "events", "attitudes", "caption", "captioner", "check"}
    assert isinstance(j[0]["events"], list) and isinstance(j[0]["attitudes"], dict)


def test_cli_bad_clips_are_reported_and_skipped(tmp_path, capsys):
    df = _table(3)
    df.loc[1, "Bird"] = np.nan
    pin = tmp_path / "p.csv"
    df.to_csv(pin, index=False)
    out = tmp_path / "caps.jsonl"
    (tmp_path / "x.xyz").write_text("?")
    assert cli_main(["caption", str(pin), str(tmp_path / "missing.flac"), str(tmp_path / "x.xyz"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "FAILED c1: clip 'c1': event probabilities: 'Bird' is NaN" in err
    assert "missing.flac: no such file" in err and "unknown file type '.xyz'" in err
    assert "2 captioned" in err and "3 failed" in err
    assert read_captions(out)["clip"].tolist() == ["c0", "c2"]


def test_cli_prints_without_out_and_custom_prompt(tmp_path, capsys):
    pin = tmp_path / "p.jsonl"
    _table(2).to_json(pin, orient="records", lines=True)
    assert cli_main(["caption", str(pin)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [l.split("\t")[0] for l in lines] == ["c0", "c1"] and lines[0].split("\t")[1].startswith("In this ")
    tpl = tmp_path / "prompt.txt"
    tpl.write_text("Scene {scene}; events {events} {probabilities}; feelings {feelings}.")
    assert cli_main(["caption", str(pin), "--print-prompt", "--prompt", str(tpl)]) == 0
    assert "Scene public square; events [" in capsys.readouterr().out
    tpl.write_text("Scene {scene} {mood}")
    assert cli_main(["caption", str(pin), "--prompt", str(tpl)]) == 2
    assert "unknown fields ['mood']" in capsys.readouterr().err


def test_cli_openai_without_key_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    pin = tmp_path / "p.csv"
    _table(1).to_csv(pin, index=False)
    assert cli_main(["caption", str(pin), "--llm", "openai"]) == 2
    assert "set OPENAI_API_KEY" in capsys.readouterr().err


def test_cli_one_audio_clip_end_to_end(tmp_path, capsys):
    out = tmp_path / "caps.jsonl"
    assert cli_main(["caption", str(fetch("demo_flac")), "--out", str(out)]) == 0
    (row,) = read_captions(out).to_dict("records")
    assert row["clip"] == DEMO_CLIP and row["scene"] == "park" and row["check"] == "pass"
    assert row["caption"].startswith("In this park, ")
