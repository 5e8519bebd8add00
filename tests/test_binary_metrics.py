"""Seed 004's detection figures (``cxr_monai.metrics.binary``): counts, ratios and Dice checked by hand, and CIs that
resample images within each class."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxr_monai.metrics import binary_detection_metrics, mask_dice


def test_figures_match_the_confusion_matrix_and_sklearn():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 60 + [1] * 40)
    probabilities = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    metrics = binary_detection_metrics(labels, probabilities, threshold=0.5, n_resamples=200)
    predicted = probabilities >= 0.5
    tp = int((predicted & (labels == 1)).sum())
    fp = int((predicted & (labels == 0)).sum())
    fn = int((~predicted & (labels == 1)).sum())
    tn = int((~predicted & (labels == 0)).sum())
    assert metrics.confusion == ((tn, fp), (fn, tp))
    assert metrics.accuracy.value == pytest.approx((tp + tn) / 100)
    assert metrics.precision.value == pytest.approx(tp / (tp + fp))
    assert metrics.recall.value == pytest.approx(tp / (tp + fn))
    assert metrics.specificity.value == pytest.approx(tn / (tn + fp))
    assert metrics.auc.value == pytest.approx(roc_auc_score(labels, probabilities))
    assert metrics.auc.low < metrics.auc.value < metrics.auc.high and metrics.auc.skipped == 0
    assert metrics.dice is None and set(metrics.to_dict()) >= {"confusion", "auc", "recall"}


def test_dice_over_positives_and_siim_convention():
    truth = [np.zeros(4), np.array([1, 1, 0, 0]), np.array([0, 0, 1, 1])]
    predicted = [np.zeros(4), np.array([1, 0, 0, 0]), np.array([1, 0, 0, 0])]
    dice = [mask_dice(p, t) for p, t in zip(predicted, truth)]
    siim = [mask_dice(p, t, empty=1.0) for p, t in zip(predicted, truth)]
    assert np.isnan(dice[0]) and siim[0] == 1.0 and dice[1] == pytest.approx(2 / 3) and dice[2] == 0.0
    metrics = binary_detection_metrics([0, 1, 1], [0.2, 0.9, 0.4], dice=dice, dice_siim=siim, n_resamples=50)
    assert metrics.dice.value == pytest.approx(1 / 3) and metrics.dice_siim.value == pytest.approx(5 / 9)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="labels for"):
        binary_detection_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="0 or 1"):
        binary_detection_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="dice values"):
        binary_detection_metrics([0, 1], [0.5, 0.5], dice=[1.0])
