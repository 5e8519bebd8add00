"""Localisation accuracy with the ChestX-ray8 protocol (Wang et al., CVPR 2017, §5.2), for heatmaps and detectors.

A **heatmap** (CAM, Grad-CAM) becomes boxes as in ChestX-ray8: min-max normalised, thresholded, and one box around
each connected region (:func:`heatmap_boxes`); a detector (seed 002's Faster R-CNN) gives its boxes directly. A
ground-truth box counts as **correctly localised at T** when one predicted box of its class in its image overlaps it
by at least T, measured as IoU (intersection over union) or IoBB (intersection over the *predicted* box's area, which
forgives a predicted box that is smaller than the truth). The accuracy of a class at T is the fraction of its
ground-truth boxes correctly localised (:func:`localisation_accuracy`; seed 002's CL@0.1 is the IoU accuracy at 0.1).

Boxes are ``[x_min, y_min, x_max, y_max]`` in pixels (docs/data_contract.md): a box of pixel columns 3..5 is
``[3, ..., 6, ...]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["DEFAULT_THRESHOLDS", "GroundTruthBox", "box_iobb", "box_iou", "heatmap_boxes", "localisation_accuracy"]

#: ChestX-ray8's overlap thresholds T
DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)

Box = Sequence[float]


def _area(box: Box) -> float:
    return max(0.0, float(box[2]) - float(box[0])) * max(0.0, float(box[3]) - float(box[1]))


def _intersection(a: Box, b: Box) -> float:
    width = min(float(a[2]), float(b[2])) - max(float(a[0]), float(b[0]))
    height = min(float(a[3]), float(b[3])) - max(float(a[1]), float(b[1]))
    return max(0.0, width) * max(0.0, height)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when both are empty).

    >>> box_iou([0, 0, 10, 10], [5, 0, 15, 10])
    0.3333333333333333
    """
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def box_iobb(predicted: Box, truth: Box) -> float:
    """Intersection over the predicted box's area (ChestX-ray8's IoBB; 0 for an empty predicted box).

    >>> box_iobb([2, 2, 4, 4], [0, 0, 10, 10])  # a small box inside the truth: fully right by IoBB
    1.0
    """
    area = _area(predicted)
    return _intersection(predicted, truth) / area if area > 0 else 0.0


def heatmap_boxes(heatmap: np.ndarray, threshold: float = 0.5, min_pixels: int = 1) -> list[list[float]]:
    """Boxes around the connected regions of a heatmap at or above ``threshold`` of its min-max range.

    ChestX-ray8 normalises each heatmap to [0, 255] and thresholds it (at 60 and 180, i.e. 0.24 and 0.71 of the
    range); ``threshold`` is that fraction. Regions of fewer than ``min_pixels`` pixels are dropped; a constant map
    gives no box. Connectivity is 8-neighbour.

    >>> heat = np.zeros((6, 8)); heat[1:3, 2:5] = 1.0; heat[4, 7] = 0.9
    >>> heatmap_boxes(heat, 0.5)
    [[2.0, 1.0, 5.0, 3.0], [7.0, 4.0, 8.0, 5.0]]
    """
    heat = np.asarray(heatmap, dtype=float)
    if heat.ndim != 2:
        raise ValueError(f"a heatmap must be 2-D (H, W), got shape {heat.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a fraction of the heatmap's range in [0, 1], got {threshold}")
    low, high = float(np.nanmin(heat)), float(np.nanmax(heat))
    if not np.isfinite(low) or high <= low:
        return []
    regions, count = ndimage.label((heat - low) / (high - low) >= threshold, structure=np.ones((3, 3), bool))
    boxes = []
    for index, found in enumerate(ndimage.find_objects(regions), start=1):
        if found is None or int((regions[found] == index).sum()) < min_pixels:
            continue
        rows, columns = found
        boxes.append([float(columns.start), float(rows.start), float(columns.stop), float(rows.stop)])
    return boxes


@dataclass(frozen=True)
class GroundTruthBox:
    """One ground-truth box of a class in an image, and the boxes predicted for that class in that image."""

    image: str
    label: str
    box: tuple[float, float, float, float]
    predicted: tuple[tuple[float, float, float, float], ...]


def localisation_accuracy(
    records: Iterable[GroundTruthBox],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    measure: str = "iou",
) -> dict[str, dict[float, tuple[float, int]]]:
    """``{class: {T: (accuracy, n_boxes)}}``: the share of each class's ground-truth boxes that a predicted box of
    their image overlaps by at least T (``measure`` ``"iou"`` or ``"iobb"``), as ChestX-ray8 Table 3 reports.

    >>> hit = GroundTruthBox("a.png", "Nodule", (0, 0, 10, 10), ((0, 0, 10, 5),))
    >>> miss = GroundTruthBox("b.png", "Nodule", (0, 0, 10, 10), ())
    >>> localisation_accuracy([hit, miss], thresholds=(0.1, 0.6))["Nodule"]
    {0.1: (0.5, 2), 0.6: (0.0, 2)}
    """
    if measure not in ("iou", "iobb"):
        raise ValueError(f"measure must be 'iou' or 'iobb', got {measure!r}")
    overlap = box_iou if measure == "iou" else (lambda truth, predicted: box_iobb(predicted, truth))
    best: dict[str, list[float]] = {}
    for record in records:
        values = [overlap(record.box, predicted) for predicted in record.predicted]
        best.setdefault(record.label, []).append(max(values, default=0.0))
    return {label: {float(t): (float(np.mean(np.asarray(scores) >= t)), len(scores)) for t in thresholds}
            for label, scores in sorted(best.items())}
