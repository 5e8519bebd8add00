"""Datalist of the SIIM-ACR Pneumothorax set: DICOMs, ``train-rle.csv`` masks, a balanced split by patient.

:func:`build_siim_datalist` reads SIIM's run-length CSV (``ImageId, EncodedPixels``; ``-1`` = no pneumothorax;
several rows of one image = several regions, merged; :mod:`cxr_monai.io.rle`), finds each image's DICOM by its
file name stem anywhere under the DICOM folder (SIIM nests ``<study>/<series>/<ImageId>.dcm``), writes one mask
PNG per listed image and splits the images by patient (DICOM ``PatientID``) into ``training`` / ``validation`` /
``test`` (80/10/10 by default, as seed 004), the test images with pneumothorax in ``test_unhealthy``. With
``balance`` (seed 004: as many images without pneumothorax as with it) the negatives are drawn with the seed.

Python::

    from cxr_monai.data.builders.siim import build_siim_datalist

    summary = build_siim_datalist("train-rle.csv", "/data/siim/dicom-images-train", "siim.json",
                                  "/data/siim/masks", balance=True)
    print(summary.format())

Command line::

    python -m cxr_monai datalist siim --rle-csv train-rle.csv --dicom-dir /data/siim/dicom-images-train \\
        --mask-dir /data/siim/masks --out siim.json --balance
"""

from __future__ import annotations

import io
import os
import posixpath
import tempfile
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image

from cxr_monai.data.datalist import (
    SPLIT_KEYS,
    DatalistSummary,
    RejectedFile,
    SplitCounts,
    _check_fractions,
    _finish,
    _reject,
    _relative_dir,
    _require_dir,
    _walk_files,
    image_file_problem,
    split_groups,
)
from cxr_monai.io.headers import DICOM_SUFFIXES
from cxr_monai.io.rle import SIIM_IMAGE_SIZE, RLEError, merge_rle, read_rle_csv

__all__ = ["SIIM_FINDING", "SIIM_TEST_FRACTION", "SIIM_VAL_FRACTION", "build_siim_datalist"]

#: Seed 004 splits 80/10/10 (722/90/91 images of each class).
SIIM_VAL_FRACTION = 0.1
SIIM_TEST_FRACTION = 0.1
#: The finding of an image with a pneumothorax region (NIH's name, as the phantoms use it).
SIIM_FINDING = "Pneumothorax"

_HEADER_TAGS = ["Rows", "Columns", "PatientID", "ViewPosition"]


@dataclass(frozen=True)
class _SiimCase:
    image_id: str
    rel_path: str  # the DICOM, relative to dicom_dir
    patient: str
    view: str | None
    size: tuple[int, int]  # (width, height) as stored
    label: int


def _read_header(path: Path) -> tuple[tuple[int, int], str, str]:
    """``((width, height), PatientID, ViewPosition)`` of a DICOM, without its pixels; ``ValueError`` with the
    reason when the file is not a readable DICOM with an image size."""
    problem = image_file_problem(path)
    if problem is not None:
        raise ValueError(problem)
    with open(path, "rb") as stream:
        has_preamble = stream.read(132)[128:] == b"DICM"
    try:
        with warnings.catch_warnings():  # a damaged header is reported as the reason, not as pydicom's warnings
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=not has_preamble, specific_tags=_HEADER_TAGS)
        width, height = int(ds.Columns), int(ds.Rows)
    except Exception as error:  # pydicom raises many types for a damaged header
        raise ValueError(f"cannot read the header ({type(error).__name__}: {error})") from None
    return (width, height), str(ds.get("PatientID", "") or "").strip(), str(ds.get("ViewPosition", "") or "").strip()


