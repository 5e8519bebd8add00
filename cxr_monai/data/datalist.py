"""The shared datalist layer: schema, loader, split and file checks, and the ``datalist`` command line.

The builders (label files or a folder of radiographs -> MONAI decathlon-style JSON) live in
:mod:`cxr_monai.data.builders`: :func:`~cxr_monai.data.builders.nih.build_nih_datalist`,
:func:`~cxr_monai.data.builders.folder.build_folder_datalist`, the lung-mask builders of
:mod:`cxr_monai.data.builders.lung_masks`, the bone-suppression pairs of
:mod:`cxr_monai.data.builders.bone_pairs`, the multi-label classification lists (CheXpert, ChestX-ray14) of
:mod:`cxr_monai.data.builders.classification` and the SIIM-ACR pneumothorax list (RLE masks) of
:mod:`cxr_monai.data.builders.siim`; they share the helpers of this module.

Every list follows docs/data_contract.md and ``cxr_monai/schemas/datalist.schema.json``: the keys
``training``, ``validation``, ``test`` (healthy images) and ``test_unhealthy`` (abnormal images with their
boxes), each a list of entries such as ``{"image": "00000003_000.png", "label": 0, "view": "PA"}``.

Path rule: entry paths are relative to the dataset directory (``base_dir``) -- by default the image
directory itself for NIH, and the directory holding both the image and the mask directories for a folder.
Pass the same directory as ``base_dir`` to :func:`load_datalist` (the bundles' ``--dataset_dir``).

Python::

    from cxr_monai.data import build_nih_datalist, load_datalist

    summary = build_nih_datalist("Data_Entry_2017_v2020.csv.gz", "BBox_List_2017.csv.gz",
                                 "/data/nih/images", "nih_pa.json", view="PA")
    print(summary.format())
    train_files = load_datalist("nih_pa.json", "training", base_dir="/data/nih/images")

Command line::

    python -m cxr_monai datalist nih --data-entry Data_Entry_2017_v2020.csv.gz \\
        --bbox-list BBox_List_2017.csv.gz --image-dir /data/nih/images --out nih_pa.json --view PA
    python -m cxr_monai datalist nih-boxes --data-entry Data_Entry_2017_v2020.csv.gz \\
        --bbox-list BBox_List_2017.csv.gz --image-dir /data/nih/images --out nih_boxes.json
    python -m cxr_monai datalist folder --image-dir montgomery/ --mask-suffix=-mask --out mont.json
    python -m cxr_monai datalist folder --image-dir lesions/images --mask-dir lesions/lung_masks \\
        --lesion-mask-dir lesions/lesion_masks --boxes lesions/boxes.csv --labels lesions/labels.csv \\
        --keep-lesion-images --out lesions.json
    python -m cxr_monai datalist bone-pairs --image-dir jsrt/images --soft-tissue-dir jsrt/soft_tissue \\
        --out jsrt_bse.json
    python -m cxr_monai datalist chexpert --csv /data/CheXpert-v1.0-small/train.csv --image-root /data \\
        --out chexpert.json --uncertainty ones
    python -m cxr_monai datalist chestxray14 --data-entry Data_Entry_2017_v2020.csv.gz \\
        --bbox-list BBox_List_2017.csv.gz --image-dir /data/ChestX-ray14/images --out chestxray14.json
    python -m cxr_monai datalist siim --rle-csv train-rle.csv --dicom-dir /data/siim/dicom-images-train \\
        --mask-dir /data/siim/masks --out siim.json --balance
    python -m cxr_monai datalist validate nih_pa.json
"""

from __future__ import annotations

import argparse
import copy
import csv
import gzip
import json
import logging
import math
import os
import sys
import tempfile
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from cxr_monai.io.headers import CXRReadError, stored_size

__all__ = [
    "DEFAULT_TEST_FRACTION",
    "DEFAULT_VAL_FRACTION",
    "LIST_KEYS",
    "SPLIT_KEYS",
    "DatalistError",
    "DatalistSummary",
    "RejectedFile",
    "SplitCounts",
    "add_arguments",
    "datalist_schema",
    "image_file_problem",
    "datalist_label_names",
    "load_datalist",
    "run",
    "split_groups",
    "validate_datalist",
]

logger = logging.getLogger(__name__)

