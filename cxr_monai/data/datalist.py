"""Datalist builders and loader: label files or a folder of radiographs -> MONAI decathlon-style JSON.

Every list follows docs/data_contract.md and ``cxr_monai/schemas/datalist.schema.json``: the keys
``training``, ``validation``, ``test`` (healthy images) and ``test_unhealthy`` (abnormal images with their
boxes), each a list of entries such as ``{"image": "00000003_000.png", "label": 0, "view": "PA"}``.

Path rule: entry paths are relative to the dataset directory (``base_dir``) -- by default the image
directory itself for NIH, and the directory holding both the image and the mask directories for a folder.
Pass the same directory as ``base_dir`` to :func:`load_datalist` (the bundles' ``--dataset_dir``).

Python::

    summary = build_nih_datalist("Data_Entry_2017_v2020.csv.gz", "BBox_List_2017.csv.gz",
                                 "/data/nih/images", "nih_pa.json", view="PA")
    print(summary.format())
    train_files = load_datalist("nih_pa.json", "training", base_dir="/data/nih/images")

Command line::

    python -m cxr_monai datalist nih --data-entry Data_Entry_2017_v2020.csv.gz \\
        --bbox-list BBox_List_2017.csv.gz --image-dir /data/nih/images --out nih_pa.json --view PA
    python -m cxr_monai datalist folder --image-dir montgomery/ --mask-suffix=-mask --out mont.json
    python -m cxr_monai datalist folder --image-dir lesions/images --mask-dir lesions/lung_masks \\
        --lesion-mask-dir lesions/lesion_masks --boxes lesions/boxes.csv --labels lesions/labels.csv \\
        --keep-lesion-images --out lesions.json
    python -m cxr_monai datalist validate nih_pa.json
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import math
import os
import posixpath
import re
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import numpy as np

from cxr_monai.io.headers import CXRReadError, stored_size

__all__ = [
    "DEFAULT_TEST_FRACTION",
    "DEFAULT_VAL_FRACTION",
    "SPLIT_KEYS",
    "DatalistError",
    "DatalistSummary",
    "RejectedFile",
    "SplitCounts",
    "add_arguments",
    "build_folder_datalist",
    "build_nih_datalist",
    "datalist_schema",
    "image_file_problem",
    "load_datalist",
    "run",
    "split_groups",
    "validate_datalist",
]

logger = logging.getLogger(__name__)

SPLIT_KEYS = ("training", "validation", "test", "test_unhealthy")
# ChestX-ray14 context encoder: 59,481 train / 1,760 validation of 61,241 healthy images, i.e. 2.9 %.
DEFAULT_VAL_FRACTION = 0.03
DEFAULT_TEST_FRACTION = 0.02
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
NIH_HEALTHY = "No Finding"
# BBox_List_2017 says "Infiltrate" where Data_Entry says "Infiltration"; box_labels use the Data_Entry
# names so that every box label is one of the image's findings.
NIH_BOX_LABEL_ALIASES = {"Infiltrate": "Infiltration"}
#: Side in pixels of the images the NIH BBox list's coordinates refer to (the released PNGs are 1024 x 1024).
NIH_BOX_IMAGE_SIZE = 1024
# Paths the loader joins with base_dir; every other key is returned exactly as stored.
PATH_KEYS = ("image", "lung_mask", "lesion_mask", "target", "bone_suppressed", "lateral")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND_CHUNK = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_JPEG_TAIL_BYTES = 1024  # EOI is searched for in the last KiB: some writers pad after it
_DICOM_PREAMBLE = 128
_MAX_REPORTED_ERRORS = 20


class DatalistError(ValueError):
    """A datalist file that does not follow the schema; the message names the file, entry, key and reason."""


@dataclass(frozen=True)
class RejectedFile:
    """A file left out of a datalist: ``path`` as found (or as named in the label file) and why."""

    path: str
    reason: str


@dataclass
class SplitCounts:
    """Images in one split, with their patients (``None`` when unknown) and view positions."""

    images: int
    patients: int | None = None
    views: dict[str, int] = field(default_factory=dict)


@dataclass
class DatalistSummary:
    """What a builder wrote: counts per split, every rejected file with its reason, and notes."""

    out_path: Path
    splits: dict[str, SplitCounts]
    rejected: list[RejectedFile] = field(default_factory=list)
    boxes: int = 0
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        """The summary as a small table, as the ``datalist`` command prints it."""
        size = self.out_path.stat().st_size if self.out_path.is_file() else 0
        lines = [f"wrote {self.out_path} ({size / 1e6:.2f} MB)" if size >= 1e5 else
                 f"wrote {self.out_path} ({size / 1e3:.1f} kB)"]
        lines.append(f"{'split':<16}{'images':>8}{'patients':>10}  views")
        for key, counts in self.splits.items():
            patients = "-" if counts.patients is None else str(counts.patients)
            views = ", ".join(f"{view} {n}" for view, n in sorted(counts.views.items())) or "-"
            lines.append(f"{key:<16}{counts.images:>8}{patients:>10}  {views}")
        if self.boxes:
            lines.append(f"boxes in test_unhealthy: {self.boxes}")
        by_reason = Counter(rejected.reason.split(":")[0] for rejected in self.rejected)
        reasons = ", ".join(f"{reason} {n}" for reason, n in by_reason.most_common())
        lines.append(f"rejected: {len(self.rejected)}" + (f" ({reasons})" if reasons else ""))
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# files


def image_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a usable PNG, JPEG or DICOM file, or ``None`` when it looks right.

    Cheap, no decode: the file must be non-empty, start with the PNG signature, the JPEG SOI marker or carry
    ``DICM`` at byte 128 (or, named ``.dcm``, be a bare DICOM data set with an image size, as the reader
    accepts), and a PNG must end with its IEND chunk, a JPEG with its EOI marker (both are lost when a download
    is cut short).

    >>> image_file_problem("/nonexistent.png")
    'missing'
    """
    try:
        size = os.stat(path).st_size
        if size == 0:
            return "empty file"
        with open(path, "rb") as stream:
            head = stream.read(_DICOM_PREAMBLE + 4)
            if head.startswith(_PNG_SIGNATURE):
                stream.seek(max(size - len(_PNG_IEND_CHUNK), 0))
                if stream.read() != _PNG_IEND_CHUNK:
                    return "truncated PNG: does not end with the IEND chunk"
                return None
            if head.startswith(_JPEG_SOI):
                stream.seek(max(size - _JPEG_TAIL_BYTES, len(_JPEG_SOI)))
                if _JPEG_EOI not in stream.read():
                    return "truncated JPEG: no end-of-image marker"
                return None
            if head[_DICOM_PREAMBLE:] == b"DICM":
                return None
        if Path(path).suffix.lower() in (".dcm", ".dicom"):  # a bare data set, as the reader accepts it
            try:
                stored_size(path)
                return None
            except CXRReadError:
                pass
        return f"not a PNG, JPEG or DICOM file: starts with {head[:8]!r}"
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"unreadable: {error.strerror or error}"


