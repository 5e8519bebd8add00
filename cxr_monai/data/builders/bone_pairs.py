"""Datalists of bone-suppression pairs: radiographs with their soft-tissue and/or bone images (seed 003 §3.2).

A real pair is a radiograph and its counterpart(s) from a dual-energy acquisition or a bone-suppression set --
JSRT with its bone-suppressed (BSE) images, for example -- one folder per role, the files of one pair sharing a
stem (the name without its suffix; any suffix the project reads: PNG, JPEG, DICOM, JSRT ``.IMG``)::

    /data/jsrt-bse/
        images/JPCLN001.IMG        the radiographs (any depth)
        images/JPCNN001.IMG
        soft_tissue/JPCLN001.png   the soft-tissue (bone-suppressed) images: datalist key bone_suppressed
        soft_tissue/JPCNN001.png
        bones/JPCLN001.png         the bone images, if there are any: datalist key bone
        labels.csv                 optional: image,patient (the images of a patient land in one split)

:func:`build_bone_pair_datalist` pairs the stems across the folders (any case: ``JPCLN001.IMG`` pairs with
``jpcln001.png``), needs at least one counterpart folder and lists every image that has a counterpart in each folder
given, with ``image`` and ``bone_suppressed`` and/or ``bone``. The phantoms of ``python -m cxr_monai phantom
--bone-pairs`` lie in this layout too (``images/``, ``bone_suppressed/``, ``bones/``). It writes a schema-valid
datalist atomically and lists every rejected file with its reason in the returned
:class:`~cxr_monai.data.datalist.DatalistSummary`; the run goes on past each of them:

- an image without its counterpart in a folder given (``no soft-tissue image``, ``no bone image``), a counterpart
  without an image (``soft-tissue image without radiograph``, ``bone image without radiograph``), and two files of
  one stem in one folder (``ambiguous``);
- a counterpart of another stored size than its image (``size mismatch``, naming both sizes; read from the file
  headers, nothing is decoded, nothing is resized: bring both folders to one size first);
- an unreadable file (``unreadable image``, ``unreadable soft-tissue image``, ``unreadable bone image``): empty,
  a PNG or JPEG cut short, no size in its header, a ``.IMG`` file of another size than a JSRT radiograph.

A counterpart folder that pairs with no image at all, or an image folder without images, is an error naming the
folders (a wrong folder or naming, not a few missing files). The split is per patient with
:func:`~cxr_monai.data.datalist.split_groups` into ``training`` / ``validation`` / ``test`` (default 10 % and at
least 20 % of the images; nothing goes to ``test_unhealthy``: every image is used alike), drawn over every
image found (with its row in the labels CSV, when one is given) before any file is checked, so an image keeps its
split whichever other files are rejected. Without a labels CSV every image is its own patient (JSRT: one image per patient).

Training on soft-tissue-only pairs (no bone folder): :class:`cxr_monai.transforms.BoneFromSoftTissued` makes the
bone image ``clip(image - soft_tissue, 0, 1)`` at load time, when both are in one display scale.

Python::

    summary = build_bone_pair_datalist("/data/jsrt-bse/images", "/data/jsrt-bse/datalist.json",
                                       soft_tissue_dir="/data/jsrt-bse/soft_tissue")
    print(summary.format())

Command line::

    python -m cxr_monai datalist bone-pairs --image-dir /data/jsrt-bse/images \\
        --soft-tissue-dir /data/jsrt-bse/soft_tissue --out /data/jsrt-bse/datalist.json
    python -m cxr_monai datalist bone-pairs --image-dir /tmp/phantom/images \\
        --soft-tissue-dir /tmp/phantom/bone_suppressed --bone-dir /tmp/phantom/bones --out /tmp/phantom/pairs.json
"""

from __future__ import annotations

import os
import posixpath
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    _walk_files,
    image_file_problem,
    split_groups,
)
from cxr_monai.io.headers import JSRT_SUFFIXES, SUFFIXES, CXRReadError, stored_size

__all__ = [
    "BONE_PAIR_TEST_FRACTION",
    "BONE_PAIR_VAL_FRACTION",
    "PAIR_SUFFIXES",
    "build_bone_pair_datalist",
]

