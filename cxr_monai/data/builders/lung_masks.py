"""Datalists of the public lung-mask datasets, for the lung-segmentation bundle (VGG16 U-Net, seed 003 §3.1).

Three layouts, one builder each; every builder writes a schema-valid datalist atomically, lists every rejected file
with its reason in the returned :class:`~cxr_monai.data.datalist.DatalistSummary`, and splits per patient with
:func:`~cxr_monai.data.datalist.split_groups` (``val_fraction``, ``test_fraction``, ``seed``):

- :func:`build_montgomery_datalist`, the NLM Montgomery County set: ``CXR_png/MCUCXR_0001_0.png`` with the two
  manual masks ``ManualMask/leftMask/`` and ``ManualMask/rightMask/`` (same name), merged (union) into one 0/255
  PNG per image under ``mask_out_dir``.
- :func:`build_shenzhen_datalist`, Shenzhen as on Kaggle ("Chest Xray Masks and Labels", the set behind the
  notebook the seed cites, https://www.kaggle.com/eduardomineo/u-net-lung-segmentation-montgomery-shenzhen):
  ``images/`` or ``CXR_png/`` with ``masks/<stem>_mask.png`` -- or ``masks/<stem>.png``, as that set names its
  Montgomery masks, so its folder mixing ``MCUCXR_*`` and ``CHNCXR_*`` builds as it is. Masks are listed in place.
- :func:`build_jsrt_datalist`, JSRT radiographs (headerless ``.IMG``, read by :mod:`cxr_monai.io`) with the SCR
  masks (``<scr_root>/**/masks/left lung/JPCLN001.gif`` and ``right lung/``), merged and upsampled x2 (below).

A plain folder of images with ``<stem>-mask.png`` masks (or same-name masks in a mask directory) needs no builder of
its own: :func:`cxr_monai.data.builders.folder.build_folder_datalist` (``datalist folder``) covers it.

Labels come from the file names: ``_0`` normal / ``_1`` tuberculosis (Montgomery, Shenzhen; ``findings``
``["Tuberculosis"]``), ``JPCLN`` lung nodule / ``JPCNN`` non-nodule (JSRT; ``findings`` ``["Nodule"]``). Every image
takes part in the split, abnormal ones too (a lung segmenter must learn abnormal lungs); in test, images with
``label`` 1 go to ``test_unhealthy`` and the others to ``test``, as the data contract has it, so a segmentation
evaluation reads both. The split is drawn over every image with a usable name before any file is checked, so an
image keeps its split whichever other files are rejected. One image per patient in all three sets; the patient
is the case number of the name, never written apart from the file name.

Mask checks (:func:`lung_mask_problem`, also for a load-time transform): a mask must have its image's size, at
least one foreground pixel, at least one background pixel, and be binary: a PNG, GIF or DICOM mask holds exactly
the values 0 and one positive value (1, 255, ...); more distinct values reject it ("non-binary mask: N distinct
values"), nothing is thresholded. A JPEG mask (lossy: its 0/255 edges ring) is thresholded at half scale, a
documented repair, unless more than 10 % of its pixels are mid-grey (a quarter to three quarters of full scale),
which no compressed binary mask has and any radiograph has. Two repairs only, both documented: the JPEG threshold,
and the SCR masks, stored at half the JSRT resolution by design (1024 px for 2048 px images), upsampled x2 by
nearest neighbour; any other size ratio rejects the image.

Python::

    summary = build_montgomery_datalist("/data/MontgomerySet", "data_lists/montgomery.json")
    print(summary.format())

Command line::

    python -m cxr_monai datalist montgomery --root /data/MontgomerySet --out montgomery.json
    python -m cxr_monai datalist shenzhen --root "/data/Lung Segmentation" --out mont_shenzhen.json
    python -m cxr_monai datalist jsrt --root /data/JSRT --scr-root /data/SCR --out jsrt.json
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cxr_monai.data.datalist import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VAL_FRACTION,
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
from cxr_monai.io.headers import JSRT_SUFFIXES, CXRReadError, read_jsrt_raw, stored_size

__all__ = [
    "JPEG_MID_GREY_LIMIT",
    "MASK_SUFFIXES",
    "build_jsrt_datalist",
    "build_montgomery_datalist",
    "build_shenzhen_datalist",
    "lung_mask_problem",
    "read_lung_mask",
]

#: File names taken for masks (by suffix, any case).
MASK_SUFFIXES = (".png", ".gif", ".jpg", ".jpeg", ".dcm", ".dicom")
#: Largest share of mid-grey pixels (between 1/4 and 3/4 of full scale) a JPEG mask may have before thresholding.
JPEG_MID_GREY_LIMIT = 0.10
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
_GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
_DICOM_PREAMBLE = 128

#: ``MCUCXR_0001_0`` / ``CHNCXR_0001_1``: patient, then 0 normal / 1 tuberculosis.
_TB_NAME = re.compile(r"^(?P<patient>.+)_(?P<label>[01])$")
_TB_FINDING = "Tuberculosis"
#: ``JPCLN001`` (lung nodule) / ``JPCNN001`` (non-nodule).
_JSRT_NAME = re.compile(r"^JPC(?P<kind>LN|NN)\d{3}$", re.IGNORECASE)
_JSRT_FINDING = "Nodule"
_SCR_SIDES = {"left lung": "left", "right lung": "right"}
_SHENZHEN_MASK_SUFFIX = "_mask"


# ----------------------------------------------------------------------------------------------------------
# mask checks


class _MaskIssue(Exception):
    """Why a mask is unusable: ``category`` (the summary groups by it) and ``detail``."""

    def __init__(self, category: str, detail: str):
        super().__init__(f"{category}: {detail}")
        self.category, self.detail = category, detail


def _decode_mask(path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    """``(values, lossy)``: the mask's grey values (H, W) as stored, and whether it is a JPEG."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(_DICOM_PREAMBLE + 4)
    except FileNotFoundError:
        raise _MaskIssue("missing mask", "file not found") from None
    except OSError as error:
        raise _MaskIssue("unreadable mask", error.strerror or str(error)) from error
    if not head:
        raise _MaskIssue("unreadable mask", "file is empty")
    try:
        if head.startswith((_PNG_SIGNATURE, _JPEG_SOI, *_GIF_SIGNATURES)):
            with Image.open(path) as pil:
                pil.load()  # decode now: a truncated file fails here
                frames = getattr(pil, "n_frames", 1)
                if frames > 1:
                    raise _MaskIssue("unreadable mask", f"{frames} frames; a mask has one")
                keep = pil.mode in ("L", "I", "F") or pil.mode.startswith("I;16")
                # palette (GIF), 1-bit, grey+alpha and colour masks: their displayed grey values
                values = np.asarray(pil if keep else pil.convert("L"))
            return values, head.startswith(_JPEG_SOI)
        if head[_DICOM_PREAMBLE:] == b"DICM" or Path(path).suffix.lower() in (".dcm", ".dicom"):
            import pydicom

            values = pydicom.dcmread(path, force=True).pixel_array
            if values.ndim != 2:
                raise _MaskIssue("unreadable mask", f"DICOM pixel data of shape {values.shape}; a mask is 2-D")
            return values, False
    except _MaskIssue:
        raise
    except Exception as error:
        raise _MaskIssue("unreadable mask", f"cannot decode ({type(error).__name__}: {error})") from error
    raise _MaskIssue("unreadable mask", f"not a PNG, GIF, JPEG or DICOM file: starts with {head[:8]!r}")


