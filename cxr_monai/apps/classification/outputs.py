"""The radiologist-assist triage screen out of the multi-label classifier: per image the class probabilities, the
top classes with a class activation map over the radiograph at its stored size, and a worklist ranked by a binary
normal/abnormal score.

The evaluator runs :class:`~cxr_monai.networks.CXRDenseNet121` at the working size; each decollated output item has
``image`` (the network input ``(C_in, H, W)``, a MetaTensor naming the radiograph file) and ``pred`` (the logits,
``(num_classes,)``). :class:`TriageWriter` turns them into:

- ``overlays/<stem>_<class>.png``: for each of the ``top_k`` most probable classes, its heatmap (CAM or Grad-CAM,
  :class:`~cxr_monai.apps.classification.heatmaps.ClassHeatmaps`) computed on the item's ``image`` at the working
  size, resized to the radiograph's stored size and drawn over it (:func:`~cxr_monai.visualize.heatmap_overlay`),
  the class and its probability written in the top-left corner; for the dual-branch network also
  ``overlays/<stem>_<class>_lateral.png`` over the study's lateral radiograph (one map per branch);
- ``triage.csv``: one row per image ranked by the **abnormal score**, highest first;
- ``datalist.json``: the source entries of the images in triage order (see :class:`TriageWriter`).

**Abnormal score** (``abnormal_score``), computed over the classes that make a radiograph abnormal (every class but
``not_abnormal``: by default ``Support Devices`` and ``No Finding``, as the CheXpert datalist builder defines the
binary label: a device alone is normal):

- ``"max"`` (default): the largest class probability. The image is as abnormal as its most likely finding; the
  score stays a probability of one class, comparable across images whatever the number of classes.
- ``"noisy_or"``: ``1 - prod(1 - p_c)``, the probability of at least one finding if the classes were independent.
  It ranks images with several moderate findings above one with a single moderate finding, and grows with the
  number of classes, so it is not calibrated as a probability of "abnormal".

Example::

    from cxr_monai.apps.classification import TriageWriter
    from cxr_monai.data import datalist_label_names

    TriageWriter("runs/classifier/triage", datalist_label_names("chexpert.json"), network,
                 datalist="chexpert.json", base_dir="/data/chexpert").attach(evaluator)
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from cxr_monai.apps.classification.heatmaps import ClassHeatmaps, resize_heatmap
from cxr_monai.handlers.per_image import DatalistWriter, filename_of
from cxr_monai.reports import write_csv
from cxr_monai.utils import as_bool, is_distributed, is_rank0
from cxr_monai.visualize import heatmap_overlay, save_png

__all__ = [
    "ABNORMAL_SCORES",
    "NOT_ABNORMAL",
    "TriageWriter",
    "abnormal_score",
    "class_file_name",
    "gather_rows",
    "labels_of",
    "probabilities_of",
]

logger = logging.getLogger(__name__)

#: The rules of the binary normal/abnormal score (see the module docstring).
ABNORMAL_SCORES = ("max", "noisy_or")
#: Classes left out of the abnormal score by default: a support device alone is normal (CheXpert's labeler writes
#: "No Finding" next to it), and "No Finding" is the opposite of a finding.
NOT_ABNORMAL = ("Support Devices", "No Finding")


def _vector(value: Any) -> np.ndarray:
    """A 1-D float64 array of a tensor, MetaTensor, array or list (``None`` entries become NaN)."""
    if isinstance(value, MetaTensor):
        value = value.as_tensor()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy().reshape(-1)
    return np.asarray([np.nan if v is None else float(v) for v in np.asarray(value, dtype=object).reshape(-1)],
                      dtype=np.float64)


def probabilities_of(pred: Any, num_classes: int, sigmoid: bool = True) -> np.ndarray:
    """The class probabilities ``(num_classes,)`` of one item's ``pred``: the sigmoid of the logits (or ``pred`` as it
    is with ``sigmoid=False``, when the postprocessing already applied it).

    >>> probabilities_of(torch.tensor([0.0, 2.0]), 2).round(3).tolist()
    [0.5, 0.881]
    """
    values = _vector(pred)
    if values.size != num_classes:
        raise ValueError(f"pred has {values.size} values for {num_classes} class names")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"pred is not finite: {values.tolist()}")
    return 1.0 / (1.0 + np.exp(-values)) if sigmoid else values


def labels_of(label: Any, num_classes: int) -> np.ndarray:
    """One item's multi-hot ``label`` as ``(num_classes,)`` floats (1, 0, -1 uncertain, NaN not mentioned); all NaN
    when the item has none.

    >>> labels_of([1, None, -1], 3).tolist(), labels_of(None, 2).tolist()
    ([1.0, nan, -1.0], [nan, nan])
    """
    if label is None:
        return np.full(num_classes, np.nan)
    values = _vector(label)
    if values.size != num_classes:
        raise ValueError(f"label has {values.size} values for {num_classes} class names")
    return values


def abnormal_score(probabilities: np.ndarray, rule: str = "max") -> float:
    """The binary normal/abnormal score of the probabilities of the abnormal classes (see the module docstring).

    >>> abnormal_score(np.array([0.2, 0.5])), round(abnormal_score(np.array([0.2, 0.5]), "noisy_or"), 3)
    (0.5, 0.6)
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.size == 0:
        raise ValueError("no class probability to score")
    if rule == "max":
        return float(p.max())
    if rule == "noisy_or":
        return float(1.0 - np.prod(1.0 - p))
    raise ValueError(f"abnormal_score must be one of {ABNORMAL_SCORES}, got {rule!r}")


