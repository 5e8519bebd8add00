"""Evaluation of a context encoder (seed 001 §4.3, Table 1): PSNR, MSE and SSIM of the inpainted centres on healthy
and unhealthy patches, a per-patch anomaly score and its ROC AUC, written as JSON, CSV and markdown and logged to
MLflow.

The two test sets of the seed: *healthy* patches, random lung patches of healthy test images (seeded per image),
and *unhealthy* patches, one centred on each annotated box of the abnormal test images. Metrics are those of
:mod:`cxr_monai.metrics` (MONAI ``PSNRMetric``/``MSEMetric``/``SSIMMetric`` on the ``hole_size`` centre, MSE and PSNR
on the 0-255 scale) and the AUROC is scikit-learn's, with unhealthy patches as positives.

Optionally, an image-level evaluation that needs no lesion boxes: each test image's full-image anomaly heatmap
(:class:`~cxr_monai.apps.inpainting.AnomalyHeatmapInferer`) is reduced to one score (a high quantile over the lungs,
:func:`cxr_monai.metrics.image_anomaly_score`), and the AUROC of those scores separates the abnormal test images
(every ``test_unhealthy`` image, boxed or not) from the healthy ones.

Python::

    report = evaluate_inpainting(generator, healthy.patches, unhealthy.patches, device="cuda")
    write_report(report, "runs/ce/eval")           # report.json, per_patch.csv, table.md
    log_report_to_mlflow(report, "sqlite:////abs/runs/ce/mlruns.db", "context_encoder", run_name="evaluate")
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxr_monai.apps.inpainting.holes import CONTEXT_MEAN, CenterHole
from cxr_monai.apps.inpainting.inference import (
    AnomalyHeatmapInferer,
    Generator,
    NoWindowError,
    inpaint_centres,
    lung_image_score,
)
from cxr_monai.data.robust import SkipLog
from cxr_monai.engines import iterate_images, output_stem, stack_patches
from cxr_monai.metrics import (
    PSNR_MAX_DB,
    anomaly_auroc,
    anomaly_score,
    reconstruction_metrics,
    summarize,
)
from cxr_monai.metrics.bootstrap import (
    DEFAULT_RESAMPLES,
    BootstrapInterval,
    image_level_intervals,
    patch_level_intervals,
)
from cxr_monai.reports import log_report_to_mlflow
from cxr_monai.transforms import source_name
from cxr_monai.utils import as_bool

__all__ = [
    "HEALTHY",
    "UNHEALTHY",
    "ImageLevelReport",
    "ImageScores",
    "InpaintingEvaluation",
    "InpaintingReport",
    "PatchSet",
    "collect_image_scores",
    "collect_patches",
    "evaluate_images",
    "evaluate_inpainting",
    "markdown_table",
    "write_report",
]

logger = logging.getLogger(__name__)

HEALTHY, UNHEALTHY = "healthy", "unhealthy"
_SETS = (HEALTHY, UNHEALTHY)
_MEASURES = ("psnr", "mse", "ssim", "anomaly_score")
_CSV_FIELDS = (
    "set", "image", "patch", "patch_x_min", "patch_y_min", "patch_x_max", "patch_y_max",
    "box_x_min", "box_y_min", "box_x_max", "box_y_max", "box_label", "hole_lung_fraction", "hole_lesion_fraction",
    "context_lesion_fraction", "psnr", "mse", "ssim", "anomaly_score",
)
_FRACTIONS = ("hole_lung_fraction", "hole_lesion_fraction", "context_lesion_fraction")
#: unhealthy patches are split at this share of lesion in the context around the hole (see ``evaluate_inpainting``)
CONTEXT_LESION_SPLIT = 0.5
_CONTEXT_STRATA = (("context_healthy", "mostly healthy", lambda f: f < CONTEXT_LESION_SPLIT),
                   ("context_lesion", "mostly lesion", lambda f: f >= CONTEXT_LESION_SPLIT))
#: skipped.csv stage of the abnormal test images that give no healthy patch (no lesion-free lung); never a failure
LESION_FREE_STAGE = "healthy patches (lesion-free lung of abnormal images)"
#: fewest images of each class an AUROC is reported for (fewer print the counts instead of a number)
MIN_IMAGES_PER_CLASS = 10
_IMAGE_CSV_FIELDS = ("set", "image", "image_score", "region", "windows")


@dataclass
class PatchSet:
    """The patches of one test set and where each comes from.

    ``patches`` is ``(N, C, P, P)`` in [0, 1]. ``records[i]`` describes patch ``i``: ``image`` (output stem of its
    radiograph), ``patch`` (index within that image), ``patch_box`` (``[x_min, y_min, x_max, y_max]`` in pixels of
    the working-resolution image, or ``None``), ``box`` and ``box_label`` (the annotated box a patch is centred
    on, or ``None``), ``hole_lung_fraction`` / ``hole_lesion_fraction`` (share of the hole that is lung / lesion,
    ``None`` without that mask) and ``context_lesion_fraction`` (share of the patch around the hole that is lesion). ``skipped`` lists images left out, each with its reason.
    """

    patches: torch.Tensor
    records: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.records) != len(self.patches):
            raise ValueError(f"{len(self.records)} records for {len(self.patches)} patches.")

    @classmethod
    def from_tensor(cls, patches: torch.Tensor | PatchSet) -> PatchSet:
        """Wrap bare patches (records numbered ``0..N-1``); a :class:`PatchSet` is returned unchanged."""
        if isinstance(patches, PatchSet):
            return patches
        patches = torch.as_tensor(patches)
        records = [{"image": "", "patch": i, "patch_box": None, "box": None, "box_label": None,
                    **dict.fromkeys(_FRACTIONS)} for i in range(len(patches))]
        return cls(patches, records)


def _int_list(value: Any) -> list[int] | None:
    return None if value is None else [int(v) for v in np.asarray(value).ravel()]


def _float_list(value: Any) -> list[float] | None:
    return None if value is None else [round(float(v), 2) for v in np.asarray(value).ravel()]


def collect_patches(
    datalist: Sequence[Mapping[str, Any]],
    preprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    patch_transform: Callable[[Mapping[str, Any]], Any],
    seed: int = 0,
    max_images: int | None = None,
    image_key: str = "image",
    require_key: str | None = None,
    skip_log: SkipLog | None = None,
    stage: str = "patches",
) -> PatchSet:
    """Cut the patches of a datalist into a :class:`PatchSet` (each image decoded once, see
    :func:`~cxr_monai.engines.images.iterate_images`; a random patch transform is reseeded with ``seed + index``).

    Entries without a non-empty ``require_key`` (e.g. ``"boxes"`` for box-centred patches of an abnormal image
    that has labels but no box) are skipped: the log names the file, ``skipped`` its stem and the reason. With a
    ``skip_log``, so are images that cannot be read or cut into patches (recorded there as ``stage``, see
    :func:`~cxr_monai.engines.images.iterate_images`); without one, their error propagates.

    Example::

        unhealthy = collect_patches(load_datalist(path, "test_unhealthy"), preprocessing,
                                    BoxCenteredPatchd("image", box_key="boxes"), require_key="boxes")
    """
    entries, skipped = [], []
    for entry in datalist:
        if require_key is not None and not _has_items(entry.get(require_key)):
            # the report (logged to MLflow) names the image by its stem only, the local log by its path
            logger.warning("skipping %s: no '%s' to cut patches from", entry.get(image_key), require_key)
            skipped.append(f"{output_stem(entry.get(image_key, '<no image>'))}: no '{require_key}' to cut patches from")
            continue
        entries.append(entry)
    patches, records = [], []
    for item in iterate_images(entries, preprocessing, patch_transform, seed, max_images, image_key, skip_log, stage):
        if item.patches:
            patches.append(stack_patches(item.patches, image_key))
        for k, sample in enumerate(item.patches):
            label = sample.get("box_label")
            records.append({
                "image": item.stem,
                "patch": int(sample.get("box_index", k)),
                "patch_box": _int_list(sample.get("patch_box")),
                "box": _float_list(sample.get("box")),
                "box_label": None if label is None else str(label),
                **{key: _optional_float(sample.get(key)) for key in _FRACTIONS},
            })
    if skip_log is not None:
        skipped += [f"{output_stem(record.image)}: {record.reason}" for record in skip_log.skipped(stage)]
    stacked = torch.cat(patches) if patches else torch.zeros((0, 1, 0, 0))
    return PatchSet(stacked, records, skipped)


def _optional_float(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def select_patches(patch_set: PatchSet, keep: Sequence[bool]) -> PatchSet:
    """The patches (and records) of ``patch_set`` where ``keep`` is true; ``skipped`` is carried over."""
    keep = [bool(k) for k in keep]
    if len(keep) != len(patch_set.records):
        raise ValueError(f"{len(keep)} flags for {len(patch_set.records)} patches.")
    index = torch.as_tensor([i for i, k in enumerate(keep) if k], dtype=torch.long)
    patches = patch_set.patches[index] if len(index) else patch_set.patches[:0]
    return PatchSet(patches, [r for r, k in zip(patch_set.records, keep) if k], list(patch_set.skipped))


def concat_patch_sets(*patch_sets: PatchSet) -> PatchSet:
    """One :class:`PatchSet` holding the patches, records and skipped images of all of ``patch_sets`` in order."""
    filled = [patch_set.patches for patch_set in patch_sets if len(patch_set.patches)]
    patches = torch.cat(filled) if filled else patch_sets[0].patches
    return PatchSet(patches, [r for p in patch_sets for r in p.records], [x for p in patch_sets for x in p.skipped])


def _has_items(value: Any) -> bool:
    return value is not None and len(value) > 0


@dataclass
class ImageScores:
    """Image-level anomaly scores of one test set: ``scores[i]`` belongs to ``records[i]`` (``image`` stem,
    ``region`` the score was taken over, ``windows`` inpainted); ``skipped`` lists images left out with reasons."""

    scores: np.ndarray
    records: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)


def collect_image_scores(
    datalist: Sequence[Mapping[str, Any]],
    preprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    generator: Generator,
    inferer: AnomalyHeatmapInferer,
    quantile: float = 0.95,
    max_images: int | None = None,
    image_key: str = "image",
    boxes_key: str = "lung_boxes",
    mask_key: str = "lung_mask",
    skip_log: SkipLog | None = None,
    stage: str = "images",
) -> ImageScores:
    """Score each image of a datalist by its full-image anomaly heatmap (:func:`~cxr_monai.engines.lung_image_score`).

    Each image goes through ``preprocessing`` (load -> working resolution -> lung boxes), ``inferer`` over its
    ``boxes_key`` boxes, then the ``quantile`` of the heatmap inside its lung mask (``mask_key``, when the
    datalist has masks) or over every covered pixel of the boxes. An image whose boxes hold no window, or whose
    mask misses every covered pixel, is skipped: the log names the file, ``skipped`` its stem and the reason. With a
    ``skip_log``, so is an image that cannot be read (recorded there as ``stage``); without one, its error propagates.

    Example::

        healthy = collect_image_scores(load_datalist(path, "test"), preprocessing, generator,
                                       AnomalyHeatmapInferer(stride=32, box_margin=32))
    """
    scores, records, skipped = [], [], []
    for item in iterate_images(datalist, preprocessing, None, 0, max_images, image_key, skip_log, stage):
        data = item.data
        if data.get(boxes_key) is None:
            raise KeyError(f"{data.get(image_key, item.stem)}: no '{boxes_key}' after preprocessing; add LungBoxesd.")
        try:
            heatmap = inferer(data[image_key], generator, data[boxes_key])
        except NoWindowError as error:
            logger.warning("no image score for %s: %s", item.stem, error)
            # the report (logged to MLflow) names the image by its stem only, the local log by its path
            source = source_name(data[image_key], data, image_key)
            skipped.append(f"{item.stem}: {str(error).replace(f'{source}: ', '')}")
            continue
        try:
            score, region = lung_image_score(heatmap.heatmap, data.get(mask_key), quantile)
        except NoWindowError as error:
            logger.warning("no image score for %s: %s", item.stem, error)
            skipped.append(f"{item.stem}: {error}")
            continue
        scores.append(score)
        records.append({"image": item.stem, "region": region, "windows": len(heatmap.windows)})
    if skip_log is not None:
        skipped += [f"{output_stem(record.image)}: {record.reason}" for record in skip_log.skipped(stage)]
    return ImageScores(np.asarray(scores, dtype=np.float64), records, skipped)


@dataclass
class ImageLevelReport:
    """Image-level scores of both test sets and their AUROC (abnormal images positive); ``None`` where a set
    is empty, with the reason in ``notes``."""

    per_image: list[dict[str, Any]]
    summary: dict[str, dict[str, float] | None]
    counts: dict[str, int]
    auroc: float | None
    notes: list[str]
    quantile: float
    intervals: dict[str, BootstrapInterval] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts, HEALTHY: self.summary[HEALTHY], UNHEALTHY: self.summary[UNHEALTHY],
                "auroc": self.auroc, "notes": self.notes,
                "intervals": {name: interval.to_dict() for name, interval in self.intervals.items()},
                "image_score": f"{self.quantile:g} quantile of the full-image heatmap over the lungs"}


def evaluate_images(
    healthy: ImageScores,
    unhealthy: ImageScores,
    quantile: float = 0.95,
    min_images_per_class: int = MIN_IMAGES_PER_CLASS,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> ImageLevelReport:
    """Summarise two :class:`ImageScores` (mean ± population std) and their AUROC with a bootstrap 95 % CI
    (healthy and abnormal images resampled separately, ``n_resamples`` times; 0 skips the CI).

    The AUROC is only reported when each class has at least ``min_images_per_class`` images: from a handful of
    images it is a number without meaning (one healthy image against 95 abnormal ones can give anything).

    Example::

        report = evaluate_images(collect_image_scores(healthy, ...), collect_image_scores(abnormal, ...))
        report.auroc
    """
    sets = {HEALTHY: healthy, UNHEALTHY: unhealthy}
    per_image, summary, notes = [], {}, []
    for name, image_scores in sets.items():
        notes += [f"{name} images: skipped {reason}" for reason in image_scores.skipped]
        if len(image_scores.scores) == 0:
            summary[name] = None
            notes.append(f"no {name} image could be scored: no {name} image scores and no image-level AUROC.")
            continue
        summary[name] = summarize({"image_score": image_scores.scores})
        per_image += [{"set": name, **record, "image_score": float(score)}
                      for record, score in zip(image_scores.records, image_scores.scores)]
    auroc, intervals = None, {}
    counts = {name: len(image_scores.scores) for name, image_scores in sets.items()}
    few = [f"{counts[name]} {name}" for name in _SETS if counts[name] < min_images_per_class]
    if few:
        notes.append(f"no image-level AUROC: {' and '.join(few)} images, fewer than {min_images_per_class} per class.")
    else:
        auroc = anomaly_auroc(healthy.scores, unhealthy.scores)
        if n_resamples:
            labels = [False] * counts[HEALTHY] + [True] * counts[UNHEALTHY]
            scores = np.concatenate([healthy.scores, unhealthy.scores])
            intervals = image_level_intervals(labels, scores, n_resamples, seed=seed)
    return ImageLevelReport(per_image, summary, counts, auroc, notes, quantile, intervals)


@dataclass
class InpaintingReport:
    """Scores of one evaluation: the seed's Table 1 plus anomaly scores and their AUROC.

    ``per_patch`` has one row per patch (set, image, patch index, boxes, psnr, mse, ssim, anomaly_score);
    ``summary[set]`` holds ``<measure>_mean`` / ``<measure>_std`` (population std) or ``None`` for an empty set;
    ``auroc`` is ``None`` unless both sets have patches; ``notes`` says why something is missing;
    ``image_level`` holds the image-level evaluation when one was run.
    """

    per_patch: list[dict[str, Any]]
    summary: dict[str, dict[str, float] | None]
    counts: dict[str, int]
    auroc: float | None
    notes: list[str]
    settings: dict[str, Any]
    image_level: ImageLevelReport | None = None
    intervals: dict[str, BootstrapInterval] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)

    def write(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        """The files of :func:`write_report` (so the report fits :func:`~cxr_monai.reports.log_report_to_mlflow`)."""
        return write_report(self, output_dir)

    def metrics(self) -> dict[str, float]:
        """Flat ``{name: value}`` for MLflow: ``healthy_psnr_mean``, ..., ``n_healthy``, ``anomaly_auroc``, and
        with an image-level evaluation ``n_healthy_images``, ``healthy_image_score_mean``, ..., ``image_auroc``."""
        flat: dict[str, float] = {}
        for name in _SETS:
            flat[f"n_{name}"] = float(self.counts[name])
            for key, value in (self.summary[name] or {}).items():
                flat[f"{name}_{key}"] = value
        if self.auroc is not None:
            flat["anomaly_auroc"] = self.auroc
        for name, interval in self.intervals.items():
            stem = "anomaly_auroc" if name == "auroc" else name
            flat[stem], flat[f"{stem}_ci_low"], flat[f"{stem}_ci_high"] = interval.value, interval.low, interval.high
        if self.image_level is not None:
            for name in _SETS:
                flat[f"n_{name}_images"] = float(self.image_level.counts[name])
                for key, value in (self.image_level.summary[name] or {}).items():
                    flat[f"{name}_{key}"] = value
            if self.image_level.auroc is not None:
                flat["image_auroc"] = self.image_level.auroc
            if "auroc" in self.image_level.intervals:
                interval = self.image_level.intervals["auroc"]
                flat["image_auroc_ci_low"], flat["image_auroc_ci_high"] = interval.low, interval.high
        return flat

    def to_dict(self) -> dict[str, Any]:
        """Everything but the per-patch rows, as written to ``report.json``."""
        return {
            "counts": self.counts,
            HEALTHY: self.summary[HEALTHY],
            UNHEALTHY: self.summary[UNHEALTHY],
            "anomaly_auroc": self.auroc,
            "intervals": {name: interval.to_dict() for name, interval in self.intervals.items()},
            "images": self.images,
            "notes": self.notes,
            "settings": self.settings,
            "image_level": None if self.image_level is None else self.image_level.to_dict(),
        }


def _centre(patches: torch.Tensor, hole_size: int) -> torch.Tensor:
    row, col = CenterHole(hole_size).hole_start(patches.shape[-2:])
    return patches[..., row : row + hole_size, col : col + hole_size]


def evaluate_inpainting(
    generator: Generator,
    healthy_patches: torch.Tensor | PatchSet,
    unhealthy_patches: torch.Tensor | PatchSet,
    device: torch.device | str | None = None,
    hole_size: int = 64,
    fill_value: float | str = CONTEXT_MEAN,
    overlap: int = 0,
    batch_size: int = 64,
    amp: bool = True,
    ssim_kernel_type: str = "uniform",
    ssim_win_size: int = 7,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> InpaintingReport:
    """Inpaint both patch sets and score the centres against the originals (seed 001 Table 1, plus AUROC).

    Patches (``(N, C, P, P)`` in [0, 1], or :class:`PatchSet`\\ s that also say where each patch comes from) are
    inpainted by :func:`~cxr_monai.apps.inpainting.inference.inpaint_centres` with the training hole (``hole_size``,
    ``fill_value``, ``overlap``). Per patch: PSNR (dB, 8-bit peak, clipped at 100 dB), MSE (0-255 scale) and SSIM
    of the ``hole_size`` centre (:func:`cxr_monai.metrics.reconstruction_metrics`), and the anomaly score, mean
    ``|original - inpainted|`` over the centre in [0, 1] units (:func:`cxr_monai.metrics.anomaly_score`). The
    AUROC of the scores, unhealthy as positives, needs both sets; an empty set gives ``None`` and a note. The AUROC
    and the PSNR gap (mean healthy minus mean unhealthy PSNR) get bootstrap 95 % CIs that resample the images the
    patches come from (:func:`~cxr_monai.metrics.bootstrap.patch_level_intervals`; ``n_resamples=0`` skips them;
    patches without an image name count as their own image). When the records carry hole fractions, the summary
    also gives their mean per set.

    Example::

        report = evaluate_inpainting(generator, healthy.patches, unhealthy.patches, device="cuda")
        report.summary["healthy"]["psnr_mean"], report.auroc
    """
    sets = {HEALTHY: PatchSet.from_tensor(healthy_patches), UNHEALTHY: PatchSet.from_tensor(unhealthy_patches)}
    if all(len(s.patches) == 0 for s in sets.values()):
        raise ValueError("both patch sets are empty; there is nothing to evaluate.")
    per_patch: list[dict[str, Any]] = []
    summary: dict[str, dict[str, float] | None] = {}
    scores: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for name, patch_set in sets.items():
        notes += [f"{name} set: skipped {reason}" for reason in patch_set.skipped]
        if len(patch_set.patches) == 0:
            summary[name], scores[name] = None, np.zeros(0)
            notes.append(f"the {name} test set is empty: no {name} scores and no AUROC.")
            continue
        patches = torch.as_tensor(patch_set.patches).float()
        predicted = inpaint_centres(generator, patches, hole_size, fill_value, overlap, batch_size, device, amp)
        original = _centre(patches, hole_size)
        values = reconstruction_metrics(predicted, original, 1.0, ssim_kernel_type, ssim_win_size)
        values["anomaly_score"] = anomaly_score(predicted, original)
        summary[name], scores[name] = summarize({m: values[m] for m in _MEASURES}), values["anomaly_score"]
        for i, record in enumerate(patch_set.records):
            per_patch.append({"set": name, **record, **{m: float(values[m][i]) for m in _MEASURES}})
    auroc = None
    if len(scores[HEALTHY]) and len(scores[UNHEALTHY]):
        auroc = anomaly_auroc(scores[HEALTHY], scores[UNHEALTHY])
    settings = {
        "hole_size": hole_size,
        "fill_value": fill_value,
        "overlap": overlap,
        "patch_size": int(next(s.patches.shape[-1] for s in sets.values() if len(s.patches))),
        "psnr": f"dB, peak 255, clipped at {PSNR_MAX_DB:g} dB",
        "mse": "0-255 scale",
        "ssim": {"kernel_type": ssim_kernel_type, "win_size": ssim_win_size, "data_range": 1.0},
        "anomaly_score": "mean |original - inpainted| over the centre, intensities in [0, 1]",
        "std": "population (ddof=0)",
        "auroc": "unhealthy patches positive, ranked by anomaly_score",
    }
    for name in _SETS:
        for key in _FRACTIONS:
            values = [row[key] for row in per_patch if row["set"] == name and row.get(key) is not None]
            if values and summary[name] is not None:
                summary[name][f"{key}_mean"] = float(np.mean(values))
                summary[name][f"{key}_std"] = float(np.std(values))
    units = [row["image"] or f"{row['set']}#{number}" for number, row in enumerate(per_patch)]
    images = {name: len({unit for unit, row in zip(units, per_patch) if row["set"] == name}) for name in _SETS}
    intervals = {}
    if auroc is not None and n_resamples:
        intervals = patch_level_intervals(units, [row["set"] == UNHEALTHY for row in per_patch],
                                          [row["anomaly_score"] for row in per_patch],
                                          [row["psnr"] for row in per_patch], n_resamples, seed=seed)
        settings["intervals"] = (f"percentile bootstrap, {n_resamples} resamples of the images the patches come "
                                 "from; psnr_gap = mean healthy PSNR - mean unhealthy PSNR (dB)")
        intervals.update(_context_strata(per_patch, units, n_resamples, seed, settings))
    counts = {name: len(s.patches) for name, s in sets.items()}
    return InpaintingReport(per_patch, summary, counts, auroc, notes, settings, intervals=intervals, images=images)


def _context_strata(
    per_patch: Sequence[Mapping[str, Any]], units: Sequence[str], n_resamples: int, seed: int, settings: dict
) -> dict[str, BootstrapInterval]:
    """AUROC and PSNR gap of all healthy patches against the unhealthy ones whose context is mostly healthy, and
    against those whose context is mostly lesion: a context encoder inpaints a hole inside a large lesion from lesion,
    so only the first can stand out. Needs ``context_lesion_fraction`` on every unhealthy patch."""
    fractions = [row.get("context_lesion_fraction") for row in per_patch if row["set"] == UNHEALTHY]
    if not fractions or any(f is None for f in fractions):
        return {}
    out: dict[str, BootstrapInterval] = {}
    counts = {}
    for name, _, inside in _CONTEXT_STRATA:
        keep = [row["set"] == HEALTHY or inside(row["context_lesion_fraction"]) for row in per_patch]
        rows = [row for row, k in zip(per_patch, keep) if k]
        stratum_units = [unit for unit, k in zip(units, keep) if k]
        unhealthy = [unit for unit, row in zip(stratum_units, rows) if row["set"] == UNHEALTHY]
        counts[name] = {"patches": len(unhealthy), "images": len(set(unhealthy))}
        if not unhealthy or len(unhealthy) == len(rows):
            continue
        stratum = patch_level_intervals(stratum_units, [row["set"] == UNHEALTHY for row in rows],
                                        [row["anomaly_score"] for row in rows], [row["psnr"] for row in rows],
                                        n_resamples, seed=seed)
        out.update({f"{key}_{name}": interval for key, interval in stratum.items()})
    settings["context_strata"] = {"split": CONTEXT_LESION_SPLIT, "unhealthy": counts}
    return out


def _cell(summary: Mapping[str, float] | None, measure: str, digits: int) -> str:
    if summary is None or f"{measure}_mean" not in summary:
        return "—"
    return f"{summary[f'{measure}_mean']:.{digits}f} ± {summary[f'{measure}_std']:.{digits}f}"


def markdown_table(report: InpaintingReport) -> str:
    """The seed's Table 1 layout (MEASURE | HEALTHY TEST SET | UNHEALTHY TEST SET) with the anomaly score, patch
    counts and the AUROC below.

    Example::

        print(markdown_table(report))
        # | MEASURE | HEALTHY TEST SET | UNHEALTHY TEST SET |
        # | PSNR | 30.88 ± 3.61 | 27.06 ± 3.25 |  ...
    """
    healthy, unhealthy = report.summary[HEALTHY], report.summary[UNHEALTHY]
    rows = [("PSNR", "psnr", 2), ("MSE", "mse", 2), ("SSIM", "ssim", 2), ("ANOMALY SCORE", "anomaly_score", 4)]
    rows += [(title, key, 2) for title, key in (("HOLE LUNG FRACTION", "hole_lung_fraction"),
                                                 ("HOLE LESION FRACTION", "hole_lesion_fraction"),
                                                 ("CONTEXT LESION FRACTION", "context_lesion_fraction"))
             if any(f"{key}_mean" in (summary or {}) for summary in (healthy, unhealthy))]
    lines = ["| MEASURE | HEALTHY TEST SET | UNHEALTHY TEST SET |", "| --- | --- | --- |"]
    lines += [f"| {title} | {_cell(healthy, key, d)} | {_cell(unhealthy, key, d)} |" for title, key, d in rows]
    lines.append(f"| PATCHES | {report.counts[HEALTHY]} | {report.counts[UNHEALTHY]} |")
    if report.images:
        lines.append(f"| IMAGES | {report.images.get(HEALTHY, 0)} | {report.images.get(UNHEALTHY, 0)} |")
    lines.append("")
    if report.auroc is not None and "auroc" in report.intervals:
        lines.append("Anomaly AUROC (unhealthy vs healthy patches, by anomaly score): "
                     f"**{report.intervals['auroc'].format()}**")
        lines.append("PSNR gap (healthy - unhealthy, dB): "
                     f"**{report.intervals['psnr_gap'].format(2)}**")
        lines.append(f"(CIs: {report.settings['intervals']}.)")
        lines += _context_strata_lines(report)
    elif report.auroc is not None:
        lines.append(f"Anomaly AUROC (unhealthy vs healthy patches, by anomaly score): **{report.auroc:.3f}**")
    else:
        lines.append("Anomaly AUROC: not computed (" + "; ".join(n for n in report.notes if "AUROC" in n) + ")")
    lines += [
        "",
        f"Scores of the inpainted {report.settings['hole_size']} px centres, mean ± standard deviation over patches "
        "(seed 001, Table 1): PSNR in dB and MSE on the 0-255 scale; SSIM with a "
        f"{report.settings['ssim']['win_size']} px {report.settings['ssim']['kernel_type']} window; anomaly score = "
        "mean |original - inpainted| over the centre, intensities in [0, 1].",
    ]
    lines += [f"- {note}" for note in report.notes]
    if report.image_level is not None:
        lines += ["", *_image_level_lines(report.image_level)]
    return "\n".join(lines) + "\n"


def _context_strata_lines(report: InpaintingReport) -> list[str]:
    strata = report.settings.get("context_strata")
    if not strata:
        return []
    lines = ["", f"By the context around each unhealthy hole (all healthy patches against the unhealthy ones whose "
                 f"128 px patch less its hole is under / at least {strata['split']:g} lesion):", ""]
    for name, title, _ in _CONTEXT_STRATA:
        count = strata["unhealthy"][name]
        where = f"{count['patches']} patches from {count['images']} images"
        if f"auroc_{name}" in report.intervals:
            lines.append(f"- context {title}, {where}: AUROC {report.intervals[f'auroc_{name}'].format()}, "
                         f"PSNR gap {report.intervals[f'psnr_gap_{name}'].format(2)} dB")
        else:
            lines.append(f"- context {title}, {where}: no AUROC")
    return lines


def _image_level_lines(image_level: ImageLevelReport) -> list[str]:
    healthy, unhealthy = image_level.summary[HEALTHY], image_level.summary[UNHEALTHY]
    lines = [
        "| IMAGE LEVEL | HEALTHY TEST IMAGES | ABNORMAL TEST IMAGES |",
        "| --- | --- | --- |",
        f"| IMAGE SCORE | {_cell(healthy, 'image_score', 4)} | {_cell(unhealthy, 'image_score', 4)} |",
        f"| IMAGES | {image_level.counts[HEALTHY]} | {image_level.counts[UNHEALTHY]} |",
        "",
    ]
    if image_level.auroc is not None:
        value = (image_level.intervals["auroc"].format() if "auroc" in image_level.intervals
                 else f"{image_level.auroc:.3f}")
        lines.append(f"Image-level AUROC (abnormal vs healthy images, by image score): **{value}**")
    else:
        reasons = "; ".join(note for note in image_level.notes if "AUROC" in note)
        lines.append(f"Image-level AUROC: not computed ({reasons})")
    lines += [
        "",
        f"Image score = the {image_level.quantile:g} quantile of the full-image anomaly heatmap over the lung mask "
        "(over the lung boxes where the datalist has no masks); every abnormal test image counts, with or "
        "without boxes.",
    ]
    return lines + [f"- {note}" for note in image_level.notes]


def _csv_row(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {key: row.get(key, "") for key in ("set", "image", "patch", "box_label", *_FRACTIONS, *_MEASURES)}
    for key in ("box_label", *_FRACTIONS):
        out[key] = "" if out[key] is None else out[key]
    for prefix, key in (("patch", "patch_box"), ("box", "box")):
        values = row.get(key) or [""] * 4
        for name, value in zip(("x_min", "y_min", "x_max", "y_max"), values):
            out[f"{prefix}_{name}"] = value
    return out


def write_report(report: InpaintingReport, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.json``, ``per_patch.csv``, ``table.md`` and, with an image-level evaluation,
    ``per_image.csv`` into ``output_dir``; returns ``{file name: path}``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: output_dir / name for name in ("report.json", "per_patch.csv", "table.md")}
    if report.image_level is not None:
        paths["per_image.csv"] = output_dir / "per_image.csv"
        with open(paths["per_image.csv"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=_IMAGE_CSV_FIELDS)
            writer.writeheader()
            writer.writerows({key: row.get(key, "") for key in _IMAGE_CSV_FIELDS}
                             for row in report.image_level.per_image)
    # allow_nan=False: a non-finite score is a bug upstream and must not become invalid JSON
    paths["report.json"].write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    with open(paths["per_patch.csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=_CSV_FIELDS)
        writer.writeheader()
        writer.writerows(_csv_row(row) for row in report.per_patch)
    paths["table.md"].write_text(markdown_table(report), encoding="utf-8")
    return paths


class InpaintingEvaluation:
    """Runner of the bundle's ``evaluate.json``: build both test sets, score them, write and log the report.

    Healthy patches: ``healthy_patch_transform`` (e.g. :class:`~cxr_monai.transforms.RandLungPatchd`, reseeded per
    image with ``seed + index``) on the ``test`` images; unhealthy patches: ``unhealthy_patch_transform`` (e.g.
    :class:`~cxr_monai.transforms.BoxCenteredPatchd`) on the ``test_unhealthy`` images that have ``boxes`` (others
    are skipped with a logged reason). Both go through ``preprocessing`` first (load -> working resolution -> lung
    boxes, with the lesion ``boxes`` scaled along); ``max_images`` limits each set to its first images. The report
    goes to ``output_dir`` (:func:`write_report`) and, when ``tracking_uri`` is set, to MLflow
    (:func:`log_report_to_mlflow`).

    With a ``heatmap_inferer`` the report also gets an image-level evaluation (:func:`collect_image_scores` on the
    ``test`` images and on every ``test_unhealthy`` image, boxes or not; ``image_score_quantile``), which is what
    a dataset with image labels but no lesion boxes can be evaluated by.

    Real radiographs with lesion masks (issue #9): ``healthy_from_unhealthy`` also draws healthy patches from the
    lesion-free lung of the ``test_unhealthy`` images that carry a ``lesion_mask`` (the healthy patch transform must
    keep clear of lesions, e.g. ``RandLungPatchd(lesion_mask_key="lesion_mask")``), so a set where every image has a
    lesion still has a healthy test set, from the same patients. ``min_hole_lung_fraction`` drops patches (of both
    sets) whose hole is less lung than that (the patch transforms should already aim for it; the report says how
    many were dropped). ``n_resamples`` and ``min_images_per_class``: see :func:`evaluate_inpainting` and
    :func:`evaluate_images`.

    An image that cannot be read or cut into patches is skipped from the set it belongs to: a warning names the file
    and the reason, ``skipped.csv`` in ``output_dir`` lists it (stages ``healthy patches``, ``unhealthy patches``,
    ``healthy images``, ``abnormal images``), the report's notes too; the run stops with
    :class:`~cxr_monai.data.robust.TooManySkippedError` only when more than ``max_skipped_fraction`` of a set is
    skipped. ``model_path``, the model file evaluated, is recorded in the MLflow run with its sha256 and the training
    run that wrote it (:func:`log_report_to_mlflow`).

    Example::

        evaluation = InpaintingEvaluation(generator, load_datalist(path, "test"), load_datalist(path, "test_unhealthy"),
                                          preprocessing, RandLungPatchd("image", num_samples=20),
                                          BoxCenteredPatchd("image"), "runs/ce/eval")
        report = evaluation.run()
    """

    def __init__(
        self,
        generator: Generator,
        healthy_datalist: Sequence[Mapping[str, Any]],
        unhealthy_datalist: Sequence[Mapping[str, Any]],
        preprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        healthy_patch_transform: Callable[[Mapping[str, Any]], Any],
        unhealthy_patch_transform: Callable[[Mapping[str, Any]], Any],
        output_dir: str | os.PathLike,
        device: torch.device | str | None = None,
        hole_size: int = 64,
        fill_value: float | str = CONTEXT_MEAN,
        overlap: int = 0,
        batch_size: int = 64,
        seed: int = 0,
        max_images: int | None = None,
        image_key: str = "image",
        lesion_boxes_key: str = "boxes",
        amp: bool = True,
        tracking_uri: str | None = None,
        experiment_name: str = "context_encoder",
        run_name: str | None = "evaluate",
        run_id: str | None = None,
        heatmap_inferer: AnomalyHeatmapInferer | None = None,
        image_score_quantile: float = 0.95,
        lung_boxes_key: str = "lung_boxes",
        lung_mask_key: str = "lung_mask",
        healthy_from_unhealthy: bool = False,
        lesion_mask_key: str = "lesion_mask",
        min_hole_lung_fraction: float = 0.0,
        n_resamples: int = DEFAULT_RESAMPLES,
        min_images_per_class: int = MIN_IMAGES_PER_CLASS,
        max_skipped_fraction: float = 0.05,
        model_path: str | os.PathLike | None = None,
    ) -> None:
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.generator = generator.to(self.device) if isinstance(generator, torch.nn.Module) else generator
        self.healthy_datalist, self.unhealthy_datalist = healthy_datalist, unhealthy_datalist
        self.preprocessing = preprocessing
        self.healthy_patch_transform = healthy_patch_transform
        self.unhealthy_patch_transform = unhealthy_patch_transform
        self.output_dir = Path(output_dir)
        self.hole_size, self.fill_value, self.overlap = hole_size, fill_value, overlap
        self.batch_size, self.seed, self.max_images = batch_size, seed, max_images
        self.image_key, self.lesion_boxes_key = image_key, lesion_boxes_key
        self.amp = amp
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name
        self.run_name, self.run_id = run_name, run_id
        self.heatmap_inferer, self.image_score_quantile = heatmap_inferer, image_score_quantile
        self.lung_boxes_key, self.lung_mask_key = lung_boxes_key, lung_mask_key
        self.healthy_from_unhealthy = as_bool(healthy_from_unhealthy, "healthy_from_unhealthy")
        self.lesion_mask_key = lesion_mask_key
        self.min_hole_lung_fraction = float(min_hole_lung_fraction)
        self.n_resamples, self.min_images_per_class = int(n_resamples), int(min_images_per_class)
        self.max_skipped_fraction, self.model_path = float(max_skipped_fraction), model_path
        self.skip_log: SkipLog | None = None
        self.files: dict[str, Path] = {}

    def lesion_free_sources(self) -> list[Mapping[str, Any]]:
        """The abnormal test images whose lesion-free lung gives healthy patches (``healthy_from_unhealthy``): those
        that carry a lesion mask; empty otherwise."""
        if not self.healthy_from_unhealthy:
            return []
        abnormal = list(self.unhealthy_datalist)
        if self.max_images is not None:
            abnormal = abnormal[: max(int(self.max_images), 0)]
        return [entry for entry in abnormal if entry.get(self.lesion_mask_key)]

    def _lesion_free_patches(self, skip_log: SkipLog) -> PatchSet:
        # An abnormal image with no lesion-free lung is expected (diffuse disease), not a data error: it is listed in
        # skipped.csv under its own stage but never counts towards max_skipped_fraction.
        sources = self.lesion_free_sources()
        tolerant = SkipLog(None, max_fraction=1.0)
        patches = collect_patches(sources, self.preprocessing, self.healthy_patch_transform, self.seed, None,
                                  self.image_key, skip_log=tolerant, stage=LESION_FREE_STAGE)
        for record in tolerant.skipped(LESION_FREE_STAGE):
            skip_log.add(LESION_FREE_STAGE, record, len(sources), check=False)
        return patches

    def _lung_enough(self, patch_set: PatchSet, name: str, notes: list[str]) -> PatchSet:
        if self.min_hole_lung_fraction <= 0:
            return patch_set
        keep = [r.get("hole_lung_fraction") is None or r["hole_lung_fraction"] >= self.min_hole_lung_fraction - 1e-9
                for r in patch_set.records]
        dropped = len(keep) - sum(keep)
        if dropped:
            notes.append(f"{name} set: dropped {dropped} of {len(keep)} patches whose hole is less than "
                         f"{self.min_hole_lung_fraction:g} lung")
        return select_patches(patch_set, keep)

    def run(self) -> InpaintingReport:
        """Build the patch sets, evaluate, write ``report.json``/``per_patch.csv``/``table.md``, log to MLflow."""
        self.skip_log = skip_log = SkipLog(self.output_dir / "skipped.csv", self.max_skipped_fraction)
        healthy = collect_patches(self.healthy_datalist, self.preprocessing, self.healthy_patch_transform,
                                  self.seed, self.max_images, self.image_key, skip_log=skip_log, stage="healthy patches")
        if self.healthy_from_unhealthy:
            healthy = concat_patch_sets(healthy, self._lesion_free_patches(skip_log))
        unhealthy = collect_patches(self.unhealthy_datalist, self.preprocessing, self.unhealthy_patch_transform,
                                    self.seed, self.max_images, self.image_key, require_key=self.lesion_boxes_key,
                                    skip_log=skip_log, stage="unhealthy patches")
        notes: list[str] = []
        healthy, unhealthy = self._lung_enough(healthy, HEALTHY, notes), self._lung_enough(unhealthy, UNHEALTHY, notes)
        logger.info("evaluating %d healthy and %d unhealthy patches", len(healthy.patches), len(unhealthy.patches))
        report = evaluate_inpainting(self.generator, healthy, unhealthy, self.device, self.hole_size, self.fill_value,
                                     self.overlap, self.batch_size, self.amp, n_resamples=self.n_resamples,
                                     seed=self.seed)
        report.notes[:0] = notes
        report.settings["healthy_patches_from"] = (
            "test images and the lesion-free lung of test_unhealthy images with a lesion mask"
            if self.healthy_from_unhealthy else "test images")
        report.settings["min_hole_lung_fraction"] = self.min_hole_lung_fraction
        if self.heatmap_inferer is not None:
            image_sets = [
                collect_image_scores(datalist, self.preprocessing, self.generator, self.heatmap_inferer,
                                     self.image_score_quantile, self.max_images, self.image_key,
                                     self.lung_boxes_key, self.lung_mask_key, skip_log, stage)
                for datalist, stage in ((self.healthy_datalist, "healthy images"),
                                        (self.unhealthy_datalist, "abnormal images"))
            ]
            logger.info("image-level evaluation of %d healthy and %d abnormal images",
                        *(len(image_set.scores) for image_set in image_sets))
            report.image_level = evaluate_images(*image_sets, quantile=self.image_score_quantile,
                                                 min_images_per_class=self.min_images_per_class,
                                                 n_resamples=self.n_resamples, seed=self.seed)
        self.files = {**write_report(report, self.output_dir), "skipped.csv": skip_log.path}
        logger.info("evaluation report in %s:\n%s", self.output_dir, markdown_table(report))
        if skip_log.count():
            logger.warning("%d images skipped, listed in %s", skip_log.count(), skip_log.path)
        if self.tracking_uri:
            run_id = log_report_to_mlflow(report, self.tracking_uri, self.experiment_name, self.run_name, self.run_id,
                                          self.files, model_path=self.model_path)
            logger.info("evaluation logged to MLflow run %s (%s)", run_id, self.tracking_uri)
        return report
