"""`soundscaper reproduce`: fresh runs reproduce the committed outputs byte for byte and each other; predictions,
failures, stale failure copies and in-place execution are handled."""
import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from soundscaper.cli import main as cli_main
from soundscaper.labels import EVENTS, EVENTS_PAPER_ORDER, PAQS, SCENES
from soundscaper import reproduce as rp
from soundscaper.cli.reproduce import reproduce_main
from soundscaper.predictions import read_predictions
from soundscaper.reproduce import NOTEBOOK_ORDER, ground_truth, find_notebooks, reproduce
from soundscaper.stats import compare_models

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs" / "figures"
FIXED = ["figures/ae_aq_spearman_test_groundtruth.csv", "figures/ae_aq_spearman_test_groundtruth_p.csv",
         "human_eval/expert_evaluation_summary.csv"]


def _outputs(root: Path) -> set[str]:
    "Relative paths of the numeric outputs (CSV) and figures under figures/ and human_eval/ (not the notebooks)."
    return {str(p.relative_to(root)) for d in ("figures", "human_eval") for p in (root / d).glob("*")
            if p.is_file() and p.suffix in (".csv", ".png", ".md")}


def _cell_outputs(path: Path) -> list:
    "The outputs of every code cell of an executed notebook but papermill's injected-parameters cell."
    nb = json.loads(path.read_text())
    return [c.get("outputs") for c in nb["cells"]
            if c["cell_type"] == "code" and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """One cold, full-resolution run of every figure notebook into a temporary folder (one notebook at a time, so in
    another order than the run that made the committed files: comparing the two checks that runs are deterministic)."""
    out = tmp_path_factory.mktemp("reproduce")
    res = reproduce(out_root=out, progress=False, jobs=1)
    return out, res


def test_every_notebook_runs(fresh):
    out, res = fresh
    assert res.ok.all(), res[~res.ok].to_string()
    assert list(res.name) == list(find_notebooks())
    assert set(NOTEBOOK_ORDER) <= set(res.name)
    for n in res.name:
        nb = nbformat.read(out / "figures" / "notebooks" / f"{n}.ipynb", as_version=4)
        assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), n


def test_fresh_run_reproduces_committed_numbers(fresh):
    out, _ = fresh
    new, committed = _outputs(out), _outputs(ROOT)
    assert new == committed, f"only in the fresh run: {sorted(new - committed)}; only committed: {sorted(committed - new)}"
    for rel in sorted(p for p in new if p.endswith((".csv", ".md"))):     # numbers: same bytes, quick or not
        assert (out / rel).read_bytes() == (ROOT / rel).read_bytes(), rel


def test_full_run_equals_committed_outputs(fresh):
    "A fresh full-resolution run gives the committed PNGs, CSVs and notebook outputs byte for byte."
    out, res = fresh
    assert res.ok.all(), res[~res.ok].to_string()
    differ = [rel for rel in sorted(_outputs(ROOT)) if (out / rel).read_bytes() != (ROOT / rel).read_bytes()]
    assert not differ, f"committed outputs that a fresh run does not reproduce: {differ}"
    for n in res.name:
        assert _cell_outputs(out / "figures/notebooks" / f"{n}.ipynb") == _cell_outputs(NBS / f"{n}.ipynb"), n


