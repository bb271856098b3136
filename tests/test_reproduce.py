"""`soundscaper reproduce`: a fresh --quick run reproduces the committed numbers; predictions and failures are handled."""
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
from soundscaper.reproduce import NOTEBOOK_ORDER, find_notebooks, reproduce, reproduce_main

ROOT = Path(__file__).resolve().parents[1]
FIXED = ["figures/ae_aq_spearman_test_groundtruth.csv", "figures/ae_aq_spearman_test_groundtruth_p.csv",
         "human_eval/expert_evaluation_summary.csv"]


def _outputs(root: Path) -> set[str]:
    "Relative paths of the numeric outputs (CSV) and figures under figures/ and human_eval/ (not the notebooks)."
    return {str(p.relative_to(root)) for d in ("figures", "human_eval") for p in (root / d).glob("*")
            if p.is_file() and p.suffix in (".csv", ".png", ".md")}


def _assert_same_table(a: Path, b: Path):
    x, y = pd.read_csv(a, keep_default_na=False), pd.read_csv(b, keep_default_na=False)
    assert list(x.columns) == list(y.columns), a.name
    assert x.shape == y.shape, a.name
    for c in x.columns:
        if pd.api.types.is_numeric_dtype(x[c]) and pd.api.types.is_numeric_dtype(y[c]):
            np.testing.assert_allclose(x[c].to_numpy(float), y[c].to_numpy(float), rtol=1e-9, atol=1e-12,
                                       equal_nan=True, err_msg=f"{a.name}: column {c}")
        else:
            assert x[c].astype(str).tolist() == y[c].astype(str).tolist(), f"{a.name}: column {c}"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    "One cold, quick run of every figure notebook into a temporary folder."
    out = tmp_path_factory.mktemp("reproduce")
    res = reproduce(out_root=out, quick=True, progress=False)
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
    for rel in sorted(p for p in new if p.endswith(".csv")):
        _assert_same_table(out / rel, ROOT / rel)
    md_new = (out / "human_eval/expert_evaluation_summary.md").read_text()
    assert md_new == (ROOT / "human_eval/expert_evaluation_summary.md").read_text()


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
    s = pd.read_csv(ROOT / FIXED[2])
    assert list(s.columns) == ["dataset", "source", "criterion", "mean", "sd", "n"]
    assert set(s.source) == {"expert", "SoundSCaper"} and set(s.dataset) == {"D1", "D2"} and len(s) == 24


def _synthetic_predictions(path: Path, n: int = 90, seed: int = 0) -> pd.DataFrame:
    "A small predictions file laid out like `soundscaper predict`'s CSV, with some real AE-AQ structure."
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"clip": [f"clip_{i:03d}" for i in range(n)], "path": [f"audio/clip_{i:03d}.wav" for i in range(n)],
                       "scene": [SCENES[i % 3] for i in range(n)]})
    for s in SCENES:
        df[f"p_{s}"] = (df.scene == s) * 0.8 + 0.1
    for e in EVENTS:
        df[e] = rng.random(n)
    df["ISOP"], df["ISOE"] = rng.uniform(-0.8, 0.8, n), rng.uniform(-0.8, 0.8, n)
    base = rng.uniform(1.5, 4.5, (n, len(PAQS)))
    for j, q in enumerate(PAQS):
        df[q] = base[:, j]
    df["calm"] = 5 - 3 * df["Vehicle"] + rng.normal(0, 0.3, n)     # a strong negative correlation
    df["model"] = "SoundAQnet"
    df.to_csv(path, index=False)
    return df


