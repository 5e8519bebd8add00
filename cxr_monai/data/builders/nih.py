"""Datalist of NIH ChestX-ray14 (or of phantoms written in its CSV layout), for the context-encoder bundle.

:func:`build_nih_datalist` reads ``Data_Entry_2017*.csv[.gz]`` and ``BBox_List_2017.csv[.gz]``: the ``No Finding``
images split by patient into ``training`` / ``validation`` / ``test`` with
:func:`~cxr_monai.data.datalist.split_groups`, the boxed images in ``test_unhealthy`` with their boxes. It writes a
schema-valid datalist atomically and lists every rejected file with its reason in the returned
:class:`~cxr_monai.data.datalist.DatalistSummary`. Entry paths are relative to the image directory (or
``base_dir``); pass the same directory to :func:`~cxr_monai.data.datalist.load_datalist`.

Python::

    summary = build_nih_datalist("Data_Entry_2017_v2020.csv.gz", "BBox_List_2017.csv.gz",
                                 "/data/nih/images", "nih_pa.json", view="PA")
    print(summary.format())

Command line::

    python -m cxr_monai datalist nih --data-entry Data_Entry_2017_v2020.csv.gz \\
        --bbox-list BBox_List_2017.csv.gz --image-dir /data/nih/images --out nih_pa.json --view PA
"""

from __future__ import annotations

import math
import os
import posixpath
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from cxr_monai.data.datalist import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
    SPLIT_KEYS,
    DatalistSummary,
    RejectedFile,
    SplitCounts,
    _boxes_in_stored_pixels,
    _check_fractions,
    _column,
    _field,
    _finish,
    _read_csv,
    _reject,
    _relative_dir,
    _require_dir,
    _split_findings,
    _walk_files,
    image_file_problem,
    split_groups,
)

__all__ = ["NIH_BOX_IMAGE_SIZE", "NIH_BOX_LABEL_ALIASES", "NIH_HEALTHY", "build_nih_datalist"]

NIH_HEALTHY = "No Finding"
# BBox_List_2017 says "Infiltrate" where Data_Entry says "Infiltration"; box_labels use the Data_Entry
# names so that every box label is one of the image's findings.
NIH_BOX_LABEL_ALIASES = {"Infiltrate": "Infiltration"}
#: Side in pixels of the images the NIH BBox list's coordinates refer to (the released PNGs are 1024 x 1024).
NIH_BOX_IMAGE_SIZE = 1024


class _NihImage(NamedTuple):
    index: str
    findings: tuple[str, ...]
    patient: str
    view: str


def _read_nih_data_entry(path: str | os.PathLike) -> dict[str, _NihImage]:
    header, rows = _read_csv(path)
    names = ("Image Index", "Finding Labels", "Patient ID", "View Position")
    columns = [_column(header, name, path) for name in names]
    images: dict[str, _NihImage] = {}
    for line, row in rows:
        index, finding_labels, patient, view = (_field(row, column, name, path, line)
                                                for column, name in zip(columns, names))
        if index in images:
            raise ValueError(f"{path}: line {line}: Image Index {index} appears twice")
        images[index] = _NihImage(index, _split_findings(finding_labels), patient, view)
    return images


def _nih_box_columns(header: Sequence[str], path: str | os.PathLike) -> int:
    """Index of the box x column: NIH writes the unquoted header ``Bbox [x,y,w,h]`` that CSV splits in four."""
    for position, name in enumerate(header):
        if name.replace(" ", "").lower().startswith("bbox["):
            return position
    names = [name.lower() for name in header]
    for position in range(len(names) - 3):
        if names[position:position + 4] == ["x", "y", "w", "h"]:
            return position
    raise ValueError(f"{path}: no 'Bbox [x,y,w,h]' (or x, y, w, h) columns (header: {', '.join(header)})")


def _read_nih_bbox_list(path: str | os.PathLike) -> dict[str, list[tuple[list[float], str]]]:
    """Image Index -> ``([x_min, y_min, x_max, y_max], finding)`` in file order."""
    header, rows = _read_csv(path)
    index_column, label_column = _column(header, "Image Index", path), _column(header, "Finding Label", path)
    x_column = _nih_box_columns(header, path)
    boxes: dict[str, list[tuple[list[float], str]]] = defaultdict(list)
    for line, row in rows:
        index = _field(row, index_column, "Image Index", path, line)
        label = _field(row, label_column, "Finding Label", path, line)
        try:
            x, y, w, h = (float(value.strip()) for value in row[x_column:x_column + 4])
        except ValueError:
            raise ValueError(f"{path}: line {line}: box x, y, w, h must be 4 numbers, "
                             f"got {row[x_column:x_column + 4]}") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)) or x < 0 or y < 0 or w <= 0 or h <= 0:
            raise ValueError(f"{path}: line {line}: box needs x, y >= 0 and w, h > 0, got {[x, y, w, h]}")
        box = [round(x, 6), round(y, 6), round(x + w, 6), round(y + h, 6)]
        boxes[index].append((box, NIH_BOX_LABEL_ALIASES.get(label, label)))
    return dict(boxes)


