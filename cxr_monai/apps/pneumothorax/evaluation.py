"""Pneumothorax detection evaluation (seed 004): the comparison table of ClaSegNet and the plain ResNet-50
(accuracy, precision, recall, AUC, Dice, confusion matrix, with image-level bootstrap CIs), one row per model, and the
seed's localisation examples (true/false positives and negatives).

The evaluator runs :class:`~cxr_monai.networks.ClaSegNet` at the working size; each decollated item has ``pred``
(the network's output dict: ``"image"`` the image logit, and for ClaSegNet ``"regions"`` the per-region logits and
``"segmentation"`` the mask logits), ``label`` (the pneumothorax mask at the working size; the image is positive when
it has a pixel) and ``image`` (the network input, a MetaTensor naming the radiograph). Dice is computed at the working
size (the masks the network was trained against).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from cxr_monai.apps.classification.outputs import gather_rows
from cxr_monai.handlers.per_image import PerImageHandler
from cxr_monai.metrics import BinaryDetectionMetrics, binary_detection_metrics, mask_dice
from cxr_monai.reports import log_report_to_mlflow, write_csv, write_json, write_text
from cxr_monai.utils import is_rank0
from cxr_monai.visualize import heatmap_overlay, mask_overlay, save_png

__all__ = ["OUTCOMES", "PneumothoraxEvaluation", "PneumothoraxReport", "detection_table", "image_scores",
           "merge_detection_tables", "outputs_of"]

logger = logging.getLogger(__name__)

#: The seed's example categories, in its slides' order.
OUTCOMES = ("TP", "FP", "FN", "TN")

_FIGURES = (("accuracy", "Accuracy"), ("precision", "Precision"), ("recall", "Recall"), ("auc", "AUC"),
            ("dice", "Dice"))


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, MetaTensor):
        value = value.as_tensor()
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def outputs_of(pred: Mapping[str, Any], threshold: float = 0.5) -> dict[str, Any]:
    """One item's image probability, region probability map ``(h, w)`` and predicted mask ``(H, W)`` (None where the
    network has no such output: the baseline) from the network's output dict.

    >>> out = outputs_of({"image": torch.tensor([0.0]), "segmentation": torch.zeros(1, 4, 4) + 2})
    >>> out["probability"], bool(out["mask"].all()), out["regions"]
    (0.5, True, None)
    """
    if "image" not in pred:
        raise KeyError(f"the network output has no 'image' logit (keys: {sorted(pred)})")
    probability = float(1.0 / (1.0 + np.exp(-_numpy(pred["image"]).reshape(-1)[0])))
    regions = pred.get("regions")
    segmentation = pred.get("segmentation")
    return {"probability": probability,
            "regions": None if regions is None else 1.0 / (1.0 + np.exp(-_numpy(regions).squeeze(0))),
            "mask": None if segmentation is None else _numpy(segmentation).squeeze(0) >= np.log(threshold / (1 - threshold))}


def image_scores(output: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``output_transform`` of MONAI's ``ROCAUC`` on an evaluator with decollated items: each item's image probability
    (sigmoid of ``pred["image"]``) and its truth (the ``label`` mask has a pixel), as ``(1,)`` tensors.

    >>> scores, truth = image_scores([{"pred": {"image": torch.tensor([0.0])}, "label": torch.ones(1, 2, 2)}])
    >>> float(scores[0]), float(truth[0])
    (0.5, 1.0)
    """
    items = output if isinstance(output, (list, tuple)) else [output]
    scores = [torch.sigmoid(torch.as_tensor(item["pred"]["image"]).float().reshape(1)) for item in items]
    truth = [(torch.as_tensor(item["label"]) > 0.5).any().float().reshape(1) for item in items]
    return scores, truth