def _walk_files(directory: Path, skip: Iterable[Path] = ()) -> Iterator[str]:
    """Relative POSIX paths of the files under ``directory``, sorted, hidden files and folders skipped, and
    the folders ``skip`` (other roles' directories nested inside it) left out."""
    skipped = {os.path.abspath(path) for path in skip} - {os.path.abspath(directory)}
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.abspath(os.path.join(root, d))
                         not in skipped)
        rel_root = Path(os.path.relpath(root, directory))
        for name in sorted(files):
            if not name.startswith("."):
                yield (rel_root / name).as_posix()


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _relative_dir(directory: Path, base_dir: Path) -> str:
    """``directory`` relative to ``base_dir`` as a POSIX prefix ('' when they are the same)."""
    rel = os.path.relpath(os.path.abspath(directory), os.path.abspath(base_dir))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"{directory}: not inside base_dir {base_dir}; datalist paths are relative to a "
                         "directory that holds every listed file")
    return "" if rel == os.curdir else Path(rel).as_posix()


def _require_dir(directory: Path, what: str, hint: str = "") -> None:
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: {what} does not exist or is not a directory{hint}")


def _open_text(path: Path):
    """Text stream of a plain or gzip-compressed CSV (recognised by its magic bytes, not its name)."""
    with open(path, "rb") as stream:
        compressed = stream.read(2) == b"\x1f\x8b"
    if compressed:
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _read_csv(path: str | os.PathLike) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header (names stripped) and ``(line number, fields)`` rows of a CSV file, empty rows skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such CSV file")
    try:
        with _open_text(path) as stream:
            reader = csv.reader(stream)
            header = [name.strip() for name in next(reader, [])]
            rows = [(reader.line_num, fields) for fields in reader if any(fields)]
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: cannot read as CSV ({error})") from error
    if not header:
        raise ValueError(f"{path}: empty CSV file, expected a header row")
    return header, rows


