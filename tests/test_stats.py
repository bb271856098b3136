"""soundscaper.stats against independent recomputations, the paper's printed numbers and the reference README."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from soundscaper.data import EXPERT_CRITERIA, load_araus, load_expert_evaluation
from soundscaper.labels import EVENTS, EVENTS_PAPER_ORDER, PAQS
from soundscaper.stats import (ae_aq_spearman, annotate, aq_means, expert_anomalies, expert_differences,
                               expert_paired_tests, expert_summary, significance_stars, spearman_matrix)

# Panel (b) of the paper's figure `vertical_layout` (ground-truth labels, test set), transcribed from the published
# PNG: rows top to bottom (EVENTS_PAPER_ORDER), columns Plea. Even. Chao. Vibr. Unev. Calm Anno. Mono. (PAQS order).
PAPER_PANEL_B = """
Bird              0.12***  0.00    -0.06*** 0.08***  -0.01    0.11***  -0.09*** -0.06***
Animal            0.05**   0.03*   -0.03    0.06***  -0.03*   0.03*    -0.03    -0.05**
Wind             -0.09***  0.06*** 0.07***  0.03     -0.06*** -0.11*** 0.06***  -0.04**
Water            -0.05**   0.02    0.03     -0.00    -0.02    -0.05**  -0.00    0.00
Natural_sounds   -0.05**   0.04*   0.03     0.01     -0.04*   -0.06*** -0.01    -0.01
Vehicle          -0.18***  0.10*** 0.17***  0.02     -0.07*** -0.21*** 0.16***  -0.04*
Traffic          -0.04*    0.08*** 0.06***  0.08***  -0.09*** -0.07*** 0.00     -0.07***
Sounds_of_things -0.17***  0.09*** 0.15***  0.02     -0.07*** -0.19*** 0.15***  -0.04*
Background       -0.03    -0.04*   -0.00    -0.04*   0.04*    -0.00    -0.03    0.07***
Outside           0.10***  0.04*   -0.05**  0.10***  -0.04*   0.08***  -0.08*** -0.07***
Speech            0.06***  0.20*** 0.02     0.20***  -0.19*** -0.03    -0.07*** -0.17***
Human_sounds      0.06***  0.20*** 0.02     0.20***  -0.19*** -0.03    -0.07*** -0.17***
Music            -0.04*    0.20*** 0.12***  0.16***  -0.18*** -0.12*** 0.09***  -0.16***
Noise            -0.08***  -0.07*** 0.02    -0.10*** 0.06***  -0.04*   0.01     0.10***
Silence           0.14***  -0.14*** -0.15*** -0.08*** 0.13***  0.17***  -0.15*** 0.04*
"""


def paper_panel_b() -> tuple[pd.DataFrame, pd.DataFrame]:
    "The transcribed panel (b) as (value, stars) tables indexed by event (EVENTS names), columns PAQS."
    vals, stars = [], []
    for line in PAPER_PANEL_B.strip().splitlines():
        cells = line.split()[1:]
        vals.append([float(c.rstrip("*")) for c in cells])
        stars.append(["*" * c.count("*") for c in cells])
    idx = pd.Index(EVENTS_PAPER_ORDER, name="event")
    return pd.DataFrame(vals, idx, list(PAQS)), pd.DataFrame(stars, idx, list(PAQS))


@pytest.fixture(scope="module")
def test_split():
    return load_araus("test")


@pytest.fixture(scope="module")
def gt(test_split):
    return ae_aq_spearman(test_split)


def test_transcription_row_names():
    # the transcription's row names are the paper's display names of EVENTS_PAPER_ORDER
    from soundscaper.labels import EVENT_SHORT
    names = [l.split()[0].replace("_", " ") for l in PAPER_PANEL_B.strip().splitlines()]
    assert names == [EVENT_SHORT[e] for e in EVENTS_PAPER_ORDER]


def test_spearman_matches_scipy_column_by_column(test_split, gt):
    rho, p = gt
    assert list(rho.index) == list(EVENTS_PAPER_ORDER) and list(rho.columns) == list(PAQS)
    for e in EVENTS:
        for q in PAQS:
            ref = sps.spearmanr(test_split[e], test_split[q])
            assert rho.loc[e, q] == pytest.approx(ref.statistic, abs=1e-12), (e, q)
            assert p.loc[e, q] == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300), (e, q)


def test_spearman_matches_pandas_on_other_splits():
    # independent path (pandas ranks + Pearson) on the validation split
    df = load_araus("validation")
    rho, _ = ae_aq_spearman(df)
    ref = df[list(EVENTS) + list(PAQS)].corr(method="spearman").loc[list(EVENTS_PAPER_ORDER), list(PAQS)]
    np.testing.assert_allclose(rho.to_numpy(), ref.to_numpy(), atol=1e-12)


def test_ground_truth_matches_paper_panel_b(gt):
    rho, p = gt
    want, want_stars = paper_panel_b()
    err = (rho - want).abs()
    # printed to 2 decimals: rounding error at most 0.005 (plus float slack)
    bad = [(e, q, round(rho.loc[e, q], 4), want.loc[e, q]) for e in want.index for q in PAQS
           if err.loc[e, q] > 0.005 + 1e-9]
    assert not bad, f"cells that disagree with the paper's panel (b): {bad}"
    got_stars = significance_stars(p)
    bad_stars = [(e, q, got_stars.loc[e, q], want_stars.loc[e, q]) for e in want.index for q in PAQS
                 if got_stars.loc[e, q] != want_stars.loc[e, q]]
    assert not bad_stars, f"significance stars that disagree with the paper: {bad_stars}"
    # and the printed strings themselves (sign of zero included)
    txt = annotate(rho, p)
    printed = [l.split()[1:] for l in PAPER_PANEL_B.strip().splitlines()]
    assert txt.to_numpy().tolist() == printed


def test_spearman_matrix_edge_cases():
    x = pd.DataFrame({"a": [0, 1, 0, 1, 1], "z": [1] * 5})
    y = pd.DataFrame({"u": [1, 5, 2, 4, 3], "v": [5, 4, 3, 2, 1]})
    rho, p = spearman_matrix(x, y)
    assert rho.loc["z"].isna().all()
    assert rho.loc["a", "u"] == pytest.approx(sps.spearmanr(x.a, y.u).statistic)
    with pytest.raises(ValueError, match="missing values"):
        spearman_matrix(x.assign(a=[0, np.nan, 1, 1, 0]), y)
    with pytest.raises(ValueError, match="at least 3"):
        spearman_matrix(x.iloc[:2], y.iloc[:2])
    r1, _ = spearman_matrix(pd.DataFrame({"a": [1, 2, 3, 4]}), pd.DataFrame({"b": [2, 4, 6, 8]}))
    assert r1.iloc[0, 0] == 1.0


def test_aq_means(test_split):
    m = aq_means(test_split)
    for s in m.index[:-1]:
        sub = test_split[test_split.scene == s]
        assert m.loc[s, "n"] == len(sub)
        np.testing.assert_allclose(m.loc[s, list(PAQS)].to_numpy(float), sub[list(PAQS)].mean().to_numpy())
    assert m.loc["all", "n"] == 3576


# Reference README (shared/data/README.md, human_eval section): mean expert, mean SoundSCaper, paired t, clips >=.
README = {
    ("D1", "precision"): (3.8865, 3.8208, -0.77, 16), ("D1", "recall"): (3.9792, 3.9042, -0.93, 12),
    ("D1", "fluency"): (-0.0906, -0.1133, -1.08, 13), ("D1", "conciseness"): (-0.1296, -0.2844, -4.63, 9),
    ("D1", "irrelevance"): (-0.2069, -0.1725, 1.15, 17), ("D1", "overall"): (3.5057, 3.2923, -1.92, 12),
    ("D2", "precision"): (3.7875, 3.6437, -1.35, 15), ("D2", "recall"): (3.8802, 3.6354, -2.31, 10),
    ("D2", "fluency"): (-0.1454, -0.1631, -0.62, 13), ("D2", "conciseness"): (-0.2560, -0.2692, -0.30, 14),
    ("D2", "irrelevance"): (-0.2642, -0.2919, -0.61, 10), ("D2", "overall"): (3.1682, 2.9116, -1.60, 9),
}


@pytest.fixture(scope="module")
def expert():
    return load_expert_evaluation()


def test_expert_summary_and_tests_match_reference(expert):
    s = expert_summary(expert).set_index(["dataset", "source", "criterion"])
    t = expert_paired_tests(expert, n_boot=200).set_index(["dataset", "criterion", "test"])
    for (ds, crit), (m_ex, m_ss, tval, ge) in README.items():
        assert s.loc[(ds, "expert", crit), "mean"] == pytest.approx(m_ex, abs=6e-5)
        assert s.loc[(ds, "SoundSCaper", crit), "mean"] == pytest.approx(m_ss, abs=6e-5)
        row = t.loc[(ds, crit, "paired t")]
        assert row.statistic == pytest.approx(tval, abs=0.006)
        assert row.n_SoundSCaper_ge_expert == ge
    # sd of the overall score (README: 0.331 / 0.510 for D1; 0.585 / 0.518 for D2)
    for (ds, src), sd in {("D1", "expert"): 0.331, ("D1", "SoundSCaper"): 0.510, ("D2", "expert"): 0.585,
                          ("D2", "SoundSCaper"): 0.518}.items():
        assert s.loc[(ds, src, "overall"), "sd"] == pytest.approx(sd, abs=6e-4)


def test_expert_tests_against_scipy(expert):
    t = expert_paired_tests(expert, n_boot=200)
    d = expert_differences(expert)
    for (ds, crit), g in d.groupby(["dataset", "criterion"]):
        tt = sps.ttest_rel(g.SoundSCaper, g.expert)
        row = t[(t.dataset == ds) & (t.criterion == crit) & (t.test == "paired t")].iloc[0]
        assert row.statistic == pytest.approx(tt.statistic, rel=1e-9)
        assert row.p == pytest.approx(tt.pvalue, rel=1e-6)
        ci = tt.confidence_interval()
        assert (row.diff_ci_low, row.diff_ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
        wx = sps.wilcoxon(g.SoundSCaper, g.expert)
        row = t[(t.dataset == ds) & (t.criterion == crit) & (t.test != "paired t")].iloc[0]
        assert row.statistic == pytest.approx(wx.statistic)
        assert row.effect_ci_low <= row.effect <= row.effect_ci_high
    assert set(t.criterion) == set(EXPERT_CRITERIA)


def test_expert_tests_are_reproducible(expert):
    a = expert_paired_tests(expert, n_boot=300, seed=1)
    b = expert_paired_tests(expert, n_boot=300, seed=1)
    pd.testing.assert_frame_equal(a, b)


def test_expert_anomalies(expert):
    a = expert_anomalies(expert)
    got = sorted(zip(a["dataset"], a["clip"], a["source"], a["criterion"]))
    assert got == [("D1", "4.flac", "SoundSCaper", "fluency"), ("D2", "37.wav", "SoundSCaper", "fluency"),
                   ("D2", "37.wav", "SoundSCaper", "overall")]
    pos = a[a["clip"] == "4.flac"].iloc[0]
    assert pos.value == pytest.approx(0.08125) and "outside its scale" in pos.problem


def test_spearman_matrix_is_scipys_one_call(test_split):
    # the whole-table call of scipy.stats.spearmanr, block for block (and no pairwise loop anywhere)
    x, y = test_split[list(EVENTS_PAPER_ORDER)], test_split[list(PAQS)]
    full = sps.spearmanr(np.hstack([x.to_numpy(float), y.to_numpy(float)]))
    rho, p = spearman_matrix(x, y)
    np.testing.assert_array_equal(rho.to_numpy(), full.statistic[:15, 15:])
    np.testing.assert_array_equal(p.to_numpy(), full.pvalue[:15, 15:])


def test_expert_equivalence_tost(expert):
    from soundscaper.stats import EQUIVALENCE_MARGINS, expert_equivalence
    eq = expert_equivalence(expert).set_index(["dataset", "criterion"])
    d = expert_differences(expert)
    for (ds, crit), g in d.groupby(["dataset", "criterion"]):
        m = EQUIVALENCE_MARGINS[crit]
        row = eq.loc[(ds, crit)]
        # TOST = the larger p of two one-sided one-sample t-tests of the differences against -m and +m (SciPy)
        lo = sps.ttest_1samp(g["diff"], -m, alternative="greater").pvalue
        hi = sps.ttest_1samp(g["diff"], m, alternative="less").pvalue
        assert row.p_tost == pytest.approx(max(lo, hi), rel=1e-9)
        ci = sps.ttest_rel(g.SoundSCaper, g.expert).confidence_interval(0.90)
        assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
        assert row.equivalent == (ci.low > -m and ci.high < m)
    assert EQUIVALENCE_MARGINS["overall"] == 0.5 and EQUIVALENCE_MARGINS["fluency"] == 0.25
    # the result the expert-evaluation notebook reports: D1 equivalent within ±0.5, D2 not
    assert eq.loc[("D1", "overall"), "equivalent"] and eq.loc[("D1", "overall"), "p_tost"] < 0.01
    assert not eq.loc[("D2", "overall"), "equivalent"]
    assert eq.loc[("D2", "overall"), "smallest_margin"] == pytest.approx(0.529, abs=1e-3)


def test_compare_models_on_noisy_labels(test_split):
    from soundscaper.stats import compare_models
    rng = np.random.default_rng(7)
    lab = test_split.rename(columns={"ISOP": "ISOPleasant", "ISOE": "ISOEventful"})   # TODO(merge): load_araus names
    pred = lab[["clip", "scene", *EVENTS, *PAQS, "ISOPleasant", "ISOEventful"]].copy()
    noise = rng.normal(0, 0.3, (len(pred), len(PAQS)))
    pred[list(PAQS)] += noise
    pred[list(EVENTS)] = 0.6 * pred[list(EVENTS)] + 0.4 * rng.random((len(pred), len(EVENTS)))
    out = compare_models(lab, pred.assign(model="noisy")).iloc[0]
    assert out.n_clips == 3576 and out.scene_balanced_accuracy == 1.0
    assert out.aq_mse_mean == pytest.approx((noise ** 2).mean(), rel=1e-12)
    for j, q in enumerate(PAQS):
        assert out[f"{q}_mse"] == pytest.approx((noise[:, j] ** 2).mean(), rel=1e-12)
    # sample-wise AUC, recomputed clip by clip with scipy's Mann-Whitney U
    aucs = []
    for y, s in zip(lab[list(EVENTS)].to_numpy(), pred[list(EVENTS)].to_numpy()):
        if 0 < y.sum() < len(y):
            aucs.append(sps.mannwhitneyu(s[y > 0], s[y == 0]).statistic / (y.sum() * (len(y) - y.sum())))
    assert out.event_auc_samplewise == pytest.approx(np.mean(aucs), rel=1e-12)
    with pytest.raises(ValueError, match="lack columns"):
        compare_models(lab, pred.drop(columns="calm"))