def _distinct_values(values: np.ndarray) -> np.ndarray:
    if values.dtype in (np.uint8, np.uint16) and values.size:
        return np.flatnonzero(np.bincount(values.ravel(), minlength=1))  # far faster than a sort on 2048^2
    return np.unique(values)


def _foreground(values: np.ndarray, lossy: bool) -> np.ndarray:
    """The mask's foreground (bool, H x W); :class:`_MaskIssue` for a non-binary, empty or all-foreground mask."""
    if lossy:
        full_scale = 255.0 if values.dtype == np.uint8 else float(np.iinfo(values.dtype).max)
        mid_grey = np.count_nonzero((values > full_scale / 4) & (values < 3 * full_scale / 4)) / max(values.size, 1)
        if mid_grey > JPEG_MID_GREY_LIMIT:
            raise _MaskIssue("non-binary mask", f"{mid_grey:.0%} of the JPEG's pixels are mid-grey (a compressed "
                                                f"binary mask has under {JPEG_MID_GREY_LIMIT:.0%}): not a mask?")
        foreground = values > full_scale / 2
    else:
        present = _distinct_values(values)
        if len(present) > 2:
            raise _MaskIssue("non-binary mask", f"{len(present)} distinct values (expected 0 and one positive value)")
        if len(present) == 2 and present[0] != 0:
            raise _MaskIssue("non-binary mask", f"values {present[0]:g} and {present[1]:g} (expected 0 and one "
                                                "positive value)")
        if len(present) == 1 and present[0] < 0:
            raise _MaskIssue("non-binary mask", f"every pixel is {present[0]:g} (expected 0 and one positive value)")
        foreground = values != 0
    count = int(np.count_nonzero(foreground))
    if count == 0:
        raise _MaskIssue("empty mask", "no foreground pixel")
    if count == foreground.size:
        raise _MaskIssue("all-foreground mask", "every pixel is foreground")
    return foreground


def _size_text(size: Sequence[int]) -> str:
    return f"{size[0]}x{size[1]} px"