def _column(header: Sequence[str], name: str, path: str | os.PathLike) -> int:
    if name not in header:
        raise ValueError(f"{path}: no '{name}' column (header: {', '.join(h for h in header if h)})")
    return header.index(name)


def _field(row: Sequence[str], column: int, name: str, path: str | os.PathLike, line: int) -> str:
    value = row[column].strip() if column < len(row) else ""
    if not value:
        raise ValueError(f"{path}: line {line}: empty or missing '{name}'")
    return value


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _write_json_atomic(document: Mapping[str, Any], out_path: Path) -> None:
    """Write one entry per line (readable, diff-friendly), via a temporary file and a rename."""
    parts = []
    for key, value in document.items():
        if isinstance(value, list) and value:
            entries = ",\n".join(f"    {json.dumps(entry)}" for entry in value)
            parts.append(f"  {json.dumps(key)}: [\n{entries}\n  ]")
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    text = "{\n" + ",\n".join(parts) + "\n}\n"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", dir=out_path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _reject(rejected: list[RejectedFile], path: str, reason: str) -> None:
    rejected.append(RejectedFile(path, reason))
    logger.warning("rejected %s: %s", path, reason)


# ----------------------------------------------------------------------------------------------------------
# splitting


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")


def split_groups(
    group_sizes: Mapping[str, int],
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    test_groups: Iterable[str] = (),
) -> dict[str, str]:
    """Assign whole groups (patients) to ``training``, ``validation`` or ``test``.

    Groups in ``test_groups`` go to test. The others are shuffled (sorted first, then permuted by numpy's
    PCG64 seeded with ``seed``) and taken in turn for test until it holds ``ceil(test_fraction * images)``
    images, then for validation until ``ceil(val_fraction * images)``; the rest is training. Fractions are of
    images, not groups: a split with a fraction above 0 gets at least one group and overshoots by at most one.
    The last free group always goes to training, so a tiny dataset never ends up with an empty training split.

    >>> split_groups({"p1": 3, "p2": 1, "p3": 1}, val_fraction=0.2, test_fraction=0.0, test_groups=["p3"])
    {'p3': 'test', 'p1': 'validation', 'p2': 'training'}
    """
    _check_fractions(val_fraction, test_fraction)
    total = sum(group_sizes.values())
    test_target, val_target = math.ceil(test_fraction * total), math.ceil(val_fraction * total)
    assignment = {group: "test" for group in test_groups if group in group_sizes}
    n_test, n_val = sum(group_sizes[group] for group in assignment), 0
    free_groups = sorted(group for group in group_sizes if group not in assignment)
    order = np.random.default_rng(seed).permutation(len(free_groups))
    for step, position in enumerate(order):
        group = free_groups[position]
        if step == len(order) - 1:
            assignment[group] = "training"
        elif n_test < test_target:
            assignment[group], n_test = "test", n_test + group_sizes[group]
        elif n_val < val_target:
            assignment[group], n_val = "validation", n_val + group_sizes[group]
        else:
            assignment[group] = "training"
    return assignment


# ----------------------------------------------------------------------------------------------------------
# NIH ChestX-ray14


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


def _split_findings(text: str) -> tuple[str, ...]:
    """``"Effusion|Mass"`` -> ``("Effusion", "Mass")``, blanks and repeats dropped."""
    if "|" not in text:
        return (text.strip(),) if text.strip() else ()
    return tuple(_unique(name.strip() for name in text.split("|") if name.strip()))


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