def _stored_boxes(path: Path, boxes: Sequence[tuple[list[float], str]], box_image_size: int | None,
                  check_images: bool) -> tuple[list[list[float]], list[str], bool, str | None]:
    """One image's BBox-list boxes as a datalist entry carries them: the boxes (in the stored pixels of ``path``
    with ``check_images``, :func:`~cxr_monai.data.datalist._boxes_in_stored_pixels`; as listed without), their
    labels, whether they were scaled, and the reason to reject the image (``None`` when usable)."""
    listed, labels = [box for box, _ in boxes], [label for _, label in boxes]
    if not check_images:
        return listed, labels, False, None
    stored, problem = _boxes_in_stored_pixels(path, listed, box_image_size)
    return stored, labels, stored != listed, problem


class _ImageLocator:
    """Finds images by file name anywhere under ``image_dir`` (flat or NIH's ``images_001/images/``)."""

    def __init__(self, image_dir: Path, check_images: bool):
        self.image_dir, self.check_images = image_dir, check_images
        self.paths_by_name: dict[str, list[str]] = defaultdict(list)
        if check_images:
            _require_dir(image_dir, "image directory", " (pass --allow-missing-images / check_images=False to "
                                                       "build the list before the images are in place)")
        if image_dir.is_dir():
            for rel_path in _walk_files(image_dir):
                self.paths_by_name[posixpath.basename(rel_path)].append(rel_path)

    def locate(self, name: str) -> tuple[str, str | None]:
        """Path relative to the image dir and the reason to reject it (``None`` when usable)."""
        found = self.paths_by_name.get(name, [])
        if len(found) > 1:
            return name, f"ambiguous: {len(found)} files named {name} ({', '.join(found)})"
        if not found:
            # unchecked lists assume the flat layout for images that are not there yet
            return name, (f"missing: not found under {self.image_dir}" if self.check_images else None)
        if not self.check_images:
            return found[0], None
        return found[0], image_file_problem(self.image_dir / found[0])


def _wanted_view(images: dict[str, _NihImage], view: str | None, data_entry_csv: str | os.PathLike) -> str | None:
    """``view`` upper-cased (``None``: every view); ``ValueError`` when no image of the Data_Entry file has it."""
    wanted = view.strip().upper() if view else None
    if wanted is not None and not any(image.view.upper() == wanted for image in images.values()):
        found = ", ".join(sorted({image.view for image in images.values()}))
        raise ValueError(f"{data_entry_csv}: no image with View Position {view!r} (found: {found})")
    return wanted


