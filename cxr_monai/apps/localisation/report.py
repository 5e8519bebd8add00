"""Correct localisation (CL) of a detector's boxes, seed 002's Table 2 protocol on ChestX-ray8's measure.

**Which predicted boxes count.** For a ground-truth box of class c in image i, the predicted boxes are the
detector's boxes of class c in image i whose score is at least ``score_threshold``, the ``top_k`` highest-scoring
ones (``top_k=None``: all). The box is *correctly localised at T* when one of them overlaps it by IoU (or IoBB)
>= T (:func:`~cxr_monai.metrics.localisation_accuracy`); CL of a class at T is the share of its ground-truth
boxes correctly localised. The default, the single best box of the class (``top_k=1``) above torchvision's
``box_score_thresh`` 0.05, charges a detector for its confidence ranking; more boxes per class can only raise CL.

**Total** is the mean of the class values (:func:`class_mean`), which reproduces seed 002's Total row for the
three Ori columns and Ori+Pix2Pix CL@5k (Ori, CL@5k: (0 + 0.636 + 0.173 + 0.378 + 0.333 + 0.031) / 6 = 0.259, as
printed); the other five printed Totals are not the mean of their rows, and the paper does not say how they were
computed. The share of all boxes (:meth:`LocalisationReport.overall`) is in the JSON too, as ``all``.

**CL@s (the window rule).** CL at training step s is the value of the best evaluated model within
``[s - window, s + window]`` steps (seed: +-500 around 5k, 10k, 15k), "best" by the Total at the table's measure
and T (:func:`select_in_window`; the model's per-class values are reported, so a row is one model). The seed selects
on its 247 *test* images, so CL@s is optimistic: a choice among ~2 * window / eval_every models made on the data it
is reported on. The tables therefore give, beside it, CL of the model at step s itself (no selection).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxr_monai.apps.classification.localisation import MEASURES, LocalisationReport
from cxr_monai.metrics.localisation import DEFAULT_THRESHOLDS, GroundTruthBox
from cxr_monai.reports import write_json, write_text

__all__ = [
    "SEED_CLASSES",
    "DetectorLocalisationReport",
    "cl_table",
    "cl_table_markdown",
    "class_mean",
    "detection_records",
    "predicted_boxes",
    "predicted_detections",
    "select_in_window",
]

#: Seed 002's six classes (ChestX-ray14's boxed findings with enough boxes), the default ``class_names``.
SEED_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Pneumonia", "Pneumothorax")


def _array(value: Any, shape: tuple[int, ...] = (-1,)) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy() if value.is_floating_point() else value.cpu().numpy()
    return np.asarray(value).reshape(shape)


def predicted_detections(detection: Mapping[str, Any], label: int, top_k: int | None = 1,
                         score_threshold: float = 0.05) -> tuple[tuple[tuple[float, float, float, float], float], ...]:
    """The ``(box, score)`` pairs of class index ``label`` in one image's ``{"boxes", "labels", "scores"}`` that
    count (module docstring), highest score first: what :func:`predicted_boxes` scores and inference writes.

    >>> found = {"boxes": [[0, 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6]], "labels": [1, 1, 2], "scores": [0.3, 0.9, 0.8]}
    >>> predicted_detections(found, 1, top_k=2)
    (((1.0, 1.0, 5.0, 5.0), 0.9), ((0.0, 0.0, 4.0, 4.0), 0.3))
    """
    boxes = _array(detection["boxes"], (-1, 4))
    labels = _array(detection["labels"])
    scores = _array(detection["scores"])
    chosen = np.flatnonzero((labels == label) & (scores >= score_threshold))
    chosen = chosen[np.argsort(-scores[chosen], kind="stable")]
    if top_k is not None and int(top_k) > 0:
        chosen = chosen[: int(top_k)]
    return tuple((tuple(float(v) for v in boxes[i]), round(float(scores[i]), 6)) for i in chosen)


def predicted_boxes(detection: Mapping[str, Any], label: int, top_k: int | None = 1,
                    score_threshold: float = 0.05) -> tuple[tuple[float, float, float, float], ...]:
    """The boxes of class index ``label`` in one image's ``{"boxes", "labels", "scores"}`` that count (module
    docstring), highest score first (:func:`predicted_detections` without the scores).

    >>> found = {"boxes": [[0, 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6]], "labels": [1, 1, 2], "scores": [0.3, 0.9, 0.8]}
    >>> predicted_boxes(found, 1, top_k=1)
    ((1.0, 1.0, 5.0, 5.0),)
    >>> len(predicted_boxes(found, 1, top_k=None, score_threshold=0.5))
    1
    """
    return tuple(box for box, _ in predicted_detections(detection, label, top_k, score_threshold))


def detection_records(image: str, target: Mapping[str, Any], detection: Mapping[str, Any],
                      class_names: Sequence[str], top_k: int | None = 1,
                      score_threshold: float = 0.05) -> list[GroundTruthBox]:
    """One :class:`~cxr_monai.metrics.GroundTruthBox` per ground-truth box of ``target`` (torchvision's
    ``{"boxes", "labels"}``, labels 1..n for ``class_names``), each with the predicted boxes of its class that
    count (:func:`predicted_boxes`). Both in the same pixel grid (the network input).

    >>> truth = {"boxes": [[0, 0, 10, 10]], "labels": [2]}
    >>> found = {"boxes": [[0, 0, 10, 5], [50, 50, 60, 60]], "labels": [2, 1], "scores": [0.9, 0.99]}
    >>> record, = detection_records("a.png", truth, found, ["Effusion", "Pneumothorax"])
    >>> record.label, record.predicted
    ('Pneumothorax', ((0.0, 0.0, 10.0, 5.0),))
    """
    boxes = _array(target["boxes"], (-1, 4))
    labels = _array(target["labels"]).astype(int)
    records = []
    for box, label in zip(boxes, labels):
        if not 1 <= label <= len(class_names):
            raise ValueError(f"{image}: target label {label} is not one of the {len(class_names)} classes (1..n)")
        records.append(GroundTruthBox(image, class_names[label - 1], tuple(float(v) for v in box),
                                      predicted_boxes(detection, int(label), top_k, score_threshold)))
    return records


def class_mean(accuracy: Mapping[str, Mapping[float, tuple[float, int]]], class_names: Sequence[str] | None = None
               ) -> dict[float, float]:
    """Seed 002's Total: at each T, the mean over classes of their accuracy (only classes with a box).

    >>> class_mean({"A": {0.1: (0.5, 4)}, "B": {0.1: (0.0, 1)}})
    {0.1: 0.25}
    """
    names = [name for name in (class_names or accuracy) if name in accuracy]
    if not names:
        return {}
    thresholds = list(accuracy[names[0]])
    return {t: float(np.mean([accuracy[name][t][0] for name in names])) for t in thresholds}


def select_in_window(values: Mapping[int, float], step: int, window: int) -> int | None:
    """The evaluated step in ``[step - window, step + window]`` with the highest value (ties: the step nearest
    ``step``, then the earlier); ``None`` when no step of ``values`` lies in the window. NaN never wins.

    >>> select_in_window({400: 0.2, 500: 0.3, 600: 0.3, 1200: 0.9}, 500, 100)
    500
    >>> select_in_window({400: 0.2}, 1000, 100) is None
    True
    """
    candidates = [(s, v) for s, v in values.items() if abs(int(s) - step) <= window and not math.isnan(v)]
    if not candidates:
        return None
    return min(candidates, key=lambda item: (-item[1], abs(item[0] - step), item[0]))[0]


def _step_label(step: int) -> str:
    return f"{step // 1000}k" if step >= 1000 and step % 1000 == 0 else str(step)


def cl_table(history: Sequence[Mapping[str, Any]], class_names: Sequence[str], report_steps: Sequence[int],
             window: int, measure: str = "iou", threshold: float = 0.1) -> dict[str, Any]:
    """Seed 002's Table 2 columns from an evaluation ``history`` (entries ``{"step", "accuracy": {measure:
    {class: {"T": value}}}, "mean": {measure: {"T": value}}}``, as :class:`LocalisationHistory` writes them).

    Per report step s: ``selected_step`` (:func:`select_in_window` on the Total), ``best`` (each class and
    ``Total`` of that model), ``at_step`` (the model evaluated at s itself, or ``None``), ``evaluations`` in
    the window, and ``complete`` (the history reaches ``s + window``).
    """
    key = f"{float(threshold):g}"
    by_step = {int(entry["step"]): entry for entry in history}
    totals = {step: float(entry["mean"][measure].get(key, float("nan"))) for step, entry in by_step.items()}
    last = max(by_step, default=0)

    def row(entry: Mapping[str, Any] | None) -> dict[str, float | None] | None:
        if entry is None:
            return None
        values: dict[str, float | None] = {name: entry["accuracy"][measure].get(name, {}).get(key)
                                           for name in class_names}
        values["Total"] = entry["mean"][measure].get(key)
        return values

    columns = {}
    for step in (int(s) for s in report_steps):
        selected = select_in_window(totals, step, int(window))
        columns[str(step)] = {
            "label": f"CL@{_step_label(step)}",
            "window": [step - int(window), step + int(window)],
            "evaluations": sum(1 for s in by_step if abs(s - step) <= int(window)),
            "complete": last >= step + int(window),
            "selected_step": selected,
            "best": row(by_step.get(selected) if selected is not None else None),
            "at_step": row(by_step.get(step)),
        }
    return {"measure": measure, "threshold": float(threshold), "window": int(window),
            "report_steps": [int(s) for s in report_steps], "class_names": list(class_names),
            "total": "mean over the classes (seed 002's Total row)",
            "selection": "per report step s, the evaluated model with the best Total in [s - window, s + window], "
                         "chosen on the evaluation images themselves (optimistic)",
            "columns": columns}


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def cl_table_markdown(table: Mapping[str, Any], title: str | None = None, digits: int = 3) -> str:
    """Seed 002's Table 2 layout (rows: the classes and Total; columns: CL@5k, CL@10k, CL@15k) for the window rule,
    then the same for the models at the report steps themselves, and which step each column chose."""
    columns = table["columns"]
    names = [*table["class_names"], "Total"]
    measure = "IoU" if table["measure"] == "iou" else "IoBB"
    t = f"{table['threshold']:g}"

    def block(kind: str, heading: str) -> list[str]:
        labels = [column["label"] for column in columns.values()]
        lines = [heading, "", "| Pathology | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
        for name in names:
            cells = [_cell((column[kind] or {}).get(name), digits) for column in columns.values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return [*lines, ""]

    lines = [f"# {title or 'Disease localisation'}: CL at {measure} {t}", ""]
    lines += block("best", f"## CL@s: best model within s +- {table['window']} steps (seed 002's Table 2 rule)")
    chosen = ", ".join(
        f"{column['label']}: step {column['selected_step'] if column['selected_step'] is not None else '-'} "
        f"of {column['evaluations']} evaluated in [{column['window'][0]}, {column['window'][1]}]"
        + ("" if column["complete"] else " (window not yet complete)") for column in columns.values())
    lines += [(f"Chosen models: {chosen}. The choice is made on the evaluation images themselves, as in the seed, "
               "so these values are optimistic; the table below has no selection."), ""]
    lines += block("at_step", "## CL of the model at step s itself (no selection)")
    lines += [(f"Total: the mean of the class rows (seed 002). A box counts as localised when one of the predicted "
               f"boxes of its class overlaps it by {measure} >= {t}; '-': no evaluation in the window or at s, or no "
               "box of the class among the evaluation images."), ""]
    return "\n".join(lines)


class DetectorLocalisationReport(LocalisationReport):
    """:class:`~cxr_monai.apps.classification.LocalisationReport` of a detector's boxes: the same accuracies
    (IoU and IoBB at each T, per class, ``metrics()``, ``to_dict()``), with which predicted boxes counted instead
    of heatmap thresholds, seed 002's Total (:func:`class_mean`) beside the pooled accuracy, and a markdown of
    its own. Build with :meth:`from_detections`.
    """

    top_k: int | None = 1
    score_threshold: float = 0.05

    @classmethod
    def from_detections(cls, records: Sequence[GroundTruthBox], top_k: int | None = 1, score_threshold: float = 0.05,
                        thresholds: Sequence[float] = DEFAULT_THRESHOLDS, variant: str | None = None,
                        images: int | None = None) -> DetectorLocalisationReport:
        report = cls.from_records(records, "detector", (), thresholds, variant=variant, images=images)
        report.top_k = None if top_k is None or int(top_k) <= 0 else int(top_k)
        report.score_threshold = float(score_threshold)
        return report

    def class_mean(self, measure: str) -> dict[float, float]:
        """Seed 002's Total at each T (the mean of the class accuracies)."""
        return class_mean(self.accuracy[measure])

    def metrics(self) -> dict[str, float]:
        """LocalisationReport's ``loc_...`` values and ``loc_<measure>_<T>_mean`` (the Total)."""
        values = super().metrics()
        for measure in MEASURES:
            values.update({f"loc_{measure}_{t:g}_mean": value for t, value in self.class_mean(measure).items()})
        return values

    def _boxes_that_count(self) -> str:
        k = "every box" if self.top_k is None else ("the highest-scoring box" if self.top_k == 1
                                                    else f"the {self.top_k} highest-scoring boxes")
        return f"{k} of the class per image with score >= {self.score_threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        document = super().to_dict()
        for key in ("heatmap_method", "heatmap_thresholds"):
            document.pop(key)
        document["protocol"] = "ChestX-ray8 (Wang et al. 2017) correct localisation of a detector's boxes"
        document["predicted_boxes"] = {"top_k": self.top_k, "score_threshold": self.score_threshold,
                                       "rule": self._boxes_that_count()}
        for measure in MEASURES:
            document[measure]["mean"] = {"accuracy": {f"{t:g}": a for t, a in self.class_mean(measure).items()}}
        return document

    def markdown(self, digits: int = 3) -> str:
        """One table per measure: a row per class (box count, CL at each T), Total (class mean) and all boxes."""
        heading = "| Pathology | boxes | " + " | ".join(f"T = {t:g}" for t in self.thresholds) + " |"
        rule = "|---|---:|" + "---:|" * len(self.thresholds)
        title = f"{self.variant}: " if self.variant else ""
        lines = [f"# {title}disease localisation", "",
                 (f"{len(self.records)} ground-truth boxes on {self.images} images. Predicted boxes that count: "
                  f"{self._boxes_that_count()}. A box is correctly localised at T when one of them overlaps it by "
                  "at least T (ChestX-ray8); Total is the mean of the class rows (seed 002), 'all boxes' pools them."),
                 ""]
        for measure, name in (("iou", "IoU"), ("iobb", "IoBB: intersection over the predicted box")):
            lines += [f"## CL at {name} >= T", "", heading, rule]
            for label, by_t in self.accuracy[measure].items():
                count = next(iter(by_t.values()))[1]
                lines.append(f"| {label} | {count} | " + " | ".join(f"{a:.{digits}f}" for a, _ in by_t.values())
                             + " |")
            mean = self.class_mean(measure)
            lines.append("| Total | | " + " | ".join(f"{a:.{digits}f}" for a in mean.values()) + " |")
            overall = self.overall(measure)
            lines.append(f"| all boxes | {len(self.records)} | "
                         + " | ".join(f"{a:.{digits}f}" for a in overall.values()) + " |")
            lines.append("")
        return "\n".join(lines)

    def write(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        """``localisation.json`` and ``localisation.md`` in ``output_dir``."""
        output_dir = Path(output_dir)
        return {"localisation.json": write_json(self.to_dict(), output_dir / "localisation.json"),
                "localisation.md": write_text(self.markdown(), output_dir / "localisation.md")}