def _boxes_in_stored_pixels(
    path: Path, boxes: list[list[float]], box_image_size: int | None,
    hint: str = "are the BBox coordinates for images of another size (--box-image-size)?",
) -> tuple[list[list[float]], str | None]:
    """``boxes`` (listed for ``box_image_size`` px square images) in the stored pixels of ``path``, and the
    reason to reject the image (``None`` when every box lies inside it; ``hint`` ends that reason)."""
    try:
        width, height = stored_size(path)
    except CXRReadError as error:
        return boxes, str(error).removeprefix(f"{path}: ")
    if box_image_size and (width, height) != (box_image_size, box_image_size):
        scale_x, scale_y = width / box_image_size, height / box_image_size
        boxes = [[box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y] for box in boxes]
    for box in boxes:
        if box[0] >= width or box[1] >= height or box[2] > width + 1 or box[3] > height + 1:
            return boxes, f"box {[round(v, 1) for v in box]} lies outside the {width}x{height} px image; {hint}"
    return boxes, None


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

    wanted_view = view.strip().upper() if view else None
    if wanted_view is not None and not any(image.view.upper() == wanted_view for image in images.values()):
        found = ", ".join(sorted({image.view for image in images.values()}))
        raise ValueError(f"{data_entry_csv}: no image with View Position {view!r} (found: {found})")

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
            boxes = boxes_by_index[image.index]
            box_list = [box for box, _ in boxes]
            if check_images:
                box_list, problem = _boxes_in_stored_pixels(image_dir / rel_path, box_list, box_image_size)
                if problem is not None:
                    _reject(rejected, (image_dir / rel_path).as_posix(), problem)
                    continue
                rescaled += box_list != [box for box, _ in boxes]
            entry.update(label=1, findings=list(image.findings), boxes=box_list,
                         box_labels=[label for _, label in boxes])
            labels_outside_findings += sum(label not in image.findings for _, label in boxes)
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


def _finish(document: dict[str, Any], out_path: Path, splits: dict[str, SplitCounts],
            rejected: list[RejectedFile], *, boxes: int = 0, notes: list[str] | None = None) -> DatalistSummary:
    if not any(document[key] for key in SPLIT_KEYS):
        first = f" (first: {rejected[0].path}: {rejected[0].reason})" if rejected else ""
        raise ValueError(f"{out_path}: not written, no usable image: {len(rejected)} rejected{first}")
    _write_json_atomic(document, out_path)
    return DatalistSummary(out_path, splits, rejected, boxes, notes or [])


# ----------------------------------------------------------------------------------------------------------
# folder (JSRT / Montgomery / Shenzhen style, or images with lung and lesion masks)

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


# ----------------------------------------------------------------------------------------------------------
# schema and loading


@lru_cache(maxsize=1)
def datalist_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of datalist files, shipped as ``cxr_monai/schemas/datalist.schema.json``."""
    text = resources.files("cxr_monai").joinpath("schemas", "datalist.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def _inline_refs(node: Any, definitions: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            return _inline_refs(definitions[node["$ref"].removeprefix("#/$defs/")], definitions)
        return {key: _inline_refs(value, definitions) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(value, definitions) for value in node]
    return node


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    # jsonschema resolves "$ref" again for every entry; inlined once, a 60k-entry list checks twice as fast.
    schema = datalist_schema()
    return jsonschema.Draft202012Validator(_inline_refs(schema, schema.get("$defs", {})))


def _location(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _box_problem(box: Any) -> str | None:
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
        return None  # the schema reports the shape
    x_min, y_min, x_max, y_max = box
    if not (x_min < x_max and y_min < y_max):
        return f"box {box} needs x_min < x_max and y_min < y_max ([x_min, y_min, x_max, y_max])"
    return None


def _document_problems(document: Any) -> list[str]:
    """``location: reason`` for every schema error, bad box geometry and boxes/box_labels length mismatch."""
    problems = []
    for error in _validator().iter_errors(document):
        if not error.absolute_path and error.validator == "anyOf":
            message = f"no datalist key: expected at least one of {', '.join(SPLIT_KEYS)}"
        else:
            message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
        problems.append(f"{_location(error.absolute_path)}: {message}")
    if not isinstance(document, dict):
        return problems
    for key in SPLIT_KEYS:
        entries = document.get(key)
        for number, entry in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(entry, dict):
                continue
            for box_key in ("boxes", "lung_boxes"):
                boxes = entry.get(box_key)
                for box_number, box in enumerate(boxes if isinstance(boxes, list) else []):
                    problem = _box_problem(box)
                    if problem:
                        problems.append(f"{key}[{number}].{box_key}[{box_number}]: {problem}")
            labels, names = entry.get("labels"), document.get("label_names")
            if isinstance(labels, list):
                if not isinstance(names, list):
                    problems.append(f"{key}[{number}].labels: multi-hot labels need the document's 'label_names'")
                elif len(labels) != len(names):
                    problems.append(f"{key}[{number}].labels: {len(labels)} values for {len(names)} label_names")
            boxes, box_labels = entry.get("boxes"), entry.get("box_labels")
            if isinstance(boxes, list) and isinstance(box_labels, list) and len(boxes) != len(box_labels):
                problems.append(f"{key}[{number}].box_labels: {len(box_labels)} labels for {len(boxes)} boxes")
    return problems


def validate_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """Check a datalist file against the schema and the box rules; return its parsed content.

    Raises :class:`DatalistError` listing each problem as ``file: training[3].boxes[0]: reason``.

    >>> validate_datalist("nih_pa.json")["name"]  # doctest: +SKIP
    'nih-chestxray14-pa'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such datalist file")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatalistError(f"{path}: not valid JSON: {error}") from error
    except UnicodeDecodeError as error:
        raise DatalistError(f"{path}: not UTF-8 text: {error}") from error
    problems = _document_problems(document)
    if problems:
        lines = [f"{path}: {problem}" for problem in problems[:_MAX_REPORTED_ERRORS]]
        if len(problems) > _MAX_REPORTED_ERRORS:
            lines.append(f"{path}: ... and {len(problems) - _MAX_REPORTED_ERRORS} more problems")
        raise DatalistError("\n".join(lines))
    return document