def lung_mask_problem(mask_path: str | os.PathLike, image_size: Sequence[int] | None) -> str | None:
    """Why ``mask_path`` is not a usable lung mask of an image of ``image_size``, or ``None`` when it is.

    ``image_size`` is ``(width, height)``, as :func:`cxr_monai.io.stored_size` and Pillow give it (``None``: no
    size check). The reason starts with its kind -- ``mask size mismatch``, ``empty mask``, ``all-foreground
    mask``, ``non-binary mask``, ``missing mask`` or ``unreadable mask`` -- then a colon and the details. Binary
    means exactly the values 0 and one positive value for PNG, GIF and DICOM masks; a JPEG mask is thresholded at
    half scale (its edges ring), unless more than :data:`JPEG_MID_GREY_LIMIT` of its pixels are mid-grey.

    >>> lung_mask_problem("MCUCXR_0001_0.png", (4020, 4892))  # doctest: +SKIP
    'mask size mismatch: mask is 4892x4020 px, the image 4020x4892 px'
    """
    try:
        values, lossy = _decode_mask(mask_path)
        mask_size = (values.shape[1], values.shape[0])
        if image_size is not None and tuple(image_size) != mask_size:
            raise _MaskIssue("mask size mismatch", f"mask is {_size_text(mask_size)}, the image "
                                                   f"{_size_text(image_size)}")
        _foreground(values, lossy)
    except _MaskIssue as issue:
        return str(issue)
    return None


def read_lung_mask(mask_path: str | os.PathLike) -> np.ndarray:
    """The foreground of a lung mask file, ``(H, W)`` bool, under the rules of :func:`lung_mask_problem`.

    Raises :class:`~cxr_monai.io.CXRReadError` (``"<path>: <reason>"``) for a mask that rule rejects.

    >>> read_lung_mask("masks/CHNCXR_0001_0_mask.png").shape  # doctest: +SKIP
    (2939, 3000)
    """
    try:
        return _foreground(*_decode_mask(mask_path))
    except _MaskIssue as issue:
        raise CXRReadError(f"{mask_path}: {issue}") from None


# ----------------------------------------------------------------------------------------------------------
# shared parts of the builders


@dataclass
class _Case:
    """One image: ``key`` its file stem, where it lies (relative to its image dir) and its name-given label."""

    key: str
    rel_path: str
    patient: str
    label: int
    findings: list[str] = field(default_factory=list)


def _mask_name(name: str) -> bool:
    return name.lower().endswith(MASK_SUFFIXES)


def _stem(rel_path: str) -> str:
    return posixpath.splitext(posixpath.basename(rel_path))[0]


def _index_by_stem(directory: Path, skip: Iterable[Path] = ()) -> dict[str, list[str]]:
    """Stem -> relative paths of the mask-named files under ``directory``."""
    index: dict[str, list[str]] = defaultdict(list)
    for rel_path in _walk_files(directory, skip):
        if _mask_name(rel_path):
            index[_stem(rel_path)].append(rel_path)
    return dict(index)


def _inside(path: Path, directory: Path) -> bool:
    path, directory = Path(os.path.abspath(path)), Path(os.path.abspath(directory))
    return path == directory or directory in path.parents


def _check_mask_out_dir(mask_out_dir: Path, sources: Iterable[Path]) -> None:
    for source in sources:
        if _inside(mask_out_dir, source):
            raise ValueError(f"{mask_out_dir}: the merged masks need a directory apart from the dataset's image and "
                             f"mask directories (it lies in {source}); choose another --mask-out-dir")


def _write_png_atomic(mask: np.ndarray, path: Path) -> None:
    """Write a 0/255 ``uint8`` mask as a grey PNG via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            Image.fromarray(mask).save(stream, format="PNG")  # uint8 (H, W): a grey "L" image
        os.chmod(tmp_name, 0o644)  # mkstemp makes it private; a mask is as readable as the dataset
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _merged_mask(sides: Sequence[tuple[str, Path, str]], image_size: tuple[int, int],
                 scales: Sequence[int] = (1,), scale_hint: str = "") -> tuple[np.ndarray, int]:
    """Union of the side masks at the image size as 0/255 ``uint8``, and the upsampling factor used.

    ``sides`` holds ``(word, path, shown path)``; a side stored at ``image size / s`` for ``s`` in ``scales`` is
    upsampled x ``s`` by nearest neighbour. Raises :class:`_MaskIssue` naming the side mask.
    """
    union = None
    used_scale = 1
    for word, path, shown in sides:
        try:
            values, lossy = _decode_mask(path)
            mask_size = (values.shape[1], values.shape[0])
            scale = next((s for s in scales if (mask_size[0] * s, mask_size[1] * s) == tuple(image_size)), None)
            if scale is None:
                raise _MaskIssue("mask size mismatch", f"mask is {_size_text(mask_size)}, the image "
                                                       f"{_size_text(image_size)}{scale_hint}")
            foreground = _foreground(values, lossy)
        except _MaskIssue as issue:
            raise _MaskIssue(issue.category, f"{word} {shown}: {issue.detail}") from None
        if scale > 1:
            foreground = np.repeat(np.repeat(foreground, scale, axis=0), scale, axis=1)
            used_scale = scale
        union = foreground if union is None else union | foreground
    assert union is not None
    if union.all():
        raise _MaskIssue("all-foreground mask", "the merged " + " and ".join(w for w, _, _ in sides) +
                         " cover every pixel")
    return union.astype(np.uint8) * 255, used_scale


def _labelled_tb_case(rel_path: str) -> _Case | None:
    key = _stem(rel_path)
    match = _TB_NAME.match(key)
    if match is None:
        return None
    label = int(match["label"])
    return _Case(key, rel_path, match["patient"], label, [_TB_FINDING] if label else [])


def _collect_images(image_dir: Path, rejected: list[RejectedFile], accept, parse, skip: Iterable[Path] = (),
                    name_rule: str = "") -> tuple[list[_Case], list[str]]:
    """The cases under ``image_dir`` (files ``accept`` takes, named as ``parse`` reads), and the files ignored.

    Two images with one stem are both rejected (ambiguous); a name ``parse`` cannot read is rejected.
    """
    by_key: dict[str, list[str]] = defaultdict(list)
    ignored = []
    for rel_path in _walk_files(image_dir, skip):
        if accept(rel_path):
            by_key[_stem(rel_path)].append(rel_path)
        else:
            ignored.append(rel_path)
    cases = []
    for key in sorted(by_key):
        found = by_key[key]
        if len(found) > 1:
            for rel_path in found:
                _reject(rejected, (image_dir / rel_path).as_posix(),
                        f"ambiguous: {len(found)} images named {key}.* ({', '.join(found)})")
            continue
        case = parse(found[0])
        if case is None:
            _reject(rejected, (image_dir / found[0]).as_posix(), f"label unknown: the name is not {name_rule}")
            continue
        cases.append(case)
    return cases, ignored


def _split(cases: Sequence[_Case], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Case key -> split, drawn per patient over every case; test cases with label 1 -> ``test_unhealthy``."""
    of_patient = split_groups(Counter(case.patient for case in cases), val_fraction=val_fraction,
                              test_fraction=test_fraction, seed=seed)
    split = {case.key: of_patient[case.patient] for case in cases}
    return {case.key: "test_unhealthy" if split[case.key] == "test" and case.label == 1 else split[case.key]
            for case in cases}