@dataclass
class PneumothoraxReport:
    """One model's figures on one test set; ``metrics()`` for MLflow, ``write()`` for the files."""

    variant: str
    images: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    dice: np.ndarray | None
    dice_siim: np.ndarray | None
    result: BinaryDetectionMetrics

    def metrics(self) -> dict[str, float]:
        values = {name: interval.value for name, interval in self.result.figures.items()}
        (tn, fp), (fn, tp) = self.result.confusion
        values.update(images=float(self.result.images), positives=float(self.result.positives), tp=float(tp),
                      fp=float(fp), fn=float(fn), tn=float(tn))
        return values

    def to_dict(self) -> dict[str, Any]:
        return {"variant": self.variant, **self.result.to_dict()}

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for n, image in enumerate(self.images):
            rows.append({"image": image, "label": int(self.labels[n]), "probability": float(self.probabilities[n]),
                         "predicted": int(self.probabilities[n] >= self.result.threshold),
                         "dice": "" if self.dice is None or not np.isfinite(self.dice[n]) else float(self.dice[n])})
        return rows

    def markdown(self, digits: int = 3) -> str:
        return detection_table({self.variant: self.to_dict()}, digits)

    def write(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        output_dir = Path(output_dir)
        return {"report.json": write_json(self.to_dict(), output_dir / "report.json"),
                "per_image.csv": write_csv(self.rows(), output_dir / "per_image.csv",
                                           ["image", "label", "probability", "predicted", "dice"]),
                "table.md": write_text(self.markdown(), output_dir / "table.md")}


def _cell(figure: Mapping[str, Any] | None, digits: int) -> str:
    if not figure or figure.get("value") is None or not np.isfinite(figure["value"]):
        return "—"
    return f"{figure['value']:.{digits}f} ({figure['low']:.{digits}f}–{figure['high']:.{digits}f})"


def detection_table(rows: Mapping[str, Mapping[str, Any]], digits: int = 3) -> str:
    """The seed's results table (one row per model: accuracy, precision, recall, AUC, Dice, each with its 95 % CI)
    and each model's confusion matrix, from ``report.json`` documents."""
    lines = ["| model | " + " | ".join(title for _, title in _FIGURES) + " |",
             "|---|" + "---|" * len(_FIGURES)]
    for name, document in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(document.get(key), digits) for key, _ in _FIGURES) + " |")
    lines.append("")
    for name, document in rows.items():
        (tn, fp), (fn, tp) = document["confusion"]["rows_truth_columns_prediction"]
        lines += [f"{name} (threshold {document['threshold']:g}, {document['images']} images, "
                  f"{document['positives']} with a pneumothorax):", "",
                  "| truth \\ prediction | no pneumothorax | pneumothorax |", "|---|---:|---:|",
                  f"| no pneumothorax | {tn} | {fp} |", f"| pneumothorax | {fn} | {tp} |", ""]
    lines.append("95 % CIs: percentile bootstrap over images, stratified by the truth. Dice: mean over the images "
                 "with a pneumothorax (working size); — where the model has no segmentation output.")
    return "\n".join(lines) + "\n"


def merge_detection_tables(report_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike,
                           digits: int = 3) -> Path:
    """One comparison table from several :class:`PneumothoraxEvaluation` ``report.json`` files, one row each."""
    import json

    rows: dict[str, Any] = {}
    for path in map(Path, report_paths):
        document = json.loads(path.read_text(encoding="utf-8"))
        name = document.get("variant") or path.parent.name
        if name in rows:
            raise ValueError(f"{path}: model {name!r} is already a row")
        rows[name] = document
    if not rows:
        raise ValueError("merge_detection_tables: no report.json given")
    return write_text(detection_table(rows, digits), out_path)