def load_datalist(
    path: str | os.PathLike,
    key: str | Sequence[str],
    base_dir: str | os.PathLike | None = None,
    min_entries: int = 0,
    required_keys: Sequence[str] = (),
) -> list[dict]:
    """Validate a datalist file (:func:`validate_datalist`) and return the entries under ``key`` (a split), or
    under each of several keys in turn (``["test", "test_unhealthy"]``: the splits present; none present is an
    error).

    ``required_keys``: entries without one of them (e.g. ``lung_mask`` for a segmentation run) are left out, with
    a warning that counts them and names the first few.

    ``min_entries`` makes a split that a run cannot do without (e.g. ``training``) an error at load time,
    naming the file and the split, instead of a failure deep inside the run.

    Reads with ``monai.data.load_decathlon_datalist``; ``image``, ``lung_mask`` and ``lesion_mask`` are
    joined with ``base_dir`` (default: the datalist's folder), every other key is returned as stored (MONAI
    would also join a name such as ``"PA"`` that happens to exist as a file in ``base_dir``).

    >>> files = load_datalist("nih_pa.json", "training", base_dir="/data/nih/images")  # doctest: +SKIP
    >>> files[0]  # doctest: +SKIP
    {'image': '/data/nih/images/00000003_000.png', 'label': 0, 'view': 'PA'}
    """
    if not isinstance(key, str):
        keys = list(key)
        document = validate_datalist(path)
        present = [k for k in keys if k in document]
        if not present:
            raise DatalistError(f"{path}: none of the lists {', '.join(keys)} is present "
                                f"(has: {', '.join(k for k in SPLIT_KEYS if k in document)})")
        entries = [e for k in present for e in load_datalist(path, k, base_dir, 0, required_keys)]
        if len(entries) < min_entries:
            raise DatalistError(f"{path}: the lists {', '.join(present)} have {len(entries)} entries; this run needs "
                                f"at least {min_entries}")
        return entries
    if key not in SPLIT_KEYS:
        raise ValueError(f"{path}: key must be one of {', '.join(SPLIT_KEYS)}, got {key!r}")
    document = validate_datalist(path)
    if required_keys:
        kept = [e for e in document.get(key, []) if all(k in e for k in required_keys)]
        left_out = [e.get("image", "?") for e in document.get(key, []) if not all(k in e for k in required_keys)]
        if left_out:
            logger.warning("%s: %d of the '%s' entries lack %s and are left out (e.g. %s)", path, len(left_out), key,
                           " or ".join(required_keys), ", ".join(map(str, left_out[:3])))
            document = {**document, key: kept}
    if key not in document:
        present = ", ".join(k for k in SPLIT_KEYS if k in document)
        raise DatalistError(f"{path}: no '{key}' list (has: {present})")
    stored = document[key]
    if len(stored) < min_entries:
        raise DatalistError(f"{path}: the '{key}' list has {len(stored)} entries; this run needs at least {min_entries}")
    if not stored:  # load_decathlon_datalist indexes the first entry of "test"
        return []
    base = Path(path).parent if base_dir is None else Path(base_dir)
    from monai.data import (
        load_decathlon_datalist,  # imported here: the CLI builders need no torch/monai
    )

    if required_keys:  # MONAI reads the file again: keep its entries that survived the filter
        entries = [{"image": raw["image"]} for raw in stored]
    else:
        entries = load_decathlon_datalist(path, is_segmentation=False, data_list_key=key, base_dir=base)
    for entry, raw in zip(entries, stored):
        for name, value in raw.items():
            entry[name] = os.path.normpath(os.path.join(base, value)) if name in PATH_KEYS else value
    return entries