def _entry(case: _Case, image_prefix: str, mask_path: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"image": posixpath.join(image_prefix, case.rel_path)}
    if mask_path is not None:
        entry["lung_mask"] = mask_path
    entry["label"] = case.label
    if case.findings:
        entry["findings"] = list(case.findings)
    return entry


def _write(name: str, description: str, placed: Sequence[tuple[str, _Case, dict[str, Any]]], out_path: Path,
           rejected: list[RejectedFile], notes: list[str]) -> DatalistSummary:
    document: dict[str, Any] = {key: [] for key in SPLIT_KEYS}
    patients: dict[str, set[str]] = {key: set() for key in SPLIT_KEYS}
    for split, case, entry in placed:
        document[split].append(entry)
        patients[split].add(case.patient)
    splits = {key: SplitCounts(len(document[key]), len(patients[key])) for key in SPLIT_KEYS}
    if rejected:
        description += f" Rejected files left out: {len(rejected)} (see the builder's summary)."
    return _finish({"name": name, "description": description, **document}, out_path, splits, rejected, notes=notes)


def _ignored_note(ignored: Sequence[str], where: str) -> list[str]:
    if not ignored:
        return []
    examples = ", ".join(ignored[:3]) + (", ..." if len(ignored) > 3 else "")
    return [f"ignored {len(ignored)} files in {where} that are not images by their extension ({examples})"]


def _common_dir(*directories: Path) -> Path:
    return Path(os.path.commonpath([os.path.abspath(directory) for directory in directories]))


def _split_text(val_fraction: float, test_fraction: float, seed: int) -> str:
    return (f"split per patient (seed {seed}, validation {val_fraction:g}, test at least {test_fraction:g}); test "
            "images with label 1 in test_unhealthy")


def _where_text(base_dir: Path) -> str:
    return (f"Paths are relative to the dataset directory '{base_dir.name or base_dir}': pass it as base_dir "
            "(bundles: --dataset_dir).")


# ----------------------------------------------------------------------------------------------------------
# Montgomery County


