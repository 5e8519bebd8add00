"""Datalist of the boxed NIH ChestX-ray14 images split by patient, for pathology-preserving pix2pix augmentation and
box localisation (seed 002: issue #14).

:func:`build_nih_boxes_datalist` reads ``Data_Entry_2017*.csv[.gz]`` and ``BBox_List_2017.csv[.gz]``, keeps the
boxes of the chosen classes (by default the seed's six, :data:`NIH_BOXES_CLASSES`: 820 boxes on 741 images; Mass
and Nodule are dropped), splits the patients holding them 70 / 30 into ``training`` and ``test`` and draws the
``healthy`` (``No Finding``) images of the other patients that Pix2Pix-N adds with random boxes. It reuses the
readers, image locator and box scaling of :mod:`cxr_monai.data.builders.nih`, writes a schema-valid datalist
atomically and lists every rejected row or file with its reason in the returned
:class:`~cxr_monai.data.datalist.DatalistSummary`.

Python::

    summary = build_nih_boxes_datalist("Data_Entry_2017_v2020.csv.gz", "BBox_List_2017.csv.gz",
                                       "/data/nih/images", "nih_boxes.json")
    print(summary.format())

Command line::

    python -m cxr_monai datalist nih-boxes --data-entry Data_Entry_2017_v2020.csv.gz \\
        --bbox-list BBox_List_2017.csv.gz --image-dir /data/nih/images --out nih_boxes.json
"""

from __future__ import annotations

import os
import posixpath
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxr_monai.data.builders.nih import (
    NIH_BOX_IMAGE_SIZE,
    NIH_BOX_LABEL_ALIASES,
    NIH_HEALTHY,
    _ImageLocator,
    _NihImage,
    _read_nih_bbox_list,
    _read_nih_data_entry,
    _stored_boxes,
    _wanted_view,
)
from cxr_monai.data.datalist import (
    DatalistSummary,
    RejectedFile,
    SplitCounts,
    _reject,
    _relative_dir,
    _write_json_atomic,
    split_groups,
)

__all__ = [
    "NIH_BOXES_CLASSES",
    "NIH_BOXES_HEALTHY",
    "NIH_BOXES_KEYS",
    "NIH_BOXES_TEST_FRACTION",
    "build_nih_boxes_datalist",
]

#: The six pathologies of seed 002 (820 of the 984 boxes of BBox_List_2017); Mass and Nodule are left out.
NIH_BOXES_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Pneumonia", "Pneumothorax")
#: Seed 002 keeps 30 % of the annotations for testing the localisation model (70 %: 573 training annotations).
NIH_BOXES_TEST_FRACTION = 0.3
#: Healthy images Pix2Pix-N adds with random boxes.
NIH_BOXES_HEALTHY = 2000
#: The lists a ``nih-boxes`` datalist holds.
NIH_BOXES_KEYS = ("training", "test", "healthy")


def _canonical_classes(classes: Sequence[str]) -> tuple[str, ...]:
    if isinstance(classes, str):
        classes = [classes]
    names = tuple(NIH_BOX_LABEL_ALIASES.get(name.strip(), name.strip()) for name in classes)
    if not names or not all(names):
        raise ValueError(f"classes must name at least one box label, got {list(classes)}")
    repeated = sorted(name for name, n in Counter(names).items() if n > 1)
    if repeated:
        raise ValueError(f"classes name {', '.join(repeated)} twice (Infiltrate is Infiltration)")
    return names


