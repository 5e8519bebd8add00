"""Datalist of a plain folder of radiographs, with optional lung masks, lesion masks, boxes and labels.

:func:`build_folder_datalist` lists the PNG/JPEG/DICOM images under a folder (JSRT / Montgomery / Shenzhen style, or
images with lung and lesion masks), pairs each with its masks by name (``1.jpg`` <-> ``1-mask.png``, or the same
name in a mask directory of its own), reads boxes and labels from CSVs, and splits per image or per patient with
:func:`~cxr_monai.data.datalist.split_groups`. It writes a schema-valid datalist atomically and lists every
rejected file with its reason in the returned :class:`~cxr_monai.data.datalist.DatalistSummary`. Entry paths are
relative to the deepest directory holding every directory given (or ``base_dir``).

Python::

    summary = build_folder_datalist("montgomery/", "mont.json", mask_suffix="-mask")
    print(summary.format())

Command line::

    python -m cxr_monai datalist folder --image-dir montgomery/ --mask-suffix=-mask --out mont.json
    python -m cxr_monai datalist folder --image-dir lesions/images --mask-dir lesions/lung_masks \\
        --lesion-mask-dir lesions/lesion_masks --boxes lesions/boxes.csv --labels lesions/labels.csv \\
        --keep-lesion-images --out lesions.json
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cxr_monai.data.datalist import (
    _DICOM_PREAMBLE,
    _JPEG_SOI,
    _PNG_SIGNATURE,
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
    _is_image_name,
    _read_csv,
    _reject,
    _relative_dir,
    _require_dir,
    _split_findings,
    _unique,
    _walk_files,
    image_file_problem,
    split_groups,
)
from cxr_monai.io.headers import CXRReadError, stored_size

__all__ = ["BOX_COLUMNS", "LABEL_COLUMNS", "PATIENT_COLUMN", "build_folder_datalist"]

#: Label columns of a labels CSV, looked for in this order: ``label`` and ``has_lesion`` hold 0/1, ``finding``
#: holds finding names (``No Finding`` or blank: healthy).
LABEL_COLUMNS = ("label", "has_lesion", "finding")
_BINARY_LABEL_COLUMNS = ("label", "has_lesion")
_BINARY_VALUES = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}
_HEALTHY_FINDING = "no finding"
#: Column of a labels CSV that groups images by patient (the split keeps a patient's images together).
PATIENT_COLUMN = "patient"
#: Columns of a folder's boxes CSV: one lesion box per row, in pixels of the stored image.
BOX_COLUMNS = ("image", "label", "x", "y", "w", "h")


class _LabelRow(NamedTuple):
    label: int
    findings: list[str]
    line: int
    patient: str | None
    view: str | None


class _Labels(NamedTuple):
    rows: dict[str, _LabelRow]  # ``image`` column value -> its row
    label_column: str
    binary: bool  # the label column holds 0/1 (else finding names)
    patient_column: str | None


def _finding_names(text: str) -> list[str]:
    """``"COVID-19, ARDS"`` or ``"Effusion|Mass"`` -> the names; ``No Finding`` and blanks dropped."""
    names = (name.strip() for name in re.split(r"[|,;]", text))
    return _unique(name for name in names if name and name.lower() != _HEALTHY_FINDING)


def _read_labels_csv(
    path: str | os.PathLike, label_column: str | None = None, patient_column: str | None = None
) -> _Labels:
    """Rows of a folder's labels CSV by ``image``; the label column is ``label_column`` or the first of
    :data:`LABEL_COLUMNS` present, the patient column ``patient_column`` or ``patient`` when present."""
    header, rows = _read_csv(path)
    image_column = _column(header, "image", path)
    if label_column is None:
        label_column = next((name for name in LABEL_COLUMNS if name in header), None)
        if label_column is None:
            raise ValueError(f"{path}: no label column: expected one of {', '.join(LABEL_COLUMNS)} (header: "
                             f"{', '.join(h for h in header if h)}); name another one with --label-column")
    label_index = _column(header, label_column, path)
    if label_column in _BINARY_LABEL_COLUMNS:
        binary = True
    elif label_column == "finding":
        binary = False
    else:  # a column named by the user: 0/1 values, or else finding names
        values = {row[label_index].strip().lower() for _, row in rows if label_index < len(row)}
        binary = bool(values) and values <= set(_BINARY_VALUES)
    if patient_column is not None:
        patient_index: int | None = _column(header, patient_column, path)
    elif PATIENT_COLUMN in header:
        patient_column, patient_index = PATIENT_COLUMN, header.index(PATIENT_COLUMN)
    else:
        patient_index = None
    # findings: the 'findings' column ('|'-separated), else the names of the label column or of 'finding'
    findings_index, findings_are_names = None, True
    if "findings" in header:
        findings_index, findings_are_names = header.index("findings"), False
    elif not binary:
        findings_index = label_index
    elif "finding" in header:
        findings_index = header.index("finding")
    view_index = header.index("view") if "view" in header else None

    labelled: dict[str, _LabelRow] = {}
    for line, row in rows:
        image = _field(row, image_column, "image", path, line).replace("\\", "/")
        text = row[label_index].strip() if label_index < len(row) else ""
        if binary:
            if text.lower() not in _BINARY_VALUES:
                raise ValueError(f"{path}: line {line}: {label_column} must be 0 (healthy) or 1 (abnormal), "
                                 f"got {text!r}")
            label = _BINARY_VALUES[text.lower()]
        else:
            label = int(bool(_finding_names(text)))
        if image in labelled:
            raise ValueError(f"{path}: line {line}: image {image} already labelled on line {labelled[image].line}")
        findings_text = row[findings_index] if findings_index is not None and findings_index < len(row) else ""
        findings = _finding_names(findings_text) if findings_are_names else list(_split_findings(findings_text))
        patient = None if patient_index is None else _field(row, patient_index, patient_column, path, line)
        view = row[view_index].strip() if view_index is not None and view_index < len(row) else ""
        labelled[image] = _LabelRow(label, findings, line, patient, view or None)
    return _Labels(labelled, label_column, binary, patient_column)


def _read_boxes_csv(path: str | os.PathLike) -> dict[str, list[tuple[list[float], str, int]]]:
    """``image`` column value -> ``([x_min, y_min, x_max, y_max], label, line)`` of each ``image,label,x,y,w,h``
    row, in file order."""
    header, rows = _read_csv(path)
    columns = [_column(header, name, path) for name in BOX_COLUMNS]
    boxes: dict[str, list[tuple[list[float], str, int]]] = defaultdict(list)
    for line, row in rows:
        image, label, *numbers = (_field(row, column, name, path, line) for column, name in zip(columns, BOX_COLUMNS))
        try:
            x, y, w, h = (float(value) for value in numbers)
        except ValueError:
            raise ValueError(f"{path}: line {line}: box x, y, w, h must be 4 numbers, got {numbers}") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)) or x < 0 or y < 0 or w <= 0 or h <= 0:
            raise ValueError(f"{path}: line {line}: box needs x, y >= 0 and w, h > 0, got {[x, y, w, h]}")
        box = [round(x, 6), round(y, 6), round(x + w, 6), round(y + h, 6)]
        boxes[image.replace("\\", "/")].append((box, label, line))
    return dict(boxes)


def _stem(name: str) -> str:
    return posixpath.splitext(posixpath.basename(name))[0]


@dataclass
class _MaskSet:
    """One kind of mask (lung or lesion): its directory, naming, and the files each image name may pair with."""

    word: str  # "mask" (lung) or "lesion mask", as rejection reasons name it
    directory: Path
    suffix: str
    given: bool  # named by the user: pairing no image is an error
    identical: bool  # a directory apart from the images: a mask named exactly like its image pairs too
    by_suffix: dict[str, list[str]] = field(default_factory=dict)
    by_stem: dict[str, list[str]] = field(default_factory=dict)

    def scan(self, skip: Iterable[Path]) -> None:
        by_suffix: dict[str, list[str]] = defaultdict(list)
        by_stem: dict[str, list[str]] = defaultdict(list)
        for rel_path in _walk_files(self.directory, skip):
            if not _is_image_name(rel_path):
                continue
            stem = _stem(rel_path)
            if stem.endswith(self.suffix) and len(stem) > len(self.suffix):
                by_suffix[stem[:len(stem) - len(self.suffix)]].append(rel_path)
            if self.identical:
                by_stem[stem].append(rel_path)
        self.by_suffix, self.by_stem = dict(by_suffix), dict(by_stem)

    def files(self) -> set[str]:
        return {path for paths in (*self.by_suffix.values(), *self.by_stem.values()) for path in paths}

    def candidates(self, key: str) -> list[str]:
        """Masks of the image named ``key``.*: ``key + suffix``.*, else (own directory) ``key``.*."""
        return self.by_suffix.get(key) or (self.by_stem.get(key, []) if self.identical else [])

    def naming(self) -> str:
        names = [f"<image>{self.suffix}.*"] if self.suffix else []
        return " or ".join(names + (["<image>.*"] if self.identical else []))


def _mask_size_and_foreground(path: Path) -> tuple[tuple[int, int], bool]:
    """``(width, height)`` of a mask file and whether it has a foreground pixel, decoded without torch.

    PNG (and DICOM, stored values): any non-zero pixel; JPEG: a pixel above half scale (lossy compression
    leaves faint non-zero noise around the edges of a 0/255 mask). Raises :class:`CXRReadError` naming the file.
    """
    try:
        with open(path, "rb") as stream:
            head = stream.read(_DICOM_PREAMBLE + 4)
        if head.startswith((_PNG_SIGNATURE, _JPEG_SOI)):
            from PIL import (
                Image,  # imported here: listing a folder without lesion masks decodes nothing
            )

            with Image.open(path) as pil:
                grey = pil if pil.mode in ("1", "L", "I", "F") or pil.mode.startswith("I;16") else pil.convert("L")
                high = grey.getextrema()[1]
                return pil.size, high > (127 if head.startswith(_JPEG_SOI) else 0)
        if head[_DICOM_PREAMBLE:] == b"DICM" or path.suffix.lower() in (".dcm", ".dicom"):
            import pydicom

            dataset = pydicom.dcmread(path, force=True)
            return (int(dataset.Columns), int(dataset.Rows)), bool(np.any(dataset.pixel_array))
    except Exception as error:
        raise CXRReadError(f"{path}: cannot decode the mask ({type(error).__name__}: {error})") from error
    raise CXRReadError(f"{path}: not a PNG, JPEG or DICOM file: starts with {head[:8]!r}")


def build_folder_datalist(
    image_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    mask_dir: str | os.PathLike | None = None,
    mask_suffix: str = "-mask",
    lesion_mask_dir: str | os.PathLike | None = None,
    lesion_mask_suffix: str = "-mask",
    boxes_csv: str | os.PathLike | None = None,
    labels_csv: str | os.PathLike | None = None,
    label_column: str | None = None,
    patient_column: str | None = None,
    keep_lesion_images: bool = False,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    check_images: bool = True,
    base_dir: str | os.PathLike | None = None,
    name: str | None = None,
    test_only: bool = False,
) -> DatalistSummary:
    """Build a datalist from a folder of radiographs with optional lung masks, lesion masks, boxes and labels.

    - Images: the PNG/JPEG/DICOM files (by extension) under ``image_dir``.
    - Lung masks (``lung_mask``): the files under ``mask_dir`` (default: ``image_dir``) named like their image
      plus ``mask_suffix``: ``1.jpg`` <-> ``1-mask.png``. In a ``mask_dir`` apart from the images a mask named
      exactly like its image pairs as well (the suffixed name is tried first): ``images/1.png`` <->
      ``lung_masks/1.png``. Images without a mask are listed without ``lung_mask``; masks without an image are
      rejected; a ``mask_dir`` given that pairs no image at all is an error naming it.
    - Lesion masks (``lesion_mask``): the same pairing under ``lesion_mask_dir`` (a directory of its own) with
      ``lesion_mask_suffix``. Each is decoded once (Pillow, no torch): an image has a lesion when its mask has a
      foreground pixel (PNG: non-zero; JPEG: above half scale) or it has boxes. A lesion mask of another size
      than its image rejects the image.
    - Boxes (``boxes`` + ``box_labels``): ``boxes_csv`` has columns ``image``, ``label``, ``x``, ``y``, ``w``,
      ``h`` (pixels of the stored image, several rows per image allowed), written as ``[x, y, x+w, y+h]``. With
      ``check_images``, an image with a box reaching more than a pixel beyond it is rejected.
    - Labels: ``labels_csv`` has an ``image`` column (file name or path under ``image_dir``) and a label column:
      ``label_column``, else the first of ``label`` (0/1), ``has_lesion`` (0/1), ``finding`` (``No Finding`` or
      blank: 0, any other name: 1). A named column of 0/1 values is read as ``label``, any other as finding
      names. ``findings`` come from a ``findings`` column (``|``-separated), else from the finding names
      (``|``, ``,`` or ``;``-separated), ``view`` from a ``view`` column. With it every image needs a row.
      An image with a lesion is written with ``label`` 1 whatever its row says (the summary counts those).
    - Placement: images labelled 1 or with a lesion go to ``test_unhealthy``. With ``keep_lesion_images``,
      images with a lesion (mask pixels or boxes) stay in the split with their ``lesion_mask``/``boxes``, so
      training can draw patches away from the lesions; those that land in test go to ``test_unhealthy``, while
      healthy test images stay in ``test`` (images labelled 1 with no lesion mark still go to
      ``test_unhealthy``: nothing shows where to keep away from).
    - Split: with a patient column (``patient_column``, or ``patient`` when the labels CSV has one) by patient
      with :func:`split_groups`: all images of a patient land in one split, and the patients of images put in
      ``test_unhealthy`` regardless of the split have all their images in test; no patient ID is written. Else
      per image (one image per patient, as in JSRT and Montgomery). With ``test_only`` every image goes to
      ``test`` / ``test_unhealthy`` instead (a list to screen or evaluate with a trained model; the fractions
      are not used).
    - Paths are relative to ``base_dir`` (default: the deepest directory holding every directory given).

    >>> summary = build_folder_datalist("real-lesions/images", "lesions.json",
    ...     mask_dir="real-lesions/lung_masks", lesion_mask_dir="real-lesions/lesion_masks",
    ...     boxes_csv="real-lesions/boxes.csv", labels_csv="real-lesions/labels.csv",
    ...     keep_lesion_images=True, val_fraction=0.1, test_fraction=0.25)  # doctest: +SKIP
    >>> print(summary.format())  # doctest: +SKIP
    """
    _check_fractions(val_fraction, test_fraction)
    image_dir, out_path = Path(image_dir), Path(out_path)
    _require_dir(image_dir, "image directory")
    if labels_csv is None and (label_column is not None or patient_column is not None):
        raise ValueError("a label or patient column needs a labels CSV (--labels / labels_csv)")
    lung = _MaskSet("mask", image_dir if mask_dir is None else Path(mask_dir), mask_suffix, mask_dir is not None,
                    identical=False)
    _require_dir(lung.directory, "mask directory")
    same_as_images = os.path.abspath(lung.directory) == os.path.abspath(image_dir)
    if not mask_suffix and same_as_images:
        raise ValueError(f"{lung.directory}: an empty mask suffix needs a mask directory apart from the images")
    lung.identical = not same_as_images
    lesion = None
    if lesion_mask_dir is not None:
        lesion = _MaskSet("lesion mask", Path(lesion_mask_dir), lesion_mask_suffix, True, identical=True)
        _require_dir(lesion.directory, "lesion mask directory")
        if os.path.abspath(lesion.directory) in {os.path.abspath(image_dir), os.path.abspath(lung.directory)}:
            raise ValueError(f"{lesion.directory}: lesion masks need a directory of their own, apart from the images "
                             "and the lung masks")
    mask_sets = [lung] + ([lesion] if lesion is not None else [])
    dirs = [image_dir] + [masks.directory for masks in mask_sets]
    if base_dir is None:
        base_dir = Path(os.path.commonpath([os.path.abspath(directory) for directory in dirs]))
    base_dir = Path(base_dir)
    image_prefix = _relative_dir(image_dir, base_dir)
    prefixes = {id(masks): _relative_dir(masks.directory, base_dir) for masks in mask_sets}
    labels = _read_labels_csv(labels_csv, label_column, patient_column) if labels_csv is not None else None
    boxes_by_name = _read_boxes_csv(boxes_csv) if boxes_csv is not None else {}
    by_patient = labels is not None and labels.patient_column is not None

    rejected: list[RejectedFile] = []
    for masks in mask_sets:
        masks.scan(skip=dirs)
    mask_files = set() if lung.identical else {os.path.abspath(lung.directory / path) for path in lung.files()}
    images_by_key: dict[str, list[str]] = defaultdict(list)
    ignored = []
    for rel_path in _walk_files(image_dir, skip=[masks.directory for masks in mask_sets]):
        if os.path.abspath(image_dir / rel_path) in mask_files:
            continue
        if _is_image_name(rel_path):
            images_by_key[_stem(rel_path)].append(rel_path)
        else:
            ignored.append(rel_path)

    paired = {}  # how many images each mask set pairs by name, before any file check
    for masks in mask_sets:
        used = {path for key in images_by_key for path in masks.candidates(key)}
        paired[masks.word] = sum(bool(masks.candidates(key)) for key in images_by_key)
        if masks.given and images_by_key and not paired[masks.word]:
            examples = ", ".join(sorted(masks.files())[:3]) or "no image files"
            raise ValueError(
                f"{masks.directory}: no {'lung mask' if masks is lung else masks.word} pairs with any of the "
                f"{len(images_by_key)} images under {image_dir}: looked for {masks.naming()} (found: {examples}); "
                f"set {'--mask-suffix' if masks is lung else '--lesion-mask-suffix'} to the masks' naming")
        for rel_path in sorted(masks.files() - used):
            stem = _stem(rel_path)
            names = ([stem[:len(stem) - len(masks.suffix)]] if masks.suffix and stem.endswith(masks.suffix) else [])
            names += [stem] if masks.identical else []
            _reject(rejected, (masks.directory / rel_path).as_posix(), f"{masks.word} without image: no image named "
                                                                       f"{' or '.join(n + '.*' for n in names)}")

    labels_name = Path(labels_csv).name if labels_csv is not None else ""
    boxes_name = Path(boxes_csv).name if boxes_csv is not None else ""
    entries: dict[str, dict[str, Any]] = {}
    lesioned: set[str] = set()
    patient_of: dict[str, str] = {}
    relabelled = lesion_pixels = 0
    for key in sorted(images_by_key):
        found = images_by_key[key]
        if len(found) > 1:
            for rel_path in found:
                _reject(rejected, (image_dir / rel_path).as_posix(),
                        f"ambiguous: {len(found)} images named {key}.* ({', '.join(found)})")
            continue
        rel_path = found[0]
        image_path = (image_dir / rel_path).as_posix()
        names = _unique((rel_path, posixpath.basename(rel_path)))
        row = None
        if labels is not None:
            row = next((labels.rows[n] for n in names if n in labels.rows), None)
            if row is None:
                _reject(rejected, image_path, f"no row in {labels_name}")
                continue
        box_rows = [box_row for n in names for box_row in boxes_by_name.get(n, [])]
        lung_masks = lung.candidates(key)
        lesion_masks = lesion.candidates(key) if lesion is not None else []
        if len(lung_masks) > 1:
            _reject(rejected, image_path, f"ambiguous: {len(lung_masks)} masks for it ({', '.join(lung_masks)})")
            continue
        if len(lesion_masks) > 1:
            _reject(rejected, image_path,
                    f"ambiguous: {len(lesion_masks)} lesion masks for it ({', '.join(lesion_masks)})")
            continue
        problem = image_file_problem(image_path) if check_images else None
        for masks, found_masks in ((lung, lung_masks), (lesion, lesion_masks)):
            if not (check_images and found_masks):
                continue
            mask_problem = image_file_problem(masks.directory / found_masks[0])
            if mask_problem is not None:
                _reject(rejected, (masks.directory / found_masks[0]).as_posix(), mask_problem)
                problem = problem or f"{masks.word} rejected: {found_masks[0]}: {mask_problem}"
        has_foreground = False
        if problem is None and lesion_masks:
            mask_path = lesion.directory / lesion_masks[0]
            try:
                mask_size, has_foreground = _mask_size_and_foreground(mask_path)
                image_size = stored_size(image_path) if check_images else mask_size
            except CXRReadError as error:
                problem = str(error)
            else:
                if mask_size != image_size:
                    problem = (f"lesion mask {lesion_masks[0]} is {mask_size[0]}x{mask_size[1]} px, the image "
                               f"{image_size[0]}x{image_size[1]} px")
        boxes = [box for box, _, _ in box_rows]
        if problem is None and box_rows and check_images:
            boxes, problem = _boxes_in_stored_pixels(
                Path(image_path), boxes, None,
                hint=f"are the boxes of {boxes_name} (line {', '.join(str(r[2]) for r in box_rows)}) in pixels of "
                     "another size of the image?")
        if problem is not None:
            _reject(rejected, image_path, problem)
            continue
        entry: dict[str, Any] = {"image": posixpath.join(image_prefix, rel_path)}
        if lung_masks:
            entry["lung_mask"] = posixpath.join(prefixes[id(lung)], lung_masks[0])
        if lesion_masks:
            entry["lesion_mask"] = posixpath.join(prefixes[id(lesion)], lesion_masks[0])
        if row is not None:
            entry["label"] = row.label
            if row.findings:
                entry["findings"] = row.findings
        if box_rows:
            entry.update(boxes=boxes, box_labels=[label for _, label, _ in box_rows])
        if has_foreground or box_rows:
            lesioned.add(key)
            lesion_pixels += has_foreground
            relabelled += entry.get("label") == 0
            entry["label"] = 1
        if row is not None and row.view:
            entry["view"] = row.view
        if row is not None and row.patient is not None:
            patient_of[key] = row.patient
        entries[key] = entry
    found_names = {name for paths in images_by_key.values() for path in paths
                   for name in (path, posixpath.basename(path))}
    for what, listed in ((labels_name, labels.rows if labels is not None else {}), (boxes_name, boxes_by_name)):
        for image, value in listed.items():
            if image not in found_names:
                line = value.line if isinstance(value, _LabelRow) else value[0][2]
                _reject(rejected, image, f"no such image: line {line} of {what} names a file not found under "
                                         f"{image_dir}")

    # placement: abnormal images to test_unhealthy, or (keep_lesion_images) those with a lesion into the split
    abnormal = {key for key, entry in entries.items() if entry.get("label") == 1}
    always_unhealthy = abnormal - lesioned if keep_lesion_images else abnormal
    group_of = {key: patient_of[key] if by_patient else key for key in entries}
    pool = Counter(group_of[key] for key in entries if key not in always_unhealthy)
    if test_only:
        split_of_group = dict.fromkeys(pool, "test")
    else:
        held_out = {group_of[key] for key in always_unhealthy} if by_patient else ()
        split_of_group = split_groups(pool, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                                      test_groups=held_out)
    document: dict[str, Any] = {key: [] for key in SPLIT_KEYS}
    members: dict[str, list[str]] = {key: [] for key in SPLIT_KEYS}
    for key, entry in entries.items():
        split = "test_unhealthy" if key in always_unhealthy else split_of_group[group_of[key]]
        if split == "test" and key in abnormal:
            split = "test_unhealthy"
        document[split].append(entry)
        members[split].append(key)

    notes = []
    if ignored:
        examples = ", ".join(ignored[:3]) + (", ..." if len(ignored) > 3 else "")
        notes.append(f"ignored {len(ignored)} files that are not PNG/JPEG/DICOM by extension ({examples})")
    for masks in mask_sets:
        with_masks = sum(("lung_mask" if masks is lung else "lesion_mask") in entry for entry in entries.values())
        kind = "lung mask" if masks is lung else "lesion mask"
        text = f"{with_masks} of {len(entries)} images have a {kind}"
        if masks.given or paired[masks.word]:
            text += f" ({masks.naming()} in '{masks.directory.name}'; {paired[masks.word]} paired by name)"
        if masks is lesion:
            text += f", {lesion_pixels} of them with lesion pixels"
        notes.append(text)
    if boxes_csv is not None:
        boxed = [entry for entry in entries.values() if "boxes" in entry]
        notes.append(f"{sum(len(entry['boxes']) for entry in boxed)} boxes from {boxes_name} on {len(boxed)} images")
    if lesioned:
        where = ", ".join(f"{key} {sum(k in lesioned for k in members[key])}" for key in SPLIT_KEYS
                          if any(k in lesioned for k in members[key]))
        if keep_lesion_images:
            notes.append(f"{len(lesioned)} images with lesions kept in the split with their lesion_mask/boxes "
                         f"({where}; the test ones in test_unhealthy)")
        else:
            notes.append(f"{len(lesioned)} images with lesions (mask pixels or boxes) in test_unhealthy; "
                         "--keep-lesion-images keeps them for training with their lesion_mask/boxes")
    if keep_lesion_images and abnormal - lesioned:
        notes.append(f"{len(abnormal - lesioned)} images labelled 1 without lesion pixels or boxes in test_unhealthy "
                     "(nothing marks where their lesions are)")
    if relabelled:
        notes.append(f"{relabelled} images labelled 0 in {labels_name} have lesions (mask pixels or boxes): "
                     "written with label 1")
    if by_patient:
        notes.append(f"split by patient (column '{labels.patient_column}' of {labels_name}, not written): "
                     f"{len(set(group_of.values()))} patients, each in one split")
        held_healthy = sum(key not in abnormal and group_of[key] in {group_of[k] for k in always_unhealthy}
                           for key in members["test"])
        if held_healthy and not test_only:
            notes.append(f"test holds the {held_healthy} healthy images of the patients with images in test_unhealthy")

    sources = [f"images from '{image_dir.name}'"]
    if lung.given or paired[lung.word]:
        sources.append(f"lung masks named {lung.naming()} from '{lung.directory.name}'")
    if lesion is not None:
        sources.append(f"lesion masks named {lesion.naming()} from '{lesion.directory.name}'")
    if boxes_csv is not None:
        sources.append(f"lesion boxes [x_min, y_min, x_max, y_max] in stored pixels from {boxes_name}")
    if labels is not None:
        kind = "0/1" if labels.binary else "finding names, 'No Finding' = 0"
        sources.append(f"labels from column '{labels.label_column}' ({kind}) of {labels_name}")
    placement = ("images with lesions keep their split with lesion_mask/boxes, those in test go to test_unhealthy"
                 if keep_lesion_images else "images with label 1 or lesions in test_unhealthy")
    unit = f"patient (seed {seed}" if by_patient else f"image (seed {seed}"
    split = ("every image in test or test_unhealthy (to screen or evaluate, not to train on)" if test_only else
             f"split per {unit}, validation {val_fraction:g}, test {test_fraction:g})")
    description = (
        f"Folder datalist: {', '.join(sources)}; {placement}; {split}. Paths are relative to the dataset "
        f"directory '{base_dir.name}': pass it as base_dir (bundles: --dataset_dir)."
    )
    splits = {key: SplitCounts(len(keys), len({group_of[k] for k in keys}) if by_patient else None,
                               dict(Counter(entries[k]["view"] for k in keys if "view" in entries[k])))
              for key, keys in members.items()}
    return _finish({"name": name or image_dir.name, "description": description, **document}, out_path, splits,
                   rejected, boxes=sum(len(entry.get("boxes", [])) for entry in document["test_unhealthy"]),
                   notes=notes)