# ----------------------------------------------------------------------------------------------------------
# command line


def _add_split_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="JSON", help="datalist file to write")
    parser.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION, metavar="F",
                        help=f"share of the images split, the healthy ones (folder --keep-lesion-images: and those "
                             f"with lesions), for validation (default {DEFAULT_VAL_FRACTION}: the "
                             "context-encoder paper's 1,760 of 61,241)")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION, metavar="F",
                        help=f"least share of the images split for test (default {DEFAULT_TEST_FRACTION})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--base-dir", type=Path, default=None, metavar="DIR",
                        help="directory the paths are relative to (the bundles' --dataset_dir)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``datalist nih``, ``folder``, ``montgomery``, ``shenzhen``, ``jsrt`` and ``validate``."""
    sources = parser.add_subparsers(dest="datalist_source", metavar="SOURCE")
    sources.required = True

    nih = sources.add_parser("nih", help="NIH ChestX-ray14 Data_Entry + BBox_List CSVs (or phantoms in that layout)",
                             description=build_nih_datalist.__doc__.split("\n\n")[0])
    nih.add_argument("--data-entry", required=True, type=Path, metavar="CSV", help="Data_Entry_2017*.csv[.gz]")
    nih.add_argument("--bbox-list", required=True, type=Path, metavar="CSV", help="BBox_List_2017.csv[.gz]")
    nih.add_argument("--image-dir", required=True, type=Path, metavar="DIR",
                     help="folder holding the images at any depth (flat or images_NNN/images/); default base dir")
    nih.add_argument("--view", default=None, metavar="VIEW", help="keep one View Position, e.g. PA")
    nih.add_argument("--allow-missing-images", action="store_true",
                     help="do not check the image files (build the list before the download)")
    nih.add_argument("--box-image-size", type=int, default=NIH_BOX_IMAGE_SIZE, metavar="PX",
                     help="side of the images the BBox list's coordinates refer to: boxed images stored at another "
                          f"size get their boxes scaled (default {NIH_BOX_IMAGE_SIZE}, the NIH release; phantoms: "
                          "their --size; 0 keeps the coordinates as listed)")
    _add_split_arguments(nih)
    nih.set_defaults(_build_datalist=_run_nih)

    folder = sources.add_parser("folder", help="a folder of images with optional lung masks, lesion masks, boxes "
                                               "and labels CSV",
                                description=build_folder_datalist.__doc__.split("\n\n")[0])
    folder.add_argument("--image-dir", required=True, type=Path, metavar="DIR")
    folder.add_argument("--mask-dir", type=Path, default=None, metavar="DIR",
                        help="folder of lung masks (default: the image dir); in a folder of their own, masks named "
                             "exactly like their images pair too; a mask dir that pairs no image is an error")
    folder.add_argument("--mask-suffix", default="-mask", metavar="SUFFIX",
                        help="mask name = image name + SUFFIX + any image extension, tried before the identical name "
                             "(default -mask; write --mask-suffix=-x for a suffix that starts with '-')")
    folder.add_argument("--lesion-mask-dir", type=Path, default=None, metavar="DIR",
                        help="folder of lesion masks, paired like the lung masks (written as lesion_mask); an image "
                             "has a lesion when its mask has a foreground pixel or it has boxes")
    folder.add_argument("--lesion-mask-suffix", default="-mask", metavar="SUFFIX",
                        help="lesion mask name = image name + SUFFIX (default -mask), else the identical name")
    folder.add_argument("--boxes", type=Path, default=None, metavar="CSV",
                        help="CSV with columns image,label,x,y,w,h (pixels of the stored image, several rows per "
                             "image allowed): lesion boxes, written as boxes [x, y, x+w, y+h] and box_labels")
    folder.add_argument("--labels", type=Path, default=None, metavar="CSV",
                        help="CSV with an image column and a label column: label (0/1), has_lesion (0/1) or finding "
                             "('No Finding'/blank = 0, other names = 1, kept as findings), looked for in that "
                             "order; a patient column splits by patient; label 1 goes to test_unhealthy")
    folder.add_argument("--label-column", default=None, metavar="NAME",
                        help="the labels CSV's label column, when not one of label, has_lesion, finding (0/1 "
                             "values, or finding names)")
    folder.add_argument("--patient-column", default=None, metavar="NAME",
                        help="the labels CSV's patient column (default: 'patient' when present): all images of a "
                             "patient land in one split; patient IDs are never written")
    folder.add_argument("--keep-lesion-images", action="store_true",
                        help="keep images with lesions (mask pixels or boxes) in training/validation/test with "
                             "their lesion_mask/boxes, so training can draw patches away from the lesions; those "
                             "that land in test go to test_unhealthy (default: all of them in test_unhealthy)")
    folder.add_argument("--name", default=None, help="datalist name (default: the image dir's name)")
    folder.add_argument("--test-only", action="store_true",
                        help="put every image in test, those labelled 1 or with lesions in test_unhealthy (a list "
                             "to screen with a trained model); no training/validation split")
    _add_split_arguments(folder)
    folder.set_defaults(_build_datalist=_run_folder)

    # the lung-mask builders live in cxr_monai.data.builders.lung_masks, imported only when one runs
    montgomery = sources.add_parser(
        "montgomery", help="NLM Montgomery County set: CXR_png/ + ManualMask/{leftMask,rightMask}/, merged masks",
        description="Build the Montgomery County datalist: images from ROOT/CXR_png, the left and right "
                    "ManualMask lung masks merged into one 0/255 PNG per image under --mask-out-dir; label 1 = "
                    "tuberculosis (name ending _1).")
    montgomery.add_argument("--root", required=True, type=Path, metavar="DIR",
                            help="the set's folder, holding CXR_png/ and ManualMask/")
    montgomery.add_argument("--mask-out-dir", type=Path, default=None, metavar="DIR",
                            help="where the merged masks are written (default: montgomery_lung_masks/ next to --out)")
    montgomery.add_argument("--name", default=None, help="datalist name (default: montgomery)")
    _add_split_arguments(montgomery)
    montgomery.set_defaults(_build_datalist=_run_montgomery)

    shenzhen = sources.add_parser(
        "shenzhen", help="Shenzhen (or Kaggle's Montgomery + Shenzhen folder): images/ or CXR_png/ + masks/",
        description="Build the Shenzhen datalist: images from ROOT/images or ROOT/CXR_png, lung masks "
                    "<image>_mask.* (or <image>.*) from ROOT/masks listed in place; label 1 = tuberculosis (name "
                    "ending _1). Also reads Kaggle's folder mixing MCUCXR_* and CHNCXR_* images.")
    shenzhen.add_argument("--root", required=True, type=Path, metavar="DIR",
                          help="the set's folder, holding images/ or CXR_png/ and masks/ or mask/")
    shenzhen.add_argument("--image-dir", type=Path, default=None, metavar="DIR",
                          help="image folder (default: ROOT/images or ROOT/CXR_png)")
    shenzhen.add_argument("--mask-dir", type=Path, default=None, metavar="DIR",
                          help="mask folder (default: ROOT/masks or ROOT/mask)")
    shenzhen.add_argument("--allow-missing-masks", action="store_true",
                          help="list images without a mask, without lung_mask (default: reject them, 'no lung mask')")
    shenzhen.add_argument("--name", default=None,
                          help="datalist name (default: shenzhen, montgomery or montgomery-shenzhen by the names)")
    _add_split_arguments(shenzhen)
    shenzhen.set_defaults(_build_datalist=_run_shenzhen)

    jsrt = sources.add_parser(
        "jsrt", help="JSRT .IMG radiographs with the SCR lung masks (merged, upsampled x2)",
        description="Build the JSRT datalist: the .IMG files under --root, the SCR left and right lung masks "
                    "under --scr-root merged and upsampled x2 (nearest neighbour) into one 0/255 PNG per image "
                    "under --mask-out-dir; label 1 = lung nodule (JPCLN), 0 = non-nodule (JPCNN).")
    jsrt.add_argument("--root", required=True, type=Path, metavar="DIR", help="folder holding the JSRT .IMG files")
    jsrt.add_argument("--scr-root", required=True, type=Path, metavar="DIR",
                      help="SCR folder holding **/masks/left lung/*.gif and right lung/*.gif")
    jsrt.add_argument("--mask-out-dir", type=Path, default=None, metavar="DIR",
                      help="where the merged masks are written (default: jsrt_lung_masks/ next to --out)")
    jsrt.add_argument("--name", default=None, help="datalist name (default: jsrt)")
    _add_split_arguments(jsrt)
    jsrt.set_defaults(_build_datalist=_run_jsrt)

    validate = sources.add_parser("validate", help="check datalist files against the schema",
                                  description=validate_datalist.__doc__.split("\n\n")[0])
    validate.add_argument("files", nargs="+", type=Path, metavar="JSON")
    validate.set_defaults(_build_datalist=_run_validate)