#: Default shares of the images for validation and (at least) for test: a few hundred pairs (JSRT: 247).
BONE_PAIR_VAL_FRACTION = 0.1
BONE_PAIR_TEST_FRACTION = 0.2
#: File names taken for images, in every folder (by suffix, any case): PNG, JPEG, DICOM and JSRT ``.IMG``.
PAIR_SUFFIXES = SUFFIXES
_PATIENT_COLUMN = "patient"


@dataclass
class _Folder:
    """One counterpart role: its datalist key, the words reasons use, its directory and its files by stem."""

    key: str  # bone_suppressed / bone
    word: str  # "soft-tissue image" / "bone image"
    directory: Path
    prefix: str = ""
    by_stem: dict[str, list[str]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def _stem(rel_path: str) -> str:
    return posixpath.splitext(posixpath.basename(rel_path))[0]


def _pair_key(rel_path: str) -> str:
    return _stem(rel_path).casefold()


def _scan(directory: Path, skip: Iterable[Path]) -> tuple[dict[str, list[str]], list[str]]:
    """Pair key -> relative paths of the image-named files under ``directory``, and the other files."""
    by_stem: dict[str, list[str]] = defaultdict(list)
    ignored = []
    for rel_path in _walk_files(directory, skip):
        if posixpath.splitext(rel_path)[1].lower() in PAIR_SUFFIXES:
            by_stem[_pair_key(rel_path)].append(rel_path)
        else:
            ignored.append(rel_path)
    return dict(by_stem), ignored


def _size_or_problem(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """``((width, height), None)`` of a readable image file, from its header, or ``(None, why not)``."""
    if path.suffix.lower() not in JSRT_SUFFIXES:  # a JSRT file has no signature: its byte size is checked below
        problem = image_file_problem(path)
        if problem is not None:
            return None, problem
    try:
        return stored_size(path), None
    except CXRReadError as error:
        return None, str(error).removeprefix(f"{path}: ")


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]} px"


def _size_hint(image_size: tuple[int, int], other_size: tuple[int, int]) -> str:
    """A hint when the two sizes have one aspect ratio: the same picture stored at another resolution."""
    if image_size[0] * other_size[1] != image_size[1] * other_size[0]:
        return ""
    return f" (one aspect ratio, {image_size[0] / other_size[0]:.3g}x: bring both folders to one size first)"


def _read_patients(path: Path, patient_column: str) -> dict[str, tuple[str, int]]:
    """``image`` column value -> ``(patient, line)`` of a labels CSV (the folder builder's; other columns unused)."""
    header, rows = _read_csv(path)
    image_index = _column(header, "image", path)
    patient_index = _column(header, patient_column, path)
    patients: dict[str, tuple[str, int]] = {}
    for line, row in rows:
        image = _field(row, image_index, "image", path, line).replace("\\", "/")
        if image in patients:
            raise ValueError(f"{path}: line {line}: image {image} already listed on line {patients[image][1]}")
        patients[image] = (_field(row, patient_index, patient_column, path, line), line)
    return patients


def _examples(paths: Iterable[str]) -> str:
    paths = sorted(paths)
    return ", ".join(paths[:3]) + (", ..." if len(paths) > 3 else "") if paths else "no image files"