def build_montgomery_datalist(
    root: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    mask_out_dir: str | os.PathLike | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    base_dir: str | os.PathLike | None = None,
    name: str | None = None,
) -> DatalistSummary:
    """Build the datalist of the NLM Montgomery County set, merging its left and right lung masks.

    - Images: ``root/CXR_png/MCUCXR_0001_0.png`` (PNG/JPEG/DICOM by extension); the name's last part gives
      ``label``: ``_0`` normal (0), ``_1`` tuberculosis (1, ``findings`` ``["Tuberculosis"]``); another name is
      rejected. One image per patient.
    - Masks: ``root/ManualMask/leftMask/<stem>.png`` and ``rightMask/<stem>.png``, each checked like
      :func:`lung_mask_problem` (the image's size, binary, neither empty nor all lung), merged (union) into a 0/255
      grey PNG ``<mask_out_dir>/<stem>.png`` (written atomically; default ``<out_path's folder>/
      montgomery_lung_masks``, never inside the dataset's own folders). A missing or rejected side mask rejects
      the image, naming the side; a mask without an image is rejected too.
    - Split per patient, ``test_unhealthy`` for test images with label 1 (module docstring). Paths are relative
      to ``base_dir`` (default: the deepest directory holding ``CXR_png`` and ``mask_out_dir``).

    >>> summary = build_montgomery_datalist("/data/MontgomerySet", "montgomery.json")  # doctest: +SKIP
    >>> print(summary.format())  # doctest: +SKIP
    """
    _check_fractions(val_fraction, test_fraction)
    root, out_path = Path(root), Path(out_path)
    _require_dir(root, "Montgomery root")
    image_dir = root / "CXR_png"
    side_dirs = {"left": root / "ManualMask" / "leftMask", "right": root / "ManualMask" / "rightMask"}
    for directory in (image_dir, *side_dirs.values()):
        _require_dir(directory, "Montgomery folder", " (expected CXR_png/ and ManualMask/leftMask/, rightMask/ "
                                                     "under the root, as the NLM release has them)")
    mask_out_dir = out_path.parent / "montgomery_lung_masks" if mask_out_dir is None else Path(mask_out_dir)
    _check_mask_out_dir(mask_out_dir, [image_dir, *side_dirs.values()])
    base_dir = _common_dir(image_dir, mask_out_dir) if base_dir is None else Path(base_dir)
    image_prefix, mask_prefix = _relative_dir(image_dir, base_dir), _relative_dir(mask_out_dir, base_dir)

    rejected: list[RejectedFile] = []
    cases, ignored = _collect_images(image_dir, rejected, lambda p: p.lower().endswith(_IMAGE_SUFFIXES),
                                     _labelled_tb_case, name_rule="<patient>_0 (normal) or <patient>_1 (tuberculosis)")
    side_masks = {side: _index_by_stem(directory) for side, directory in side_dirs.items()}
    split_of = _split(cases, val_fraction, test_fraction, seed)

    image_keys = {_stem(path) for path in _walk_files(image_dir) if path.lower().endswith(_IMAGE_SUFFIXES)}
    for side, index in side_masks.items():
        for key, paths in sorted(index.items()):
            if key not in image_keys:
                for rel_path in paths:
                    _reject(rejected, (side_dirs[side] / rel_path).as_posix(),
                            f"mask without image: no image named {key}.* in {image_dir}")

    placed = []
    for case in cases:
        image_path = image_dir / case.rel_path
        shown = image_path.as_posix()
        problem = image_file_problem(image_path)
        sides = []
        for side, directory in side_dirs.items():
            if problem is not None:
                break
            found = side_masks[side].get(case.key, [])
            shown_dir = f"ManualMask/{directory.name}"
            if not found:
                problem = f"no {side} lung mask: {shown_dir}/{case.key}.png not found"
            elif len(found) > 1:
                problem = f"ambiguous: {len(found)} {side} lung masks ({', '.join(found)})"
            else:
                sides.append((f"{side} lung mask", directory / found[0], f"{shown_dir}/{found[0]}"))
        if problem is None:
            try:
                image_size = stored_size(image_path)
                merged, _ = _merged_mask(sides, image_size)
            except CXRReadError as error:
                problem = str(error).removeprefix(f"{image_path}: ")
            except _MaskIssue as issue:
                problem = str(issue)
        if problem is not None:
            _reject(rejected, shown, problem)
            continue
        _write_png_atomic(merged, mask_out_dir / f"{case.key}.png")
        placed.append((split_of[case.key], case,
                       _entry(case, image_prefix, posixpath.join(mask_prefix, f"{case.key}.png"))))

    notes = _ignored_note(ignored, str(image_dir))
    notes.append(f"{len(placed)} merged lung masks (left | right, 0/255 PNG) written to {mask_out_dir}")
    notes.append(f"paths are relative to {base_dir}: pass it as base_dir (bundles: --dataset_dir)")
    description = (
        f"Montgomery County chest X-ray set (NLM): images from '{image_dir.name}', lung_mask = union of the "
        f"ManualMask left and right lung masks as 0/255 PNGs in '{mask_out_dir.name}'; label 1 = tuberculosis "
        f"(name ending _1, findings Tuberculosis); {_split_text(val_fraction, test_fraction, seed)}. "
        f"{_where_text(base_dir)}"
    )
    return _write(name or "montgomery", description, placed, out_path, rejected, notes)


# ----------------------------------------------------------------------------------------------------------
# Shenzhen (and the Kaggle Montgomery + Shenzhen folder)


def _first_dir(root: Path, names: Sequence[str], what: str) -> Path | None:
    found = [root / name for name in names if (root / name).is_dir()]
    if len(found) > 1:
        raise ValueError(f"{root}: both {' and '.join(p.name + '/' for p in found)} hold {what}; name the one to use "
                         f"(--{'image' if what == 'images' else 'mask'}-dir)")
    return found[0] if found else None