def build_nih_datalist(
    data_entry_csv: str | os.PathLike,
    bbox_list_csv: str | os.PathLike,
    image_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    view: str | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    check_images: bool = True,
    base_dir: str | os.PathLike | None = None,
    box_image_size: int | None = NIH_BOX_IMAGE_SIZE,
) -> DatalistSummary:
    """Build the context-encoder datalist of NIH ChestX-ray14 (or of phantoms written in its CSV layout).

    - ``training`` / ``validation`` / ``test``: the ``No Finding`` images, split by patient with
      :func:`split_groups` (``val_fraction`` and ``test_fraction`` are fractions of those images). Every
      patient with a boxed image (in ``view``) goes to test: none of their healthy images is trained or tuned
      on, and the healthy test images include the same patients as the unhealthy ones. On ChestX-ray14 these 726
      patients hold 5,066 healthy images, so ``test`` is larger than ``test_fraction`` (it is a minimum).
    - ``test_unhealthy``: the images of the BBox list, ``label`` 1, ``findings`` from ``Finding Labels``,
      ``boxes`` ``[x, y, x+w, y+h]`` in the pixels of the boxed images (1024 px for the NIH release),
      ``box_labels`` with Data_Entry's names (``Infiltrate`` -> ``Infiltration``).
    - ``view``: keep only that ``View Position`` (e.g. ``"PA"``).
    - ``check_images``: every image must be found under ``image_dir`` (any depth) and pass
      :func:`image_file_problem`; the others are rejected (logged, and listed in the summary). Splits are
      drawn before the checks, so an image lands in the same split whichever other files are missing.
      With ``check_images=False`` nothing is checked and images not found get the flat path
      ``<image_dir>/<Image Index>``.
    - ``box_image_size``: side of the square images the BBox list's coordinates refer to (1024: the NIH
      release; a phantom set's ``size``). With ``check_images``, a boxed image stored at another size (a resized
      copy of the release) gets its boxes scaled to its stored pixels, and one whose boxes still leave the image
      is rejected; ``None`` keeps the coordinates as listed.
    - Paths are relative to ``base_dir`` (default: ``image_dir``). No patient ID is written.

    >>> summary = build_nih_datalist("Data_Entry_2017_v2020.csv.gz", "BBox_List_2017.csv.gz",
    ...                              "/data/nih/images", "nih.json", check_images=False)  # doctest: +SKIP
    """
    _check_fractions(val_fraction, test_fraction)
    image_dir, out_path = Path(image_dir), Path(out_path)
    base_dir = image_dir if base_dir is None else Path(base_dir)
    prefix = _relative_dir(image_dir, base_dir)
    images = _read_nih_data_entry(data_entry_csv)
    boxes_by_index = _read_nih_bbox_list(bbox_list_csv)
    entry_name, bbox_name = Path(data_entry_csv).name, Path(bbox_list_csv).name

    wanted_view = _wanted_view(images, view, data_entry_csv)

    def in_view(image: _NihImage) -> bool:
        return wanted_view is None or image.view.upper() == wanted_view

    rejected: list[RejectedFile] = []
    unhealthy = []
    for index in boxes_by_index:
        if index not in images:
            _reject(rejected, index, f"not in {entry_name}: listed in {bbox_name} only")
        elif in_view(images[index]):
            unhealthy.append(images[index])
    healthy = [image for image in images.values()
               if image.findings == (NIH_HEALTHY,) and image.index not in boxes_by_index and in_view(image)]

    boxed_patients = {image.patient for image in unhealthy}
    split_of_patient = split_groups(Counter(image.patient for image in healthy), val_fraction=val_fraction,
                                    test_fraction=test_fraction, seed=seed, test_groups=boxed_patients)

    locator = _ImageLocator(image_dir, check_images)
    document: dict[str, Any] = {key: [] for key in SPLIT_KEYS}
    members: dict[str, list[_NihImage]] = {key: [] for key in SPLIT_KEYS}
    labels_outside_findings = rescaled = 0
    assigned = [(split_of_patient[image.patient], image) for image in healthy]
    assigned += [("test_unhealthy", image) for image in unhealthy]
    for key, image in assigned:
        rel_path, problem = locator.locate(image.index)
        if problem is not None:
            _reject(rejected, (image_dir / rel_path).as_posix(), problem)
            continue
        entry: dict[str, Any] = {"image": posixpath.join(prefix, rel_path)}
        if key == "test_unhealthy":
            box_list, box_labels, scaled, problem = _stored_boxes(image_dir / rel_path, boxes_by_index[image.index],
                                                                  box_image_size, check_images)
            if problem is not None:
                _reject(rejected, (image_dir / rel_path).as_posix(), problem)
                continue
            rescaled += scaled
            entry.update(label=1, findings=list(image.findings), boxes=box_list, box_labels=box_labels)
            labels_outside_findings += sum(label not in image.findings for label in box_labels)
        else:
            entry["label"] = 0
        entry["view"] = image.view
        document[key].append(entry)
        members[key].append(image)

    splits = {key: SplitCounts(len(group), len({image.patient for image in group}),
                               dict(Counter(image.view for image in group))) for key, group in members.items()}
    notes = []
    boxed_patient_images = sum(image.patient in boxed_patients for image in members["test"])
    if boxed_patient_images:
        notes.append(f"test holds the {boxed_patient_images} healthy images of the patients with boxed images")
    if labels_outside_findings:
        notes.append(f"{labels_outside_findings} box labels are not among their image's Finding Labels")
    if rescaled:
        notes.append(f"{rescaled} boxed images are not {box_image_size} px (the size the BBox list refers to): "
                     "their boxes were scaled to the stored pixels")

    view_text = f", View Position {wanted_view} only" if wanted_view else ""
    where = f"the image directory '{image_dir.name}'" if not prefix else f"the directory holding '{prefix}'"
    description = (
        f"NIH ChestX-ray14 from {entry_name} and {bbox_name}{view_text}. training/validation/test: "
        f"'{NIH_HEALTHY}' images split by patient (seed {seed}, validation {val_fraction:g} and test at least "
        f"{test_fraction:g} of them; patients with a boxed image are all in test). test_unhealthy: images with "
        "boxes [x_min, y_min, x_max, y_max] in pixels of the boxed image. Paths are relative to the dataset "
        f"directory, {where}: pass it as base_dir (bundles: --dataset_dir)."
    )
    if rejected:
        description += f" {len(rejected)} missing or unreadable images were left out."
    name = "nih-chestxray14" + (f"-{wanted_view.lower()}" if wanted_view else "")
    return _finish({"name": name, "description": description, **document}, out_path, splits, rejected,
                   boxes=sum(len(entry["boxes"]) for entry in document["test_unhealthy"]), notes=notes)