def build_nih_boxes_datalist(
    data_entry_csv: str | os.PathLike,
    bbox_list_csv: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    classes: Sequence[str] = NIH_BOXES_CLASSES,
    test_fraction: float = NIH_BOXES_TEST_FRACTION,
    healthy: int = NIH_BOXES_HEALTHY,
    seed: int = 0,
    view: str | None = None,
    check_images: bool = True,
    base_dir: str | os.PathLike | None = None,
    box_image_size: int | None = NIH_BOX_IMAGE_SIZE,
    name: str | None = None,
) -> DatalistSummary:
    """Build the boxed-image datalist of seed 002 from NIH ChestX-ray14's label files (or phantoms in their layout).

    - ``classes``: the box labels kept (Data_Entry names; ``Infiltrate`` is ``Infiltration``), written as the
      document's ``box_label_names``. Boxes of other classes are dropped and counted in the summary's notes; an
      image left without a box is not listed.
    - ``training`` / ``test``: one entry per image with a box of ``classes``: ``image``, ``label`` 1, ``findings``
      (Finding Labels), ``boxes`` ``[x_min, y_min, x_max, y_max]`` (in the stored pixels, as
      :func:`~cxr_monai.data.builders.nih.build_nih_datalist` writes them), ``box_labels`` and ``view``. The
      patients holding these images are split with :func:`split_groups`, weighted by their boxes: ``test`` holds at
      least ``test_fraction`` of the boxes, and no patient is in both lists.
    - ``healthy``: ``healthy`` images whose Finding Labels are only ``No Finding``, of patients without a boxed image
      (of any class: so in neither list), drawn with ``seed`` (every candidate when fewer; ``0``: none); ``label`` 0
      and ``view``.
    - ``view``, ``check_images``, ``base_dir``, ``box_image_size``: as for ``build_nih_datalist``; with
      ``check_images`` a missing or unreadable healthy image is replaced by the next one drawn.
    - Rejected (with the reason): a BBox row whose image is not in Data_Entry, and with ``check_images`` a missing
      or unreadable image or one whose boxes leave it.

    >>> import csv, json
    >>> with open("Data_Entry.csv", "w", newline="") as stream:
    ...     writer = csv.writer(stream)
    ...     _ = writer.writerow(["Image Index", "Finding Labels", "Patient ID", "View Position"])
    ...     _ = writer.writerow(["a.png", "Effusion|Mass", "1", "PA"])
    ...     _ = writer.writerow(["b.png", "Pneumothorax", "2", "PA"])
    ...     _ = writer.writerow(["c.png", "No Finding", "3", "PA"])
    >>> with open("BBox_List.csv", "w", newline="") as stream:
    ...     writer = csv.writer(stream)
    ...     _ = writer.writerow(["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"])
    ...     _ = writer.writerows([["a.png", "Effusion", 10, 20, 30, 40], ["a.png", "Mass", 1, 2, 3, 4],
    ...                           ["b.png", "Pneumothorax", 5, 5, 50, 50]])
    >>> summary = build_nih_boxes_datalist("Data_Entry.csv", "BBox_List.csv", "images", "boxes.json",
    ...                                    test_fraction=0.5, healthy=1, check_images=False)
    >>> document = json.load(open("boxes.json"))
    >>> [len(document[key]) for key in ("training", "test", "healthy")]
    [1, 1, 1]
    >>> [entry for entry in document["training"] + document["test"] if entry["image"] == "a.png"][0]["boxes"]
    [[10.0, 20.0, 40.0, 60.0]]
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if int(healthy) != healthy or healthy < 0:
        raise ValueError(f"healthy must be a count >= 0, got {healthy}")
    classes = _canonical_classes(classes)
    image_dir, out_path = Path(image_dir), Path(out_path)
    base_dir = image_dir if base_dir is None else Path(base_dir)
    prefix = _relative_dir(image_dir, base_dir)
    images = _read_nih_data_entry(data_entry_csv)
    boxes_by_index = _read_nih_bbox_list(bbox_list_csv)
    entry_name, bbox_name = Path(data_entry_csv).name, Path(bbox_list_csv).name

    wanted_view = _wanted_view(images, view, data_entry_csv)

    rejected: list[RejectedFile] = []
    kept_boxes: dict[str, list[tuple[list[float], str]]] = {}
    dropped: Counter[str] = Counter()
    only_dropped = other_view = 0
    for index in sorted(boxes_by_index):
        if index not in images:
            _reject(rejected, index, f"not in {entry_name}: listed in {bbox_name} only")
            continue
        if wanted_view is not None and images[index].view.upper() != wanted_view:
            other_view += 1
            continue
        boxes = [(box, label) for box, label in boxes_by_index[index] if label in classes]
        dropped.update(label for _, label in boxes_by_index[index] if label not in classes)
        if boxes:
            kept_boxes[index] = boxes
        else:
            only_dropped += 1
    if not kept_boxes:
        found = ", ".join(sorted({label for boxes in boxes_by_index.values() for _, label in boxes}))
        raise ValueError(f"{bbox_list_csv}: no box of the classes {', '.join(classes)} (box labels found: {found})")

    boxes_of_patient = Counter()
    for index, boxes in kept_boxes.items():
        boxes_of_patient[images[index].patient] += len(boxes)
    split_of_patient = split_groups(boxes_of_patient, val_fraction=0.0, test_fraction=test_fraction, seed=seed)

    locator = _ImageLocator(image_dir, check_images)
    document: dict[str, Any] = {key: [] for key in NIH_BOXES_KEYS}
    members: dict[str, list[_NihImage]] = {key: [] for key in NIH_BOXES_KEYS}
    rescaled = labels_outside_findings = 0
    for index, boxes in kept_boxes.items():
        image = images[index]
        rel_path, problem = locator.locate(index)
        if problem is None:
            box_list, box_labels, scaled, problem = _stored_boxes(image_dir / rel_path, boxes, box_image_size,
                                                                  check_images)
        if problem is not None:
            _reject(rejected, (image_dir / rel_path).as_posix(), problem)
            continue
        rescaled += scaled
        labels_outside_findings += sum(label not in image.findings for label in box_labels)
        key = split_of_patient[image.patient]
        document[key].append({"image": posixpath.join(prefix, rel_path), "label": 1, "findings": list(image.findings),
                              "boxes": box_list, "box_labels": box_labels, "view": image.view})
        members[key].append(image)

    # not only the patients of the two lists: a patient whose boxes were all dropped (a Mass) is not healthy either
    boxed_patients = {images[index].patient for index in boxes_by_index if index in images}
    candidates = sorted(index for index, image in images.items()
                        if image.findings == (NIH_HEALTHY,) and image.patient not in boxed_patients
                        and (wanted_view is None or image.view.upper() == wanted_view))
    for position in np.random.default_rng(seed).permutation(len(candidates)):
        if len(document["healthy"]) >= healthy:
            break
        image = images[candidates[position]]
        rel_path, problem = locator.locate(image.index)
        if problem is not None:
            _reject(rejected, (image_dir / rel_path).as_posix(), problem)
            continue
        document["healthy"].append({"image": posixpath.join(prefix, rel_path), "label": 0, "view": image.view})
        members["healthy"].append(image)

    splits = {key: SplitCounts(len(group), len({image.patient for image in group}),
                               dict(Counter(image.view for image in group))) for key, group in members.items()}
    notes = []
    for key in ("training", "test"):
        per_class = Counter(label for entry in document[key] for label in entry["box_labels"])
        notes.append(f"{key}: {sum(per_class.values())} boxes (" + ", ".join(f"{label} {per_class[label]}"
                                                                             for label in classes) + ")")
    if dropped:
        notes.append("boxes of other classes dropped: " + ", ".join(f"{label} {n}" for label, n in dropped.most_common())
                     + (f" ({only_dropped} images had no other box and are not listed)" if only_dropped else ""))
    absent = [label for label in classes if not any(label == box_label for boxes in kept_boxes.values()
                                                     for _, box_label in boxes)]
    if absent:
        notes.append(f"no box of {', '.join(absent)} in {bbox_name}")
    if len(document["healthy"]) < healthy:
        notes.append(f"healthy: {len(document['healthy'])} of the {healthy} asked for: every usable '{NIH_HEALTHY}' "
                     "image of the patients without a boxed image")
    if other_view:
        notes.append(f"{other_view} boxed images of another View Position are not listed")
    if labels_outside_findings:
        notes.append(f"{labels_outside_findings} box labels are not among their image's Finding Labels")
    if rescaled:
        notes.append(f"{rescaled} boxed images are not {box_image_size} px (the size the BBox list refers to): "
                     "their boxes were scaled to the stored pixels")

    if not document["training"] and not document["test"]:
        first = f" (first: {rejected[0].path}: {rejected[0].reason})" if rejected else ""
        raise ValueError(f"{out_path}: not written, no usable boxed image: {len(rejected)} rejected{first}")
    view_text = f", View Position {wanted_view} only" if wanted_view else ""
    where = f"the image directory '{image_dir.name}'" if not prefix else f"the directory holding '{prefix}'"
    description = (
        f"NIH ChestX-ray14 boxed images from {entry_name} and {bbox_name}{view_text}, boxes of {', '.join(classes)} "
        f"(box_label_names; other classes dropped). training/test: the patients with such boxes split by patient "
        f"(seed {seed}, test at least {test_fraction:g} of the boxes); boxes [x_min, y_min, x_max, y_max] in pixels "
        f"of the boxed image. healthy: {len(document['healthy'])} '{NIH_HEALTHY}' images of the other patients drawn "
        f"with seed {seed}. Paths are relative to the dataset directory, {where}: pass it as base_dir."
    )
    if rejected:
        description += f" {len(rejected)} rejected rows or images were left out."
    name = name or "nih-boxes" + (f"-{wanted_view.lower()}" if wanted_view else "")
    _write_json_atomic({"name": name, "description": description, "box_label_names": list(classes), **document},
                       out_path)
    return DatalistSummary(out_path, splits, rejected, 0, notes)