class PneumothoraxEvaluation(PerImageHandler):
    """Evaluator handler: gather each image's probability, truth (mask non-empty) and Dice, then write the report
    (``report.json``, ``per_image.csv``, ``table.md``), log it to MLflow and draw the seed's examples.

    Examples (``examples`` per outcome and rank, at the working size): ``examples/<TP|FP|FN|TN>/<stem>.png``, the
    radiograph with the region probability map (ClaSegNet's localisation map) beside the predicted mask (red) and the
    truth (green).

    Args:
        output_dir: where the files go.
        variant: the model's row name (``ClaSegNet``, ``ResNet-50``).
        threshold: the decision threshold of the image probability (and of the mask).
        examples: example images drawn per outcome (0: none).
        tracking_uri, experiment_name, run_name, model_path: MLflow (no ``tracking_uri``: files only).
        n_resamples, seed: the bootstrap.

    Example::

        PneumothoraxEvaluation("runs/clasegnet/evaluation", "ClaSegNet").attach(evaluator)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        variant: str = "ClaSegNet",
        threshold: float = 0.5,
        examples: int = 3,
        tracking_uri: str | None = None,
        experiment_name: str = "clasegnet",
        run_name: str | None = "evaluate",
        model_path: str | os.PathLike | None = None,
        n_resamples: int = 2000,
        seed: int = 0,
        label_key: str = "label",
    ) -> None:
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.output_dir = Path(output_dir)
        self.variant = variant
        self.threshold = float(threshold)
        self.examples = int(examples)
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.model_path = model_path
        self.n_resamples = int(n_resamples)
        self.seed = int(seed)
        self.label_key = label_key
        self.rows: list[dict[str, Any]] = []
        self._drawn = dict.fromkeys(OUTCOMES, 0)
        self.report: PneumothoraxReport | None = None
        self.run_id: str | None = None

    def item(self, item: Mapping[str, Any], image_path: str | None) -> None:
        if image_path is None:
            raise ValueError("PneumothoraxEvaluation: the item carries no file name (MetaTensor meta "
                             "'filename_or_obj'); load images with cxr_monai.io.LoadCXRImaged")
        truth = _numpy(item[self.label_key]).squeeze() > 0.5
        out = outputs_of(item[self.pred_key], self.threshold)
        positive = bool(truth.any())
        row = {"image": os.path.abspath(image_path), "label": int(positive), "probability": out["probability"],
               "dice": float("nan"), "dice_siim": float("nan")}
        if out["mask"] is not None:
            if out["mask"].shape != truth.shape:
                raise ValueError(f"{image_path}: predicted mask {out['mask'].shape} and truth {truth.shape} differ")
            row["dice"] = mask_dice(out["mask"], truth)
            row["dice_siim"] = mask_dice(out["mask"], truth, empty=1.0)
        self.rows.append(row)
        outcome = ("T" if (out["probability"] >= self.threshold) == positive else "F") + (
            "P" if out["probability"] >= self.threshold else "N")
        if self._drawn[outcome] < self.examples:
            self._drawn[outcome] += 1
            self._draw(outcome, item[self.image_key], image_path, truth, out)

    def _draw(self, outcome: str, image: Any, image_path: str, truth: np.ndarray, out: Mapping[str, Any]) -> None:
        grey = _numpy(image)[0]
        tiles = []
        if out["regions"] is not None:
            regions = torch.as_tensor(out["regions"], dtype=torch.float32)[None, None]
            heat = torch.nn.functional.interpolate(regions, size=grey.shape, mode="bilinear", align_corners=False)
            tiles.append(heatmap_overlay(grey, heat[0, 0].numpy(), vmax=1.0))
        masks = ([out["mask"]] if out["mask"] is not None else [np.zeros_like(truth)]) + [truth]
        tiles.append(mask_overlay(grey, masks))
        stem = Path(image_path).name.split(".")[0]
        save_png(np.concatenate(tiles, axis=1), self.output_dir / "examples" / outcome /
                 f"{stem}_p{out['probability']:.2f}.png")

    def completed(self, engine: Engine | None = None) -> PneumothoraxReport | None:
        rows = gather_rows(self.rows)  # a collective: every rank calls it
        if not is_rank0() or not rows:
            return None
        labels = np.array([row["label"] for row in rows])
        probabilities = np.array([row["probability"] for row in rows])
        dice = np.array([row["dice"] for row in rows])
        siim = np.array([row["dice_siim"] for row in rows])
        has_masks = bool(np.isfinite(siim).any())
        result = binary_detection_metrics(labels, probabilities, dice if has_masks else None,
                                          siim if has_masks else None, self.threshold, self.n_resamples, self.seed)
        report = PneumothoraxReport(self.variant, [row["image"] for row in rows], labels, probabilities,
                                    dice if has_masks else None, siim if has_masks else None, result)
        files = report.write(self.output_dir)
        logger.info("%s on %d images (%d with a pneumothorax): AUC %s, accuracy %s%s", self.variant, result.images,
                    result.positives, result.auc.format(3), result.accuracy.format(3),
                    f", Dice {result.dice.format(3)}" if result.dice is not None else "")
        if self.tracking_uri:
            self.run_id = log_report_to_mlflow(report, self.tracking_uri, self.experiment_name, self.run_name,
                                               files=files, model_path=self.model_path)
        self.report = report
        return report