def class_file_name(name: str) -> str:
    """A class name as a file-name part: runs of characters other than letters, digits, ``.``, ``-`` become ``_``.

    >>> class_file_name("Pleural Effusion"), class_file_name("Pleural_Thickening")
    ('Pleural_Effusion', 'Pleural_Thickening')
    """
    return re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_") or "class"


def gather_rows(rows: list[dict[str, Any]], key: str = "image") -> list[dict[str, Any]]:
    """Every rank's ``rows`` on every rank (a collective when distributed), the first row of each ``key`` kept (a
    ``DistributedSampler`` repeats images to even out the ranks); the rows as they are in a single process."""
    if not is_distributed():
        return rows
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, rows)
    unique: dict[Any, dict[str, Any]] = {}
    for part in gathered:
        for row in part:
            unique.setdefault(row[key], row)
    return list(unique.values())


def _draw_label(rgb: np.ndarray, text: str) -> np.ndarray:
    """``text`` in white on a black box in the top-left corner of an RGB uint8 image (its size unchanged)."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(rgb)
    font = ImageFont.load_default(size=int(np.clip(rgb.shape[0] // 32, 10, 64)))
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    margin = max(2, (bottom - top) // 4)
    draw.rectangle((0, 0, right - left + 2 * margin, bottom - top + 2 * margin), fill=(0, 0, 0))
    draw.text((margin - left, margin - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


class TriageWriter(DatalistWriter):
    """Write the triage screen of a multi-label classifier: CAM overlays of each image's top classes at the stored
    size, ``triage.csv`` ranked by the abnormal score, and ``datalist.json``.

    Per image (``item``): the class probabilities (sigmoid of ``pred``); the ``top_k`` most probable classes (over
    all classes, ``not_abnormal`` ones included); with ``overlays``, for each of them the heatmap of that class
    (:class:`~cxr_monai.apps.classification.heatmaps.ClassHeatmaps` with ``heatmap_method``: 1 at the most
    class-relevant region, never MONAI's inverting default) on the item's ``image`` at the working size, resized
    bilinearly to the radiograph's stored size (read again with :func:`cxr_monai.io.read_cxr`) and written as
    ``overlays/<stem>_<class>.png`` (the class as :func:`class_file_name`), labelled with the class and its
    probability. The resize assumes the working-size input is the whole radiograph resized (no crop or padding).
    With a :class:`~cxr_monai.networks.DualBranchDenseNet121` the item's ``lateral`` (a MetaTensor naming its file)
    gets its own map per class (Grad-CAM on the lateral branch), drawn over the lateral radiograph as
    ``overlays/<stem>_<class>_lateral.png``; a study without a lateral (``lateral_present`` 0, or an input naming no
    file) gets none. MONAI's visualiser hooks stay registered on the network after the first image (MONAI keeps no
    handle); they only keep a reference to the last feature map.

    On completion (rank 0, the rows of every rank gathered):

    - ``triage.csv``: ``rank`` (1 = most abnormal), ``image``, ``abnormal_score``, then for ``n`` in 1..top_k
      ``top<n>_class``, ``top<n>_probability``, ``top<n>_overlay`` (relative to ``output_dir``; empty without
      overlays; for the dual branch also ``top<n>_lateral_overlay``, empty without a lateral), then ``p_<class>`` for every class (the class name as :func:`class_file_name`). Ties keep the
      order the evaluator gave the images.
    - ``datalist.json`` (:meth:`~cxr_monai.handlers.DatalistWriter.record`): **no new keys**. The schema's entries
      take no other keys (``additionalProperties: false``) and none of its keys means a heatmap, so each entry is
      the image's source entry (split, ``labels``, ``view``... kept; paths absolute) in triage order, with the
      source's ``label_names`` at the top; the overlays are named in ``triage.csv``. The list is a worklist that
      any bundle reads as its input (``base_dir=output_dir``).

    Args:
        output_dir: where the files go.
        class_names: the classes of ``pred``, in order (the datalist's ``label_names``:
            :func:`cxr_monai.data.datalist_label_names`).
        network: the classifier (``CXRDenseNet121`` or ``DualBranchDenseNet121``, or DDP around one); only needed
            with ``overlays``.
        datalist, datalist_keys, base_dir: the source datalist (:class:`~cxr_monai.handlers.DatalistWriter`).
        top_k: classes listed (and mapped) per image, at most the number of classes.
        overlays: write the heatmap overlays.
        heatmap_method: ``"cam"`` or ``"gradcam"`` (:mod:`~cxr_monai.apps.classification.heatmaps`; the dual branch
            takes ``"gradcam"`` only).
        abnormal_score: ``"max"`` or ``"noisy_or"`` (module docstring).
        not_abnormal: classes left out of the abnormal score (those absent from ``class_names`` are ignored).
        sigmoid: ``pred`` holds logits (``False``: probabilities already).
        lateral_key, lateral_present_key: the item's lateral input and its flag (dual branch).

    Example::

        TriageWriter("runs/classifier/triage", ["Atelectasis", "Cardiomegaly"], network,
                     datalist="chexpert.json", base_dir="/data/chexpert", top_k=2).attach(evaluator)
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str],
        network: torch.nn.Module | None = None,
        datalist: str | os.PathLike | None = None,
        datalist_keys: Sequence[str] = ("test", "test_unhealthy"),
        base_dir: str | os.PathLike | None = None,
        top_k: int = 3,
        overlays: bool = True,
        heatmap_method: str = "cam",
        abnormal_score: str = "max",
        not_abnormal: Sequence[str] = NOT_ABNORMAL,
        sigmoid: bool = True,
        pred_key: str = "pred",
        image_key: str = "image",
        lateral_key: str = "lateral",
        lateral_present_key: str = "lateral_present",
        split: str = "test",
        name: str = "triage worklist of the classifier bundle, most abnormal first",
    ) -> None:
        super().__init__(output_dir, datalist, datalist_keys, base_dir, image_key=image_key, split=split, name=name)
        self.class_names = tuple(class_names)
        if not self.class_names:
            raise ValueError("TriageWriter: no class names")
        files = [class_file_name(name) for name in self.class_names]
        if len(set(files)) != len(files):
            raise ValueError(f"TriageWriter: class names collide as file names: {files}")
        self._files = dict(zip(self.class_names, files))
        if abnormal_score not in ABNORMAL_SCORES:
            raise ValueError(f"abnormal_score must be one of {ABNORMAL_SCORES}, got {abnormal_score!r}")
        self.abnormal_score = abnormal_score
        self.not_abnormal = tuple(not_abnormal)
        self._abnormal = np.array([name not in self.not_abnormal for name in self.class_names])
        if not self._abnormal.any():
            raise ValueError("TriageWriter: every class is in not_abnormal; nothing is left for the abnormal score")
        self.top_k = max(1, min(int(top_k), len(self.class_names)))
        self.overlays = as_bool(overlays, "overlays")
        if self.overlays and network is None:
            raise ValueError("TriageWriter: overlays need the network (for its class activation maps)")
        self.heatmaps = ClassHeatmaps(network, heatmap_method) if self.overlays else None
        self.lateral_overlays = self.heatmaps is not None and self.heatmaps.dual_branch
        self.network = network
        self.sigmoid = as_bool(sigmoid, "sigmoid")
        self.pred_key = pred_key
        self.lateral_key = lateral_key
        self.lateral_present_key = lateral_present_key
        if self.lateral_overlays:
            self.batch_keys = (lateral_key, lateral_present_key)
        self.rows: list[dict[str, Any]] = []

    # ------------------------------------------------------------------------------------------------------
    # per image

    def item(self, item: Mapping[str, Any], image_path: str | None) -> None:
        if image_path is None:
            raise ValueError("TriageWriter: the item carries no file name (MetaTensor meta 'filename_or_obj'); load "
                             "images with cxr_monai.io.LoadCXRImaged")
        self.write(item[self.image_key], item[self.pred_key], image_path, item.get(self.lateral_key),
                   item.get(self.lateral_present_key))

    def write(self, image: Any, pred: Any, image_path: str, lateral: Any = None,
              lateral_present: Any = None) -> dict[str, Any]:
        """Score one image and write its overlays from its network input ``image`` (and, for the dual branch, the
        study's ``lateral`` input, a MetaTensor naming its file, with its ``lateral_present`` flag) and logits
        ``pred``; returns its ``triage.csv`` row (without the rank)."""
        probabilities = probabilities_of(pred, len(self.class_names), self.sigmoid)
        top = [int(c) for c in np.argsort(-probabilities, kind="stable")[: self.top_k]]
        row: dict[str, Any] = {"image": os.path.abspath(image_path),
                               "abnormal_score": abnormal_score(probabilities[self._abnormal], self.abnormal_score)}
        overlay_paths = (self._write_overlays(image, image_path, top, probabilities, lateral, lateral_present)
                         if self.overlays else {})
        for n, c in enumerate(top, start=1):
            name = self.class_names[c]
            row[f"top{n}_class"] = name
            row[f"top{n}_probability"] = float(probabilities[c])
            row[f"top{n}_overlay"] = overlay_paths.get(("frontal", name), "")
            if self.lateral_overlays:
                row[f"top{n}_lateral_overlay"] = overlay_paths.get(("lateral", name), "")
        for name, p in zip(self.class_names, probabilities):
            row[f"p_{self._files[name]}"] = float(p)
        self.rows.append(row)
        return row

    def _write_overlays(self, image: Any, image_path: str, classes: Sequence[int], probabilities: np.ndarray,
                        lateral: Any = None, lateral_present: Any = None) -> dict[tuple[str, str], str]:
        from cxr_monai.io import read_cxr

        assert self.heatmaps is not None
        lateral_path = filename_of(lateral) if self.lateral_overlays and lateral is not None else None
        maps = self.heatmaps(image, classes, lateral if lateral_path else None, lateral_present)
        sources = {"frontal": image_path, "lateral": lateral_path}
        stem = self.stem(image_path)
        paths = {}
        for view, view_maps in maps.items():
            radiograph, _ = read_cxr(sources[view])
            suffix = "" if view == "frontal" else "_lateral"
            for c, heatmap in zip(classes, view_maps):
                name = self.class_names[c]
                overlay = _draw_label(heatmap_overlay(radiograph, resize_heatmap(heatmap, radiograph.shape), vmax=1.0),
                                      f"{name} {probabilities[c]:.2f}")
                path = save_png(overlay, self.output_dir / "overlays" / f"{stem}_{self._files[name]}{suffix}.png")
                paths[(view, name)] = path.relative_to(self.output_dir).as_posix()
        return paths

    # ------------------------------------------------------------------------------------------------------
    # on completion

    def ranked_rows(self, rows: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The rows sorted by the abnormal score (highest first, ties in the order given), ``rank`` first."""
        rows = self.rows if rows is None else rows
        ordered = sorted(rows, key=lambda row: -row["abnormal_score"])
        return [{"rank": rank, **row} for rank, row in enumerate(ordered, start=1)]

    @property
    def fields(self) -> list[str]:
        """The columns of ``triage.csv``."""
        columns = ("class", "probability", "overlay", "lateral_overlay") if self.lateral_overlays else (
            "class", "probability", "overlay")
        top = [f"top{n}_{what}" for n in range(1, self.top_k + 1) for what in columns]
        return ["rank", "image", "abnormal_score", *top, *(f"p_{self._files[name]}" for name in self.class_names)]

    def completed(self, engine: Engine | None = None) -> Path | None:
        """Write ``triage.csv`` and ``datalist.json`` (rank 0); returns the CSV's path, or None when nothing was
        written."""
        rows = gather_rows(self.rows)  # a collective: every rank calls it
        if not is_rank0() or not rows:
            return None
        ranked = self.ranked_rows(rows)
        path = write_csv(ranked, self.output_dir / "triage.csv", self.fields)
        self.written = []
        for row in ranked:
            self.record(row["image"], {})
        super().completed(engine)
        logger.info("triage of %d images written to %s (abnormal score: %s)", len(ranked), path, self.abnormal_score)
        return path
