"""The paper's metrics (soundscaper.metrics) against hand-computed cases, brute force and the real test labels."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest

from soundscaper.data import load_araus
from soundscaper.labels import EVENTS, PAQS, SCENES
from soundscaper.metrics import (event_auc_per_clip, event_auc_samplewise, evaluate_predictions, format_report,
                                 label_arrays, mse, paq_mse, roc_auc, scene_accuracy, scene_balanced_accuracy,
                                 scene_recall)


def _auc_by_pairs(y, s):
    "ROC-AUC by counting (positive, negative) pairs: 1 if ordered right, 1/2 if tied."
    pos = [b for a, b in zip(y, s) if a]
    neg = [b for a, b in zip(y, s) if not a]
    return sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))


def test_balanced_accuracy_hand_computed():
    # 10 clips: 5 public_square (4 right), 3 park (1 right), 2 street_traffic (2 right)
    t = [0] * 5 + [1] * 3 + [2] * 2
    p = [0, 0, 0, 0, 1] + [1, 2, 0] + [2, 2]
    assert scene_recall(t, p) == pytest.approx([0.8, 1 / 3, 1.0])
    assert scene_balanced_accuracy(t, p) == pytest.approx((0.8 + 1 / 3 + 1) / 3)
    assert scene_accuracy(t, p) == pytest.approx(7 / 10)          # the plain accuracy differs
    # logits are reduced by argmax, like upstream
    logits = np.full((10, 3), -1.0)
    logits[np.arange(10), p] = 3.0
    assert scene_balanced_accuracy(t, logits) == pytest.approx((0.8 + 1 / 3 + 1) / 3)


def test_balanced_accuracy_absent_class():
    t, p = [1, 1, 2], [1, 0, 2]
    assert scene_balanced_accuracy(t, p) == pytest.approx((0.5 + 1) / 2)
    # upstream divides by (count + 1e-8): an absent class has recall 0 and the mean is still over 3 classes
    assert scene_balanced_accuracy(t, p, absent="zero") == pytest.approx((0 + 0.5 + 1) / 3)
    with pytest.raises(ValueError):
        scene_balanced_accuracy(t, p, absent="drop")


def test_auc_hand_computed_and_skip_rule():
    y = np.array([[1, 0, 0, 1, 0],      # positives 0.6, 0.2; negatives 0.4, 0.4, 0.1 -> (1+1+1 + 0+0+1)/6
                  [0, 0, 0, 0, 0],      # no positive event: skipped
                  [0, 0, 1, 0, 0],      # positive 0.3 ties one negative, beats 2, loses to 1 -> (0.5+1+1+0)/4
                  [1, 1, 1, 1, 1]])     # no negative: undefined, skipped
    s = np.array([[0.6, 0.4, 0.4, 0.2, 0.1],
                  [0.9, 0.8, 0.7, 0.6, 0.5],
                  [0.3, 0.1, 0.3, 0.2, 0.5],
                  [0.1, 0.2, 0.3, 0.4, 0.5]])
    per_clip = event_auc_per_clip(y, s)
    assert per_clip[0] == pytest.approx(4 / 6)
    assert per_clip[2] == pytest.approx(2.5 / 4)
    assert np.isnan(per_clip[1]) and np.isnan(per_clip[3])
    assert event_auc_samplewise(y, s) == pytest.approx((4 / 6 + 2.5 / 4) / 2)
    # the skipped clips do not count as 0 or 1: dropping them changes nothing
    assert event_auc_samplewise(y[[0, 2]], s[[0, 2]]) == event_auc_samplewise(y, s)
    assert math.isnan(event_auc_samplewise(y[[1]], s[[1]]))


def test_auc_matches_pair_counting_with_ties():
    rng = np.random.default_rng(1)
    y = (rng.random((200, 15)) < 0.4).astype(int)
    s = np.round(rng.random((200, 15)), 1)              # many ties
    keep = [i for i in range(200) if 0 < y[i].sum() < 15]
    ref = np.mean([_auc_by_pairs(y[i], s[i]) for i in keep])
    assert event_auc_samplewise(y, s) == pytest.approx(ref, abs=1e-12)
    assert roc_auc(y[keep[0]], s[keep[0]]) == pytest.approx(_auc_by_pairs(y[keep[0]], s[keep[0]]))


def test_auc_is_samplewise_not_classwise():
    # every clip ranks its positives first, but scores are not comparable across clips:
    # sample-wise AUC is 1 while a class-wise AUC would not be
    y = np.array([[1, 0], [0, 1]])
    s = np.array([[0.2, 0.1], [0.9, 0.95]])
    assert event_auc_samplewise(y, s) == 1.0
    assert roc_auc(y[:, 0], s[:, 0]) == 0.0


def test_mse_per_aq_and_mean():
    t = np.array([[1, 2, 3, 4, 5, 1, 2, 3], [5, 4, 3, 2, 1, 5, 4, 3]], float)
    p = t.copy()
    p[:, 0] += [1, -1]       # pleasant: (1 + 1)/2 = 1
    p[0, 6] += 2             # annoying: (4 + 0)/2 = 2
    m = paq_mse(t, p)
    assert list(m) == list(PAQS)
    assert m["pleasant"] == 1.0 and m["annoying"] == 2.0 and m["calm"] == 0.0
    assert np.mean(list(m.values())) == pytest.approx(3 / 8)
    assert mse([0, 0], [[1], [3]]) == 5.0
    with pytest.raises(ValueError):
        paq_mse(t[:, :7], p[:, :7])


def test_real_test_split_skips_9_clips():
    labels = load_araus("test")
    t = label_arrays(labels)
    assert len(t["scene"]) == 3576
    rng = np.random.default_rng(0)
    preds = {"scene_logits": np.eye(3)[t["scene"]], "event_probs": np.clip(t["events"] + rng.normal(0, .1, t["events"].shape), 0, 1),
             "paq": t["paq"] + 0.5, "isop": t["isop"], "isoe": t["isoe"] - 0.1}
    r = evaluate_predictions(labels, preds)
    assert (r["event_auc_clips"], r["event_auc_skipped"]) == (3567, 9)   # spec: 9 test clips have no event
    assert r["scene_balanced_accuracy"] == 1.0 and r["scene_accuracy"] == 1.0
    assert r["paq_mse_mean"] == pytest.approx(0.25) and r["isop_mse"] == 0.0 and r["isoe_mse"] == pytest.approx(0.01)
    assert r["event_auc_samplewise"] > 0.99
    text = format_report(r, 2_701_812)
    assert "Parameters num: 2.701812 M" in text and "Acc: 100.00 %" in text and "MSE MEAN: 0.250" in text
    assert "9 without a positive event skipped" in text


def test_evaluate_predictions_scene_probs_and_errors():
    labels = load_araus("validation").iloc[:30]
    t = label_arrays(labels)
    probs = np.full((30, 3), 0.2)
    probs[np.arange(30), (t["scene"] + 1) % 3] = 0.6        # always wrong
    r = evaluate_predictions(labels, {"scene_probs": probs, "event_probs": t["events"], "paq": t["paq"]})
    assert r["scene_balanced_accuracy"] == 0.0 and "isop_mse" not in r
    with pytest.raises(ValueError, match="scene_logits"):
        evaluate_predictions(labels, {"event_probs": t["events"], "paq": t["paq"]})
    with pytest.raises(ValueError, match="lacks columns"):
        evaluate_predictions(labels.drop(columns="Bird"), {"scene_probs": probs, "event_probs": t["events"], "paq": t["paq"]})
