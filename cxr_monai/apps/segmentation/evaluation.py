"""Lung-segmentation evaluation at the original image size: Dice and HD95 per image, mean ± std with bootstrap CIs,
the worst images as a figure, the report to MLflow.

Metrics are computed on the mask the inference writes (back at the stored size, :class:`LungMaskWriter`) against
the reference mask file read again at its stored size, so the figures do not depend on the working size. HD95 is
MONAI's 95th-percentile Hausdorff distance in pixels of the stored image, and in millimetres where the file gives
its pixel spacing; an empty prediction has no HD95 and is counted apart (``empty_predictions``), never averaged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from monai.metrics import compute_hausdorff_distance

from cxr_monai.apps.segmentation.outputs import dice_score, load_original, mask_of
from cxr_monai.handlers.per_image import PerImageHandler, filename_of
from cxr_monai.io.headers import stored_spacing
from cxr_monai.reports import (
    MetricSummary,
    log_report_to_mlflow,
    summarize_metric,
    summary_table,
    write_csv,
    write_json,
    write_text,
)
from cxr_monai.transforms.masks import BinaryMask
from cxr_monai.utils import is_rank0
from cxr_monai.visualize import labelled_row, mask_overlay, save_png, stack_rows

__all__ = ["SegmentationEvaluation", "SegmentationReport", "hd95", "segmentation_row"]

logger = logging.getLogger(__name__)

_FIELDS = ("image", "dice", "hd95_px", "hd95_mm", "predicted_fraction", "reference_fraction")


def hd95(prediction: np.ndarray, reference: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance in pixels (MONAI); NaN when either mask is empty.

    >>> a = np.zeros((8, 8), bool); a[2:6, 2:6] = True
    >>> b = np.zeros((8, 8), bool); b[2:6, 3:7] = True
    >>> hd95(a, b)
    1.0
    """
    if not prediction.any() or not reference.any():
        return float("nan")
    value = compute_hausdorff_distance(torch.from_numpy(prediction)[None, None],
                                       torch.from_numpy(reference)[None, None], percentile=95)
    return float(value.item())


def segmentation_row(image: str, prediction: np.ndarray, reference: np.ndarray,
                     spacing: tuple[float, float] | None = None) -> dict[str, Any]:
    """The per-image row of the report: Dice, HD95 (px, and mm with an isotropic ``spacing``), mask fractions."""
    if prediction.shape != reference.shape:
        raise ValueError(f"{image}: predicted mask {prediction.shape} and reference {reference.shape} differ in size")
    distance = hd95(prediction, reference)
    millimetres = float("nan")
    if spacing is not None and np.isfinite(distance) and abs(spacing[0] - spacing[1]) < 1e-6:
        millimetres = distance * spacing[0]
    return {"image": image, "dice": dice_score(prediction, reference), "hd95_px": distance, "hd95_mm": millimetres,
            "predicted_fraction": float(prediction.mean()), "reference_fraction": float(reference.mean())}