def _png_bytes(mask: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(buffer, format="PNG")  # grey "L", 0/255
    return buffer.getvalue()


def _write_atomic(data: bytes, path: Path) -> None:
    """Write ``data`` via a temporary file and a rename, readable like the dataset."""
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _inside(path: Path, directory: Path) -> bool:
    path, directory = Path(os.path.abspath(path)), Path(os.path.abspath(directory))
    return path == directory or directory in path.parents


def _index_dicoms(dicom_dir: Path, skip: Iterable[Path]) -> tuple[dict[str, list[str]], list[str]]:
    """Stem -> DICOM paths (relative to ``dicom_dir``, any depth), and the other files found."""
    by_stem: dict[str, list[str]] = defaultdict(list)
    ignored = []
    for rel_path in _walk_files(dicom_dir, skip):
        stem, suffix = posixpath.splitext(posixpath.basename(rel_path))
        if suffix.lower() in DICOM_SUFFIXES:
            by_stem[stem].append(rel_path)
        else:
            ignored.append(rel_path)
    return dict(by_stem), ignored


def _split_by_patient(cases: Sequence[_SiimCase], val_fraction: float, test_fraction: float,
                      seed: int) -> dict[str, str]:
    """Image id -> split. Patients with a pneumothorax image and the others are split apart (same fractions), so
    every split keeps about the positive share of the whole; test images with label 1 go to test_unhealthy."""
    positive_patients = {case.patient for case in cases if case.label}
    split_of_patient: dict[str, str] = {}
    for positive in (True, False):
        sizes = Counter(case.patient for case in cases if (case.patient in positive_patients) == positive)
        if sizes:
            split_of_patient.update(split_groups(sizes, val_fraction=val_fraction, test_fraction=test_fraction,
                                                 seed=seed))
    split = {}
    for case in cases:
        key = split_of_patient[case.patient]
        split[case.image_id] = "test_unhealthy" if key == "test" and case.label else key
    return split


def build_siim_datalist(
    rle_csv: str | os.PathLike,
    dicom_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    mask_dir: str | os.PathLike | None = None,
    *,
    balance: bool = False,
    rle_size: int = SIIM_IMAGE_SIZE,
    val_fraction: float = SIIM_VAL_FRACTION,
    test_fraction: float = SIIM_TEST_FRACTION,
    seed: int = 0,
    base_dir: str | os.PathLike | None = None,
    name: str | None = None,
) -> DatalistSummary:
    """Build the SIIM-ACR pneumothorax datalist from ``train-rle.csv`` and the DICOMs.

    - Images: the DICOMs (``.dcm``) under ``dicom_dir`` at any depth, named ``<ImageId>.dcm``; headers only are
      read (size, ``PatientID``, ``ViewPosition``), not the pixels.
    - Labels: ``label`` 1 and ``findings`` ``["Pneumothorax"]`` for an image with at least one region in
      ``rle_csv``, ``label`` 0 for ``-1``. The column ``EncodedPixels`` may carry SIIM's leading space.
    - Masks: every entry has a ``lesion_mask``, ``<mask_dir>/<ImageId>.png`` (grey, 0/255, the DICOM's stored
      size): the union of the image's regions, all zeros for a negative image, so every batch has masks
      (default ``mask_dir``: ``siim_pneumothorax_masks/`` next to ``out_path``). The codes refer to ``rle_size``
      px square images (SIIM: 1024); an image stored at another size is rejected, never resampled.
    - ``view``: the DICOM's ``ViewPosition`` (``PA``/``AP``) when present.
    - ``balance``: keep every positive image and as many negative images, drawn with ``seed`` (seed 004's
      balanced set); the negatives left out are counted in a note, not rejected.
    - Split by patient (``PatientID``; an image without one is its own patient) with :func:`split_groups`:
      ``val_fraction`` and ``test_fraction`` of the images (default 10 % each), the patients with a pneumothorax
      image and the others split apart so that each split keeps the positive share; test images with label 1 in
      ``test_unhealthy``, label 0 in ``test``. No patient ID is written.
    - Rejected, with the reason (and logged): a CSV image without a DICOM (``missing``), a DICOM without a CSV row
      (``no RLE row``), two DICOMs with one stem (``ambiguous``), a file that is not a readable DICOM
      (``unreadable DICOM``), an image of another size than ``rle_size`` (``size mismatch``) and a code that does
      not decode (``RLE decode error``: odd number of values, a negative value, a run past the end).
    - Paths are relative to ``base_dir`` (default: the deepest directory holding ``dicom_dir`` and ``mask_dir``).

    >>> summary = build_siim_datalist("train-rle.csv", "dicom-images-train", "siim.json", "siim_masks",
    ...                               balance=True)  # doctest: +SKIP
    """
    _check_fractions(val_fraction, test_fraction)
    if isinstance(rle_size, bool) or not isinstance(rle_size, (int, np.integer)) or rle_size < 1:
        raise ValueError(f"rle_size must be a positive integer (the side of the images the codes refer to), "
                         f"got {rle_size!r}")
    rle_csv, dicom_dir, out_path = Path(rle_csv), Path(dicom_dir), Path(out_path)
    mask_dir = out_path.parent / "siim_pneumothorax_masks" if mask_dir is None else Path(mask_dir)
    _require_dir(dicom_dir, "DICOM directory")
    if _inside(mask_dir, dicom_dir):
        raise ValueError(f"{mask_dir}: the masks need a directory outside the DICOM directory {dicom_dir}; "
                         "choose another --mask-dir")
    base_dir = (Path(os.path.commonpath([os.path.abspath(dicom_dir), os.path.abspath(mask_dir)]))
                if base_dir is None else Path(base_dir))
    image_prefix, mask_prefix = _relative_dir(dicom_dir, base_dir), _relative_dir(mask_dir, base_dir)
    codes = read_rle_csv(rle_csv)
    dicoms, ignored = _index_dicoms(dicom_dir, skip=[mask_dir])

    rejected: list[RejectedFile] = []
    for image_id in codes:
        if image_id not in dicoms:
            _reject(rejected, image_id, f"missing: no {image_id}.dcm under {dicom_dir}")
    mask_dir.mkdir(parents=True, exist_ok=True)
    cases: list[_SiimCase] = []
    without_patient = 0
    for image_id in sorted(dicoms):
        found = dicoms[image_id]
        if len(found) > 1:
            for rel_path in found:
                _reject(rejected, (dicom_dir / rel_path).as_posix(),
                        f"ambiguous: {len(found)} DICOMs named {image_id} ({', '.join(found)})")
            continue
        path = dicom_dir / found[0]
        if image_id not in codes:
            _reject(rejected, path.as_posix(), f"no RLE row: {image_id} is not in {rle_csv.name}")
            continue
        try:
            size, patient, view = _read_header(path)
        except ValueError as error:
            _reject(rejected, path.as_posix(), f"unreadable DICOM: {error}")
            continue
        if size != (rle_size, rle_size):
            _reject(rejected, path.as_posix(), f"size mismatch: the image is {size[0]}x{size[1]} px, the RLE codes "
                                               f"refer to {rle_size}x{rle_size} (--rle-size)")
            continue
        try:
            mask = merge_rle(codes[image_id], (size[1], size[0]), source=f"{rle_csv.name}: {image_id}")
        except RLEError as error:
            _reject(rejected, path.as_posix(), f"RLE decode error: {error}")
            continue
        label = int(mask.any())
        if not label and any(code not in ("", "-1") for code in codes[image_id]):
            _reject(rejected, path.as_posix(), f"RLE decode error: {rle_csv.name}: {image_id}: the codes cover no "
                                               "pixel")
            continue
        if label:  # every positive is listed, whatever the draw: write its mask now, not kept in memory
            _write_atomic(_png_bytes(mask), mask_dir / f"{image_id}.png")
        if not patient:
            without_patient += 1
        cases.append(_SiimCase(image_id, found[0], patient or f"image:{image_id}", view or None, size, label))

    positives = [case for case in cases if case.label]
    negatives = [case for case in cases if not case.label]
    notes = []
    if balance and len(negatives) > len(positives):
        drawn = np.random.default_rng(seed).choice(len(negatives), size=len(positives), replace=False)
        notes.append(f"--balance: {len(positives)} of the {len(negatives)} negative images drawn (seed {seed}); "
                     f"{len(negatives) - len(positives)} left out")
        negatives = [negatives[i] for i in sorted(drawn.tolist())]
    elif balance and len(negatives) < len(positives):
        notes.append(f"--balance: only {len(negatives)} negative images for {len(positives)} positive ones; all kept")
    listed = sorted(positives + negatives, key=lambda case: case.image_id)

    blank_masks: dict[tuple[int, int], bytes] = {}
    for case in listed:
        if not case.label:
            if case.size not in blank_masks:
                blank_masks[case.size] = _png_bytes(np.zeros((case.size[1], case.size[0]), bool))
            _write_atomic(blank_masks[case.size], mask_dir / f"{case.image_id}.png")

    split_of = _split_by_patient(listed, val_fraction, test_fraction, seed)
    document: dict[str, Any] = {key: [] for key in SPLIT_KEYS}
    members: dict[str, list[_SiimCase]] = {key: [] for key in SPLIT_KEYS}
    for case in listed:
        entry: dict[str, Any] = {"image": posixpath.join(image_prefix, case.rel_path),
                                 "lesion_mask": posixpath.join(mask_prefix, f"{case.image_id}.png"),
                                 "label": case.label}
        if case.label:
            entry["findings"] = [SIIM_FINDING]
        if case.view:
            entry["view"] = case.view
        document[split_of[case.image_id]].append(entry)
        members[split_of[case.image_id]].append(case)

    splits = {key: SplitCounts(len(group), len({case.patient for case in group}),
                               dict(Counter(case.view for case in group if case.view)))
              for key, group in members.items()}
    notes.append(f"{len(listed)} lesion masks (0/255 PNG, {sum(c.label for c in listed)} with pneumothorax, the "
                 f"others blank) in {mask_dir}")
    if without_patient:
        notes.append(f"{without_patient} DICOMs have no PatientID: each is its own patient in the split")
    if ignored:
        examples = ", ".join(ignored[:3]) + (", ..." if len(ignored) > 3 else "")
        notes.append(f"ignored {len(ignored)} files in {dicom_dir} that are not DICOMs by their extension ({examples})")
    description = (
        f"SIIM-ACR pneumothorax from {rle_csv.name} and the DICOMs in '{dicom_dir.name}'"
        + (" (balanced: as many negative images as positive ones, drawn with the seed)" if balance else "")
        + f". label 1 = pneumothorax (findings Pneumothorax), 0 = none; lesion_mask: the merged RLE regions at the "
        f"image's stored size (0/255 PNG; blank for label 0). Split by patient (seed {seed}, validation "
        f"{val_fraction:g}, test {test_fraction:g}, patients with and without pneumothorax split apart); test images "
        f"with label 1 in test_unhealthy. Paths are relative to the dataset directory '{base_dir.name or base_dir}': "
        "pass it as base_dir (bundles: --dataset_dir)."
    )
    if rejected:
        description += f" Rejected files left out: {len(rejected)} (see the builder's summary)."
    default_name = "siim-acr-pneumothorax" + ("-balanced" if balance else "")
    return _finish({"name": name or default_name, "description": description, **document}, out_path, splits,
                   rejected, notes=notes)