def build_shenzhen_datalist(
    root: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    image_dir: str | os.PathLike | None = None,
    mask_dir: str | os.PathLike | None = None,
    allow_missing_masks: bool = False,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    base_dir: str | os.PathLike | None = None,
    name: str | None = None,
) -> DatalistSummary:
    """Build the datalist of the Shenzhen set with Kaggle's lung masks (or Kaggle's Montgomery + Shenzhen folder).

    - Images: ``image_dir`` (default ``root/images`` or ``root/CXR_png``, whichever exists), PNG/JPEG/DICOM by
      extension, named ``CHNCXR_0001_0.png`` / ``MCUCXR_0001_0.png``: ``_0`` normal (``label`` 0), ``_1``
      tuberculosis (1, ``findings`` ``["Tuberculosis"]``); another name is rejected. One image per patient.
    - Masks, listed in place: ``mask_dir`` (default ``root/masks`` or ``root/mask``) holds ``<stem>_mask.png``
      (Shenzhen's naming) or ``<stem>.png`` (Kaggle's Montgomery masks), any mask extension; the ``_mask`` name
      is tried first. In the image directory itself only ``<stem>_mask.*`` pairs (and is not taken for an image).
      Each mask is checked by :func:`lung_mask_problem` against its image's stored size; a rejected mask rejects
      its image, a mask without an image is rejected.
    - An image without a mask is rejected ("no lung mask") by default: the list is for training a lung segmenter,
      and an entry without ``lung_mask`` would fail there. ``allow_missing_masks=True`` lists it without one
      (Kaggle's folder has 800 images for 704 masks).
    - Split per patient, ``test_unhealthy`` for test images with label 1 (module docstring). Paths are relative
      to ``base_dir`` (default: the deepest directory holding the image and mask directories).
    - ``name`` defaults to ``shenzhen``, ``montgomery`` or ``montgomery-shenzhen`` by the names found.

    >>> summary = build_shenzhen_datalist("Lung Segmentation", "mont_shenzhen.json")  # doctest: +SKIP
    """
    _check_fractions(val_fraction, test_fraction)
    root, out_path = Path(root), Path(out_path)
    _require_dir(root, "Shenzhen root")
    if image_dir is None:
        image_dir = _first_dir(root, ("images", "CXR_png"), "images")
        if image_dir is None:
            raise FileNotFoundError(f"{root}: no images/ or CXR_png/ folder; name the image folder (--image-dir)")
    image_dir = Path(image_dir)
    _require_dir(image_dir, "image directory")
    if mask_dir is None:
        mask_dir = _first_dir(root, ("masks", "mask"), "masks")
        if mask_dir is None and not allow_missing_masks:
            raise FileNotFoundError(f"{root}: no masks/ or mask/ folder; name the mask folder (--mask-dir), or "
                                    "list the images without masks (--allow-missing-masks)")
    mask_dir = Path(mask_dir) if mask_dir is not None else None
    if mask_dir is not None:
        _require_dir(mask_dir, "mask directory")
    same_dir = mask_dir is not None and os.path.abspath(mask_dir) == os.path.abspath(image_dir)
    dirs = [image_dir] + ([mask_dir] if mask_dir is not None else [])
    base_dir = _common_dir(*dirs) if base_dir is None else Path(base_dir)
    image_prefix = _relative_dir(image_dir, base_dir)
    mask_prefix = _relative_dir(mask_dir, base_dir) if mask_dir is not None else ""

    by_suffix: dict[str, list[str]] = defaultdict(list)
    by_stem: dict[str, list[str]] = defaultdict(list)
    if mask_dir is not None:
        for rel_path in _walk_files(mask_dir, skip=[] if same_dir else [image_dir]):
            if not _mask_name(rel_path):
                continue
            stem = _stem(rel_path)
            if stem.endswith(_SHENZHEN_MASK_SUFFIX) and len(stem) > len(_SHENZHEN_MASK_SUFFIX):
                by_suffix[stem[: -len(_SHENZHEN_MASK_SUFFIX)]].append(rel_path)
            elif not same_dir:
                by_stem[stem].append(rel_path)

    def is_image(rel_path: str) -> bool:
        return rel_path.lower().endswith(_IMAGE_SUFFIXES) and not (
            same_dir and _stem(rel_path).endswith(_SHENZHEN_MASK_SUFFIX))

    rejected: list[RejectedFile] = []
    skip = [mask_dir] if mask_dir is not None and not same_dir else []
    cases, ignored = _collect_images(image_dir, rejected, is_image, _labelled_tb_case, skip=skip,
                                     name_rule="<patient>_0 (normal) or <patient>_1 (tuberculosis)")
    if same_dir:
        ignored = [path for path in ignored if not _stem(path).endswith(_SHENZHEN_MASK_SUFFIX)]
    split_of = _split(cases, val_fraction, test_fraction, seed)

    image_keys = {_stem(path) for path in _walk_files(image_dir, skip) if is_image(path)}
    for index in (by_suffix, by_stem):
        for key, paths in sorted(index.items()):
            for rel_path in paths:
                if key not in image_keys:
                    _reject(rejected, (mask_dir / rel_path).as_posix(),
                            f"mask without image: no image named {key}.* in {image_dir}")
                elif index is by_stem and key in by_suffix:
                    _reject(rejected, (mask_dir / rel_path).as_posix(),
                            f"mask not used: {by_suffix[key][0]} pairs with {key} first")

    placed = []
    without_mask = 0
    for case in cases:
        image_path = image_dir / case.rel_path
        found = by_suffix.get(case.key) or by_stem.get(case.key, [])
        problem = image_file_problem(image_path)
        mask_rel = None
        if problem is None:
            if len(found) > 1:
                problem = f"ambiguous: {len(found)} lung masks ({', '.join(found)})"
            elif not found and not allow_missing_masks:
                looked = f"{case.key}{_SHENZHEN_MASK_SUFFIX}.*" + ("" if same_dir else f" or {case.key}.*")
                where = f" in {mask_dir}" if mask_dir is not None else " (no mask directory)"
                problem = f"no lung mask: no {looked}{where}"
            elif found:
                mask_rel = found[0]
        if problem is None and mask_rel is not None:
            try:
                image_size = stored_size(image_path)
            except CXRReadError as error:
                problem = str(error).removeprefix(f"{image_path}: ")
            else:
                mask_problem = lung_mask_problem(mask_dir / mask_rel, image_size)
                if mask_problem is not None:
                    category, _, detail = mask_problem.partition(": ")
                    problem = f"{category}: lung mask {mask_rel}: {detail}"
        if problem is not None:
            _reject(rejected, image_path.as_posix(), problem)
            continue
        without_mask += mask_rel is None
        mask_path = posixpath.join(mask_prefix, mask_rel) if mask_rel is not None else None
        placed.append((split_of[case.key], case, _entry(case, image_prefix, mask_path)))

    prefixes = {case.key.split("_")[0].upper() for case in cases}
    if name is None:
        known = {"CHNCXR": "shenzhen", "MCUCXR": "montgomery"}
        name = ("-".join(sorted(known[p] for p in prefixes)) if prefixes and prefixes <= set(known)
                else root.name)
    notes = _ignored_note(ignored, str(image_dir))
    notes.append(f"{len(placed) - without_mask} of {len(placed)} images have a lung mask"
                 + (f" (in '{mask_dir}')" if mask_dir is not None else ""))
    if without_mask:
        notes.append(f"{without_mask} images listed without lung_mask (allow_missing_masks)")
    notes.append(f"paths are relative to {base_dir}: pass it as base_dir (bundles: --dataset_dir)")
    missing = ("images without a mask listed without lung_mask" if allow_missing_masks else
               "images without a mask rejected")
    naming = "<image>_mask.*" if same_dir else "<image>_mask.* or <image>.*"
    mask_text = (f"lung masks named {naming} from '{mask_dir.name}', listed as they are"
                 if mask_dir is not None else "no lung masks")
    description = (
        f"Tuberculosis chest X-rays ({', '.join(sorted(prefixes)) or 'none'}): images from '{image_dir.name}', "
        f"{mask_text}; {missing}; label 1 = tuberculosis (name ending _1, findings Tuberculosis); "
        f"{_split_text(val_fraction, test_fraction, seed)}. {_where_text(base_dir)}"
    )
    return _write(name, description, placed, out_path, rejected, notes)


