"""Binary detection metrics with image-level bootstrap CIs: seed 004's comparison table (accuracy, precision, recall,
AUC, Dice, confusion matrix) for a pneumothorax classifier with a segmentation output.

Per image: the ground truth (1 pneumothorax), the predicted probability, and optionally the Dice of its predicted
mask. The decision is ``probability >= threshold``. Two Dice figures, as the literature uses both:

- ``dice``: the mean Dice over the images *with* a pneumothorax (how well the found ones are outlined; the seed's
  "test Dice" reads this way: only ClaSegNet, whose masks exist for positives, has one);
- ``dice_siim``: SIIM-ACR's leaderboard metric, the mean over *all* images with an empty truth and an empty
  prediction scoring 1 (an empty truth with any predicted pixel scores 0).

Every figure gets a percentile bootstrap CI resampling images, stratified by the truth so each resample keeps both
classes (:func:`~cxr_monai.metrics.bootstrap.cluster_bootstrap`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from cxr_monai.metrics.bootstrap import DEFAULT_RESAMPLES, BootstrapInterval, cluster_bootstrap

__all__ = ["BinaryDetectionMetrics", "binary_detection_metrics", "mask_dice"]


def mask_dice(predicted: np.ndarray, truth: np.ndarray, empty: float = float("nan")) -> float:
    """Dice of two binary masks; ``empty`` when both are empty (NaN: undefined; SIIM scores it 1).

    >>> mask_dice(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    0.6666666666666666
    >>> mask_dice(np.zeros(4), np.zeros(4), empty=1.0)
    1.0
    """
    predicted, truth = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    total = int(predicted.sum()) + int(truth.sum())
    if total == 0:
        return float(empty)
    return 2.0 * float(np.logical_and(predicted, truth).sum()) / total


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


@dataclass(frozen=True)
class BinaryDetectionMetrics:
    """The figures of one model on one test set (each a :class:`BootstrapInterval`, ``dice*`` None without masks)
    and the confusion matrix at ``threshold`` (rows: truth negative, positive; columns: predicted negative,
    positive)."""

    threshold: float
    images: int
    positives: int
    accuracy: BootstrapInterval
    precision: BootstrapInterval
    recall: BootstrapInterval
    specificity: BootstrapInterval
    auc: BootstrapInterval
    dice: BootstrapInterval | None
    dice_siim: BootstrapInterval | None
    confusion: tuple[tuple[int, int], tuple[int, int]]

    @property
    def figures(self) -> dict[str, BootstrapInterval]:
        names = ("accuracy", "precision", "recall", "specificity", "auc", "dice", "dice_siim")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "images": self.images, "positives": self.positives,
                "confusion": {"labels": ["negative", "positive"], "rows_truth_columns_prediction":
                              [list(row) for row in self.confusion]},
                **{name: value.to_dict() for name, value in self.figures.items()}}


def binary_detection_metrics(
    labels: Sequence[int] | np.ndarray,
    probabilities: Sequence[float] | np.ndarray,
    dice: Sequence[float] | np.ndarray | None = None,
    dice_siim: Sequence[float] | np.ndarray | None = None,
    threshold: float = 0.5,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> BinaryDetectionMetrics:
    """Accuracy, precision, recall, specificity and AUC of ``probabilities >= threshold`` against ``labels`` (0/1), the
    mean ``dice`` over the positive images and the mean ``dice_siim`` over all (per-image values from
    :func:`mask_dice`; NaN entries of ``dice`` for negatives are ignored), each with a bootstrap CI.

    >>> m = binary_detection_metrics([0, 0, 1, 1], [0.1, 0.6, 0.7, 0.9], n_resamples=50)
    >>> m.accuracy.value, m.precision.value, m.recall.value, m.auc.value, m.confusion
    (0.75, 0.6666666666666666, 1.0, 1.0, ((1, 1), (0, 2)))
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels for {p.size} probabilities")
    if y.size == 0 or not set(np.unique(y)) <= {0, 1}:
        raise ValueError("labels must be 0 or 1, at least one")
    predicted = p >= threshold
    per_image_dice = None if dice is None else np.asarray(dice, dtype=np.float64).reshape(-1)
    per_image_siim = None if dice_siim is None else np.asarray(dice_siim, dtype=np.float64).reshape(-1)
    for name, values in (("dice", per_image_dice), ("dice_siim", per_image_siim)):
        if values is not None and values.shape != y.shape:
            raise ValueError(f"{values.size} {name} values for {y.size} images")

    def counts(idx: np.ndarray) -> tuple[int, int, int, int]:
        truth, guess = y[idx] == 1, predicted[idx]
        return (int((~truth & ~guess).sum()), int((~truth & guess).sum()), int((truth & ~guess).sum()),
                int((truth & guess).sum()))

    def accuracy(idx: np.ndarray) -> float:
        tn, fp, fn, tp = counts(idx)
        return _ratio(tn + tp, len(idx))

    def precision(idx: np.ndarray) -> float:
        _, fp, _, tp = counts(idx)
        return _ratio(tp, tp + fp)

    def recall(idx: np.ndarray) -> float:
        _, _, fn, tp = counts(idx)
        return _ratio(tp, tp + fn)

    def specificity(idx: np.ndarray) -> float:
        tn, fp, _, _ = counts(idx)
        return _ratio(tn, tn + fp)

    def auc(idx: np.ndarray) -> float:
        return float(roc_auc_score(y[idx], p[idx])) if len(set(y[idx])) == 2 else float("nan")

    def mean_over(values: np.ndarray, positives_only: bool):
        def statistic(idx: np.ndarray) -> float:
            chosen = values[idx][y[idx] == 1] if positives_only else values[idx]
            chosen = chosen[np.isfinite(chosen)]
            return float(chosen.mean()) if chosen.size else float("nan")
        return statistic

    images = np.arange(y.size)

    def interval(statistic) -> BootstrapInterval:
        return cluster_bootstrap(statistic, images, strata=y, n_resamples=n_resamples, seed=seed, unit="images")

    tn, fp, fn, tp = counts(images)
    return BinaryDetectionMetrics(
        threshold=float(threshold), images=int(y.size), positives=int(y.sum()),
        accuracy=interval(accuracy), precision=interval(precision), recall=interval(recall),
        specificity=interval(specificity), auc=interval(auc),
        dice=None if per_image_dice is None else interval(mean_over(per_image_dice, True)),
        dice_siim=None if per_image_siim is None else interval(mean_over(per_image_siim, False)),
        confusion=((tn, fp), (fn, tp)),
    )