def _run_nih(args: argparse.Namespace) -> int:
    summary = build_nih_datalist(args.data_entry, args.bbox_list, args.image_dir, args.out, view=args.view,
                                 val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                                 seed=args.seed, check_images=not args.allow_missing_images,
                                 base_dir=args.base_dir, box_image_size=args.box_image_size or None)
    print(summary.format())
    return 0


def _run_folder(args: argparse.Namespace) -> int:
    summary = build_folder_datalist(args.image_dir, args.out, mask_dir=args.mask_dir, mask_suffix=args.mask_suffix,
                                    lesion_mask_dir=args.lesion_mask_dir, lesion_mask_suffix=args.lesion_mask_suffix,
                                    boxes_csv=args.boxes, labels_csv=args.labels, label_column=args.label_column,
                                    patient_column=args.patient_column,
                                    keep_lesion_images=args.keep_lesion_images, val_fraction=args.val_fraction,
                                    test_fraction=args.test_fraction, seed=args.seed, base_dir=args.base_dir,
                                    name=args.name, test_only=args.test_only)
    print(summary.format())
    return 0


def _split_options(args: argparse.Namespace) -> dict[str, Any]:
    return dict(val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                base_dir=args.base_dir, name=args.name)


def _run_montgomery(args: argparse.Namespace) -> int:
    from cxr_monai.data.builders.lung_masks import build_montgomery_datalist

    summary = build_montgomery_datalist(args.root, args.out, mask_out_dir=args.mask_out_dir, **_split_options(args))
    print(summary.format())
    return 0


def _run_shenzhen(args: argparse.Namespace) -> int:
    from cxr_monai.data.builders.lung_masks import build_shenzhen_datalist

    summary = build_shenzhen_datalist(args.root, args.out, image_dir=args.image_dir, mask_dir=args.mask_dir,
                                      allow_missing_masks=args.allow_missing_masks, **_split_options(args))
    print(summary.format())
    return 0


def _run_jsrt(args: argparse.Namespace) -> int:
    from cxr_monai.data.builders.lung_masks import build_jsrt_datalist

    summary = build_jsrt_datalist(args.root, args.scr_root, args.out, mask_out_dir=args.mask_out_dir,
                                  **_split_options(args))
    print(summary.format())
    return 0


def _run_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            document = validate_datalist(path)
        except (DatalistError, FileNotFoundError) as error:
            print(error, file=sys.stderr)
            failed += 1
            continue
        counts = ", ".join(f"{key} {len(document[key])}" for key in SPLIT_KEYS if key in document)
        print(f"{path}: valid ({counts})")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    """Run ``datalist nih|folder|montgomery|shenzhen|jsrt|validate``; rejected files go to stderr, the summary to
    stdout."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args._build_datalist(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
