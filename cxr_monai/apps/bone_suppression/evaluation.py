"""Bone-suppression evaluation at the original image size: PSNR / SSIM / MAE against the dual-energy (or phantom)
targets, and the residual rib contrast inside the lungs before and after suppression, with bootstrap CIs.

**Rib contrast** of an image: the mean intensity of its rib pixels inside the lungs minus the mean of the lung
pixels between the ribs (``lung_mask & rib_mask`` against ``lung_mask & ~rib_mask``; the phantom generator writes
both masks). Bones are bright, so a radiograph's contrast is positive and a perfect suppression leaves what the
soft-tissue target has. ``rib_contrast_residual`` = contrast after / contrast before suppression (0: the ribs are
gone, 1: untouched).
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
from monai.metrics import SSIMMetric

from cxr_monai.apps.bone_suppression.outputs import figure_row, image_of, suppress_bones
from cxr_monai.handlers.per_image import PerImageHandler
from cxr_monai.reports import (
    MetricSummary,
    log_report_to_mlflow,
    summarize_metric,
    summary_table,
    write_csv,
    write_json,
    write_text,
)
from cxr_monai.utils import is_rank0
from cxr_monai.visualize import save_png, stack_rows

__all__ = ["BoneSuppressionEvaluation", "BoneSuppressionReport", "image_quality", "rib_contrast"]

logger = logging.getLogger(__name__)

_QUALITY = ("psnr", "ssim", "mae")
_FIELDS = ("image", *(f"bone_{name}" for name in _QUALITY), *(f"suppressed_{name}" for name in _QUALITY),
           "rib_contrast_input", "rib_contrast_suppressed", "rib_contrast_target", "rib_contrast_residual")


def image_quality(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """PSNR (dB, data range 1), SSIM (MONAI, Gaussian 11 px window) and MAE of two images in [0, 1].

    >>> q = image_quality(np.full((16, 16), 0.5, np.float32), np.full((16, 16), 0.6, np.float32))
    >>> round(q["psnr"], 2), round(q["mae"], 3)
    (20.0, 0.1)
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ in size")
    error = prediction.astype(np.float64) - target.astype(np.float64)
    mse = float(np.mean(error**2))
    psnr = float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))
    as_tensor = [torch.from_numpy(np.ascontiguousarray(a, np.float32))[None, None] for a in (prediction, target)]
    ssim = float(SSIMMetric(spatial_dims=2, data_range=1.0)(*as_tensor).mean())
    return {"psnr": psnr, "ssim": ssim, "mae": float(np.mean(np.abs(error)))}


def rib_contrast(image: np.ndarray, rib_mask: np.ndarray, lung_mask: np.ndarray) -> float:
    """Mean of ``image`` on rib pixels inside the lungs minus the mean on lung pixels between the ribs (NaN if either
    set is empty).

    >>> image = np.array([[0.6, 0.2], [0.6, 0.2]]); ribs = np.array([[1, 0], [1, 0]], bool)
    >>> round(rib_contrast(image, ribs, np.ones((2, 2), bool)), 3)
    0.4
    """
    on, between = lung_mask & rib_mask, lung_mask & ~rib_mask
    if not on.any() or not between.any():
        return float("nan")
    return float(image[on].mean() - image[between].mean())