def test_predictions_code_path(tmp_path):
    pred = _synthetic_predictions(tmp_path / "predictions.csv")
    out = tmp_path / "out"
    res = reproduce(["ae_aq_spearman", "radar", "bars"], out_root=out, predictions=tmp_path / "predictions.csv",
                    quick=True, progress=False)
    assert res.ok.all(), res[~res.ok].to_string()
    fig = out / "figures"
    # panel (a): the model's matrix, checked against scipy column by column
    rho = pd.read_csv(fig / "ae_aq_spearman_predictions.csv").set_index("event")
    p = pd.read_csv(fig / "ae_aq_spearman_predictions_p.csv").set_index("event")
    assert list(rho.columns) == list(PAQS) and list(rho.index) == list(EVENTS_PAPER_ORDER)
    for e in EVENTS:
        for q in PAQS:
            ref = sps.spearmanr(pred[e], pred[q])
            assert rho.loc[e, q] == pytest.approx(ref.statistic, abs=1e-12)
            assert p.loc[e, q] == pytest.approx(ref.pvalue, rel=1e-9)
    assert rho.loc["Vehicle", "calm"] < -0.9
    long = pd.read_csv(fig / "ae_aq_spearman_test.csv")
    assert set(long.source) == {"predictions", "ground truth"} and len(long) == 2 * 120
    # the ground-truth matrix is unchanged by the predictions
    gt = pd.read_csv(fig / "ae_aq_spearman_test_groundtruth.csv")
    _assert_same_table(fig / "ae_aq_spearman_test_groundtruth.csv", ROOT / "figures/ae_aq_spearman_test_groundtruth.csv")
    assert len(gt) == 15
    # radar overlay: the model's means per predicted scene next to the labels' means
    radar = pd.read_csv(fig / "radar_park_test.csv")
    assert set(radar.source) == {"Human", "SoundAQnet"}
    model = radar[radar.source == "SoundAQnet"].iloc[0]
    sub = pred[pred.scene == "park"]
    assert model.n == len(sub)
    np.testing.assert_allclose(model[list(PAQS)].to_numpy(float), sub[list(PAQS)].mean().to_numpy(), rtol=1e-12)
    allrow = pd.read_csv(fig / "radar_3_scenes_test.csv").query("source == 'SoundAQnet'").iloc[0]
    assert allrow.n == len(pred)
    # bar charts from the predictions get their own names
    for name in ("bars_aq2_event15_predictions", "bars_event2_aq8_predictions", "bars_event15_predictions",
                 "bars_aq8_predictions"):
        assert (fig / f"{name}.png").is_file() and (fig / f"{name}.csv").is_file(), name
    bars = pd.read_csv(fig / "bars_event2_aq8_predictions.csv")
    v = bars.query("event == 'Vehicle' and aq == 'calm'").rho.item()
    assert v == pytest.approx(rho.loc["Vehicle", "calm"])


def _notebook(path: Path, code: str):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("# Parameters\nout_root = None\nquick = False")
    nb.cells = [params, nbformat.v4.new_code_cell(code)]    # no tag: found by its '# Parameters' comment
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "python3", "language": "python"}
    nbformat.write(nb, path)


def test_failing_notebook_is_reported_and_others_run(tmp_path, capsys):
    nbs, out = tmp_path / "nbs", tmp_path / "out"
    nbs.mkdir()
    _notebook(nbs / "good.ipynb", "from pathlib import Path\n(Path(out_root) / 'figures' / 'good.txt').write_text(str(quick))")
    _notebook(nbs / "broken.ipynb", "raise RuntimeError('this figure is broken')")
    rc = reproduce_main(["--notebooks", str(nbs), "--out", str(out), "--quick"])
    text = capsys.readouterr()
    assert rc == 1
    assert "FAILED  broken" in text.err and "this figure is broken" in text.err
    assert "ok      good" in text.err
    assert "1 notebooks ok, 1 failed" in text.out and "failed: broken" in text.out
    assert (out / "figures" / "good.txt").read_text() == "True"          # parameters were passed
    assert (out / "figures" / "notebooks" / "good.ipynb").is_file()
    assert (out / "figures" / "notebooks" / "broken.failed.ipynb").is_file()
    assert not (out / "figures" / "notebooks" / "broken.ipynb").exists()
    assert not list((out / "figures" / "notebooks").glob(".*"))          # no temporary files left


def test_cli(capsys):
    assert cli_main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(n in listed for n in NOTEBOOK_ORDER)
    assert cli_main(["reproduce", "--only", "radr"]) == 2
    assert "did you mean 'radar'" in capsys.readouterr().err
    assert cli_main(["reproduce", "--predictions", "/nonexistent/predictions.csv"]) == 2
    with pytest.raises(SystemExit):
        reproduce_main(["--help"])
