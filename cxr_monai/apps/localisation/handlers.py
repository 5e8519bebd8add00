"""Handlers that score a detector's boxes on the evaluation images (:mod:`cxr_monai.apps.localisation.report`).

- :class:`LocalisationHistory` (training): after every evaluation (the trainer's iteration-level
  ``ValidationHandler`` runs a :class:`~cxr_monai.engines.DetectionEvaluator` every ``eval_every`` steps), CL at
  each T per class goes into a history, seed 002's Table 2 (CL@s, best within s +- window) is rewritten from it,
  and the model chosen for each report step is kept.
- :class:`DetectorLocalisationEvaluation` (one model): CL at each T per class, overlays of true and predicted boxes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from cxr_monai.apps.classification.localisation import (
    MEASURES,
    PREDICTED_COLOUR,
    TRUTH_COLOUR,
    _draw_boxes,
    _metric_name,
)
from cxr_monai.apps.classification.outputs import _draw_label, gather_rows
from cxr_monai.apps.localisation.report import (
    SEED_CLASSES,
    DetectorLocalisationReport,
    cl_table,
    cl_table_markdown,
    detection_records,
    predicted_boxes,
    select_in_window,
)
from cxr_monai.metrics.localisation import DEFAULT_THRESHOLDS, GroundTruthBox
from cxr_monai.reports import write_json, write_text
from cxr_monai.utils import as_bool, is_rank0

__all__ = ["DetectorLocalisationEvaluation", "LocalisationHistory", "detection_overlay"]

logger = logging.getLogger(__name__)


def detection_overlay(image: Any, predicted: Sequence[Sequence[float]] = (), truth: Sequence[Sequence[float]] = (),
                      text: str = "") -> np.ndarray:
    """The overlay of a detector's boxes that ``evaluate.json`` and ``inference.json`` write: the grey ``image``
    (``(H, W)`` in [0, 1], numpy or torch) as RGB uint8 ``(H, W, 3)``, the ``predicted`` boxes outlined in magenta,
    the ``truth`` boxes in green (``[x_min, y_min, x_max, y_max]`` in the image's pixels, max exclusive; lines
    ``max(1, min(H, W) // 256)`` px wide) and ``text`` in the top-left corner.

    >>> rgb = detection_overlay(np.zeros((64, 64)), predicted=[[8, 8, 24, 24]], truth=[[30, 30, 40, 40]])
    >>> rgb.shape, rgb[8, 10].tolist(), rgb[30, 35].tolist(), rgb[0, 63].tolist()
    ((64, 64, 3), [255, 64, 255], [64, 255, 64], [0, 0, 0])
    """
    from cxr_monai.visualize import to_uint8

    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu()
    grey = to_uint8(image)
    if grey.ndim == 3 and grey.shape[0] == 1:
        grey = grey[0]
    rgb = np.repeat(grey[..., None], 3, axis=2)
    width = max(1, min(grey.shape) // 256)
    rgb = _draw_boxes(rgb, list(predicted), PREDICTED_COLOUR, width)
    rgb = _draw_boxes(rgb, list(truth), TRUTH_COLOUR, width)
    return _draw_label(rgb, text) if text else rgb


class _DetectionRows:
    """What both handlers collect from a :class:`~cxr_monai.engines.DetectionEvaluator`: per image its path, its
    ground-truth target and its detections (CPU, as lists), gathered over the ranks."""

    def __init__(self, class_names: Sequence[str], thresholds: Sequence[float], top_k: int | None,
                 score_threshold: float) -> None:
        self.class_names = list(class_names or SEED_CLASSES)
        self.thresholds = tuple(float(t) for t in thresholds)
        if not self.thresholds or not all(0.0 < t <= 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be overlaps in (0, 1], got {thresholds!r}")
        self.top_k = None if top_k is None or int(top_k) <= 0 else int(top_k)
        self.score_threshold = float(score_threshold)
        self.rows: list[dict[str, Any]] = []

    def reset(self, engine: Engine | None = None) -> None:
        self.rows = []

    def collect(self, engine: Engine) -> None:
        output = engine.state.output
        targets = output.get("label")
        if targets is None:
            raise ValueError("localisation: the evaluator's batches carry no ground truth ('targets'); evaluate on a "
                             "datalist list with boxes")
        for path, target, found in zip(output["image_path"], targets, output["pred"]):
            self.rows.append({"image": str(path),
                              "target": {key: value.tolist() for key, value in target.items()},
                              "pred": {key: value.tolist() for key, value in found.items()}})

    def records(self) -> tuple[list[GroundTruthBox], int]:
        """The ground-truth boxes with their predicted boxes, and how many images had a box (every rank's rows;
        a collective under torch.distributed)."""
        rows = gather_rows(self.rows)
        records = [record for row in rows
                   for record in detection_records(row["image"], row["target"], row["pred"], self.class_names,
                                                   self.top_k, self.score_threshold)]
        return records, sum(bool(row["target"]["labels"]) for row in rows)

    def report(self, variant: str | None = None) -> DetectorLocalisationReport | None:
        records, images = self.records()
        if not is_rank0():
            return None
        if not records:
            logger.warning("localisation: no evaluated image has a box of the classes %s; nothing scored",
                           ", ".join(self.class_names))
            return None
        return DetectorLocalisationReport.from_detections(records, self.top_k, self.score_threshold,
                                                          self.thresholds, variant, images)


class LocalisationHistory(_DetectionRows):
    """Trainer handler: CL of every evaluation, into a history and seed 002's Table 2 (module docstring of
    :mod:`cxr_monai.apps.localisation.report` for the rules).

    Attached to the trainer, it listens to ``evaluator`` (run by the trainer's ``ValidationHandler`` every
    ``eval_every`` iterations): the evaluation at trainer step s adds ``{"step": s, "images", "boxes",
    "accuracy": {"iou"|"iobb": {class: {"T": CL}}}, "mean": {...: {"T": Total}}, "all": {...}}`` to the history.
    After each evaluation, on rank 0, in ``output_dir``:

    - ``history.json``: the settings and every evaluation so far;
    - ``cl_table.json`` / ``cl_table.md``: :func:`~cxr_monai.apps.localisation.cl_table` at ``measure`` and
      ``threshold`` (default IoU 0.1: CL^0.1) for ``report_steps`` and ``window``, with the model at s itself;
    - ``model_dir/model_cl_<s>.pt`` (with ``network``): the weights of the model currently chosen for report step
      s, rewritten when a better one in the window turns up (loads like ``models/model.pt``).

    For MLflow: the evaluation's values go into the trainer's output at that iteration (``val_loc_<measure>_<T>_
    <class>`` and ``..._mean``, the Total), so the trainer's ``MLFlowTracker`` (its ``output_transform`` passing
    them) logs them at step s; the table goes into ``trainer.state.metrics`` (``cl_<s>_<class>``, ``cl_<s>_mean``,
    ``cl_<s>_step``), which the tracker logs at each epoch end.

    With ``resume`` a restarted training reads ``history.json`` back, keeping the evaluations up to the step it
    resumes from (later ones are redone).

    Args:
        evaluator: the :class:`~cxr_monai.engines.DetectionEvaluator` the trainer's ``ValidationHandler`` runs.
        output_dir: where the files go.
        class_names: the detector's classes, in label order (default seed 002's six).
        report_steps, window: the table's columns and the +- window (seed: 5000, 10000, 15000 and 500).
        thresholds: the overlap thresholds T of the history (default ChestX-ray8's 0.1 ... 0.7).
        top_k, score_threshold: which predicted boxes count.
        measure, threshold: the table's measure ("iou" or "iobb") and T, also the selection's.
        network, model_dir: the trained network, and where the chosen models go (None: not saved).
        resume: continue the history of an earlier run in ``output_dir``.
        variant: a name for the table's title (e.g. "Ori+Pix2Pix-N").
    """

    def __init__(
        self,
        evaluator: Engine,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] = SEED_CLASSES,
        report_steps: Sequence[int] = (5000, 10000, 15000),
        window: int = 500,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        top_k: int | None = 1,
        score_threshold: float = 0.05,
        measure: str = "iou",
        threshold: float = 0.1,
        network: torch.nn.Module | None = None,
        model_dir: str | os.PathLike | None = None,
        resume: bool | str = True,
        variant: str | None = None,
    ) -> None:
        super().__init__(class_names, thresholds, top_k, score_threshold)
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
        if float(threshold) not in self.thresholds:
            raise ValueError(f"the table's threshold {threshold} is not one of the thresholds {self.thresholds}")
        self.evaluator = evaluator
        self.output_dir = Path(output_dir)
        self.report_steps = sorted(int(s) for s in report_steps)
        self.window = int(window)
        if self.window < 0 or not self.report_steps:
            raise ValueError(f"report_steps must be steps and window >= 0, got {report_steps} and {window}")
        self.measure = measure
        self.threshold = float(threshold)
        self.network = network
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.resume = as_bool(resume, "resume")
        self.variant = variant
        self.history: list[dict[str, Any]] = []
        self.models: dict[str, int] = {}  # report step -> the step of the weights in model_cl_<s>.pt
        self.trainer: Engine | None = None

    @property
    def history_path(self) -> Path:
        return self.output_dir / "history.json"

    def attach(self, engine: Engine) -> None:
        self.trainer = engine
        engine.add_event_handler(Events.STARTED, self.started)
        self.evaluator.add_event_handler(Events.STARTED, self.reset)
        self.evaluator.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        self.evaluator.add_event_handler(Events.COMPLETED, self.evaluated)

    def started(self, engine: Engine) -> None:
        self.history, self.models = [], {}
        if self.resume and self.history_path.is_file():
            stored = json.loads(self.history_path.read_text())
            self.history = [e for e in stored.get("evaluations", []) if int(e["step"]) <= engine.state.iteration]
            self.models = {s: int(step) for s, step in stored.get("models", {}).items()
                           if int(step) <= engine.state.iteration}
            if self.history:
                logger.info("localisation history: %d evaluations read back from %s (up to step %d)",
                            len(self.history), self.history_path, self.history[-1]["step"])

    def evaluated(self, evaluator: Engine) -> None:
        step = int(self.trainer.state.iteration) if self.trainer is not None else int(evaluator.state.iteration)
        report = self.report(self.variant)
        if report is None:
            return
        key = f"{self.threshold:g}"
        entry = {"step": step, "images": report.images,
                 "boxes": {name: next(iter(by_t.values()))[1] for name, by_t in report.accuracy["iou"].items()},
                 "accuracy": {m: {name: {f"{t:g}": a for t, (a, _) in by_t.items()}
                                  for name, by_t in report.accuracy[m].items()} for m in MEASURES},
                 "mean": {m: {f"{t:g}": a for t, a in report.class_mean(m).items()} for m in MEASURES},
                 "all": {m: {f"{t:g}": a for t, a in report.overall(m).items()} for m in MEASURES}}
        self.history = [e for e in self.history if int(e["step"]) != step] + [entry]
        self.history.sort(key=lambda e: int(e["step"]))
        self._keep_chosen_models(step)
        table = cl_table(self.history, self.class_names, self.report_steps, self.window, self.measure, self.threshold)
        for s, model_step in self.models.items():
            table["columns"][s]["model_file"] = str(self._model_path(int(s)))
            table["columns"][s]["model_step"] = model_step
        self._write(table)
        self._publish(report, table)
        logger.info("localisation at step %d: CL %s %s Total %.3f (%d boxes on %d images)", step, self.measure, key,
                    entry["mean"][self.measure].get(key, float("nan")), len(report.records), report.images)

    def _model_path(self, report_step: int) -> Path:
        return self.model_dir / f"model_cl_{report_step}.pt"

    def _keep_chosen_models(self, step: int) -> None:
        if self.network is None or self.model_dir is None:
            return
        from cxr_monai.handlers.checkpoint import atomic_torch_save

        key = f"{self.threshold:g}"
        totals = {int(e["step"]): float(e["mean"][self.measure].get(key, float("nan"))) for e in self.history}
        for report_step in self.report_steps:
            if select_in_window(totals, report_step, self.window) == step:
                network = getattr(self.network, "module", self.network)  # DDP
                atomic_torch_save(network.state_dict(), self._model_path(report_step))
                self.models[str(report_step)] = step

    def _write(self, table: Mapping[str, Any]) -> None:
        settings = {"class_names": self.class_names, "thresholds": list(self.thresholds),
                    "predicted_boxes": {"top_k": self.top_k, "score_threshold": self.score_threshold},
                    "report_steps": self.report_steps, "window": self.window, "measure": self.measure,
                    "threshold": self.threshold, "variant": self.variant}
        write_json({**settings, "models": self.models, "evaluations": self.history}, self.history_path)
        write_json({**table, "variant": self.variant, "predicted_boxes": settings["predicted_boxes"]},
                   self.output_dir / "cl_table.json")
        write_text(cl_table_markdown(table, self.variant), self.output_dir / "cl_table.md")

    def _publish(self, report: DetectorLocalisationReport, table: Mapping[str, Any]) -> None:
        if self.trainer is None:
            return
        values = {f"val_{name}": value for name, value in report.metrics().items()
                  if name.startswith(("loc_iou_", "loc_iobb_"))}
        if isinstance(self.trainer.state.output, dict):
            self.trainer.state.output.update(values)
        for step, column in table["columns"].items():
            best = column["best"] or {}
            for name, value in best.items():
                if value is not None:
                    label = "mean" if name == "Total" else _metric_name(name)
                    self.trainer.state.metrics[f"cl_{step}_{label}"] = float(value)
            if column["selected_step"] is not None:
                self.trainer.state.metrics[f"cl_{step}_step"] = float(column["selected_step"])


class DetectorLocalisationEvaluation(_DetectionRows):
    """Evaluator handler: CL of one detector on the evaluation images at each T, IoU and IoBB, per class, with
    seed 002's Total (:class:`~cxr_monai.apps.localisation.DetectorLocalisationReport`), and overlays.

    On completion (rank 0) ``output_dir`` gets ``localisation.json`` and ``localisation.md`` and, for the first
    ``overlays`` images with a box, ``overlays/<stem>.png``: the network input with the ground-truth boxes in green
    and the predicted boxes that count (of the classes in the image's truth) in magenta, labelled. With
    ``tracking_uri`` the metrics (``eval_loc_<measure>_<T>_<class>``, ``..._mean``, ``..._all``) and files go to
    a new MLflow run ``run_name``, tagged with ``model_path`` and linked to the training run that wrote it
    (:func:`~cxr_monai.reports.log_report_to_mlflow`).

    Args:
        output_dir: where the files go.
        class_names, thresholds, top_k, score_threshold: as :class:`LocalisationHistory`.
        overlays: how many boxed images get an overlay (0: none).
        variant: a name for the report (e.g. "Ori+Pix2Pix-N, step 15000").
        tracking_uri, experiment_name, run_name, model_path: MLflow (no ``tracking_uri``: files only).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] = SEED_CLASSES,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        top_k: int | None = 1,
        score_threshold: float = 0.05,
        overlays: int = 4,
        variant: str | None = None,
        tracking_uri: str | None = None,
        experiment_name: str = "localisation",
        run_name: str | None = "evaluate",
        model_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(class_names, thresholds, top_k, score_threshold)
        self.output_dir = Path(output_dir)
        self.overlays = int(overlays)
        self.variant = variant
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.model_path = model_path
        self.report_: DetectorLocalisationReport | None = None
        self.files: dict[str, Path] = {}
        self._drawn = 0
        self._stems: set[str] = set()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.draw)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def draw(self, engine: Engine) -> None:
        output = engine.state.output
        images = output.get("image")
        if self._drawn >= self.overlays or images is None or output.get("label") is None:
            return
        from cxr_monai.engines.images import unique_output_stem
        from cxr_monai.visualize import save_png

        for image, path, target, found in zip(images, output["image_path"], output["label"], output["pred"]):
            labels = [int(v) for v in target["labels"].tolist()]
            if self._drawn >= self.overlays or not labels:
                continue
            self._drawn += 1
            predicted = [box for label in sorted(set(labels))
                         for box in predicted_boxes(found, label, self.top_k, self.score_threshold)]
            names = ", ".join(dict.fromkeys(self.class_names[label - 1] for label in labels))
            rgb = detection_overlay(image[0], predicted, target["boxes"].tolist(),
                                    f"{names}: predicted magenta, truth green")
            save_png(rgb, self.output_dir / "overlays" / f"{unique_output_stem(path, self._stems)}.png")

    def completed(self, engine: Engine | None = None) -> DetectorLocalisationReport | None:
        report = self.report(self.variant)
        if report is None:
            return None
        self.files = report.write(self.output_dir)
        key = f"{min(self.thresholds):g}"
        logger.info("localisation: %d boxes on %d images, CL at IoU %s Total %.3f (%s)", len(report.records),
                    report.images, key, report.class_mean("iou")[min(self.thresholds)], self.files["localisation.md"])
        if self.tracking_uri:
            from cxr_monai.reports import log_report_to_mlflow

            run_id = log_report_to_mlflow(report, str(self.tracking_uri), self.experiment_name, self.run_name,
                                          files=self.files, artifact_path="localisation", model_path=self.model_path)
            logger.info("localisation logged to MLflow run %s", run_id)
        self.report_ = report
        return report