SPLIT_KEYS = ("training", "validation", "test", "test_unhealthy")
# Lists load_datalist also reads: the healthy images a generator adds (datalist nih-boxes).
LIST_KEYS = (*SPLIT_KEYS, "healthy")
# ChestX-ray14 context encoder: 59,481 train / 1,760 validation of 61,241 healthy images, i.e. 2.9 %.
DEFAULT_VAL_FRACTION = 0.03
DEFAULT_TEST_FRACTION = 0.02
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
# Paths the loader joins with base_dir; every other key is returned exactly as stored.
PATH_KEYS = ("image", "lung_mask", "lesion_mask", "target", "bone_suppressed", "bone", "rib_mask", "lateral")

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
# shared by the builders


def _split_findings(text: str) -> tuple[str, ...]:
    """``"Effusion|Mass"`` -> ``("Effusion", "Mass")``, blanks and repeats dropped."""
    if "|" not in text:
        return (text.strip(),) if text.strip() else ()
    return tuple(_unique(name.strip() for name in text.split("|") if name.strip()))


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


def _finish(document: dict[str, Any], out_path: Path, splits: dict[str, SplitCounts],
            rejected: list[RejectedFile], *, boxes: int = 0, notes: list[str] | None = None) -> DatalistSummary:
    if not any(document[key] for key in SPLIT_KEYS):
        first = f" (first: {rejected[0].path}: {rejected[0].reason})" if rejected else ""
        raise ValueError(f"{out_path}: not written, no usable image: {len(rejected)} rejected{first}")
    _write_json_atomic(document, out_path)
    return DatalistSummary(out_path, splits, rejected, boxes, notes or [])


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
    for key in LIST_KEYS:
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


#: validated documents by (resolved path, mtime in ns, size): a run loads several splits of one (large) list
_VALIDATED: OrderedDict[tuple[str, int, int], dict[str, Any]] = OrderedDict()
_VALIDATED_FILES = 8