def test_committed_notebooks_carry_their_outputs():
    for n in NOTEBOOK_ORDER:
        text = (NBS / f"{n}.ipynb").read_text()
        nb = json.loads(text)
        assert not [c for c in nb["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])], n
        assert "papermill" not in nb["metadata"] and "execution_count\": 1" not in text, n
        outs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
        assert outs, n
        if n not in ("model_comparison",):
            assert any("image/png" in o.get("data", {}) for o in outs), n
    assert not (ROOT / "figures" / "notebooks").exists()      # no second copy of the executed notebooks


def test_every_figure_has_its_numbers(fresh):
    out, _ = fresh
    pngs = {p.stem for p in (out / "figures").glob("*.png")}
    csvs = {p.stem for p in (out / "figures").glob("*.csv")}
    assert pngs and pngs <= csvs, sorted(pngs - csvs)


def test_fixed_output_layout():
    rho = pd.read_csv(ROOT / FIXED[0])
    p = pd.read_csv(ROOT / FIXED[1])
    for t in (rho, p):
        assert list(t.columns) == ["event", *PAQS]
        assert sorted(t.event) == sorted(EVENTS) and list(t.event) == list(EVENTS_PAPER_ORDER)
    assert rho[list(PAQS)].abs().max().max() <= 1 and (p[list(PAQS)] >= 0).all().all()
    for f in (ROOT / "figures").glob("*.csv"):             # fixed precision: at most 6 significant digits...
        for v in pd.read_csv(f, dtype=str, keep_default_na=False).to_numpy().ravel():
            if "circumplex" not in f.name and v.replace(".", "", 1).lstrip("-").isdigit():
                assert len(v.lstrip("-0.").replace(".", "")) <= 6, (f.name, v)
    s = pd.read_csv(ROOT / FIXED[2])
    assert list(s.columns) == ["dataset", "source", "criterion", "mean", "sd", "n"]
    assert set(s.source) == {"expert", "SoundSCaper"} and set(s.dataset) == {"D1", "D2"} and len(s) == 24


def _noisy_predictions(path: Path, every: int = 8, seed: int = 0) -> pd.DataFrame:
    "A small predictions file made from the test labels plus noise: every `every`-th clip, written by the test."
    rng = np.random.default_rng(seed)
    gt = ground_truth("test").iloc[::every].reset_index(drop=True)
    n = len(gt)
    df = gt[["clip"]].copy()
    wrong = np.arange(n) % 10 == 0                                  # every 10th predicted scene is wrong
    df["scene"] = [SCENES[(SCENES.index(s) + 1) % 3] if w else s for s, w in zip(gt.scene, wrong)]
    for e in EVENTS:
        df[e] = np.clip(0.7 * gt[e] + rng.normal(0.15, 0.1, n), 0, 1)
    for c in ("ISOPleasant", "ISOEventful"):
        df[c] = gt[c] + rng.normal(0, 0.1, n)
    noise = rng.normal(0, 0.4, (n, len(PAQS)))
    for j, q in enumerate(PAQS):
        df[q] = gt[q] + noise[:, j]
    df["model"] = "SoundAQnet"
    df.to_csv(path, index=False)
    return df


def test_predictions_code_path(tmp_path, capfd):
    pred = _noisy_predictions(tmp_path / "predictions.csv")
    out = tmp_path / "out"
    res = reproduce(out_root=out, predictions=tmp_path / "predictions.csv", quick=True, progress=False)
    assert res.ok.all(), res[~res.ok].to_string()
    fig = out / "figures"
    # panel (a): the model's matrix, checked against scipy column by column (CSV: 6 significant digits)
    rho = pd.read_csv(fig / "ae_aq_spearman_predictions.csv").set_index("event")
    p = pd.read_csv(fig / "ae_aq_spearman_predictions_p.csv").set_index("event")
    assert list(rho.columns) == list(PAQS) and list(rho.index) == list(EVENTS_PAPER_ORDER)
    for e in EVENTS:
        for q in PAQS:
            ref = sps.spearmanr(pred[e], pred[q])
            assert rho.loc[e, q] == pytest.approx(ref.statistic, rel=1e-5, abs=1e-9)
            assert p.loc[e, q] == pytest.approx(ref.pvalue, rel=1e-5)
    long = pd.read_csv(fig / "ae_aq_spearman_test.csv")
    assert set(long.source) == {"predictions", "ground truth"} and len(long) == 2 * 120
    # the ground-truth matrix is unchanged by the predictions
    gt_csv = "figures/ae_aq_spearman_test_groundtruth.csv"
    assert (out / gt_csv).read_bytes() == (ROOT / gt_csv).read_bytes()
    # radar overlay: the model's means per predicted scene next to the labels' means
    radar = pd.read_csv(fig / "radar_park_test.csv")
    assert set(radar.source) == {"Human", "SoundAQnet"}
    model = radar[radar.source == "SoundAQnet"].iloc[0]
    sub = pred[pred.scene == "park"]
    assert model.n == len(sub)
    np.testing.assert_allclose(model[list(PAQS)].to_numpy(float), sub[list(PAQS)].mean().to_numpy(), rtol=1e-5)
    assert pd.read_csv(fig / "radar_3_scenes_test.csv").query("source == 'SoundAQnet'").n.item() == len(pred)
    # bar charts and circumplex figures from the predictions get their own names
    for name in ("bars_aq2_event15_predictions", "bars_event2_aq8_predictions", "bars_event15_predictions",
                 "bars_aq8_predictions", "circumplex_scatter_predictions", "circumplex_density_margin_predictions"):
        assert (fig / f"{name}.png").is_file() and (fig / f"{name}.csv").is_file(), name
    bars = pd.read_csv(fig / "bars_event2_aq8_predictions.csv")
    assert bars.query("event == 'Vehicle' and aq == 'calm'").rho.item() == rho.loc["Vehicle", "calm"]
    pts = pd.read_csv(fig / "circumplex_scatter_predictions.csv").set_index("clip").loc[pred["clip"]]
    np.testing.assert_allclose(pts.ISOPleasant, pred.ISOPleasant, rtol=1e-9)
    # the model comparison: its numbers match a direct computation on the noise put in
    cmp = pd.read_csv(fig / "model_comparison_predictions.csv")
    assert cmp.model.tolist() == ["SoundAQnet"] and cmp.n_clips.item() == len(pred) and cmp.n_unmatched.item() == 0
    truth = ground_truth("test").set_index("clip").loc[pred["clip"]]
    assert cmp.scene_accuracy.item() == pytest.approx((truth.scene.to_numpy() == pred.scene.to_numpy()).mean(), rel=1e-5)
    direct = ((pred[list(PAQS)].to_numpy() - truth[list(PAQS)].to_numpy()) ** 2).mean()
    assert cmp.aq_mse_mean.item() == pytest.approx(direct, rel=1e-5)
    assert cmp.aq_mse_mean.item() == pytest.approx(0.16, rel=0.1)             # noise SD 0.4
    assert cmp.event_auc_samplewise.item() > 0.95
    ref = compare_models(ground_truth("test"), read_predictions(tmp_path / "predictions.csv", complete=True))
    assert cmp.event_auc_samplewise.item() == pytest.approx(ref.event_auc_samplewise.item(), rel=1e-5)
    assert "No predictions file given" not in capfd.readouterr().out


def test_without_predictions_the_model_panels_are_skipped_and_said(fresh):
    out, _ = fresh
    assert not list((out / "figures").glob("*_predictions*"))
    for n in ("ae_aq_spearman", "radar", "model_comparison"):
        text = json.dumps(_cell_outputs(out / "figures/notebooks" / f"{n}.ipynb"))
        assert "No predictions file given" in text, n


def _notebook(path: Path, code: str):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("# Parameters\nout_root = None\nquick = False")
    nb.cells = [params, nbformat.v4.new_code_cell(code)]    # no tag: found by its '# Parameters' comment
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, path)


ADVICE = "Without network, set SOUNDSCAPER_DATA to a directory laid out like the data mirror"


def test_failing_notebook_is_reported_and_others_run(tmp_path, capfd):
    nbs, out = tmp_path / "nbs", tmp_path / "out"
    nbs.mkdir()
    _notebook(nbs / "good.ipynb", "from pathlib import Path\n(Path(out_root) / 'figures' / 'good.txt').write_text(str(quick))")
    # an offline-like failure: a long message whose advice comes last
    _notebook(nbs / "broken.ipynb", f"raise RuntimeError('this figure is broken: could not download ' + 'x' * 400 + "
                                    f"'. {ADVICE}')")
    rc = reproduce_main(["--notebooks", str(nbs), "--out", str(out), "--quick"])
    text = capfd.readouterr()                    # fd level: the kernels' own stderr is caught too
    assert rc == 1
    assert "FAILED  broken" in text.err and "this figure is broken" in text.err
    assert ADVICE in text.err and ADVICE in text.out                  # the advice is not cut off
    assert "IPKernelApp" not in text.err and "KeyboardInterrupt" not in text.err
    assert "ok      good" in text.err
    assert "1 notebooks ok, 1 failed" in text.out and "failed: broken" in text.out
    assert (out / "figures" / "good.txt").read_text() == "True"          # parameters were passed
    assert (out / "figures" / "notebooks" / "good.ipynb").is_file()
    assert (out / "figures" / "notebooks" / "broken.failed.ipynb").is_file()
    assert not (out / "figures" / "notebooks" / "broken.ipynb").exists()
    assert not list((out / "figures" / "notebooks").glob(".*"))          # no temporary files left
    # fixed, the notebook runs and its failed copy goes; a failed copy of a notebook that is gone goes too
    (out / "figures" / "notebooks" / "removed.failed.ipynb").write_text("{}")
    _notebook(nbs / "broken.ipynb", "print('fixed')")
    assert reproduce_main(["--notebooks", str(nbs), "--out", str(out), "--quick"]) == 0
    assert sorted(p.name for p in (out / "figures" / "notebooks").iterdir()) == ["broken.ipynb", "good.ipynb"]


def test_in_place_run_writes_clean_notebooks_over_their_sources(tmp_path, monkeypatch):
    "On the checkout (out root = project root) the executed notebook replaces its source, nbdev-clean-stable."
    from nbdev.clean import nbdev_clean
    nbs = tmp_path / "nbs" / "figures"
    nbs.mkdir(parents=True)
    _notebook(nbs / "one.ipynb", "import matplotlib.pyplot as plt\nfrom soundscaper.reproduce import figure_style\n"
                                  "figure_style()\nprint(quick, out_root)\nplt.plot([0, 1]); plt.show()")
    (nbs / "one.failed.ipynb").write_text("{}")                          # stale copies in both places
    (tmp_path / "figures" / "notebooks").mkdir(parents=True)
    (tmp_path / "figures" / "notebooks" / "one.failed.ipynb").write_text("{}")
    monkeypatch.setattr(rp, "project_root", lambda: tmp_path)
    res = reproduce(folder=nbs, progress=False)
    assert res.ok.all(), res.to_string()
    assert res.output.tolist() == [str(nbs / "one.ipynb")]
    assert sorted(p.name for p in nbs.iterdir()) == ["one.ipynb"]
    assert not list((tmp_path / "figures" / "notebooks").iterdir())
    before = (nbs / "one.ipynb").read_text()
    nb = json.loads(before)
    assert "".join(nb["cells"][0]["source"]).startswith("# Parameters")     # no injected cell: defaults unchanged
    assert len(nb["cells"]) == 2 and nb["cells"][1]["outputs"][0]["text"] == ["False None\n"]
    assert any("image/png" in o.get("data", {}) for o in nb["cells"][1]["outputs"])    # figures shown inline
    monkeypatch.chdir(ROOT)
    nbdev_clean(fname=str(nbs / "one.ipynb"))
    assert (nbs / "one.ipynb").read_text() == before                     # nothing left for nbdev-clean to do


def test_cli(capsys):
    assert (NBS / "model_comparison.ipynb").is_file()
    assert cli_main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(n in listed for n in NOTEBOOK_ORDER)
    assert cli_main(["reproduce", "--only", "radr"]) == 2
    assert "did you mean 'radar'" in capsys.readouterr().err
    assert cli_main(["reproduce", "--predictions", "/nonexistent/predictions.csv"]) == 2
    with pytest.raises(SystemExit):
        reproduce_main(["--help"])


def test_committed_notebooks_hold_no_picture_of_the_paper():
    "The paper's figures are read through the data layer, never redistributed: committed notebooks show a note instead."
    import json
    seen = 0
    for nb_path in sorted((Path(rp.__file__).resolve().parents[1] / "nbs" / "figures").glob("*.ipynb")):
        for c in json.loads(nb_path.read_text(encoding="utf-8"))["cells"]:
            if "compare_with_paper(" not in "".join(c["source"]) or not c.get("outputs"):
                continue
            seen += 1
            texts = ["".join(o.get("text", "")) for o in c["outputs"]]
            assert rp.PAPER_NOTE in texts, (nb_path.name, c["id"])
            assert not any(o.get("metadata", {}).get("soundscaper") == rp.PAPER_OUTPUT for o in c["outputs"])
    assert seen >= 8


def test_clean_executed_drops_the_paper_side_by_side():
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("compare_with_paper(png, 'x')")])
    ours = nbformat.v4.new_output("display_data", data={"image/png": "AAAA"})
    paper = nbformat.v4.new_output("display_data", data={"image/png": "BBBB"},
                                   metadata={"soundscaper": rp.PAPER_OUTPUT})
    nb.cells[0].outputs = [ours, paper]
    out = rp.clean_executed(nb).cells[0].outputs
    assert [o.get("data", {}).get("image/png") for o in out] == ["AAAA", None] and out[1]["text"] == rp.PAPER_NOTE