@dataclass
class BoneSuppressionReport:
    """Per-image rows and their summaries; ``metrics()`` for MLflow, ``write()`` for the files."""

    rows: list[dict[str, Any]]
    summaries: dict[str, MetricSummary] = field(default_factory=dict)
    figure: np.ndarray | None = None

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]], n_resamples: int = 2000,
                  seed: int = 0) -> BoneSuppressionReport:
        rows = [dict(row) for row in rows]
        if not rows:
            raise ValueError("no image was evaluated")
        summaries = {}
        for key in _FIELDS[1:]:
            finite = [row[key] for row in rows if key in row and np.isfinite(row[key])]
            if finite:
                summaries[key] = summarize_metric(key, finite, n_resamples=n_resamples, seed=seed)
        return cls(rows, summaries)

    def metrics(self) -> dict[str, float]:
        values: dict[str, float] = {"images": float(len(self.rows))}
        for summary in self.summaries.values():
            values.update(summary.metrics())
        return values

    def markdown(self) -> str:
        return (summary_table(self.summaries.values()) + f"\n\n{len(self.rows)} images at their stored size. "
                "bone_*: predicted vs target bone image; suppressed_*: radiograph − predicted bone vs the soft-tissue "
                "target; rib_contrast_*: mean on ribs − mean between ribs inside the lungs (input radiograph, "
                "suppressed, soft-tissue target); residual = suppressed / input. CIs: percentile bootstrap of the "
                "mean, images resampled.\n")

    def to_dict(self) -> dict[str, Any]:
        return {"images": len(self.rows),
                "summaries": {name: summary.to_dict() for name, summary in self.summaries.items()}}

    def write(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        """``report.json``, ``per_image.csv``, ``table.md`` and, with a figure, ``figure.png`` in ``output_dir``."""
        output_dir = Path(output_dir)
        paths = {"report.json": write_json(self.to_dict(), output_dir / "report.json"),
                 "per_image.csv": write_csv(self.rows, output_dir / "per_image.csv", _FIELDS),
                 "table.md": write_text(self.markdown(), output_dir / "table.md")}
        if self.figure is not None:
            paths["figure.png"] = save_png(self.figure, output_dir / "figure.png")
        return paths


class BoneSuppressionEvaluation(PerImageHandler):
    """Evaluate each predicted bone image (at the original size, from the bundle's inference postprocessing) against
    the targets its datalist entry names: ``bone`` (bone image), ``bone_suppressed`` (soft-tissue image) and, with
    ``rib_mask`` and ``lung_mask``, the rib contrast. Keys an entry lacks leave their columns empty. Writes the
    report (:class:`BoneSuppressionReport`) and a figure like seed 003 Fig. 4 of the first ``figure_images`` images,
    and logs it to MLflow linked to the training run of ``model_path``.

    Example::

        BoneSuppressionEvaluation("runs/bone/evaluation", datalist="pairs.json", base_dir="/data/pairs").attach(evaluator)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        datalist: str | os.PathLike,
        datalist_keys: Sequence[str] = ("test", "test_unhealthy"),
        base_dir: str | os.PathLike | None = None,
        pred_key: str = "pred",
        image_key: str = "image",
        tracking_uri: str | None = None,
        experiment_name: str = "bone_suppression",
        run_name: str | None = "evaluate",
        model_path: str | os.PathLike | None = None,
        n_resamples: int = 2000,
        seed: int = 0,
        figure_images: int = 4,
        figure_height: int = 256,
    ) -> None:
        from cxr_monai.data import load_datalist, validate_datalist

        present = validate_datalist(datalist)
        self.entries = {os.path.abspath(entry[image_key]): entry
                        for key in datalist_keys if key in present
                        for entry in load_datalist(datalist, key, base_dir=base_dir)}
        self.output_dir = Path(output_dir)
        self.pred_key = pred_key
        self.image_key = image_key
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.model_path = model_path
        self.n_resamples = n_resamples
        self.seed = seed
        self.figure_images = figure_images
        self.figure_height = figure_height
        self.rows: list[dict[str, Any]] = []
        self._figure_rows: list[np.ndarray] = []
        self.report: BoneSuppressionReport | None = None
        self.files: dict[str, Path] = {}

    def item(self, item: Mapping[str, Any], image_path: str | None) -> None:
        from cxr_monai.io import read_cxr

        if image_path is None:
            raise ValueError("BoneSuppressionEvaluation: the prediction carries no file name; load images with "
                             "cxr_monai.io.LoadCXRImaged")
        entry = self.entries.get(os.path.abspath(image_path), {})
        radiograph, _ = read_cxr(image_path)
        bone = np.clip(image_of(item[self.pred_key]), 0.0, 1.0)
        suppressed = suppress_bones(radiograph, bone)
        row: dict[str, Any] = {"image": image_path}
        target_bone = read_cxr(entry["bone"])[0] if "bone" in entry else None
        if target_bone is not None:
            row.update({f"bone_{k}": v for k, v in image_quality(bone, target_bone).items()})
        soft_tissue = read_cxr(entry["bone_suppressed"])[0] if "bone_suppressed" in entry else None
        if soft_tissue is not None:
            row.update({f"suppressed_{k}": v for k, v in image_quality(suppressed, soft_tissue).items()})
        if "rib_mask" in entry and "lung_mask" in entry:
            ribs, lungs = (read_cxr(entry[key])[0] > 0.5 for key in ("rib_mask", "lung_mask"))
            before, after = rib_contrast(radiograph, ribs, lungs), rib_contrast(suppressed, ribs, lungs)
            row.update({"rib_contrast_input": before, "rib_contrast_suppressed": after,
                        "rib_contrast_target": rib_contrast(soft_tissue, ribs, lungs) if soft_tissue is not None
                        else float("nan"),
                        "rib_contrast_residual": after / before if before > 0 else float("nan")})
        self.rows.append(row)
        if len(self._figure_rows) < self.figure_images:
            self._figure_rows.append(self._small_row(radiograph, bone, target_bone, Path(image_path).name))

    def _small_row(self, radiograph: np.ndarray, bone: np.ndarray, target: np.ndarray | None, name: str) -> np.ndarray:
        from PIL import Image

        height = self.figure_height
        width = max(1, round(radiograph.shape[1] * height / radiograph.shape[0]))

        def small(image: np.ndarray) -> np.ndarray:
            return np.asarray(Image.fromarray(image.astype(np.float32)).resize((width, height), Image.BILINEAR))

        return figure_row(small(radiograph), small(bone), f"{name}\ninput | bone | suppressed | target bone",
                          small(target) if target is not None else None)

    def completed(self, engine: Engine | None = None) -> BoneSuppressionReport | None:
        if not is_rank0() or not self.rows:
            return None
        report = BoneSuppressionReport.from_rows(self.rows, self.n_resamples, self.seed)
        report.figure = stack_rows(self._figure_rows) if self._figure_rows else None
        self.files = report.write(self.output_dir)
        for name in ("suppressed_psnr", "rib_contrast_residual"):
            if name in report.summaries:
                logger.info("bone suppression on %d images: %s %s", len(self.rows), name,
                            report.summaries[name].format(4))
        if self.tracking_uri:
            run_id = log_report_to_mlflow(report, self.tracking_uri, self.experiment_name, self.run_name,
                                          files=self.files, model_path=self.model_path)
            logger.info("evaluation logged to MLflow run %s", run_id)
        self.report = report
        return report