def validate_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """Check a datalist file against the schema and the box rules; return its parsed content.

    Raises :class:`DatalistError` listing each problem as ``file: training[3].boxes[0]: reason``. A file checked
    before in this process and unchanged since (same modification time and size) is not checked again (CheXpert's
    191k entries take most of a minute); each call returns its own copy of the document.

    >>> validate_datalist("nih_pa.json")["name"]  # doctest: +SKIP
    'nih-chestxray14-pa'
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such datalist file")
    stat = path.stat()
    cache_key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if cache_key in _VALIDATED:
        _VALIDATED.move_to_end(cache_key)
        return copy.deepcopy(_VALIDATED[cache_key])
    document = _validated_document(path)
    _VALIDATED[cache_key] = copy.deepcopy(document)
    while len(_VALIDATED) > _VALIDATED_FILES:
        _VALIDATED.popitem(last=False)
    return document


def _validated_document(path: Path) -> dict[str, Any]:
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


def datalist_label_names(path: str | os.PathLike) -> list[str]:
    """The top-level ``label_names`` of a datalist file (the class order of its entries' ``labels``).

    Raises :class:`DatalistError` naming the file when it has none (a list for the context encoder or the lung
    segmentation, not for a classifier).
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DatalistError(f"{path}: cannot read the datalist ({error})") from error
    names = document.get("label_names") if isinstance(document, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        raise DatalistError(f"{path}: no 'label_names' (a classifier needs the class names of the entries' 'labels'; "
                            "build the list with datalist chexpert / chestxray14 or phantom --classification)")
    return names


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

    Reads with ``monai.data.load_decathlon_datalist``; the path keys (:data:`PATH_KEYS`: ``image``,
    ``lung_mask``, ``lesion_mask``, ``target``, ``bone_suppressed``, ``bone``, ``rib_mask``, ``lateral``) are
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
                                f"(has: {', '.join(k for k in LIST_KEYS if k in document)})")
        entries = [e for k in present for e in load_datalist(path, k, base_dir, 0, required_keys)]
        if len(entries) < min_entries:
            raise DatalistError(f"{path}: the lists {', '.join(present)} have {len(entries)} entries; this run needs "
                                f"at least {min_entries}")
        return entries
    if key not in LIST_KEYS:
        raise ValueError(f"{path}: key must be one of {', '.join(LIST_KEYS)}, got {key!r}")
    document = validate_datalist(path)
    if required_keys:
        kept = [e for e in document.get(key, []) if all(k in e for k in required_keys)]
        left_out = [e.get("image", "?") for e in document.get(key, []) if not all(k in e for k in required_keys)]
        if left_out:
            logger.warning("%s: %d of the '%s' entries lack %s and are left out (e.g. %s)", path, len(left_out), key,
                           " or ".join(required_keys), ", ".join(map(str, left_out[:3])))
            document = {**document, key: kept}
    if key not in document:
        present = ", ".join(k for k in LIST_KEYS if k in document)
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


def _add_split_arguments(parser: argparse.ArgumentParser, *, val_fraction: float = DEFAULT_VAL_FRACTION,
                         test_fraction: float = DEFAULT_TEST_FRACTION) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="JSON", help="datalist file to write")
    val_help = (f"share of the images split, the healthy ones (folder --keep-lesion-images: and those with lesions), "
                f"for validation (default {DEFAULT_VAL_FRACTION}: the context-encoder paper's 1,760 of 61,241)"
                if val_fraction == DEFAULT_VAL_FRACTION else
                f"share of the images split for validation (default {val_fraction})")
    parser.add_argument("--val-fraction", type=float, default=val_fraction, metavar="F", help=val_help)
    parser.add_argument("--test-fraction", type=float, default=test_fraction, metavar="F",
                        help=f"least share of the images split for test (default {test_fraction})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument("--base-dir", type=Path, default=None, metavar="DIR",
                        help="directory the paths are relative to (the bundles' --dataset_dir)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register ``datalist nih``, ``nih-boxes``, ``folder``, ``montgomery``, ``shenzhen``, ``jsrt``, ``bone-pairs``, ``chexpert``,
    ``chestxray14``, ``siim`` and ``validate``."""
    # imported here: the builder modules import this one
    from cxr_monai.data.builders.bone_pairs import (
        BONE_PAIR_TEST_FRACTION,
        BONE_PAIR_VAL_FRACTION,
    )
    from cxr_monai.data.builders.classification import (
        BLANK_POLICIES,
        CHESTXRAY14_TEST_FRACTION,
        CHESTXRAY14_VAL_FRACTION,
        CHEXPERT_TEST_FRACTION,
        CHEXPERT_VAL_FRACTION,
        UNCERTAINTY_POLICIES,
    )
    from cxr_monai.data.builders.folder import build_folder_datalist
    from cxr_monai.data.builders.nih import NIH_BOX_IMAGE_SIZE, build_nih_datalist
    from cxr_monai.data.builders.siim import SIIM_TEST_FRACTION, SIIM_VAL_FRACTION
    from cxr_monai.io.rle import SIIM_IMAGE_SIZE

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

    from cxr_monai.data.builders.nih_boxes import (
        NIH_BOXES_CLASSES,
        NIH_BOXES_HEALTHY,
        NIH_BOXES_TEST_FRACTION,
    )

    nih_boxes = sources.add_parser(
        "nih-boxes", help="NIH ChestX-ray14 boxed images of chosen classes split by patient, plus healthy images "
                          "(pix2pix augmentation, box localisation)",
        description="Build the boxed-image datalist of seed 002: the images of BBox_List with boxes of --classes "
                    "(default the seed's six; other boxes dropped and counted), their patients split into training "
                    "and test (weighted by boxes), and --healthy 'No Finding' images of the other patients drawn "
                    "with --seed; box_label_names lists the classes.")
    nih_boxes.add_argument("--data-entry", required=True, type=Path, metavar="CSV", help="Data_Entry_2017*.csv[.gz]")
    nih_boxes.add_argument("--bbox-list", required=True, type=Path, metavar="CSV", help="BBox_List_2017.csv[.gz]")
    nih_boxes.add_argument("--image-dir", required=True, type=Path, metavar="DIR",
                           help="folder holding the images at any depth (flat or images_NNN/images/); default base dir")
    nih_boxes.add_argument("--out", required=True, type=Path, metavar="JSON", help="datalist file to write")
    nih_boxes.add_argument("--classes", nargs="+", default=list(NIH_BOXES_CLASSES), metavar="NAME",
                           help=f"box labels kept (default: {' '.join(NIH_BOXES_CLASSES)}; Infiltrate = Infiltration)")
    nih_boxes.add_argument("--test-fraction", type=float, default=NIH_BOXES_TEST_FRACTION, metavar="F",
                           help=f"least share of the boxes whose patients go to test (default {NIH_BOXES_TEST_FRACTION})")
    nih_boxes.add_argument("--healthy", type=int, default=NIH_BOXES_HEALTHY, metavar="N",
                           help=f"'No Finding' images of the other patients to draw (default {NIH_BOXES_HEALTHY}; 0: none)")
    nih_boxes.add_argument("--seed", type=int, default=0, help="seed of the split and the healthy draw (default 0)")
    nih_boxes.add_argument("--view", default=None, metavar="VIEW", help="keep one View Position, e.g. PA")
    nih_boxes.add_argument("--allow-missing-images", action="store_true",
                           help="do not check the image files (build the list before the download)")
    nih_boxes.add_argument("--box-image-size", type=int, default=NIH_BOX_IMAGE_SIZE, metavar="PX",
                           help="side of the images the BBox list's coordinates refer to (default "
                                f"{NIH_BOX_IMAGE_SIZE}; phantoms: their --size; 0 keeps the coordinates as listed)")
    nih_boxes.add_argument("--base-dir", type=Path, default=None, metavar="DIR",
                           help="directory the paths are relative to (the bundles' --dataset_dir)")
    nih_boxes.add_argument("--name", default=None, help="datalist name (default: nih-boxes[-view])")
    nih_boxes.set_defaults(_build_datalist=_run_nih_boxes)

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

    bone_pairs = sources.add_parser(
        "bone-pairs", help="radiographs with their soft-tissue (bone-suppressed) and/or bone images, paired by stem",
        description="Build a bone-suppression datalist: each image under --image-dir (PNG, JPEG, DICOM or JSRT "
                    ".IMG) with the file of the same stem (any image suffix) under --soft-tissue-dir "
                    "(bone_suppressed) and/or --bone-dir (bone), of its stored size; split by patient into "
                    "training, validation and test. Unpaired, mismatched and unreadable files are rejected with "
                    "their reason.")
    bone_pairs.add_argument("--image-dir", required=True, type=Path, metavar="DIR",
                            help="folder of the radiographs (any depth), e.g. the JSRT .IMG files")
    bone_pairs.add_argument("--soft-tissue-dir", type=Path, default=None, metavar="DIR",
                            help="folder of the soft-tissue / bone-suppressed images, <stem>.* like their images "
                                 "(datalist key bone_suppressed)")
    bone_pairs.add_argument("--bone-dir", type=Path, default=None, metavar="DIR",
                            help="folder of the bone images, <stem>.* like their images (datalist key bone); at "
                                 "least one of --soft-tissue-dir and --bone-dir")
    bone_pairs.add_argument("--labels", type=Path, default=None, metavar="CSV",
                            help="CSV with an image column and a patient column (as datalist folder --labels reads "
                                 "it): a patient's images land in one split; default: every image its own patient")
    bone_pairs.add_argument("--patient-column", default="patient", metavar="NAME",
                            help="the labels CSV's patient column (default patient); patient IDs are never written")
    bone_pairs.add_argument("--name", default=None,
                            help="datalist name (default: the name of the folder holding the image folders)")
    _add_split_arguments(bone_pairs, val_fraction=BONE_PAIR_VAL_FRACTION, test_fraction=BONE_PAIR_TEST_FRACTION)
    bone_pairs.set_defaults(_build_datalist=_run_bone_pairs)

    chexpert = sources.add_parser(
        "chexpert", help="CheXpert train.csv: frontal images, the 13 classes of seed 003 Table 1, lateral pairs",
        description="Build the CheXpert classification datalist: one entry per frontal image with the 13 classes of "
                    "seed 003 Table 1 as multi-hot labels (label_names) after the uncertainty policy, the binary "
                    "label (1: a pathology other than Support Devices is positive, 0: No Finding, absent "
                    "otherwise), the study and its lateral image; split by patient.")
    chexpert.add_argument("--csv", required=True, type=Path, metavar="CSV",
                          help="CheXpert's train.csv (or valid.csv), plain or .gz")
    chexpert.add_argument("--image-root", required=True, type=Path, metavar="DIR",
                          help="folder holding CheXpert-v1.0-small/ (the CSV paths are relative to it); default base "
                               "dir")
    chexpert.add_argument("--uncertainty", choices=tuple(UNCERTAINTY_POLICIES), default="ones",
                          help="uncertain (-1) labels: ones (U-ones, -> 1), zeros (U-zeros, -> 0) or ignore (kept "
                               "as -1, masked by the loss); default ones")
    chexpert.add_argument("--blank", choices=BLANK_POLICIES, default="null",
                          help="labels not mentioned: null (masked by the loss) or zeros (negative, as the CheXpert "
                               "paper); default null")
    chexpert.add_argument("--no-lateral", action="store_true",
                          help="do not pair the study's lateral image (single-branch classifier)")
    chexpert.add_argument("--allow-missing-images", action="store_true",
                          help="do not check the image files (build the list from the CSV alone)")
    chexpert.add_argument("--name", default=None, help="datalist name (default: chexpert-u<policy>)")
    _add_split_arguments(chexpert, val_fraction=CHEXPERT_VAL_FRACTION, test_fraction=CHEXPERT_TEST_FRACTION)
    chexpert.set_defaults(_build_datalist=_run_chexpert)

    chestxray14 = sources.add_parser(
        "chestxray14", help="NIH ChestX-ray14 Data_Entry CSV: every image, the 14 findings as multi-hot labels",
        description="Build the ChestX-ray14 classification datalist: every image with the 14 findings of Finding "
                    "Labels as multi-hot labels (label_names) and label 0 (No Finding) or 1; split by Patient ID "
                    "(default 70/10/20 as Wang et al. 2017; --test-list puts the official test_list.txt's "
                    "patients in test). --bbox-list adds the boxes of BBox_List_2017 to the boxed images and puts "
                    "every patient with a boxed image in test (ChestX-ray8's localisation protocol). The context "
                    "encoder's list is 'datalist nih'.")
    chestxray14.add_argument("--data-entry", required=True, type=Path, metavar="CSV",
                             help="Data_Entry_2017*.csv[.gz]")
    chestxray14.add_argument("--image-dir", required=True, type=Path, metavar="DIR",
                             help="folder holding the images at any depth (flat or images_NNN/images/); default base "
                                  "dir")
    chestxray14.add_argument("--view", default=None, metavar="VIEW", help="keep one View Position, e.g. PA")
    chestxray14.add_argument("--test-list", type=Path, default=None, metavar="TXT",
                             help="the official test_list.txt: its images' patients go to test (--test-fraction "
                                  "unused), the others are split into training and validation")
    chestxray14.add_argument("--bbox-list", type=Path, default=None, metavar="CSV",
                             help="BBox_List_2017.csv[.gz]: the boxed images get boxes and box_labels (localisation of "
                                  "the class heatmaps) and every patient with a boxed image goes to test")
    chestxray14.add_argument("--box-image-size", type=int, default=NIH_BOX_IMAGE_SIZE, metavar="PX",
                             help="side of the images the BBox list's coordinates refer to: boxed images stored at "
                                  f"another size get their boxes scaled (default {NIH_BOX_IMAGE_SIZE}, the NIH "
                                  "release; 0 keeps the coordinates as listed)")
    chestxray14.add_argument("--allow-missing-images", action="store_true",
                             help="do not check the image files (build the list before the download)")
    chestxray14.add_argument("--name", default=None, help="datalist name (default: chestxray14[-view])")
    _add_split_arguments(chestxray14, val_fraction=CHESTXRAY14_VAL_FRACTION,
                         test_fraction=CHESTXRAY14_TEST_FRACTION)
    chestxray14.set_defaults(_build_datalist=_run_chestxray14)

    siim = sources.add_parser(
        "siim", help="SIIM-ACR pneumothorax: train-rle.csv + the DICOMs, a mask PNG per image, split by patient",
        description="Build the SIIM-ACR pneumothorax datalist: each DICOM under --dicom-dir (any depth, named "
                    "<ImageId>.dcm) with its rows of --rle-csv (EncodedPixels: relative-offset run-length codes, "
                    "column-major, -1 = none; several rows = several regions, merged) as label 1/0, findings "
                    "Pneumothorax and lesion_mask (a 0/255 PNG under --mask-dir for every image, blank for label 0); "
                    "split by PatientID 80/10/10, test images with pneumothorax in test_unhealthy. Images without a "
                    "row, rows without an image, unreadable DICOMs, other sizes and bad codes are rejected with "
                    "their reason.")
    siim.add_argument("--rle-csv", required=True, type=Path, metavar="CSV",
                      help="SIIM's train-rle.csv (ImageId, EncodedPixels), plain or .gz")
    siim.add_argument("--dicom-dir", required=True, type=Path, metavar="DIR",
                      help="folder holding the DICOMs at any depth (SIIM's dicom-images-train/<study>/<series>/)")
    siim.add_argument("--mask-dir", type=Path, default=None, metavar="DIR",
                      help="where the mask PNGs are written, outside --dicom-dir (default: siim_pneumothorax_masks/ "
                           "next to --out)")
    siim.add_argument("--balance", action="store_true",
                      help="as many negative images as positive ones, the negatives drawn with --seed (seed 004)")
    siim.add_argument("--rle-size", type=int, default=SIIM_IMAGE_SIZE, metavar="PX",
                      help=f"side of the images the codes refer to (default {SIIM_IMAGE_SIZE}); images stored at "
                           "another size are rejected")
    siim.add_argument("--name", default=None,
                      help="datalist name (default: siim-acr-pneumothorax, -balanced with --balance)")
    _add_split_arguments(siim, val_fraction=SIIM_VAL_FRACTION, test_fraction=SIIM_TEST_FRACTION)
    siim.set_defaults(_build_datalist=_run_siim)

    validate = sources.add_parser("validate", help="check datalist files against the schema",
                                  description=validate_datalist.__doc__.split("\n\n")[0])
    validate.add_argument("files", nargs="+", type=Path, metavar="JSON")
    validate.set_defaults(_build_datalist=_run_validate)


def _run_nih(args: argparse.Namespace) -> int:
    from cxr_monai.data.builders.nih import build_nih_datalist

    summary = build_nih_datalist(args.data_entry, args.bbox_list, args.image_dir, args.out, view=args.view,
                                 val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                                 seed=args.seed, check_images=not args.allow_missing_images,
                                 base_dir=args.base_dir, box_image_size=args.box_image_size or None)
    print(summary.format())
    return 0


def _run_nih_boxes(args: argparse.Namespace) -> int:
    from cxr_monai.data.builders.nih_boxes import build_nih_boxes_datalist

    summary = build_nih_boxes_datalist(args.data_entry, args.bbox_list, args.image_dir, args.out,
                                       classes=args.classes, test_fraction=args.test_fraction, healthy=args.healthy,
                                       seed=args.seed, view=args.view, check_images=not args.allow_missing_images,
                                       base_dir=args.base_dir, box_image_size=args.box_image_size or None,
                                       name=args.name)
    print(summary.format())
    return 0


def _run_folder(args: argparse.Namespace) -> int:
    from cxr_monai.data.builders.folder import build_folder_datalist

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


def _run_bone_pairs(args: argparse.Namespace) -> int:
    from cxr_monai.data.builders.bone_pairs import build_bone_pair_datalist

    summary = build_bone_pair_datalist(args.image_dir, args.out, soft_tissue_dir=args.soft_tissue_dir,
                                       bone_dir=args.bone_dir, labels=args.labels,
                                       patient_column=args.patient_column, **_split_options(args))
    print(summary.format())
    return 0


def _run_chexpert(args: argparse.Namespace) -> int:
    from cxr_monai.data.builders.classification import build_chexpert_datalist

    summary = build_chexpert_datalist(args.csv, args.image_root, args.out, uncertainty=args.uncertainty,
                                      blank=args.blank, pair_lateral=not args.no_lateral,
                                      check_images=not args.allow_missing_images, **_split_options(args))
    print(summary.format())
    return 0


def _run_chestxray14(args: argparse.Namespace) -> int:
    from cxr_monai.data.builders.classification import build_chestxray14_datalist

    summary = build_chestxray14_datalist(args.data_entry, args.image_dir, args.out, view=args.view,
                                         test_list=args.test_list, check_images=not args.allow_missing_images,
                                         bbox_list_csv=args.bbox_list, box_image_size=args.box_image_size or None,
                                         **_split_options(args))
    print(summary.format())
    return 0


def _run_siim(args: argparse.Namespace) -> int:
    from cxr_monai.data.builders.siim import build_siim_datalist

    summary = build_siim_datalist(args.rle_csv, args.dicom_dir, args.out, args.mask_dir, balance=args.balance,
                                  rle_size=args.rle_size, **_split_options(args))
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
        counts = ", ".join(f"{key} {len(document[key])}" for key in LIST_KEYS if key in document)
        print(f"{path}: valid ({counts})")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    """Run ``datalist nih|nih-boxes|folder|montgomery|shenzhen|jsrt|bone-pairs|chexpert|chestxray14|siim|validate``; rejected
    files go to stderr, the summary to stdout."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        return args._build_datalist(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
