"""Multi-label AUROC with bootstrap CIs (seed 003 Table 1 layout) and ChestX-ray8 localisation accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxr_monai.metrics import (
    GroundTruthBox,
    auroc_table,
    box_iobb,
    box_iou,
    heatmap_boxes,
    localisation_accuracy,
    multilabel_auroc,
    plot_roc_curves,
)


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, 3)).astype(float)
    scores = labels * 0.6 + rng.random((n, 3))
    labels[:5, 1] = -1  # uncertain: left out of class 1
    labels[5:8, 2] = np.nan  # not mentioned
    return labels, scores


def test_per_class_auroc_leaves_out_uncertain_and_unmentioned_labels():
    labels, scores = _data()
    result = multilabel_auroc(labels, scores, ["A", "B", "C"], n_resamples=300)
    for c in range(3):
        known = np.isfinite(labels[:, c]) & (labels[:, c] >= 0)
        assert result.per_class[c].value == pytest.approx(roc_auc_score(labels[known, c], scores[known, c]))
        assert result.per_class[c].low <= result.per_class[c].value <= result.per_class[c].high
    assert result.macro.value == pytest.approx(np.mean([i.value for i in result.per_class]))
    assert result.positives[1] + result.negatives[1] == 55
    assert set(result.metrics()) == {"auroc_a", "auroc_b", "auroc_c", "auroc_macro"}


def test_a_class_with_one_label_value_is_not_scored_and_named():
    labels, scores = _data()
    labels[:, 2] = 0
    result = multilabel_auroc(labels, scores, ["A", "B", "C"], n_resamples=100)
    assert result.per_class[2] is None
    assert result.macro.value == pytest.approx(np.mean([result.per_class[0].value, result.per_class[1].value]))
    table = auroc_table({"DN-121": result, "DualBranch": result}, {"A": "AT"})
    assert table.splitlines()[0] == "| architecture / inputs | AT | B | C | AVG |"
    assert "| DN-121 |" in table and "— |" in table and "not scored (one label value only): C" in table


def test_patient_clusters_widen_nothing_they_should_not_and_shapes_are_checked():
    labels, scores = _data(40)
    patients = np.repeat(np.arange(20), 2)
    clustered = multilabel_auroc(labels, scores, ["A", "B", "C"], clusters=patients, n_resamples=300)
    assert clustered.macro.value == pytest.approx(multilabel_auroc(labels, scores, ["A", "B", "C"],
                                                                   n_resamples=10).macro.value)
    with pytest.raises(ValueError, match=r"must both be \(N, 2\)"):
        multilabel_auroc(labels, scores, ["A", "B"])


def test_roc_png(tmp_path):
    labels, scores = _data()
    path = plot_roc_curves(labels, scores, ["A", "B", "C"], tmp_path / "roc.png")
    assert path.stat().st_size > 1000


def test_heatmap_boxes_follow_the_threshold_and_drop_small_regions():
    heat = np.zeros((20, 20))
    heat[2:8, 3:9] = 1.0
    heat[12:14, 12:14] = 0.4
    heat[18, 0] = 0.9
    assert heatmap_boxes(heat, 0.5) == [[3.0, 2.0, 9.0, 8.0], [0.0, 18.0, 1.0, 19.0]]
    assert heatmap_boxes(heat, 0.3, min_pixels=2) == [[3.0, 2.0, 9.0, 8.0], [12.0, 12.0, 14.0, 14.0]]
    assert heatmap_boxes(np.ones((4, 4))) == []
    with pytest.raises(ValueError, match="fraction"):
        heatmap_boxes(heat, 60)


def test_localisation_accuracy_by_iou_and_iobb():
    truth = (0.0, 0.0, 10.0, 10.0)
    inside = (2.0, 2.0, 4.0, 4.0)  # IoU 0.04, IoBB 1
    records = [GroundTruthBox("a", "Nodule", truth, (inside,)),
               GroundTruthBox("b", "Nodule", truth, ((0.0, 0.0, 10.0, 8.0), (50.0, 50.0, 60.0, 60.0))),
               GroundTruthBox("c", "Mass", truth, ())]
    assert box_iou(truth, inside) == pytest.approx(0.04) and box_iobb(inside, truth) == 1.0
    by_iou = localisation_accuracy(records, thresholds=(0.1, 0.9))
    assert by_iou["Nodule"] == {0.1: (0.5, 2), 0.9: (0.0, 2)} and by_iou["Mass"][0.1] == (0.0, 1)
    assert localisation_accuracy(records, thresholds=(0.9,), measure="iobb")["Nodule"] == {0.9: (1.0, 2)}
    with pytest.raises(ValueError, match="measure"):
        localisation_accuracy(records, measure="dice")


def test_masked_macro_auroc_metric_accumulates_and_leaves_unknown_labels_out():
    import torch

    from cxr_monai.metrics import MaskedMacroAUROC, masked_macro_auroc

    labels, scores = _data()
    metric = MaskedMacroAUROC()
    for start in range(0, 60, 16):  # as an evaluator feeds it, batch by batch
        metric(torch.as_tensor(scores[start:start + 16]), torch.as_tensor(labels[start:start + 16]))
    expected = multilabel_auroc(labels, scores, ["A", "B", "C"], n_resamples=10).macro.value
    assert metric.aggregate() == pytest.approx(expected) == pytest.approx(masked_macro_auroc(scores, labels))
    assert np.isnan(masked_macro_auroc(np.array([[0.2], [0.4]]), np.array([[1.0], [-1.0]])))


def test_datalist_label_names_or_a_clear_error(tmp_path):
    import json

    from cxr_monai.data import DatalistError, datalist_label_names

    (tmp_path / "cls.json").write_text(json.dumps({"label_names": ["A", "B"], "training": []}))
    assert datalist_label_names(tmp_path / "cls.json") == ["A", "B"]
    (tmp_path / "ce.json").write_text(json.dumps({"training": []}))
    with pytest.raises(DatalistError, match=r"ce\.json: no 'label_names'"):
        datalist_label_names(tmp_path / "ce.json")
