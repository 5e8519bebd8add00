"""Localisation of the classifier's class heatmaps against ground-truth boxes, with the ChestX-ray8 protocol (Wang et
al., CVPR 2017, §5.2 and Table 3): per boxed image, the CAM or Grad-CAM of each box's class
(:class:`~cxr_monai.apps.classification.heatmaps.ClassHeatmaps`) at the radiograph's stored size, thresholded, one
box around each connected region (:func:`~cxr_monai.metrics.heatmap_boxes`), and the share of each class's
ground-truth boxes that one of them overlaps by IoU or IoBB >= T (:func:`~cxr_monai.metrics.localisation_accuracy`).

ChestX-ray8 normalises each heatmap to [0, 255] and thresholds it at 60 and at 180, pooling the boxes of both binary
maps (:data:`CHESTXRAY8_HEATMAP_THRESHOLDS`): the large low-threshold boxes serve IoU, the small high-threshold ones
IoBB. A class's heatmap is computed whether or not the model predicts the class (the box's class is given), as in
ChestX-ray8. The boxes come from the source datalist (``boxes`` + ``box_labels`` in stored pixels,
docs/data_contract.md; ``datalist chestxray14 --bbox-list``, phantoms): the evaluator's items keep only the network
input, and a box that went through the input transforms would no longer be in stored pixels.

Example::

    from cxr_monai.apps.classification import LocalisationEvaluation

    LocalisationEvaluation("runs/dn121/evaluation", class_names, network, "chestxray14.json",
                           base_dir="/data/nih/images", heatmap_method="gradcam").attach(evaluator)
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine

from cxr_monai.apps.classification.heatmaps import ClassHeatmaps, resize_heatmap
from cxr_monai.apps.classification.outputs import (
    _draw_label,
    class_file_name,
    gather_rows,
)
from cxr_monai.handlers.per_image import PerImageHandler
from cxr_monai.metrics.localisation import (
    DEFAULT_THRESHOLDS,
    GroundTruthBox,
    box_iobb,
    box_iou,
    heatmap_boxes,
    localisation_accuracy,
)
from cxr_monai.reports import write_json, write_text
from cxr_monai.utils import is_rank0

__all__ = ["CHESTXRAY8_HEATMAP_THRESHOLDS", "LocalisationEvaluation", "LocalisationReport"]

logger = logging.getLogger(__name__)

#: ChestX-ray8's heatmap thresholds: 60 and 180 of the heatmap normalised to [0, 255], as fractions of its range.
CHESTXRAY8_HEATMAP_THRESHOLDS = (60 / 255, 180 / 255)
MEASURES = ("iou", "iobb")
#: Overlay colours (RGB): the boxes predicted from the heatmap, and the ground-truth boxes.
PREDICTED_COLOUR = (255, 64, 255)
TRUTH_COLOUR = (64, 255, 64)


def _metric_name(name: str) -> str:
    return name.lower().replace(" ", "_")


def _boxes_of(heatmap: np.ndarray, thresholds: Sequence[float], min_pixels: int) -> list[list[float]]:
    """The boxes of every threshold's binary map, pooled (a box found at two thresholds kept once)."""
    pooled: dict[tuple[float, ...], None] = {}
    for threshold in thresholds:
        pooled.update(dict.fromkeys(tuple(box) for box in heatmap_boxes(heatmap, threshold, min_pixels)))
    return [list(box) for box in pooled]