def build_bone_pair_datalist(
    image_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    soft_tissue_dir: str | os.PathLike | None = None,
    bone_dir: str | os.PathLike | None = None,
    labels: str | os.PathLike | None = None,
    *,
    patient_column: str = _PATIENT_COLUMN,
    val_fraction: float = BONE_PAIR_VAL_FRACTION,
    test_fraction: float = BONE_PAIR_TEST_FRACTION,
    seed: int = 0,
    base_dir: str | os.PathLike | None = None,
    name: str | None = None,
) -> DatalistSummary:
    """Build the datalist of radiographs paired with their soft-tissue (``bone_suppressed``) and/or ``bone`` images.

    - Images: the PNG/JPEG/DICOM/JSRT ``.IMG`` files (by suffix, any case) under ``image_dir``, at any depth.
    - Counterparts: under ``soft_tissue_dir`` (key ``bone_suppressed``) and ``bone_dir`` (key ``bone``), at least
      one of them, each a folder of its own; a file pairs with the image of the same stem, in any case and with
      any image suffix (``JPCLN001.IMG`` <-> ``JPCLN001.png``). An image needs a counterpart in every folder
      given, of its stored size (header only: :func:`cxr_monai.io.stored_size`); see the module docstring for
      the rejections. A folder that pairs with no image at all is an error naming it and ``image_dir``.
    - ``labels``: a CSV with an ``image`` column (file name or path under ``image_dir``) and a patient column
      (``patient_column``, default ``patient``), as ``datalist folder --labels`` reads it (its other columns are
      not used here). With it every image needs a row, the split keeps a patient's images together and no
      patient ID is written; without it every image is its own patient.
    - Split per patient with :func:`~cxr_monai.data.datalist.split_groups` (``val_fraction``, ``test_fraction``,
      ``seed``) into ``training`` / ``validation`` / ``test``. Paths are relative to ``base_dir`` (default: the
      deepest directory holding every folder given); ``name`` defaults to that directory's name.

    >>> summary = build_bone_pair_datalist("/data/jsrt-bse/images", "jsrt_bse.json",
    ...                                    soft_tissue_dir="/data/jsrt-bse/soft_tissue")  # doctest: +SKIP
    >>> print(summary.format())  # doctest: +SKIP
    """
    _check_fractions(val_fraction, test_fraction)
    image_dir, out_path = Path(image_dir), Path(out_path)
    folders = []
    if soft_tissue_dir is not None:
        folders.append(_Folder("bone_suppressed", "soft-tissue image", Path(soft_tissue_dir)))
    if bone_dir is not None:
        folders.append(_Folder("bone", "bone image", Path(bone_dir)))
    if not folders:
        raise ValueError("bone pairs need a folder of soft-tissue (bone-suppressed) images, of bone images, or both: "
                         "soft_tissue_dir / bone_dir (--soft-tissue-dir / --bone-dir)")
    _require_dir(image_dir, "image directory")
    for folder in folders:
        _require_dir(folder.directory, f"{folder.word} directory")
    roles = [("image", image_dir)] + [(folder.word, folder.directory) for folder in folders]
    for number, (word, directory) in enumerate(roles):
        for other_word, other in roles[:number]:
            if os.path.abspath(directory) == os.path.abspath(other):
                raise ValueError(f"{directory}: the {other_word}s and the {word}s need a folder each (a pair shares "
                                 "its stem, so one folder cannot hold both)")
    dirs = [directory for _, directory in roles]
    base_dir = Path(os.path.commonpath([os.path.abspath(d) for d in dirs])) if base_dir is None else Path(base_dir)
    image_prefix = _relative_dir(image_dir, base_dir)
    for folder in folders:
        folder.prefix = _relative_dir(folder.directory, base_dir)
    patients = _read_patients(Path(labels), patient_column) if labels is not None else None
    labels_name = Path(labels).name if labels is not None else ""

    images, ignored = _scan(image_dir, skip=dirs)
    for folder in folders:
        folder.by_stem, folder.ignored = _scan(folder.directory, skip=dirs)
    # pairing by name, before any file is read: a folder that pairs nothing is the wrong folder or naming
    all_images = [path for paths in images.values() for path in paths]
    unpaired = [folder for folder in folders if not set(folder.by_stem) & set(images)]
    if unpaired:
        counterparts = "; ".join(f"{folder.word}s under {folder.directory} (found: "
                                 f"{_examples(p for ps in folder.by_stem.values() for p in ps)})"
                                 for folder in unpaired)
        raise ValueError(f"no pair: none of the {len(all_images)} images under {image_dir} (found: "
                         f"{_examples(all_images)}) shares its stem with the {counterparts}; a pair is <stem>.* in "
                         f"each folder (any image suffix: PNG, JPEG, DICOM, JSRT .IMG)")

    rejected: list[RejectedFile] = []
    for folder in folders:
        for key, paths in sorted(folder.by_stem.items()):
            if key not in images:
                for rel_path in paths:
                    _reject(rejected, (folder.directory / rel_path).as_posix(),
                            f"{folder.word} without radiograph: no image named {_stem(rel_path)}.* under {image_dir}")

    cases: list[tuple[str, str, str]] = []  # (pair key, image path relative to image_dir, patient)
    for key, found in sorted(images.items()):
        if len(found) > 1:
            for rel_path in found:
                _reject(rejected, (image_dir / rel_path).as_posix(),
                        f"ambiguous: {len(found)} images named {_stem(rel_path)}.* ({', '.join(found)})")
            continue
        rel_path = found[0]
        patient = key
        if patients is not None:
            names = [rel_path] + ([posixpath.basename(rel_path)] if "/" in rel_path else [])
            row_name = next((n for n in names if n in patients), None)
            if row_name is None:
                _reject(rejected, (image_dir / rel_path).as_posix(), f"no row in {labels_name}")
                continue
            patient = patients[row_name][0]
        cases.append((key, rel_path, patient))
    if patients is not None:
        found_names = {name for path in all_images for name in (path, posixpath.basename(path))}
        for image, (_, line) in patients.items():
            if image not in found_names:
                _reject(rejected, image, f"no such image: line {line} of {labels_name} names a file not found under "
                                         f"{image_dir}")
    split_of = split_groups(Counter(patient for _, _, patient in cases), val_fraction=val_fraction,
                            test_fraction=test_fraction, seed=seed)

    document: dict[str, Any] = {key: [] for key in SPLIT_KEYS}
    patients_in: dict[str, set[str]] = {key: set() for key in SPLIT_KEYS}
    for key, rel_path, patient in cases:
        image_path = image_dir / rel_path
        problem = None
        for folder in folders:
            found = folder.by_stem.get(key, [])
            if not found:
                problem = f"no {folder.word}: no {_stem(rel_path)}.* under {folder.directory}"
            elif len(found) > 1:
                problem = f"ambiguous: {len(found)} {folder.word}s named {_stem(rel_path)}.* ({', '.join(found)})"
            if problem is not None:
                break
        image_size = None
        if problem is None:
            image_size, image_problem = _size_or_problem(image_path)
            if image_problem is not None:
                problem = f"unreadable image: {image_problem}"
        entry: dict[str, Any] = {"image": posixpath.join(image_prefix, rel_path)}
        for folder in folders:
            if problem is not None:
                break
            other_rel = folder.by_stem[key][0]
            other_size, other_problem = _size_or_problem(folder.directory / other_rel)
            if other_problem is not None:
                problem = f"unreadable {folder.word}: {other_rel}: {other_problem}"
            elif other_size != image_size:
                problem = (f"size mismatch: {folder.word} {other_rel} is {_size_text(other_size)}, the image "
                           f"{_size_text(image_size)}{_size_hint(image_size, other_size)}")
            else:
                entry[folder.key] = posixpath.join(folder.prefix, other_rel)
        if problem is not None:
            _reject(rejected, image_path.as_posix(), problem)
            continue
        split = split_of[patient]
        document[split].append(entry)
        patients_in[split].add(patient)

    notes = []
    for where, files in [(image_dir, ignored)] + [(folder.directory, folder.ignored) for folder in folders]:
        if files:
            notes.append(f"ignored {len(files)} files in {where} that are not images by their suffix "
                         f"({_examples(files)})")
    placed = sum(len(document[key]) for key in SPLIT_KEYS)
    keys = " and ".join(folder.key for folder in folders)
    notes.append(f"{placed} of {len(all_images)} images paired with their {keys}")
    if patients is not None:
        notes.append(f"split by patient (column '{patient_column}' of {labels_name}, not written): "
                     f"{len(set(split_of))} patients, each in one split")
    else:
        notes.append("split per image (no labels CSV: every image is its own patient)")
    notes.append(f"paths are relative to {base_dir}: pass it as base_dir (bundles: --dataset_dir)")

    sources = [f"images from '{image_dir.name}'"] + [f"{folder.word}s ({folder.key}) from '{folder.directory.name}'"
                                                     for folder in folders]
    unit = f"patient (column '{patient_column}' of {labels_name})" if patients is not None else "image"
    description = (
        f"Bone-suppression pairs: {', '.join(sources)}, paired by file stem, every counterpart of its image's stored "
        f"size; split per {unit} (seed {seed}, validation {val_fraction:g}, test at least {test_fraction:g}). Paths "
        f"are relative to the dataset directory '{base_dir.name or base_dir}': pass it as base_dir (bundles: "
        "--dataset_dir)."
    )
    if rejected:
        description += f" Rejected files left out: {len(rejected)} (see the builder's summary)."
    by_patient = patients is not None
    splits = {key: SplitCounts(len(document[key]), len(patients_in[key]) if by_patient else None)
              for key in SPLIT_KEYS}
    return _finish({"name": name or base_dir.name or "bone-pairs", "description": description, **document},
                   out_path, splits, rejected, notes=notes)