# ----------------------------------------------------------------------------------------------------------
# JSRT + SCR


def _jsrt_case(rel_path: str) -> _Case | None:
    key = _stem(rel_path)
    match = _JSRT_NAME.match(key)
    if match is None:
        return None
    label = int(match["kind"].upper() == "LN")
    return _Case(key, rel_path, key.upper(), label, [_JSRT_FINDING] if label else [])


def _scr_side(rel_path: str) -> str | None:
    parent = posixpath.basename(posixpath.dirname(rel_path)).lower().replace("_", " ")
    return _SCR_SIDES.get(parent)


def build_jsrt_datalist(
    root: str | os.PathLike,
    scr_root: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    mask_out_dir: str | os.PathLike | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    base_dir: str | os.PathLike | None = None,
    name: str | None = None,
) -> DatalistSummary:
    """Build the datalist of the JSRT radiographs with the SCR lung masks, merged and brought to full resolution.

    - Images: the ``.IMG`` files under ``root`` (any depth, any case), ``JPCLN001.IMG`` (lung nodule: ``label`` 1,
      ``findings`` ``["Nodule"]``) and ``JPCNN001.IMG`` (non-nodule: 0); another name is rejected. Each is checked
      whole (its size, 8,388,608 bytes, and 12-bit values; :func:`cxr_monai.io.headers.read_jsrt_raw`), as the
      format has no header to check. One image per patient.
    - Masks: SCR's ``<scr_root>/**/masks/left lung/JPCLN001.gif`` and ``right lung/JPCLN001.gif`` (any depth:
      SCR's ``fold1/``/``fold2/``; a side folder may also be written ``left_lung``). Each side is checked like
      :func:`lung_mask_problem` (binary, neither empty nor all lung); SCR stores them at 1024 px, half the 2048 px
      images by design, so a side mask of half the image size is upsampled x2 by nearest neighbour (a mask of
      the image size is taken as it is; any other size rejects the image, naming both sizes). Left | right is
      written as a 0/255 grey PNG ``<mask_out_dir>/<stem>.png`` (atomically; default ``<out_path's folder>/
      jsrt_lung_masks``). A missing or rejected side mask rejects the image, naming the side; an SCR mask
      without a JSRT image is rejected too.
    - Split per patient, ``test_unhealthy`` for test images with label 1 (module docstring). Paths are relative
      to ``base_dir`` (default: the deepest directory holding ``root`` and ``mask_out_dir``).

    >>> summary = build_jsrt_datalist("/data/JSRT", "/data/SCR", "jsrt.json")  # doctest: +SKIP
    """
    _check_fractions(val_fraction, test_fraction)
    root, scr_root, out_path = Path(root), Path(scr_root), Path(out_path)
    _require_dir(root, "JSRT root")
    _require_dir(scr_root, "SCR root")
    mask_out_dir = out_path.parent / "jsrt_lung_masks" if mask_out_dir is None else Path(mask_out_dir)

    side_masks: dict[str, dict[str, list[str]]] = {"left": defaultdict(list), "right": defaultdict(list)}
    side_dirs = set()
    for rel_path in _walk_files(scr_root, skip=[mask_out_dir]):
        side = _scr_side(rel_path)
        if side is not None and _mask_name(rel_path):
            side_masks[side][_stem(rel_path).upper()].append(rel_path)
            side_dirs.add(scr_root / posixpath.dirname(rel_path))
    if not side_dirs:
        raise FileNotFoundError(f"{scr_root}: no SCR lung masks: expected <scr_root>/**/masks/left lung/*.gif and "
                                "right lung/*.gif")
    _check_mask_out_dir(mask_out_dir, sorted(side_dirs))
    base_dir = _common_dir(root, mask_out_dir) if base_dir is None else Path(base_dir)
    image_prefix, mask_prefix = _relative_dir(root, base_dir), _relative_dir(mask_out_dir, base_dir)

    rejected: list[RejectedFile] = []
    cases, ignored = _collect_images(root, rejected, lambda p: Path(p).suffix.lower() in JSRT_SUFFIXES, _jsrt_case,
                                     skip=[mask_out_dir, scr_root],
                                     name_rule="JPCLNnnn (lung nodule) or JPCNNnnn (non-nodule)")
    split_of = _split(cases, val_fraction, test_fraction, seed)

    image_keys = {case.patient for case in cases}
    for index in side_masks.values():
        for key, paths in sorted(index.items()):
            if key not in image_keys:
                for rel_path in paths:
                    _reject(rejected, (scr_root / rel_path).as_posix(),
                            f"mask without image: no JSRT image {key}.IMG under {root}")

    placed = []
    upsampled = 0
    for case in cases:
        image_path = root / case.rel_path
        problem = None
        try:
            image_size = tuple(reversed(read_jsrt_raw(image_path).shape))  # no header: check the whole file
        except CXRReadError as error:
            problem = str(error).removeprefix(f"{image_path}: ")
        sides = []
        for side in ("left", "right"):
            if problem is not None:
                break
            found = side_masks[side].get(case.patient, [])
            if not found:
                problem = f"no {side} lung mask: no {side} lung/{case.key}.gif under {scr_root}"
            elif len(found) > 1:
                problem = f"ambiguous: {len(found)} {side} lung masks ({', '.join(found)})"
            else:
                sides.append((f"{side} lung mask", scr_root / found[0], found[0]))
        if problem is None:
            try:
                merged, scale = _merged_mask(sides, image_size, scales=(1, 2),
                                             scale_hint=" (SCR masks are the image size or half of it)")
            except _MaskIssue as issue:
                problem = str(issue)
        if problem is not None:
            _reject(rejected, image_path.as_posix(), problem)
            continue
        upsampled += scale > 1
        _write_png_atomic(merged, mask_out_dir / f"{case.key}.png")
        placed.append((split_of[case.key], case,
                       _entry(case, image_prefix, posixpath.join(mask_prefix, f"{case.key}.png"))))

    notes = _ignored_note(ignored, str(root))
    notes.append(f"{len(placed)} merged lung masks (left | right, 0/255 PNG) written to {mask_out_dir}; "
                 f"{upsampled} of them upsampled x2 from SCR's half resolution (nearest neighbour)")
    notes.append(f"paths are relative to {base_dir}: pass it as base_dir (bundles: --dataset_dir)")
    description = (
        f"JSRT chest radiographs (2048 px .IMG, read by cxr_monai.io) from '{root.name}', lung_mask = union of the "
        f"SCR left and right lung masks from '{scr_root.name}', upsampled x2 by nearest neighbour from SCR's 1024 px, "
        f"as 0/255 PNGs in '{mask_out_dir.name}'; label 1 = lung nodule (JPCLN, findings Nodule), 0 = JPCNN; "
        f"{_split_text(val_fraction, test_fraction, seed)}. {_where_text(base_dir)}"
    )
    return _write(name or "jsrt", description, placed, out_path, rejected, notes)