def _draw_boxes(rgb: np.ndarray, boxes: Sequence[Sequence[float]], colour: tuple[int, int, int],
                width: int) -> np.ndarray:
    """``boxes`` (``[x_min, y_min, x_max, y_max]``, the max exclusive) outlined in ``colour`` on an RGB uint8 image."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    for box in boxes:
        x0, y0 = float(box[0]), float(box[1])
        draw.rectangle((x0, y0, max(x0, float(box[2]) - 1), max(y0, float(box[3]) - 1)), outline=colour, width=width)
    return np.asarray(canvas)


@dataclass
class LocalisationReport:
    """The localisation accuracies of one evaluation: ``{measure: {class: {T: (accuracy, n_boxes)}}}`` for IoU and
    IoBB, the per-box best overlaps, and the boxes left out; ``metrics()`` for MLflow, ``write()`` for
    ``localisation.json`` and ``localisation.md``.

    Example::

        report = LocalisationReport.from_records(records, "cam", CHESTXRAY8_HEATMAP_THRESHOLDS)
        print(report.markdown())
    """

    heatmap_method: str
    heatmap_thresholds: tuple[float, ...]
    thresholds: tuple[float, ...]
    records: list[GroundTruthBox]
    accuracy: dict[str, dict[str, dict[float, tuple[float, int]]]]
    images: int
    boxes_left_out: dict[str, int] = field(default_factory=dict)
    variant: str | None = None

    @classmethod
    def from_records(cls, records: Sequence[GroundTruthBox], heatmap_method: str,
                     heatmap_thresholds: Sequence[float], thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                     boxes_left_out: Mapping[str, int] | None = None, variant: str | None = None,
                     images: int | None = None) -> LocalisationReport:
        """The report of the ground-truth boxes ``records`` (each with its image's predicted boxes of its class)."""
        records = list(records)
        if not records:
            raise ValueError("no ground-truth box to localise")
        accuracy = {measure: localisation_accuracy(records, thresholds, measure) for measure in MEASURES}
        return cls(heatmap_method, tuple(float(t) for t in heatmap_thresholds), tuple(float(t) for t in thresholds),
                   records, accuracy, len({r.image for r in records}) if images is None else int(images),
                   dict(sorted((boxes_left_out or {}).items())), variant)

    @property
    def class_names(self) -> list[str]:
        """The classes with a ground-truth box, sorted."""
        return list(self.accuracy["iou"])

    def overall(self, measure: str) -> dict[float, float]:
        """The accuracy at each T over every box of every class (classes weighted by their box counts)."""
        scores = [max((box_iou(r.box, p) if measure == "iou" else box_iobb(p, r.box) for p in r.predicted),
                      default=0.0) for r in self.records]
        return {t: float(np.mean(np.asarray(scores) >= t)) for t in self.thresholds}

    def metrics(self) -> dict[str, float]:
        """``loc_<measure>_<T>_<class>`` and ``loc_<measure>_<T>_all`` accuracies, ``loc_boxes``, ``loc_images``,
        ``loc_boxes_left_out`` (MLflow adds its ``eval_`` prefix)."""
        values: dict[str, float] = {"loc_images": float(self.images), "loc_boxes": float(len(self.records)),
                                    "loc_boxes_left_out": float(sum(self.boxes_left_out.values()))}
        for measure in MEASURES:
            for name, by_threshold in self.accuracy[measure].items():
                for t, (accuracy, _) in by_threshold.items():
                    values[f"loc_{measure}_{t:g}_{_metric_name(name)}"] = accuracy
            for t, accuracy in self.overall(measure).items():
                values[f"loc_{measure}_{t:g}_all"] = accuracy
        return values

    def to_dict(self) -> dict[str, Any]:
        """``localisation.json``: the protocol, the counts, per measure and class the box count and the accuracy at
        each T (keys ``"0.1"``...), the pooled accuracy (``"all"``), and each box with its best IoU and IoBB."""

        def table(measure: str) -> dict[str, Any]:
            classes = {name: {"boxes": next(iter(by_t.values()))[1],
                              "accuracy": {f"{t:g}": a for t, (a, _) in by_t.items()}}
                       for name, by_t in self.accuracy[measure].items()}
            classes["all"] = {"boxes": len(self.records),
                              "accuracy": {f"{t:g}": a for t, a in self.overall(measure).items()}}
            return classes

        boxes = [{"image": r.image, "label": r.label, "box": list(r.box), "predicted": len(r.predicted),
                  "best_iou": max((box_iou(r.box, p) for p in r.predicted), default=0.0),
                  "best_iobb": max((box_iobb(p, r.box) for p in r.predicted), default=0.0)} for r in self.records]
        return {"variant": self.variant, "protocol": "ChestX-ray8 (Wang et al. 2017) Table 3",
                "heatmap_method": self.heatmap_method, "heatmap_thresholds": list(self.heatmap_thresholds),
                "thresholds": list(self.thresholds), "images": self.images, "boxes": len(self.records),
                "boxes_left_out": self.boxes_left_out, "iou": table("iou"), "iobb": table("iobb"),
                "per_box": boxes}

    def markdown(self, digits: int = 2) -> str:
        """ChestX-ray8 Table 3's numbers as two tables (IoU, IoBB): one row per class with its box count, one
        column per T, and a row over all boxes."""
        heading = "| class | boxes | " + " | ".join(f"T = {t:g}" for t in self.thresholds) + " |"
        rule = "|---|---:|" + "---:|" * len(self.thresholds)
        title = f"{self.variant}: " if self.variant else ""
        levels = ", ".join(f"{t * 255:.0f}" for t in self.heatmap_thresholds)
        protocol = (f"{len(self.records)} ground-truth boxes on {self.images} images. Heatmaps at the stored size, "
                    f"min-max normalised to [0, 255] and thresholded at {levels}; one box per connected region, the "
                    "boxes of every threshold pooled. A box is localised at T when a predicted box of its class "
                    "overlaps it by at least T (ChestX-ray8 Table 3).")
        lines = [f"# {title}localisation of the {self.heatmap_method} heatmaps", "", protocol, ""]
        for measure, name in (("iou", "IoU"), ("iobb", "IoBB: intersection over the predicted box")):
            lines += [f"## Accuracy at {name} >= T", "", heading, rule]
            for label, by_t in self.accuracy[measure].items():
                count = next(iter(by_t.values()))[1]
                lines.append(f"| {label} | {count} | " + " | ".join(f"{a:.{digits}f}" for a, _ in by_t.values()) + " |")
            overall = self.overall(measure)
            lines.append(f"| all | {len(self.records)} | " + " | ".join(f"{a:.{digits}f}" for a in overall.values())
                         + " |")
            lines.append("")
        if self.boxes_left_out:
            lines.append("Boxes left out (their class is not one of the model's): "
                         + ", ".join(f"{label} {n}" for label, n in self.boxes_left_out.items()) + ".")
            lines.append("")
        return "\n".join(lines)

    def write(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        """``localisation.json`` and ``localisation.md`` in ``output_dir``."""
        output_dir = Path(output_dir)
        return {"localisation.json": write_json(self.to_dict(), output_dir / "localisation.json"),
                "localisation.md": write_text(self.markdown(), output_dir / "localisation.md")}


class LocalisationEvaluation(PerImageHandler):
    """Evaluator handler: localise the class heatmaps of each boxed image against its ground-truth boxes
    (ChestX-ray8 protocol, module docstring); on completion (rank 0, every rank's boxes gathered) write
    ``localisation.json`` and ``localisation.md`` (:class:`LocalisationReport`) to ``output_dir`` and log them to
    MLflow.

    Per item: the image's entry in the source ``datalist`` (found by its absolute path, as
    :class:`~cxr_monai.handlers.DatalistWriter` finds it); an image whose entry has no ``boxes`` is ignored. For each
    class among ``box_labels`` (renamed by ``box_label_aliases``) that is one of ``class_names``, the heatmap of that
    class on the item's ``image`` (the network input: the whole radiograph resized, no crop or padding), resized to
    the radiograph's stored size (read from the file's header) and turned into boxes at each of
    ``heatmap_thresholds`` (pooled). Boxes of other classes are counted, logged and left out. With ``overlays``,
    the first ``overlays`` boxed images (of each rank) also get ``overlays/<stem>_<class>.png``: the heatmap over
    the radiograph with the predicted boxes in magenta and the ground-truth boxes in green.

    No evaluated image with a box: a warning, and nothing is written (the evaluation goes on).

    MLflow (``tracking_uri``): metrics ``eval_loc_<iou|iobb>_<T>_<class>``, ``eval_loc_<iou|iobb>_<T>_all``,
    ``eval_loc_boxes``... and the files (artifacts under ``localisation/``) go into the run of ``log_with`` (the
    :class:`~cxr_monai.apps.classification.ClassificationEvaluation` of the same evaluator, attached before this
    handler, so that its run exists when this one completes); without it, or when it logged nothing, a new run
    ``run_name``.

    Args:
        output_dir: where the files go (the evaluation folder).
        class_names: the classes of the network's output, in order (the datalist's ``label_names``).
        network: the classifier (``CXRDenseNet121``, ``DualBranchDenseNet121`` or DDP around one).
        datalist, datalist_keys, base_dir: the source datalist whose entries carry the boxes, the lists the
            evaluator read, and the folder its paths are relative to (as the evaluator loaded them).
        heatmap_method: ``"cam"`` or ``"gradcam"`` (:class:`~cxr_monai.apps.classification.ClassHeatmaps`).
        heatmap_thresholds: fractions of each heatmap's range at which it is binarised (one or several, boxes
            pooled); default ChestX-ray8's 60 and 180 of 255.
        thresholds: the overlap thresholds T (default ChestX-ray8's 0.1 ... 0.7).
        min_pixels: connected regions of fewer stored pixels are not boxed.
        box_label_aliases: box label -> class name (e.g. ``{"Effusion": "Pleural Effusion"}`` to score a CheXpert
            model on ChestX-ray14's boxes).
        overlays: how many boxed images (per rank) get overlay PNGs; 0 for none.
        variant: the model / input variant named in the markdown and the JSON.
        tracking_uri, experiment_name, run_name, model_path: MLflow (no ``tracking_uri``: files only).
        log_with: the :class:`~cxr_monai.apps.classification.ClassificationEvaluation` whose MLflow run this one
            logs into.

    Example::

        LocalisationEvaluation("runs/dn121/evaluation", CHESTXRAY14_CLASSES, network, "chestxray14.json",
                               base_dir="/data/nih/images", heatmap_method="gradcam",
                               tracking_uri="sqlite:////abs/runs/mlruns.db").attach(evaluator)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        network: torch.nn.Module,
        datalist: str | os.PathLike,
        datalist_keys: Sequence[str] | str = ("test", "test_unhealthy"),
        base_dir: str | os.PathLike | None = None,
        heatmap_method: str = "cam",
        heatmap_thresholds: Sequence[float] | float = CHESTXRAY8_HEATMAP_THRESHOLDS,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        min_pixels: int = 1,
        box_label_aliases: Mapping[str, str] | None = None,
        overlays: int = 8,
        variant: str | None = None,
        tracking_uri: str | None = None,
        experiment_name: str = "classifier",
        run_name: str | None = "evaluate",
        model_path: str | os.PathLike | None = None,
        log_with: Any = None,
        pred_key: str = "pred",
        image_key: str = "image",
        lateral_key: str = "lateral",
        lateral_present_key: str = "lateral_present",
    ) -> None:
        from cxr_monai.data import load_datalist

        self.output_dir = Path(output_dir)
        self.class_names = tuple(class_names)
        if not self.class_names:
            raise ValueError("LocalisationEvaluation: no class names")
        self._class_index = {name: n for n, name in enumerate(self.class_names)}
        self._files = {name: class_file_name(name) for name in self.class_names}
        self.heatmaps = ClassHeatmaps(network, heatmap_method)
        self.heatmap_method = heatmap_method
        levels = [heatmap_thresholds] if isinstance(heatmap_thresholds, (int, float)) else list(heatmap_thresholds)
        if not levels or not all(0.0 <= float(t) <= 1.0 for t in levels):
            raise ValueError("LocalisationEvaluation: heatmap_thresholds must be one or more fractions of the "
                             f"heatmap's range in [0, 1], got {heatmap_thresholds!r}")
        self.heatmap_thresholds = tuple(float(t) for t in levels)
        self.thresholds = tuple(float(t) for t in thresholds)
        if not self.thresholds or not all(0.0 < t <= 1.0 for t in self.thresholds):
            raise ValueError(f"LocalisationEvaluation: thresholds must be overlaps in (0, 1], got {thresholds!r}")
        self.min_pixels = int(min_pixels)
        self.box_label_aliases = dict(box_label_aliases or {})
        self.overlays = int(overlays)
        self.variant = variant
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.model_path = model_path
        self.log_with = log_with
        self.pred_key = pred_key
        self.image_key = image_key
        self.lateral_key = lateral_key
        self.lateral_present_key = lateral_present_key
        if self.heatmaps.dual_branch:  # the branch maps take the study's lateral input from the engine's batch
            self.batch_keys = (lateral_key, lateral_present_key)
        self.datalist = datalist
        keys = [datalist_keys] if isinstance(datalist_keys, str) else list(datalist_keys)
        self.entries: dict[str, dict[str, Any]] = {}
        for entry in load_datalist(datalist, keys, base_dir=base_dir):
            if entry.get("boxes"):
                self.entries[os.path.abspath(entry[image_key])] = entry
        self.rows: list[dict[str, Any]] = []
        self.report: LocalisationReport | None = None
        self.files: dict[str, Path] = {}
        self._drawn = 0
        self._stems: set[str] = set()

    # ------------------------------------------------------------------------------------------------------
    # per image

    def item(self, item: Mapping[str, Any], image_path: str | None) -> None:
        if image_path is None:
            raise ValueError("LocalisationEvaluation: the item carries no file name (MetaTensor meta "
                             "'filename_or_obj'); load images with cxr_monai.io.LoadCXRImaged")
        entry = self.entries.get(os.path.abspath(image_path))
        if entry is None:
            return
        self.localise(item[self.image_key], image_path, entry["boxes"], entry.get("box_labels") or [],
                      item.get(self.lateral_key), item.get(self.lateral_present_key))

    def localise(self, image: Any, image_path: str, boxes: Sequence[Sequence[float]], box_labels: Sequence[str],
                 lateral: Any = None, lateral_present: Any = None) -> dict[str, Any]:
        """Predict the boxes of each class of ``box_labels`` from its heatmap on the network input ``image`` and keep
        them with the ground-truth ``boxes`` (stored pixels of ``image_path``); returns the image's row."""
        from cxr_monai.io import stored_size

        if len(box_labels) != len(boxes):
            raise ValueError(f"{image_path}: {len(box_labels)} box labels for {len(boxes)} boxes")
        labels = [self.box_label_aliases.get(str(label), str(label)) for label in box_labels]
        kept = [(list(map(float, box)), label) for box, label in zip(boxes, labels) if label in self._class_index]
        left_out = [label for label in labels if label not in self._class_index]
        row: dict[str, Any] = {"image": os.path.abspath(image_path), "boxes": [box for box, _ in kept],
                               "labels": [label for _, label in kept], "left_out": left_out, "predicted": {}}
        classes = list(dict.fromkeys(label for _, label in kept))
        if classes:
            width, height = stored_size(image_path)
            maps = self.heatmaps(image, [self._class_index[name] for name in classes], lateral, lateral_present)
            resized = {name: resize_heatmap(heatmap, (height, width)) for name, heatmap in zip(classes, maps["frontal"])}
            row["predicted"] = {name: _boxes_of(resized[name], self.heatmap_thresholds, self.min_pixels)
                                for name in classes}
            if self._drawn < self.overlays:
                self._drawn += 1
                self._write_overlays(image_path, resized, row)
        self.rows.append(row)
        return row

    def _write_overlays(self, image_path: str, heatmaps: Mapping[str, np.ndarray], row: Mapping[str, Any]) -> None:
        from cxr_monai.engines.images import unique_output_stem
        from cxr_monai.io import read_cxr
        from cxr_monai.visualize import heatmap_overlay, save_png

        radiograph, _ = read_cxr(image_path)
        stem = unique_output_stem(image_path, self._stems)
        width = max(1, min(radiograph.shape) // 256)
        for name, heatmap in heatmaps.items():
            truth = [box for box, label in zip(row["boxes"], row["labels"]) if label == name]
            rgb = heatmap_overlay(radiograph, heatmap, vmax=1.0)
            rgb = _draw_boxes(rgb, row["predicted"][name], PREDICTED_COLOUR, width)
            rgb = _draw_boxes(rgb, truth, TRUTH_COLOUR, width)
            rgb = _draw_label(rgb, f"{name} ({self.heatmap_method}): predicted magenta, truth green")
            save_png(rgb, self.output_dir / "overlays" / f"{stem}_{self._files[name]}.png")

    # ------------------------------------------------------------------------------------------------------
    # on completion

    def completed(self, engine: Engine | None = None) -> LocalisationReport | None:
        rows = gather_rows(self.rows)  # a collective: every rank calls it
        if not is_rank0():
            return None
        left_out = Counter(label for row in rows for label in row["left_out"])
        if left_out:
            logger.warning("localisation: %d boxes of classes the model does not have are left out (%s)",
                           sum(left_out.values()), ", ".join(f"{label} {n}" for label, n in sorted(left_out.items())))
        records = [GroundTruthBox(row["image"], label, tuple(box), tuple(tuple(p) for p in row["predicted"][label]))
                   for row in rows for box, label in zip(row["boxes"], row["labels"])]
        if not records:
            logger.warning("localisation: no evaluated image has a box of the model's classes in %s (%d boxed images "
                           "evaluated); nothing written", self.datalist, len(rows))
            return None
        report = LocalisationReport.from_records(records, self.heatmap_method, self.heatmap_thresholds,
                                                 self.thresholds, left_out, self.variant,
                                                 images=sum(bool(row["labels"]) for row in rows))
        self.files = report.write(self.output_dir)
        low, high = min(self.thresholds), max(self.thresholds)
        iobb = report.overall("iobb")
        logger.info("localisation of the %s heatmaps: %d boxes on %d images, accuracy at IoBB >= %g %.3f, >= %g %.3f "
                    "(%s)", self.heatmap_method, len(records), report.images, low, iobb[low], high, iobb[high],
                    self.files["localisation.md"])
        if self.tracking_uri:
            self._log_to_mlflow(report)
        self.report = report
        return report

    def _log_to_mlflow(self, report: LocalisationReport) -> None:
        from cxr_monai.reports import log_report_to_mlflow

        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or str(self.tracking_uri)
        run_id = getattr(self.log_with, "run_id", None)
        run_id = log_report_to_mlflow(report, tracking_uri, self.experiment_name, self.run_name, run_id=run_id,
                                      files=self.files, artifact_path="localisation",
                                      model_path=None if run_id else self.model_path)
        logger.info("localisation logged to MLflow run %s", run_id)
