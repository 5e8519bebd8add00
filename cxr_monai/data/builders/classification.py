"""Multi-label classification datalists: CheXpert (seed 003 §3.3, Table 1) and NIH ChestX-ray14 (issue #12).

Both builders write a schema-valid datalist atomically with a top-level ``label_names`` and, per entry, the
multi-hot ``labels`` in that order (1 present, 0 absent, -1 uncertain, ``null`` not mentioned), the binary
``label`` (0 normal, 1 abnormal) of the seed's pretraining task and the ``view``. They split by patient with
:func:`~cxr_monai.data.datalist.split_groups`, list every rejected file with its reason in the returned
:class:`~cxr_monai.data.datalist.DatalistSummary`, and never write a patient's name, sex or age.

- :func:`build_chexpert_datalist` reads CheXpert's ``train.csv`` (or ``valid.csv``): one entry per frontal image
  with the 13 classes of Table 1 (:data:`CHEXPERT_CLASSES`) after an uncertainty policy (U-ones, U-zeros or
  ignore), the study (``patient00001/study1``, from the path) and, with ``pair_lateral``, the study's lateral
  image as ``lateral`` (the second branch of the dual-branch DenseNet-121).
- :func:`build_chestxray14_datalist` reads ``Data_Entry_2017*.csv``: the 14 findings of ChestX-ray14
  (:data:`CHESTXRAY14_CLASSES`, the order of Wang et al. 2017 and torchxrayvision) from ``Finding Labels``;
  with ``BBox_List_2017.csv`` the boxed images also carry ``boxes`` / ``box_labels`` for the localisation of the
  class heatmaps (:class:`~cxr_monai.apps.classification.LocalisationEvaluation`), and their patients are all
  in ``test``. It is not the context encoder's ``datalist nih`` (healthy images and boxed test images); it
  reuses that builder's CSV readers, image locator and box scaling.

All test images, normal and abnormal, are in ``test`` (``test_unhealthy`` is written empty): a classifier is
evaluated on one test list.

Python::

    summary = build_chexpert_datalist("CheXpert-v1.0-small/train.csv", "/data", "chexpert.json",
                                      uncertainty="ones")
    print(summary.format())

Command line::

    python -m cxr_monai datalist chexpert --csv /data/CheXpert-v1.0-small/train.csv --image-root /data \\
        --out chexpert.json --uncertainty ones
    python -m cxr_monai datalist chestxray14 --data-entry Data_Entry_2017_v2020.csv.gz \\
        --bbox-list BBox_List_2017.csv.gz --image-dir /data/ChestX-ray14/images --out chestxray14.json
"""

from __future__ import annotations

import functools
import gc
import os
import posixpath
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

from cxr_monai.data.builders.nih import (
    NIH_BOX_IMAGE_SIZE,
    NIH_HEALTHY,
    _ImageLocator,
    _NihImage,
    _read_nih_bbox_list,
    _read_nih_data_entry,
    _stored_boxes,
    _wanted_view,
)
from cxr_monai.data.datalist import (
    SPLIT_KEYS,
    DatalistSummary,
    RejectedFile,
    SplitCounts,
    _check_fractions,
    _column,
    _field,
    _finish,
    _read_csv,
    _reject,
    _relative_dir,
    _require_dir,
    image_file_problem,
    split_groups,
)

__all__ = [
    "BLANK_POLICIES",
    "CHESTXRAY14_CLASSES",
    "CHESTXRAY14_TEST_FRACTION",
    "CHESTXRAY14_VAL_FRACTION",
    "CHEXPERT_CLASSES",
    "CHEXPERT_NOT_ABNORMAL",
    "CHEXPERT_TEST_FRACTION",
    "CHEXPERT_VAL_FRACTION",
    "UNCERTAINTY_POLICIES",
    "build_chestxray14_datalist",
    "build_chexpert_datalist",
]

#: The 13 CheXpert classes of seed 003 Table 1, in its column order (AT CA CO ED PE PN PX EC LL AO PO FR SD). The
#: seed's "Airspace Opacity" is CheXpert's column "Lung Opacity".
CHEXPERT_CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
    "Pneumonia",
    "Pneumothorax",
    "Enlarged Cardiomediastinum",
    "Lung Lesion",
    "Lung Opacity",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
