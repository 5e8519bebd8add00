"""Multi-label classifier evaluation: per-class AUROC and the macro mean with bootstrap CIs (images resampled), the
Table 1 row of one model / input variant, ROC curves, the report to MLflow; and the merge of several variants'
reports into one Table 1.

Labels follow the datalist contract: 1 present, 0 absent, -1 uncertain, NaN (``null``) not mentioned. Uncertain and
unmentioned labels are left out of their class's AUROC (:func:`~cxr_monai.metrics.multilabel_auroc`); an image
without any known (0/1) label is counted (``images_without_known_label``) and left out of every AUROC and of the
bootstrap resampling, so it does not narrow the intervals.

Example::

    from cxr_monai.apps.classification import ClassificationEvaluation, merge_auroc_tables

    ClassificationEvaluation("runs/dn121_grey/evaluation", class_names, "DN-121 (grey)",
                             tracking_uri="sqlite:////abs/runs/mlruns.db").attach(evaluator)
    # after each variant's evaluation: one Table 1 over all of them
    merge_auroc_tables(["runs/dn121_grey/evaluation/report.json", "runs/dn121_3ch/evaluation/report.json"],
                       "runs/table1.md")
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine

from cxr_monai.apps.classification.outputs import (
    gather_rows,
    labels_of,
    probabilities_of,
)
from cxr_monai.handlers.per_image import PerImageHandler
from cxr_monai.metrics.bootstrap import BootstrapInterval
from cxr_monai.metrics.multilabel import (
    MultiLabelAuroc,
    auroc_table,
    multilabel_auroc,
    plot_roc_curves,
)
from cxr_monai.reports import log_report_to_mlflow, write_csv, write_json, write_text
from cxr_monai.utils import as_bool, is_rank0

__all__ = ["ClassificationEvaluation", "ClassificationReport", "auroc_from_dict", "merge_auroc_tables"]

logger = logging.getLogger(__name__)

_LABEL_NOTE = ("Uncertain (-1) and unmentioned labels are left out of their class's AUROC; images without any known "
               "label are left out of every AUROC. CIs: percentile bootstrap, images resampled.")


def _known(labels: np.ndarray) -> np.ndarray:
    return np.isfinite(labels) & (labels >= 0)


def _label_cell(value: float) -> Any:
    return int(value) if np.isfinite(value) else ""


def auroc_from_dict(document: Mapping[str, Any]) -> MultiLabelAuroc:
    """The :class:`~cxr_monai.metrics.MultiLabelAuroc` of a ``report.json`` (its ``classes`` and ``macro``, as
    ``MultiLabelAuroc.to_dict()`` wrote them; JSON ``null`` bounds back to NaN)."""

    def interval(value: Mapping[str, Any] | None) -> BootstrapInterval | None:
        if value is None:
            return None
        return BootstrapInterval(**{key: (math.nan if item is None else item) for key, item in value.items()})

    classes = document["classes"]
    return MultiLabelAuroc(tuple(c["name"] for c in classes), tuple(interval(c["auroc"]) for c in classes),
                           interval(document.get("macro")), tuple(int(c["positives"]) for c in classes),
                           tuple(int(c["negatives"]) for c in classes))


@dataclass
class ClassificationReport:
    """One variant's per-image probabilities and labels and their AUROCs; ``metrics()`` for MLflow (``auroc_<class>``,
    ``auroc_macro``, image counts), ``write()`` for the files."""

    variant: str
    class_names: tuple[str, ...]
    images: list[str]
    probabilities: np.ndarray
    labels: np.ndarray
    auroc: MultiLabelAuroc | None = None
    abbreviations: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, images: Sequence[str], probabilities: np.ndarray, labels: np.ndarray,
                    class_names: Sequence[str], variant: str, abbreviations: Mapping[str, str] | None = None,
                    n_resamples: int = 2000, seed: int = 0) -> ClassificationReport:
        """The report of ``(N, C)`` probabilities and labels; AUROCs over the images with a known label."""
        probabilities = np.asarray(probabilities, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.float64)
        if not len(images):
            raise ValueError("no image was evaluated")
        if probabilities.shape != (len(images), len(class_names)) or labels.shape != probabilities.shape:
            raise ValueError(f"probabilities {probabilities.shape} and labels {labels.shape} must both be "
                             f"({len(images)}, {len(class_names)})")
        report = cls(variant, tuple(class_names), list(images), probabilities, labels,
                     abbreviations=dict(abbreviations or {}))
        scored = report.scored
        if scored.any():
            report.auroc = multilabel_auroc(labels[scored], probabilities[scored], class_names,
                                            n_resamples=n_resamples, seed=seed)
        return report

    @property
    def scored(self) -> np.ndarray:
        """Which images have at least one known (0/1) label."""
        return _known(self.labels).any(axis=1)

    @property
    def images_without_known_label(self) -> int:
        return int((~self.scored).sum())

    def counts(self) -> dict[str, int]:
        return {"images": len(self.images), "images_scored": int(self.scored.sum()),
                "images_without_known_label": self.images_without_known_label}

    def metrics(self) -> dict[str, float]:
        values = {key: float(value) for key, value in self.counts().items()}
        if self.auroc is not None:
            values.update(self.auroc.metrics())
        return values

    def rows(self) -> list[dict[str, Any]]:
        """``per_image.csv``: the image, each class's probability and label (empty: not mentioned), known labels."""
        rows = []
        for image, p, y in zip(self.images, self.probabilities, self.labels):
            row: dict[str, Any] = {"image": image}
            for name, probability, label in zip(self.class_names, p, y):
                row[f"{name}_probability"] = float(probability)
                row[f"{name}_label"] = _label_cell(label)
            row["known_labels"] = int(_known(y).sum())
            rows.append(row)
        return rows

    @property
    def fields(self) -> list[str]:
        return ["image", *(f"{name}_{what}" for name in self.class_names for what in ("probability", "label")),
                "known_labels"]

    def markdown(self) -> str:
        counts = self.counts()
        note = (f"{counts['images']} images; {counts['images_without_known_label']} without any known label, left out "
                f"of the AUROCs. {_LABEL_NOTE}\n")
        if self.auroc is None:
            return f"{self.variant}: no image with a known label, no AUROC.\n\n{note}"
        return auroc_table({self.variant: self.auroc}, self.abbreviations) + "\n" + note

    def to_dict(self) -> dict[str, Any]:
        """``report.json``: the variant, the class names and abbreviations, the counts and
        ``MultiLabelAuroc.to_dict()`` (``classes``, ``macro``; every AUROC ``null`` without a labelled image)."""
        auroc = self.auroc.to_dict() if self.auroc is not None else {
            "classes": [{"name": name, "positives": 0, "negatives": 0, "auroc": None} for name in self.class_names],
            "macro": None}
        return {"variant": self.variant, "class_names": list(self.class_names), "abbreviations": self.abbreviations,
                **self.counts(), **auroc}

    def write(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        """``report.json``, ``per_image.csv``, ``table.md`` and, with a scored class, ``roc.png`` in ``output_dir``."""
        output_dir = Path(output_dir)
        paths = {"report.json": write_json(self.to_dict(), output_dir / "report.json"),
                 "per_image.csv": write_csv(self.rows(), output_dir / "per_image.csv", self.fields),
                 "table.md": write_text(self.markdown(), output_dir / "table.md")}
        if self.auroc is not None and any(interval is not None for interval in self.auroc.per_class):
            scored = self.scored
            paths["roc.png"] = plot_roc_curves(self.labels[scored], self.probabilities[scored], self.class_names,
                                               output_dir / "roc.png", title=f"ROC curves: {self.variant}")
        return paths


class ClassificationEvaluation(PerImageHandler):
    """Evaluator handler: gather each image's class probabilities (sigmoid of ``pred``) and labels (``label``:
    1, 0, -1, NaN); on completion (rank 0, every rank's images gathered) write the report
    (:class:`ClassificationReport`: ``per_image.csv``, ``report.json``, ``table.md`` in seed 003's Table 1 layout
    with the row ``variant``, ``roc.png``) to ``output_dir`` and log it to MLflow.

    ``table.md`` holds this variant's row only; :func:`merge_auroc_tables` builds the table of several variants
    from their ``report.json`` files.

    Args:
        output_dir: where the report files go.
        class_names: the classes of ``pred`` and ``label``, in order (the datalist's ``label_names``).
        variant: the row name in the Table 1 layout (``"DN-121 (grey)"``).
        abbreviations: column names of the classes (``{"Atelectasis": "AT", ...}``); the full names otherwise.
        tracking_uri, experiment_name, run_name: MLflow (no ``tracking_uri``: files only); metrics
            ``eval_auroc_<class>``, ``eval_auroc_macro``, ``eval_images``... in a run linked to the training run of
            ``model_path`` (:func:`~cxr_monai.reports.log_report_to_mlflow`).
        n_resamples, seed: the bootstrap of the CIs.
        sigmoid: ``pred`` holds logits (``False``: probabilities already).

    Example::

        ClassificationEvaluation("runs/dn121_grey/evaluation", class_names, "DN-121 (grey)",
                                 tracking_uri="sqlite:////abs/runs/mlruns.db").attach(evaluator)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        variant: str,
        abbreviations: Mapping[str, str] | None = None,
        tracking_uri: str | None = None,
        experiment_name: str = "classifier",
        run_name: str | None = "evaluate",
        model_path: str | os.PathLike | None = None,
        n_resamples: int = 2000,
        seed: int = 0,
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
        sigmoid: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = tuple(class_names)
        if not self.class_names:
            raise ValueError("ClassificationEvaluation: no class names")
        self.variant = str(variant)
        self.abbreviations = dict(abbreviations or {})
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.model_path = model_path
        self.n_resamples = n_resamples
        self.seed = seed
        self.pred_key = pred_key
        self.label_key = label_key
        self.image_key = image_key
        self.sigmoid = as_bool(sigmoid, "sigmoid")
        self.rows: list[dict[str, Any]] = []
        self.report: ClassificationReport | None = None
        self.files: dict[str, Path] = {}
        self.run_id: str | None = None  # the MLflow run it logged to (LocalisationEvaluation logs there too)

    def item(self, item: Mapping[str, Any], image_path: str | None) -> None:
        if image_path is None:
            raise ValueError("ClassificationEvaluation: the item carries no file name (MetaTensor meta "
                             "'filename_or_obj'); load images with cxr_monai.io.LoadCXRImaged")
        n = len(self.class_names)
        self.rows.append({"image": image_path,
                          "probabilities": probabilities_of(item[self.pred_key], n, self.sigmoid).tolist(),
                          "labels": labels_of(item.get(self.label_key), n).tolist()})

    def completed(self, engine: Engine | None = None) -> ClassificationReport | None:
        rows = gather_rows(self.rows)  # a collective: every rank calls it
        if not is_rank0() or not rows:
            return None
        report = ClassificationReport.from_arrays(
            [row["image"] for row in rows], np.array([row["probabilities"] for row in rows]),
            np.array([row["labels"] for row in rows]), self.class_names, self.variant, self.abbreviations,
            self.n_resamples, self.seed)
        self.files = report.write(self.output_dir)
        if report.auroc is not None and report.auroc.macro is not None:
            logger.info("%s on %d images: macro AUROC %s", self.variant, int(report.scored.sum()),
                        report.auroc.macro.format(4))
        else:
            logger.warning("%s: no class has both a positive and a negative known label among %d images; no AUROC",
                           self.variant, len(rows))
        if report.images_without_known_label:
            logger.info("%d of %d images have no known label and are left out of the AUROCs",
                        report.images_without_known_label, len(rows))
        if self.tracking_uri:
            self.run_id = log_report_to_mlflow(report, self.tracking_uri, self.experiment_name, self.run_name,
                                               files=self.files, model_path=self.model_path)
            logger.info("evaluation logged to MLflow run %s", self.run_id)
        self.report = report
        return report


def merge_auroc_tables(report_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike,
                       abbreviations: Mapping[str, str] | None = None, digits: int = 3) -> Path:
    """One Table 1 (markdown, :func:`~cxr_monai.metrics.auroc_table`) with a row per ``report.json`` of
    :class:`ClassificationEvaluation`, in the given order, each under its ``variant`` name; below it each row's macro
    AUROC with its CI, its image counts and source file. ``abbreviations`` default to the first report's.

    Raises ``ValueError`` when two reports have the same variant name or score other classes (or another order).

    Example::

        merge_auroc_tables(sorted(Path("runs").glob("*/evaluation/report.json")), "runs/table1.md")
    """
    if not report_paths:
        raise ValueError("merge_auroc_tables: no report.json given")
    rows: dict[str, MultiLabelAuroc] = {}
    notes, sources = [], {}
    first: dict[str, Any] | None = None
    for path in map(Path, report_paths):
        document = json.loads(path.read_text(encoding="utf-8"))
        variant = document.get("variant") or path.parent.name
        if variant in rows:
            raise ValueError(f"{path}: variant {variant!r} is also the variant of {sources[variant]}")
        result = auroc_from_dict(document)
        if first is None:
            first = document
        elif result.class_names != tuple(first["class_names"]):
            raise ValueError(f"{path}: classes {list(result.class_names)} differ from those of {report_paths[0]} "
                             f"({first['class_names']})")
        rows[variant], sources[variant] = result, path
        notes.append(f"- {variant}: {document.get('images', '?')} images, {document.get('images_without_known_label', 0)}"
                     f" without any known label (left out); {path}")
    assert first is not None
    abbreviations = dict(first.get("abbreviations") or {}) if abbreviations is None else dict(abbreviations)
    text = (auroc_table(rows, abbreviations, digits) + "\nImages per row:\n\n" + "\n".join(notes) + "\n\n"
            + _LABEL_NOTE + "\n")
    return write_text(text, out_path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m cxr_monai auroc-table REPORT.json... --out TABLE.md``."""
    parser.add_argument("reports", nargs="+", type=Path, metavar="REPORT.json",
                        help="evaluation/report.json of each variant (classifier evaluate.json runs), in row order")
    parser.add_argument("--out", required=True, type=Path, metavar="MD", help="markdown table to write")
    parser.add_argument("--digits", type=int, default=3, help="decimals of the AUROCs (default 3)")


def run(args: argparse.Namespace) -> int:
    path = merge_auroc_tables(args.reports, args.out, digits=args.digits)
    print(path.read_text(encoding="utf-8"), end="")
    return 0