@dataclass
class SegmentationReport:
    """Per-image rows and their summaries; ``metrics()`` for MLflow, ``write()`` for the files."""

    rows: list[dict[str, Any]]
    summaries: dict[str, MetricSummary] = field(default_factory=dict)
    worst: list[str] = field(default_factory=list)
    figure: np.ndarray | None = None

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]], n_resamples: int = 2000, seed: int = 0) -> SegmentationReport:
        rows = [dict(row) for row in rows]
        if not rows:
            raise ValueError("no image was evaluated")
        summaries = {"dice": summarize_metric("dice", [row["dice"] for row in rows], n_resamples=n_resamples,
                                              seed=seed)}
        for key in ("hd95_px", "hd95_mm"):
            finite = [row[key] for row in rows if np.isfinite(row[key])]
            if finite:
                summaries[key] = summarize_metric(key, finite, n_resamples=n_resamples, seed=seed)
        worst = [row["image"] for row in sorted(rows, key=lambda row: row["dice"])[:5]]
        return cls(rows, summaries, worst)

    @property
    def empty_predictions(self) -> int:
        return sum(1 for row in self.rows if row["predicted_fraction"] == 0.0)

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {"images": float(len(self.rows)), "empty_predictions": float(self.empty_predictions)}
        for summary in self.summaries.values():
            values.update(summary.metrics())
        return values

    def markdown(self) -> str:
        lines = [summary_table(self.summaries.values()), ""]
        lines.append(f"{len(self.rows)} images; {self.empty_predictions} with an empty prediction (no HD95). CIs: "
                     "percentile bootstrap of the mean, images resampled.")
        lines.append("")
        lines.append("Worst five by Dice: " + ", ".join(
            f"{Path(row['image']).name} ({row['dice']:.3f})" for row in sorted(self.rows, key=lambda r: r["dice"])[:5]))
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"images": len(self.rows), "empty_predictions": self.empty_predictions,
                "summaries": {name: summary.to_dict() for name, summary in self.summaries.items()},
                "worst": self.worst}

    def write(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        """``report.json``, ``per_image.csv``, ``table.md`` and, with a figure, ``worst.png`` in ``output_dir``."""
        output_dir = Path(output_dir)
        paths = {"report.json": write_json(self.to_dict(), output_dir / "report.json"),
                 "per_image.csv": write_csv(self.rows, output_dir / "per_image.csv", _FIELDS),
                 "table.md": write_text(self.markdown(), output_dir / "table.md")}
        if self.figure is not None:
            paths["worst.png"] = save_png(self.figure, output_dir / "worst.png")
        return paths


class SegmentationEvaluation(PerImageHandler):
    """Evaluator handler: score each inverted prediction against its reference mask file at the stored size; on
    completion write the report (and its worst-five figure) to ``output_dir`` and log it to MLflow.

    Args:
        output_dir: where the report files go.
        label_key: the engine output's key of the reference mask (``label``: the evaluator's ``prepare_batch`` is
            :class:`~cxr_monai.engines.KeyedBatch` with ``label_key="lung_mask"``); its MetaTensor names the file
            that is read again at its stored size.
        tracking_uri, experiment_name, run_name: MLflow (no ``tracking_uri``: files only); the run is linked to
            the training run of ``model_path`` (:func:`~cxr_monai.reports.log_report_to_mlflow`).

    Example::

        SegmentationEvaluation("runs/seg/eval", tracking_uri="sqlite:////abs/runs/seg/mlruns.db").attach(evaluator)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
        tracking_uri: str | None = None,
        experiment_name: str = "lung_segmentation",
        run_name: str | None = "evaluate",
        model_path: str | os.PathLike | None = None,
        n_resamples: int = 2000,
        seed: int = 0,
        worst: int = 5,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.pred_key = pred_key
        self.label_key = label_key
        self.image_key = image_key
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.model_path = model_path
        self.n_resamples = n_resamples
        self.seed = seed
        self.worst = worst
        self.rows: list[dict[str, Any]] = []
        self._masks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.report: SegmentationReport | None = None
        self.files: dict[str, Path] = {}

    def item(self, item: Mapping[str, Any], image_path: str | None) -> None:
        reference_path = filename_of(item.get(self.label_key))
        if image_path is None or reference_path is None:
            raise ValueError(f"SegmentationEvaluation: no file name for the image or its '{self.label_key}' "
                             "(load both with cxr_monai.io.LoadCXRImaged)")
        prediction = mask_of(item[self.pred_key])
        reference_image, _ = load_original(reference_path)
        reference = mask_of(BinaryMask()(torch.from_numpy(reference_image)[None], source=reference_path))
        spacing, _ = stored_spacing(image_path)  # the header only: Invertd's output carries no spacing
        row = segmentation_row(image_path, prediction, reference, spacing)
        self.rows.append(row)
        self._masks[image_path] = (prediction, reference)

    def figure(self, images: Sequence[str], height: int = 256) -> np.ndarray:
        """Rows of radiograph | prediction (red) over reference (green), labelled with the file and its Dice."""
        from PIL import Image

        dice = {row["image"]: row["dice"] for row in self.rows}
        rows = []
        for path in images:
            image, _ = load_original(path)
            prediction, reference = self._masks[path]
            overlay = mask_overlay(image, [prediction, reference], thickness=max(1, image.shape[0] // 256))
            width = max(1, round(image.shape[1] * height / image.shape[0]))
            grey = np.asarray(Image.fromarray((image * 255).astype(np.uint8)).resize((width, height)))
            small = np.asarray(Image.fromarray(overlay).resize((width, height)))
            rows.append(labelled_row([np.repeat(grey[..., None], 3, -1), small],
                                     f"{Path(path).name}\nDice {dice[path]:.3f}"))
        return stack_rows(rows)

    def completed(self, engine: Engine | None = None) -> SegmentationReport | None:
        if not is_rank0() or not self.rows:
            return None
        report = SegmentationReport.from_rows(self.rows, self.n_resamples, self.seed)
        report.worst = report.worst[: self.worst]
        report.figure = self.figure(report.worst)
        self.files = report.write(self.output_dir)
        logger.info("lung segmentation on %d images: Dice %s", len(self.rows), report.summaries["dice"].format(4))
        if self.tracking_uri:
            run_id = log_report_to_mlflow(report, self.tracking_uri, self.experiment_name, self.run_name,
                                          files=self.files, model_path=self.model_path)
            logger.info("evaluation logged to MLflow run %s", run_id)
        self.report = report
        return report