#: Classes of Table 1 that do not make a radiograph abnormal: CheXpert's labeler writes "No Finding" = 1 next to a
#: positive "Support Devices" (8,808 rows of train.csv), so a device alone is normal.
CHEXPERT_NOT_ABNORMAL = ("Support Devices",)
CHEXPERT_NO_FINDING = "No Finding"
#: The 14 findings of ChestX-ray14 in the order of its paper's release (Wang et al. 2017) and torchxrayvision.
CHESTXRAY14_CLASSES = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
#: What an uncertain (-1) CheXpert label becomes: U-ones -> 1, U-zeros -> 0, ignore -> kept as -1 (masked in the loss).
UNCERTAINTY_POLICIES = {"ones": 1, "zeros": 0, "ignore": -1}
#: What a blank (not mentioned) CheXpert label becomes: ``null`` (masked by the loss) or 0.
BLANK_POLICIES = ("null", "zeros")
# CheXpert ships 234 validation images and keeps its 500 test studies hidden: the training CSV is split, 5 % each.
CHEXPERT_VAL_FRACTION = 0.05
CHEXPERT_TEST_FRACTION = 0.05
# Wang et al. 2017 split ChestX-ray14 by patient 70 / 10 / 20 (training / validation / test).
CHESTXRAY14_VAL_FRACTION = 0.1
CHESTXRAY14_TEST_FRACTION = 0.2

_CHEXPERT_VALUES = {"": None, "1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1}
_BAD = object()
_MISSING_HINT = (" (pass --allow-missing-images / check_images=False to build the list before the images are in "
                 "place)")


def _without_gc(function: Callable) -> Callable:
    """Run ``function`` with the cyclic garbage collector paused: building 200k entries allocates millions of
    small acyclic objects, and the collector's passes over them took two thirds of the time."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return wrapper


def _class_counts_note(document: dict[str, Any], names: tuple[str, ...], value: int, what: str) -> str | None:
    columns = list(zip(*(entry["labels"] for key in SPLIT_KEYS for entry in document[key])))
    counts = [column.count(value) for column in columns]
    if not any(counts):
        return None
    return f"{what} per class (all splits): " + ", ".join(f"{name} {n}" for name, n in zip(names, counts))


def _binary_note(document: dict[str, Any]) -> str:
    counts = Counter(entry.get("label") for key in SPLIT_KEYS for entry in document[key])
    text = f"label: {counts[0]} normal (0), {counts[1]} abnormal (1)"
    return text + (f", {counts[None]} undetermined (no 'label')" if counts[None] else "")


# ----------------------------------------------------------------------------------------------------------
# CheXpert


class _ChexpertRow:
    __slots__ = ("labels", "line", "no_finding", "path", "patient", "study", "view")

    def __init__(self, path: str, patient: str, study: str, view: str, labels: list[int | None],
                 no_finding: int | None, line: int):
        self.path, self.patient, self.study, self.view = path, patient, study, view
        self.labels, self.no_finding, self.line = labels, no_finding, line


def _chexpert_values(fields: Sequence[str], names: Sequence[str], csv_path: str | os.PathLike,
                     line: int) -> list[int | None]:
    """CheXpert label fields as 1, 0, -1, or ``None`` for a blank."""
    values = list(map(_CHEXPERT_VALUES.get, fields, repeat(_BAD)))
    if _BAD in values:
        for field, name in zip(fields, names):
            value = _CHEXPERT_VALUES.get(field.strip(), _BAD)
            if value is _BAD:
                raise ValueError(f"{csv_path}: line {line}: '{name}' must be 1, 0, -1 or blank, got {field!r}")
        values = [_CHEXPERT_VALUES[field.strip()] for field in fields]  # only surrounding spaces
    return values


def _read_chexpert_csv(csv_path: str | os.PathLike, rejected: list[RejectedFile]
                       ) -> tuple[list[_ChexpertRow], list[_ChexpertRow]]:
    """Frontal and lateral rows of a CheXpert CSV with their raw labels (1, 0, -1, ``None``), in file order."""
    header, rows = _read_csv(csv_path)
    path_column = _column(header, "Path", csv_path)
    kind_column = _column(header, "Frontal/Lateral", csv_path)
    view_column = _column(header, "AP/PA", csv_path)
    no_finding_column = _column(header, CHEXPERT_NO_FINDING, csv_path)
    class_columns = [_column(header, name, csv_path) for name in CHEXPERT_CLASSES]
    names = (*CHEXPERT_CLASSES, CHEXPERT_NO_FINDING)
    label_fields = itemgetter(*class_columns, no_finding_column)
    width = len(header)
    frontal, lateral, seen = [], [], set()
    for line, row in rows:
        if len(row) < width:
            row = row + [""] * (width - len(row))
        path = _field(row, path_column, "Path", csv_path, line).replace("\\", "/")
        if path in seen:
            raise ValueError(f"{csv_path}: line {line}: Path {path} appears twice")
        seen.add(path)
        parts = path.split("/")
        if len(parts) < 3:
            _reject(rejected, path, "path has no <patient>/<study>/<image> folders (CheXpert layout)")
            continue
        kind = _field(row, kind_column, "Frontal/Lateral", csv_path, line)
        view = row[view_column].strip()
        *labels, no_finding = _chexpert_values(label_fields(row), names, csv_path, line)
        record = _ChexpertRow(path, parts[-3], f"{parts[-3]}/{parts[-2]}", view, labels, no_finding, line)
        if kind.lower() == "frontal":
            frontal.append(record)
        elif kind.lower() == "lateral":
            lateral.append(record)
        else:
            _reject(rejected, path, f"Frontal/Lateral is {kind!r}, expected Frontal or Lateral")
    return frontal, lateral


def _chexpert_relative(image_root: Path, paths: list[str]) -> tuple[str, str]:
    """The leading folder to strip from the CSV paths: CSV paths start with ``CheXpert-v1.0-small/`` and are
    relative to the folder holding it; an ``image_root`` that is that dataset folder itself (it holds ``train/``
    but not ``CheXpert-v1.0-small/``) gets the first folder stripped. Returns ``(strip, why)``."""
    first = paths[0].split("/")[0]
    if not image_root.is_dir() or (image_root / first).is_dir():
        return "", ""
    second = paths[0].split("/")[1]
    if (image_root / second).is_dir():
        return first + "/", f"{image_root} holds '{second}/' but not '{first}/': '{first}/' stripped from the paths"
    return "", ""


@_without_gc
def build_chexpert_datalist(
    csv_path: str | os.PathLike,
    image_root: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    uncertainty: str = "ones",
    blank: str = "null",
    pair_lateral: bool = True,
    val_fraction: float = CHEXPERT_VAL_FRACTION,
    test_fraction: float = CHEXPERT_TEST_FRACTION,
    seed: int = 0,
    check_images: bool = True,
    base_dir: str | os.PathLike | None = None,
    name: str | None = None,
) -> DatalistSummary:
    """Build the CheXpert classification datalist: frontal images, the 13 Table 1 classes, lateral pairs.

    - One entry per frontal image (``Frontal/Lateral`` = Frontal): ``image`` (the CSV's ``Path``), ``labels``
      (:data:`CHEXPERT_CLASSES` order; the document's ``label_names``), ``label``, ``study``
      (``patient00001/study1``: the path's patient and study folders, the same pseudonymous numbers the paths
      carry; no name, sex or age is written), ``view`` (``AP/PA`` as written: AP, PA, and LL/RL for 17 frontal
      images of train.csv; left out when blank) and, with ``pair_lateral``, ``lateral``: the first lateral image
      the CSV lists for the study (the study's frontal images all get it; a study without one has no
      ``lateral``). Lateral images of studies without a frontal one are rejected (``lateral only``).
    - ``labels``: 1, 0 as written; uncertain (-1) by ``uncertainty``: ``"ones"`` (U-ones) -> 1, ``"zeros"``
      (U-zeros) -> 0, ``"ignore"`` -> kept as -1, which :class:`~cxr_monai.losses.MaskedBCEWithLogitsLoss`
      masks. Blank (not mentioned) by ``blank``: ``"null"`` -> ``null`` (masked by the loss too, as
      torchxrayvision does), ``"zeros"`` -> 0 (the CheXpert paper's treatment).
    - ``label`` (normal/abnormal, the seed's binary pretraining target): 1 when any of the 12 pathology classes
      (Table 1 less :data:`CHEXPERT_NOT_ABNORMAL`, Support Devices) is 1 after the uncertainty policy (so with
      U-ones an uncertain pathology makes the image abnormal); otherwise 0 when ``No Finding`` is 1 (CheXpert's
      labeler writes it only when no pathology is positive or uncertain; a support device may be present);
      otherwise -- ``No Finding`` blank and no positive pathology, e.g. only uncertain ones under U-zeros/ignore,
      or only negatives and blanks -- no ``label`` key: the binary target is undetermined, and a binary run
      leaves the entry out with ``load_datalist(..., required_keys=["label"])``.
    - ``image_root``: the folder holding ``CheXpert-v1.0-small/`` (the paths are written as the CSV has them,
      relative to it); the dataset folder itself is accepted too (its ``CheXpert-v1.0-small/`` is stripped).
      Paths are relative to ``base_dir`` (default: ``image_root``).
    - Split by patient with :func:`split_groups` (``val_fraction``, ``test_fraction`` of the frontal images,
      ``seed``), drawn before any file is checked. ``check_images``: every frontal image (and lateral) must pass
      :func:`image_file_problem`; a bad frontal image is rejected, a bad lateral one is rejected and its frontal
      images are listed without ``lateral``. ``check_images=False`` checks nothing (the label file alone).

    The document's ``description`` records the uncertainty and blank policies.

    >>> import csv, json
    >>> with open("train.csv", "w", newline="") as stream:
    ...     writer = csv.writer(stream)
    ...     _ = writer.writerow(["Path", "Frontal/Lateral", "AP/PA", "No Finding", *CHEXPERT_CLASSES])
    ...     _ = writer.writerow(["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "Frontal",
    ...                          "AP", "", "-1.0", "1.0", *[""] * 11])
    ...     _ = writer.writerow(["CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg", "Lateral",
    ...                          "", "", "-1.0", "1.0", *[""] * 11])
    >>> summary = build_chexpert_datalist("train.csv", "data", "chexpert.json", uncertainty="ignore",
    ...                                   val_fraction=0, test_fraction=0, check_images=False)
    >>> entry = json.load(open("chexpert.json"))["training"][0]
    >>> entry["labels"][:3], entry["label"], entry["study"], entry["lateral"]
    ([-1, 1, None], 1, 'patient00001/study1', 'CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg')
    """
    if uncertainty not in UNCERTAINTY_POLICIES:
        raise ValueError(f"uncertainty must be one of {', '.join(UNCERTAINTY_POLICIES)}, got {uncertainty!r}")
    if blank not in BLANK_POLICIES:
        raise ValueError(f"blank must be one of {', '.join(BLANK_POLICIES)}, got {blank!r}")
    _check_fractions(val_fraction, test_fraction)
    image_root, out_path = Path(image_root), Path(out_path)
    base_dir = image_root if base_dir is None else Path(base_dir)
    prefix = _relative_dir(image_root, base_dir)
    csv_name = Path(csv_path).name
    if check_images:
        _require_dir(image_root, "image root", _MISSING_HINT)

    rejected: list[RejectedFile] = []
    frontal, lateral = _read_chexpert_csv(csv_path, rejected)
    if not frontal:
        raise ValueError(f"{csv_path}: no frontal image (Frontal/Lateral = Frontal) among {len(lateral)} rows")
    strip, strip_note = _chexpert_relative(image_root, [row.path for row in frontal])

    uncertain_to, blank_to = UNCERTAINTY_POLICIES[uncertainty], (None if blank == "null" else 0)
    pathology_labels = itemgetter(*(n for n, name in enumerate(CHEXPERT_CLASSES) if name not in CHEXPERT_NOT_ABNORMAL))

    policy = {1: 1, 0: 0, -1: uncertain_to, None: blank_to}.__getitem__

    frontal_studies = {row.study for row in frontal}
    lateral_of: dict[str, _ChexpertRow] = {}
    extra_laterals = unused_laterals = 0
    for row in lateral:
        if not pair_lateral:
            unused_laterals += 1
        elif row.study not in frontal_studies:
            _reject(rejected, row.path, "lateral only: its study has no frontal image")
        elif row.study in lateral_of:
            extra_laterals += 1
        else:
            lateral_of[row.study] = row

    split_of_patient = split_groups(Counter(row.patient for row in frontal), val_fraction=val_fraction,
                                    test_fraction=test_fraction, seed=seed)

    def relative(path: str) -> str:
        return path[len(strip):] if strip and path.startswith(strip) else path

    def problem_of(rel: str) -> str | None:
        if not check_images:
            return None
        problem = image_file_problem(image_root / rel)
        return f"missing: not found under {image_root}" if problem == "missing" else problem

    lateral_problem: dict[str, str | None] = {}  # lateral path -> why it is unusable, checked once per study
    document: dict[str, Any] = {key: [] for key in SPLIT_KEYS}
    members: dict[str, list[_ChexpertRow]] = {key: [] for key in SPLIT_KEYS}
    conflicts = lateral_dropped = 0
    for row in frontal:
        rel = relative(row.path)
        problem = problem_of(rel)
        if problem is not None:
            _reject(rejected, (image_root / rel).as_posix(), problem)
            continue
        labels = list(map(policy, row.labels))
        entry: dict[str, Any] = {"image": posixpath.join(prefix, rel), "labels": labels}
        if 1 in pathology_labels(labels):
            entry["label"] = 1
            conflicts += row.no_finding == 1
        elif row.no_finding == 1:
            entry["label"] = 0
        entry["study"] = row.study
        if row.view:
            entry["view"] = row.view
        partner = lateral_of.get(row.study)
        if partner is not None:
            lateral_rel = relative(partner.path)
            if partner.path not in lateral_problem:
                lateral_problem[partner.path] = problem_of(lateral_rel)
                if lateral_problem[partner.path] is not None:
                    _reject(rejected, (image_root / lateral_rel).as_posix(),
                            f"{lateral_problem[partner.path]} (lateral: its study's frontal images are listed "
                            "without it)")
            if lateral_problem[partner.path] is None:
                entry["lateral"] = posixpath.join(prefix, lateral_rel)
            else:
                lateral_dropped += 1
        key = split_of_patient[row.patient]
        document[key].append(entry)
        members[key].append(row)

    splits = {key: SplitCounts(len(group), len({row.patient for row in group}),
                               dict(Counter(row.view or "-" for row in group))) for key, group in members.items()}
    listed = sum(len(document[key]) for key in SPLIT_KEYS)
    notes = [f"uncertainty policy '{uncertainty}' (-1 -> {uncertain_to}), blank -> {blank}",
             _binary_note(document)]
    for value, what in ((1, "positives"), (-1, "uncertain (-1)")):
        note = _class_counts_note(document, CHEXPERT_CLASSES, value, what)
        if note:
            notes.append(note)
    if pair_lateral:
        with_lateral = sum("lateral" in entry for key in SPLIT_KEYS for entry in document[key])
        notes.append(f"{with_lateral} of {listed} frontal images have their study's lateral image")
        if extra_laterals:
            notes.append(f"{extra_laterals} studies' second or third lateral images are not used (one per study)")
        if lateral_dropped:
            notes.append(f"{lateral_dropped} frontal images are listed without their study's unusable lateral")
    elif unused_laterals:
        notes.append(f"{unused_laterals} lateral images not used (pair_lateral=False)")
    odd_views = Counter(row.view for key in SPLIT_KEYS for row in members[key] if row.view not in ("AP", "PA"))
    if odd_views:
        notes.append("frontal images whose AP/PA is neither AP nor PA: "
                     + ", ".join(f"{view or 'blank'} {n}" for view, n in sorted(odd_views.items())))
    if conflicts:
        notes.append(f"{conflicts} images have No Finding = 1 and a positive pathology: label 1")
    if strip_note:
        notes.append(strip_note)
    notes.append(f"split by patient: {len(split_of_patient)} patients, each in one split")

    where = f"'{image_root.name}'" if not prefix else f"the directory holding '{prefix}'"
    description = (
        f"CheXpert frontal images from {csv_name} with the 13 classes of seed 003 Table 1 (label_names; Lung "
        f"Opacity is the seed's Airspace Opacity). Uncertainty policy: {uncertainty} (uncertain -1 -> "
        f"{uncertain_to}); blank (not mentioned) -> {blank}. label: 1 when a pathology (any class but Support "
        "Devices) is 1 after the policy, else 0 when No Finding is 1, else absent. lateral: the study's first "
        f"lateral image. Split by patient (seed {seed}, validation {val_fraction:g}, test at least "
        f"{test_fraction:g}); test holds normal and abnormal images. Paths are relative to {where}: pass it as "
        "base_dir (bundles: --dataset_dir)."
    )
    if rejected:
        description += f" {len(rejected)} rejected files were left out."
    name = name or f"chexpert-u{uncertainty}"
    return _finish({"name": name, "description": description, "label_names": list(CHEXPERT_CLASSES), **document},
                   out_path, splits, rejected, notes=notes)


# ----------------------------------------------------------------------------------------------------------
# ChestX-ray14


def _read_test_list(path: str | os.PathLike) -> set[str]:
    """Image names of ChestX-ray14's official ``test_list.txt`` (one a line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such test list")
    names = {posixpath.basename(line.strip()) for line in path.read_text(encoding="utf-8").splitlines()}
    names.discard("")
    if not names:
        raise ValueError(f"{path}: empty test list")
    return names


@_without_gc
def build_chestxray14_datalist(
    data_entry_csv: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    view: str | None = None,
    val_fraction: float = CHESTXRAY14_VAL_FRACTION,
    test_fraction: float = CHESTXRAY14_TEST_FRACTION,
    seed: int = 0,
    check_images: bool = True,
    base_dir: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    bbox_list_csv: str | os.PathLike | None = None,
    box_image_size: int | None = NIH_BOX_IMAGE_SIZE,
    name: str | None = None,
) -> DatalistSummary:
    """Build the ChestX-ray14 classification datalist: every image, the 14 findings as multi-hot labels, and with
    ``bbox_list_csv`` the boxes of the boxed images.

    - One entry per row of ``Data_Entry_2017*.csv[.gz]``: ``image``, ``labels`` (0/1 in
      :data:`CHESTXRAY14_CLASSES` order, the document's ``label_names``, from the ``|``-separated ``Finding
      Labels``; ``No Finding`` -> all 0), ``label`` (0 for ``No Finding``, else 1: the seed's binary normal /
      abnormal pretraining task) and ``view`` (``View Position``). ``view``: keep only that View Position.
      A row naming a finding outside the 14, or ``No Finding`` next to a finding, is rejected.
    - Split by ``Patient ID`` with :func:`split_groups` (``val_fraction``, ``test_fraction`` of the images; by
      default 70 / 10 / 20 as Wang et al. 2017). The official ``train_val_list.txt`` / ``test_list.txt`` are not
      among the label files here, so the default split is this patient split, not the official one; pass
      ``test_list`` (the official ``test_list.txt``) to put its images' patients in test (``test_fraction`` is
      then unused) and split the others into training and validation.
    - ``bbox_list_csv`` (``BBox_List_2017.csv[.gz]``, 984 boxes on 880 images): each boxed image's entry gets
      ``boxes`` ``[x_min, y_min, x_max, y_max]`` and ``box_labels`` (the class names: ``Infiltrate`` ->
      ``Infiltration``), and **every patient with a boxed image goes to test**: ChestX-ray8 evaluates the
      localisation of its heatmaps on boxed images the classifier never trained on, and none of these patients'
      images is trained or tuned on (on ChestX-ray14 726 patients, 15,938 images; the other patients fill test up
      to ``test_fraction``). The summary's notes say so. A box labelled outside the 14 classes rejects its image;
      a box of an image not in the Data_Entry file is rejected.
    - ``box_image_size``: side of the square images the BBox coordinates refer to (1024, the NIH release). With
      ``check_images`` a boxed image stored at another size (a resized copy) gets its boxes scaled to its stored
      pixels, and one whose boxes still leave the image is rejected; without, the boxes are written as listed.
      ``None`` keeps the coordinates as listed.
    - Images are found by name anywhere under ``image_dir`` (flat or NIH's ``images_NNN/images/``), as
      ``datalist nih`` finds them; ``check_images``: missing and unreadable images are rejected with the reason,
      ``False`` checks nothing and writes the flat ``<Image Index>`` for images not found. Paths are relative to
      ``base_dir`` (default: ``image_dir``). No patient ID, age or sex is written.

    >>> summary = build_chestxray14_datalist("Data_Entry_2017_v2020.csv.gz", "/data/nih/images",
    ...                                      "chestxray14.json", bbox_list_csv="BBox_List_2017.csv.gz",
    ...                                      check_images=False)  # doctest: +SKIP
    """
    _check_fractions(val_fraction, test_fraction)
    image_dir, out_path = Path(image_dir), Path(out_path)
    base_dir = image_dir if base_dir is None else Path(base_dir)
    prefix = _relative_dir(image_dir, base_dir)
    entry_name = Path(data_entry_csv).name
    images = _read_nih_data_entry(data_entry_csv)
    boxes_by_index = _read_nih_bbox_list(bbox_list_csv) if bbox_list_csv is not None else {}
    bbox_name = Path(bbox_list_csv).name if bbox_list_csv is not None else ""

    wanted_view = _wanted_view(images, view, data_entry_csv)

    rejected: list[RejectedFile] = []
    for index in boxes_by_index:
        if index not in images:
            _reject(rejected, index, f"not in {entry_name}: listed in {bbox_name} only")
    position = {finding: n for n, finding in enumerate(CHESTXRAY14_CLASSES)}
    kept: list[tuple[_NihImage, list[int]]] = []
    boxed_elsewhere = 0  # boxed images of another View Position
    for image in images.values():
        if wanted_view is not None and image.view.upper() != wanted_view:
            boxed_elsewhere += image.index in boxes_by_index
            continue
        unknown = [finding for finding in image.findings if finding not in position and finding != NIH_HEALTHY]
        if unknown:
            _reject(rejected, image.index, f"unknown finding {', '.join(map(repr, unknown))} in Finding Labels "
                                           f"(known: {', '.join(CHESTXRAY14_CLASSES)}, {NIH_HEALTHY})")
            continue
        if NIH_HEALTHY in image.findings and len(image.findings) > 1:
            _reject(rejected, image.index, f"'{NIH_HEALTHY}' together with findings in Finding Labels")
            continue
        unknown = sorted({label for _, label in boxes_by_index.get(image.index, ()) if label not in position})
        if unknown:
            _reject(rejected, image.index, f"unknown box label {', '.join(map(repr, unknown))} in {bbox_name} "
                                           f"(known: {', '.join(CHESTXRAY14_CLASSES)})")
            continue
        labels = [0] * len(CHESTXRAY14_CLASSES)
        for finding in image.findings:
            if finding != NIH_HEALTHY:
                labels[position[finding]] = 1
        kept.append((image, labels))
    if not kept:
        raise ValueError(f"{data_entry_csv}: no usable row ({len(rejected)} rejected)")

    notes = []
    test_patients: set[str] = set()
    if test_list is not None:
        test_names = _read_test_list(test_list)
        test_patients = {image.patient for image, _ in kept if image.index in test_names}
        listed_elsewhere = sum(image.patient in test_patients and image.index not in test_names
                               for image, _ in kept)
        if listed_elsewhere:
            notes.append(f"{listed_elsewhere} images not in {Path(test_list).name} are in test with their patient")
        test_fraction = 0.0
    # ChestX-ray8 localises on boxed images the classifier never trained on: their patients all go to test
    boxed_patients = {image.patient for image, _ in kept if image.index in boxes_by_index}
    split_of_patient = split_groups(Counter(image.patient for image, _ in kept), val_fraction=val_fraction,
                                    test_fraction=test_fraction, seed=seed,
                                    test_groups=test_patients | boxed_patients)

    locator = _ImageLocator(image_dir, check_images)
    document: dict[str, Any] = {key: [] for key in SPLIT_KEYS}
    members: dict[str, list[_NihImage]] = {key: [] for key in SPLIT_KEYS}
    boxed_images = boxes = rescaled = labels_outside_findings = 0
    for image, labels in kept:
        rel_path, problem = locator.locate(image.index)
        if problem is not None:
            _reject(rejected, (image_dir / rel_path).as_posix(), problem)
            continue
        entry: dict[str, Any] = {"image": posixpath.join(prefix, rel_path), "labels": labels,
                                 "label": int(any(labels)), "view": image.view}
        if image.index in boxes_by_index:
            box_list, box_labels, scaled, problem = _stored_boxes(image_dir / rel_path, boxes_by_index[image.index],
                                                                  box_image_size, check_images)
            if problem is not None:
                _reject(rejected, (image_dir / rel_path).as_posix(), problem)
                continue
            entry.update(boxes=box_list, box_labels=box_labels)
            boxed_images, boxes, rescaled = boxed_images + 1, boxes + len(box_list), rescaled + scaled
            labels_outside_findings += sum(label not in image.findings for label in box_labels)
        key = split_of_patient[image.patient]
        document[key].append(entry)
        members[key].append(image)

    splits = {key: SplitCounts(len(group), len({image.patient for image in group}),
                               dict(Counter(image.view for image in group))) for key, group in members.items()}
    notes.append(_binary_note(document))
    notes.append(_class_counts_note(document, CHESTXRAY14_CLASSES, 1, "positives") or "no positive label")
    how = (f"patients of the images in {Path(test_list).name} in test, the others split" if test_list is not None
           else "the official train_val_list/test_list not used: split")
    notes.append(f"{how} by Patient ID ({len(split_of_patient)} patients, each in one split)")
    if bbox_list_csv is not None:
        with_boxed_patient = sum(image.patient in boxed_patients for image in members["test"])
        notes.append(f"{boxes} boxes on {boxed_images} images from {bbox_name}, all in test: every image of the "
                     f"{len(boxed_patients)} patients with a boxed image is in test ({with_boxed_patient} images), as "
                     "ChestX-ray8 evaluates localisation on boxed images the classifier never trained on")
        if boxed_elsewhere:
            notes.append(f"{boxed_elsewhere} boxed images of another View Position are not listed")
        if labels_outside_findings:
            notes.append(f"{labels_outside_findings} box labels are not among their image's Finding Labels")
        if rescaled:
            notes.append(f"{rescaled} boxed images are not {box_image_size} px (the size the BBox list refers to): "
                         "their boxes were scaled to the stored pixels")

    view_text = f", View Position {wanted_view} only" if wanted_view else ""
    where = f"the image directory '{image_dir.name}'" if not prefix else f"the directory holding '{prefix}'"
    split_text = (f"the patients of {Path(test_list).name} in test, the others split by patient (seed {seed}, "
                  f"validation {val_fraction:g})" if test_list is not None else
                  f"split by patient with split_groups (seed {seed}, validation {val_fraction:g}, test at least "
                  f"{test_fraction:g}), not the official train_val/test lists")
    description = (
        f"NIH ChestX-ray14 from {entry_name}{view_text}: the 14 findings of Finding Labels as multi-hot labels "
        f"(label_names; No Finding = all 0), label 0 for No Finding else 1; {split_text}; test holds normal and "
        f"abnormal images. Paths are relative to {where}: pass it as base_dir (bundles: --dataset_dir)."
    )
    if bbox_list_csv is not None:
        pixels = ("the stored pixels of each image" if check_images else
                  f"the pixels of the {box_image_size} px images the BBox list refers to" if box_image_size else
                  "the pixels the BBox list gives")
        description += (f" The {boxed_images} images of {bbox_name} carry boxes [x_min, y_min, x_max, y_max] in "
                        f"{pixels} and box_labels; every patient with a boxed image is in test (ChestX-ray8's "
                        "localisation protocol: boxed images are never trained on).")
    if rejected:
        description += f" {len(rejected)} rejected rows or images were left out."
    name = name or "chestxray14" + (f"-{wanted_view.lower()}" if wanted_view else "")
    return _finish({"name": name, "description": description, "label_names": list(CHESTXRAY14_CLASSES),
                    **document}, out_path, splits, rejected, notes=notes)
