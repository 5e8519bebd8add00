"""Making an observer study folder (``python -m cxr_monai study create``) from the bundles' outputs.

- :func:`create_2afc_study` (seed 001 §4.3): pairs of an original and its inpainted copy from a context-encoder
  inference folder (``index.csv`` rows ``original`` / ``inpainted`` / ``image``), either the ``128`` px patches
  themselves (``view="patch"``) or the full working radiograph against the same radiograph with the inpainted patch
  pasted at its ``patch_box`` (``view="image"``, as the seed showed 1024 x 1024 images).
- :func:`create_real_or_synthetic_study` (seed 002 §3.1): single images, real ones from a datalist section and
  synthetic ones from pix2pix exports (``synthetic.json``), all resized to one square size (default 256; the seed
  used 224) so that size and resolution cannot give the answer away.

Either writes the folder described in :mod:`cxr_monai.apps.study`: ``images/`` (16-bit grey PNGs named by the first 16
hex digits of the SHA-256 of a per-study random salt and the pixels, so a name tells neither the truth nor the
patient, and no name repeats across studies), ``key.csv`` (trial, role, image, source, made_from, patch, patch_box,
group, label, truth: the files each trial came from, for the researcher only), ``skipped.csv`` (the inputs that could
not be read: ``stage, image, reason``), ``admin_token`` and ``secret_key`` (mode 0600), and last ``study.json``, the
manifest, checked by :func:`validate_manifest`. Only pixel data reaches the images (read by
:func:`cxr_monai.io.read_cxr`): no DICOM field is copied. Text burned into the pixels themselves is not removed.

Trial order: the chosen trials are shuffled with ``numpy.random.default_rng(seed)`` before they get their ids
``t0001, t0002, ...``, so an id tells nothing of the source order; the app draws each reader's order (and the 2AFC
sides) itself from the manifest's ``seed``. Nothing here imports torch, flask or sqlalchemy at module level.

Example::

    create_2afc_study("runs/ce/inference", "studies/ce_2afc", view="image", trials=60, repeats=10)
    generators = {"Pix2Pix": "runs/p2p/synthetic", "Pix2Pix-N": "runs/p2p_n/synthetic"}
    create_real_or_synthetic_study("studies/p2p", generators, real_datalist="nih_boxes.json", real_section="test",
                                   per_label=25, image_size=224)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DEFAULT_INSTRUCTIONS",
    "DEFAULT_TITLES",
    "DESIGNS",
    "MANIFEST_FORMAT",
    "REAL_OR_SYNTHETIC_IMAGE_SIZE",
    "CreatedStudy",
    "add_create_arguments",
    "create_2afc_study",
    "create_real_or_synthetic_study",
    "real_image_label",
    "resize_image",
    "run_create",
    "validate_manifest",
]

logger = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
#: design -> the image roles of each of its trials
DESIGNS: dict[str, tuple[str, ...]] = {"2afc": ("original", "inpainted"), "real_or_synthetic": ("image",)}
TRUTHS = ("real", "synthetic")
#: square side of real-or-synthetic images: the pix2pix bundle's working size, so its exports are shown as generated
REAL_OR_SYNTHETIC_IMAGE_SIZE = 256
DEFAULT_TITLES = {"2afc": "Which image is the original?", "real_or_synthetic": "Real or synthetic?"}
DEFAULT_INSTRUCTIONS = {
    "2afc": "Each screen shows two chest radiograph images. One is an original; in the other, a region was filled in "
            "by a computer model. Choose the original.",
    "real_or_synthetic": "Each screen shows one chest radiograph. Some are real, some were made by a computer model. "
                         "Decide whether it is real or synthetic.",
}
STUDY_FILES = ("study.json", "key.csv", "skipped.csv", "admin_token", "secret_key")
KEY_FIELDS = ("trial", "role", "image", "source", "made_from", "patch", "patch_box", "group", "label", "truth")
_IMAGE_PATH = re.compile(r"images/[A-Za-z0-9_-]+\.png")
_TRIAL_ID = re.compile(r"[A-Za-z0-9_-]+")
_PATCH_BOX = re.compile(r"patch_box \[(-?\d+), (-?\d+), (-?\d+), (-?\d+)\]")
_BOX_LABEL = re.compile(r"box_label (.*)$")
_STAGE = "study"


class _Unusable(ValueError):
    """An input that cannot make a trial, for a reason stated in full (no file name prefix)."""


class CreatedStudy(NamedTuple):
    """What :func:`create_2afc_study` and :func:`create_real_or_synthetic_study` made."""

    folder: Path
    manifest: Path
    trials: int
    skipped: int
    admin_token: Path


# ----------------------------------------------------------------------------------------------------------------
# the manifest


def _problem(path: Any, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_manifest(manifest: Any, path: str | os.PathLike, check_files: bool = True) -> dict:
    """Check a study manifest (``study.json``, see :mod:`cxr_monai.apps.study`) and return it.

    Raises ``ValueError("<path>: <problem>")`` at the first problem: a missing or mistyped key, an unknown design,
    a trial whose images are not exactly its design's roles, an image path other than ``images/<name>.png`` (so the
    app never serves a file outside the folder), a duplicate trial id, ``repeats`` above the number of trials, a
    ``truth`` that disagrees with the group (``"real"`` exactly for the group ``real``); with ``check_files``, an
    image missing from the folder holding ``path``.

    >>> validate_manifest({"format": 1}, "study.json", check_files=False)
    Traceback (most recent call last):
    ...
    ValueError: study.json: 'design' is missing
    """
    if not isinstance(manifest, Mapping):
        raise _problem(path, f"the manifest must be a JSON object, got {type(manifest).__name__}")
    for key in ("format", "design", "title", "instructions", "seed", "repeats", "trials"):
        if key not in manifest:
            raise _problem(path, f"{key!r} is missing")
    if manifest["format"] != MANIFEST_FORMAT:
        raise _problem(path, f"'format' is {manifest['format']!r}; this version reads format {MANIFEST_FORMAT}")
    design = manifest["design"]
    if design not in DESIGNS:
        raise _problem(path, f"'design' must be one of {', '.join(DESIGNS)}, got {design!r}")
    for key in ("title", "instructions"):
        if not isinstance(manifest[key], str):
            raise _problem(path, f"{key!r} must be a string")
    if not _is_int(manifest["seed"]):
        raise _problem(path, f"'seed' must be an integer, got {manifest['seed']!r}")
    size = manifest.get("image_size")
    if size is not None and not (_is_int(size) and size > 0):
        raise _problem(path, f"'image_size' must be a positive integer or null, got {size!r}")
    if "created_from" in manifest and not (isinstance(manifest["created_from"], list)
                                           and all(isinstance(p, str) for p in manifest["created_from"])):
        raise _problem(path, "'created_from' must be a list of paths")
    trials = manifest["trials"]
    if not isinstance(trials, list) or not trials:
        raise _problem(path, "'trials' must be a non-empty list")
    repeats = manifest["repeats"]
    if not (_is_int(repeats) and 0 <= repeats <= len(trials)):
        raise _problem(path, f"'repeats' must be an integer from 0 to the {len(trials)} trials, got {repeats!r}")
    folder = Path(path).parent
    roles = DESIGNS[design]
    seen: set[str] = set()
    for number, trial in enumerate(trials):
        where = f"trial {number}"
        if not isinstance(trial, Mapping):
            raise _problem(path, f"{where} must be an object")
        trial_id = trial.get("id")
        if not (isinstance(trial_id, str) and _TRIAL_ID.fullmatch(trial_id)):
            raise _problem(path, f"{where}: 'id' must be letters, digits, '_' or '-', got {trial_id!r}")
        where = f"trial {trial_id}"
        if trial_id in seen:
            raise _problem(path, f"{where}: the id is used twice")
        seen.add(trial_id)
        images = trial.get("images")
        if not isinstance(images, Mapping) or sorted(images) != sorted(roles):
            got = sorted(images) if isinstance(images, Mapping) else images
            raise _problem(path, f"{where}: 'images' must name exactly {', '.join(roles)} (design {design}), "
                                 f"got {got!r}")
        for role, image in images.items():
            if not (isinstance(image, str) and _IMAGE_PATH.fullmatch(image)):
                raise _problem(path, f"{where}: image {role!r} must be 'images/<name>.png', got {image!r}")
            if check_files and not (folder / image).is_file():
                raise _problem(path, f"{where}: image {role!r} ({image}) is missing from {folder}")
        for key in ("group", "label"):
            if not isinstance(trial.get(key), str):
                raise _problem(path, f"{where}: {key!r} must be a string, got {trial.get(key)!r}")
        if design == "real_or_synthetic":
            truth = trial.get("truth")
            if truth not in TRUTHS:
                raise _problem(path, f"{where}: 'truth' must be 'real' or 'synthetic', got {truth!r}")
            if (truth == "real") != (trial["group"] == "real"):
                raise _problem(path, f"{where}: truth {truth!r} in group {trial['group']!r}; the group 'real' holds "
                                     "exactly the real images")
    return dict(manifest)


# ----------------------------------------------------------------------------------------------------------------
# images


def resize_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``(H, W)`` float image in [0, 1] resized to ``shape`` ``(rows, cols)``, float32 in [0, 1].

    Shrinking uses an area (box) filter, each output pixel the mean of its footprint: the anti-aliased decimation
    the pix2pix bundle uses for its inputs (``mode="area"``); enlarging is bilinear. Unchanged when the shape is
    already ``shape``.

    >>> resize_image(np.eye(4, dtype=np.float32), (2, 2)).tolist()
    [[0.5, 0.0], [0.0, 0.5]]
    """
    from PIL import Image

    rows, cols = (int(s) for s in shape)
    image = np.asarray(image, dtype=np.float32)
    if image.shape == (rows, cols):
        return image
    shrinking = rows <= image.shape[0] and cols <= image.shape[1]
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((cols, rows), resample)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _longest_side_shape(shape: Sequence[int], longest_side: int) -> tuple[int, int]:
    rows, cols = (int(s) for s in shape)
    scale = longest_side / max(rows, cols)
    return max(round(rows * scale), 1), max(round(cols * scale), 1)


def _read(path: str | os.PathLike) -> np.ndarray:
    """Pixel data only, ``(H, W)`` float32 in [0, 1] (:func:`cxr_monai.io.read_cxr`); the meta is dropped."""
    from cxr_monai.io import read_cxr

    return read_cxr(path)[0]


# ----------------------------------------------------------------------------------------------------------------
# the study folder


def _prepare_out_dir(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder}: exists and is not a folder")
    databases = sorted(p.name for p in folder.glob("study.db*")) if folder.is_dir() else []
    if databases:
        raise FileExistsError(
            f"{folder}: holds {', '.join(databases)}, the readers' answers; answers are data and are never deleted or "
            "mixed with another study's trials. Move the database away (or choose another --out) to make a new study.")
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{folder}: is not empty; pass overwrite=True (--overwrite) to replace the study "
                                  f"files there ({', '.join(STUDY_FILES)}, images/)")
        shutil.rmtree(folder / "images", ignore_errors=True)
        for name in STUDY_FILES:
            (folder / name).unlink(missing_ok=True)
    (folder / "images").mkdir(parents=True, exist_ok=True)


def _write_secret(path: Path, value: str) -> Path:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    os.chmod(path, 0o600)
    return path


class _StudyFolder:
    """The folder being written: opaque image names, the key rows, the skipped inputs."""

    def __init__(self, out_dir: str | os.PathLike, overwrite: bool) -> None:
        from cxr_monai.data.robust import SkipLog

        self.path = Path(out_dir)
        _prepare_out_dir(self.path, overwrite)
        self.salt = secrets.token_bytes(16)
        self.skip_log = SkipLog(self.path / "skipped.csv", max_fraction=1.0)
        self.key_rows: list[dict[str, Any]] = []

    def skip(self, source: str | os.PathLike, error: BaseException, total: int) -> None:
        """Record an input left out (logged as a warning naming it and the reason, and listed in skipped.csv)."""
        from cxr_monai.data.robust import SkippedImage, skipped_image

        record = (SkippedImage(os.fspath(source), str(error)) if isinstance(error, _Unusable)
                  else skipped_image({"image": os.fspath(source)}, error))
        self.skip_log.add(_STAGE, record, total, check=False)

    def write_image(self, pixels: np.ndarray) -> str:
        """``images/<opaque>.png`` of ``pixels`` (``(H, W)`` in [0, 1]) as a 16-bit grey PNG; the same pixels give the
        same file within one study."""
        from cxr_monai.apps.bone_suppression.outputs import write_png16

        pixels = np.clip(np.asarray(pixels, dtype=np.float32), 0.0, 1.0)
        digest = hashlib.sha256(self.salt + repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()[:16]
        relative = f"images/{digest}.png"
        if not (self.path / relative).exists():
            write_png16(pixels, self.path / relative)
        return relative

    def finish(self, design: str, trials: list[dict], key_rows: list[list[dict]], seed: int, repeats: int,
               title: str | None, instructions: str | None, image_size: int | None,
               created_from: Iterable[str | os.PathLike]) -> CreatedStudy:
        """Shuffle the trials (``seed``), give them ids, write key.csv, the secrets and, last, study.json."""
        if not trials:
            raise ValueError(f"{self.path}: no trial could be made, no study.json written (the inputs left out are in "
                             f"{self.path / 'skipped.csv'})")
        if repeats > len(trials):
            raise ValueError(f"{self.path}: repeats ({repeats}) cannot exceed the number of trials ({len(trials)}); no "
                             "study.json written")
        order = np.random.default_rng(seed).permutation(len(trials))
        manifest_trials, rows = [], []
        for number, index in enumerate(order, start=1):
            trial_id = f"t{number:04d}"
            manifest_trials.append({"id": trial_id, **trials[index]})
            rows.extend({"trial": trial_id, **row} for row in key_rows[index])
        with open(self.path / "key.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=KEY_FIELDS, restval="")
            writer.writeheader()
            writer.writerows(rows)
        admin_token = _write_secret(self.path / "admin_token", secrets.token_urlsafe(24))
        _write_secret(self.path / "secret_key", secrets.token_hex(32))
        manifest = {
            "format": MANIFEST_FORMAT,
            "design": design,
            "title": DEFAULT_TITLES[design] if title is None else title,
            "instructions": DEFAULT_INSTRUCTIONS[design] if instructions is None else instructions,
            "seed": int(seed),
            "repeats": int(repeats),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "created_from": [os.path.abspath(p) for p in created_from],
            "image_size": image_size,
            "trials": manifest_trials,
        }
        manifest_path = self.path / "study.json"
        validate_manifest(manifest, manifest_path)
        temporary = manifest_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, manifest_path)
        skipped = len(self.skip_log.skipped())
        logger.info("study %s: %d %s trials, %d inputs skipped", self.path, len(trials), design, skipped)
        return CreatedStudy(self.path, manifest_path, len(trials), skipped, admin_token)


def _check_common(seed: int, repeats: int, image_size: int | None) -> None:
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not (_is_int(repeats) and repeats >= 0):
        raise ValueError(f"repeats must be an integer >= 0, got {repeats!r}")
    if image_size is not None and not (_is_int(image_size) and image_size > 0):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")


def _data_error(error: BaseException) -> BaseException | None:
    from cxr_monai.data.robust import data_error

    return data_error(error)


# ----------------------------------------------------------------------------------------------------------------
# 2AFC


class _Pair(NamedTuple):
    stem: str
    patch: str
    original: Path
    inpainted: Path | None
    patch_box: tuple[int, int, int, int] | None
    label: str
    image: Path | None


def _read_index(inference_dir: Path) -> list[_Pair]:
    index_path = inference_dir / "index.csv"
    if not index_path.is_file():
        raise FileNotFoundError(f"{inference_dir}: no index.csv; give the output folder of the context encoder's "
                                "inference (inference.json's inference_dir, e.g. runs/ce/inference)")
    with open(index_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"image", "kind", "patch", "path", "note"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{index_path}: not an inference index, the columns {', '.join(sorted(missing))} are "
                             "missing")
        rows = list(reader)
    originals = {(r["image"], r["patch"]): r for r in rows if r["kind"] == "original"}
    if not originals:
        raise ValueError(f"{index_path}: no 'original' patches listed. Inference written before the originals were "
                         "(or run without a patch transform) cannot make 2AFC pairs: rerun the context encoder's "
                         f"inference into {inference_dir}")
    inpainted = {(r["image"], r["patch"]): r for r in rows if r["kind"] == "inpainted"}
    images = {r["image"]: inference_dir / r["path"] for r in rows if r["kind"] == "image"}
    pairs = []
    for (stem, patch), row in originals.items():
        box = _PATCH_BOX.search(row["note"])
        label = _BOX_LABEL.search(row["note"])
        partner = inpainted.get((stem, patch))
        pairs.append(_Pair(stem, patch, inference_dir / row["path"],
                           inference_dir / partner["path"] if partner else None,
                           tuple(int(v) for v in box.groups()) if box else None,
                           label.group(1).strip() if label else "", images.get(stem)))
    return sorted(pairs, key=lambda p: (p.stem, not p.patch.isdigit(), int(p.patch) if p.patch.isdigit() else 0,
                                        p.patch))


def _paste(image: np.ndarray, patch: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    rows, cols = image.shape
    if not (0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows) or patch.shape != (y1 - y0, x1 - x0):
        raise _Unusable(f"the {patch.shape[1]}x{patch.shape[0]} patch does not fit patch_box {list(box)} of the "
                         f"{cols}x{rows} working image")
    composed = image.copy()
    composed[y0:y1, x0:x1] = patch
    return composed


def _pair_images(pair: _Pair, view: str) -> tuple[np.ndarray, np.ndarray, Path]:
    """(original, inpainted) pixels of a pair in ``view``; raises ``ValueError`` naming what is missing."""
    if pair.inpainted is None:
        raise _Unusable("index.csv lists no inpainted patch for it")
    if view == "patch":
        original, inpainted = _read(pair.original), _read(pair.inpainted)
        if original.shape != inpainted.shape:
            raise _Unusable(f"original {original.shape} and inpainted {inpainted.shape} differ in shape")
        return original, inpainted, pair.original
    if pair.image is None:
        raise _Unusable("index.csv lists no working image ('image' row) for it; rerun inference to write one")
    if pair.patch_box is None:
        raise _Unusable("its index.csv note has no patch_box")
    working = _read(pair.image)
    return working, _paste(working, _read(pair.inpainted), pair.patch_box), pair.image


def create_2afc_study(
    inference_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    view: str = "patch",
    trials: int | None = None,
    seed: int = 0,
    repeats: int = 0,
    title: str | None = None,
    instructions: str | None = None,
    image_size: int | None = None,
    overwrite: bool = False,
    one_per_image: bool | None = None,
) -> CreatedStudy:
    """A two-alternative forced-choice study (seed 001 §4.3) from a context-encoder inference folder.

    Each ``original`` patch of ``<inference_dir>/index.csv`` is paired with its ``inpainted`` copy. ``view="patch"``
    shows the two patches; ``view="image"`` shows the working radiograph (``images/<stem>_image.png``) against the same
    radiograph with the inpainted patch pasted at its ``patch_box`` (identical outside the hole). In ``"image"``
    view an image with several patches would give several trials with the same original, while each inpainted
    copy is shown once: a reader who remembers images could tell the originals. So by default that view keeps one
    patch per image (drawn with ``seed``); ``one_per_image=False`` keeps them all, with a warning.

    Args:
        inference_dir: the inference output folder (``index.csv``, ``patches/``, ``images/``).
        out_dir: the study folder, created; a non-empty one only with ``overwrite`` (never one holding ``study.db``).
        view: ``"patch"`` or ``"image"``.
        trials: ``None`` for every pair, else that many drawn with ``seed`` (unreadable pairs are replaced by others).
        seed: seeds the draw, the trial ids' order, and (in the manifest) each reader's order and sides.
        repeats: trials shown a second time to every reader (intra-reader agreement); at most the number of trials.
        title, instructions: shown to readers (``None``: :data:`DEFAULT_TITLES` / :data:`DEFAULT_INSTRUCTIONS`).
        image_size: ``None`` keeps the inference size; else the longest side, aspect kept, both of a pair alike.
        overwrite: replace the study files of a non-empty ``out_dir``.
        one_per_image: at most one trial per inferred image; ``None``: True for ``view="image"``, else False.

    The trials' ``group`` is ``"inpainted"`` and their ``label`` the patch's ``box_label`` ("" when none).

    Example::

        study = create_2afc_study("runs/ce/inference", "studies/ce_2afc", view="image", trials=60, repeats=10)
        print(study.folder, study.trials)
    """
    if view not in ("patch", "image"):
        raise ValueError(f"view must be 'patch' or 'image', got {view!r}")
    _check_common(seed, repeats, image_size)
    if trials is not None and not (_is_int(trials) and trials > 0):
        raise ValueError(f"trials must be a positive integer or None, got {trials!r}")
    inference_dir = Path(inference_dir)
    pairs = _read_index(inference_dir)
    one_per_image = view == "image" if one_per_image is None else bool(one_per_image)
    available = len({pair.stem for pair in pairs}) if one_per_image else len(pairs)
    if trials is not None and trials > available:
        raise ValueError(f"{inference_dir}: {trials} trials asked but index.csv has "
                         + (f"{available} images (one patch per image)" if one_per_image else f"{available} pairs"))
    if repeats > (trials or available):
        raise ValueError(f"repeats ({repeats}) cannot exceed the number of trials ({trials or available})")
    folder = _StudyFolder(out_dir, overwrite)
    wanted = available if trials is None else trials
    made: list[dict] = []
    keys: list[list[dict]] = []
    used_images: set[str] = set()
    for index in np.random.default_rng(seed).permutation(len(pairs)):
        if len(made) == wanted:
            break
        pair = pairs[index]
        if one_per_image and pair.stem in used_images:
            continue
        try:
            original, inpainted, source = _pair_images(pair, view)
        except Exception as error:
            if _data_error(error) is None:
                raise
            folder.skip(pair.original, error, len(pairs))
            continue
        if image_size is not None:
            shape = _longest_side_shape(original.shape, image_size)
            original, inpainted = resize_image(original, shape), resize_image(inpainted, shape)
        images = {"original": folder.write_image(original), "inpainted": folder.write_image(inpainted)}
        used_images.add(pair.stem)
        made.append({"images": images, "group": "inpainted", "label": pair.label})
        box = json.dumps(list(pair.patch_box)) if pair.patch_box else ""
        common = {"patch": pair.patch, "patch_box": box, "group": "inpainted", "label": pair.label}
        keys.append([
            {"role": "original", "image": images["original"], "source": os.path.abspath(source), **common},
            {"role": "inpainted", "image": images["inpainted"], "source": os.path.abspath(pair.inpainted),
             "made_from": os.path.abspath(source) if view == "image" else os.path.abspath(pair.original), **common},
        ])
    if len(made) < wanted:
        logger.warning("%s: %d of the %d trials asked could be made; the rest were skipped (%s)", inference_dir,
                       len(made), wanted, folder.path / "skipped.csv")
    if view == "image":
        shared = Counter(rows[0]["image"] for rows in keys)
        repeated = sum(count > 1 for count in shared.values())
        if repeated:
            logger.warning("%d original images appear in several trials (one per patch) while each inpainted copy "
                           "appears once: readers who remember images may tell the originals (one_per_image=False; "
                           "the default keeps one patch per image for view='image')", repeated)
    return folder.finish("2afc", made, keys, seed, repeats, title, instructions, image_size, [inference_dir])


# ----------------------------------------------------------------------------------------------------------------
# real or synthetic


def _first_text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return value[0].strip()
    return ""


def real_image_label(entry: Mapping[str, Any]) -> str:
    """A real datalist entry's pathology label: its first ``box_labels``, else its first ``findings``, else its
    ``label`` when that is text (a numeric class such as ``0``/``1`` is no pathology name), else ``""``.

    >>> real_image_label({"image": "a.png", "box_labels": ["Effusion", "Mass"], "label": 1})
    'Effusion'
    """
    for key in ("box_labels", "findings", "label"):
        label = _first_text(entry.get(key))
        if label:
            return label
    return ""


class _Candidate(NamedTuple):
    path: Path
    group: str
    label: str
    made_from: str


def _synthetic_candidates(name: str, export: str | os.PathLike) -> list[_Candidate]:
    from cxr_monai.data import load_datalist

    export = Path(export)
    listing = export / "synthetic.json" if export.is_dir() else export
    if not listing.is_file():
        raise FileNotFoundError(f"{export}: no synthetic.json; give the folder a pix2pix export wrote "
                                "(the pix2pix_augmentation bundle's inference, <output_dir>/synthetic)")
    entries = load_datalist(listing, "training", base_dir=listing.parent)
    return [_Candidate(Path(e["image"]), name, _first_text(e.get("box_labels")), str(e.get("source", "")))
            for e in entries]


def _real_candidates(datalist: str | os.PathLike, section: str, base_dir: str | os.PathLike | None) -> list[_Candidate]:
    from cxr_monai.data import load_datalist

    entries = load_datalist(datalist, section, base_dir=base_dir)
    synthetic = [e for e in entries if e.get("synthetic") is True]
    if synthetic:
        logger.warning("%s: %d entries of section %r are marked synthetic and are not used as real images",
                       datalist, len(synthetic), section)
    return [_Candidate(Path(e["image"]), "real", real_image_label(e), "") for e in entries
            if e.get("synthetic") is not True]


def create_real_or_synthetic_study(
    out_dir: str | os.PathLike,
    synthetic: Mapping[str, str | os.PathLike],
    real_datalist: str | os.PathLike,
    real_section: str = "test",
    base_dir: str | os.PathLike | None = None,
    per_group: int | None = None,
    per_label: int | None = None,
    image_size: int = REAL_OR_SYNTHETIC_IMAGE_SIZE,
    seed: int = 0,
    repeats: int = 0,
    title: str | None = None,
    instructions: str | None = None,
    overwrite: bool = False,
) -> CreatedStudy:
    """A real-or-synthetic study (seed 002 §3.1): single images, each real or made by one of the generators.

    Real images are the ``real_section`` entries of ``real_datalist`` (paths joined with ``base_dir``, default the
    datalist's folder; entries marked ``"synthetic": true`` are left out), labelled by :func:`real_image_label`.
    Each ``synthetic`` item maps a group name (e.g. ``"Pix2Pix"``) to a pix2pix export folder (or its
    ``synthetic.json``); an image's label is its first box label (each export image has one box). Every image is
    read as pixels only (:func:`cxr_monai.io.read_cxr`) and resized to ``image_size`` x ``image_size``
    (:func:`resize_image`): real and synthetic must be shown at one size, or size and sharpness would give the
    answer away. The default 256 is the pix2pix working size (its exports are square at that size, the real images
    resized square the way the pix2pix inputs were); 224 reproduces the seed's images.

    Args:
        out_dir: the study folder (see :func:`create_2afc_study` for ``overwrite``).
        synthetic: group name -> export folder; names must not be ``"real"``.
        real_datalist, real_section, base_dir: where the real images come from.
        per_group: images per group (real and each generator), drawn with ``seed``; ``None`` for all.
        per_label: at most that many images of each label per group (seed 002: 25 per pathology); the images
            without a label count as the label ``""``.
        image_size, seed, repeats, title, instructions, overwrite: as :func:`create_2afc_study`.

    An unreadable image is skipped (warning, ``skipped.csv``) and the next one of its group drawn in its place; a
    group with fewer images than asked gets a warning. Readers are told neither the groups nor their proportions.

    Example::

        create_real_or_synthetic_study("studies/p2p", {"Pix2Pix": "runs/p2p/synthetic"}, "nih_boxes.json",
                                       real_section="test", per_label=25, image_size=224)
    """
    _check_common(seed, repeats, image_size)
    if image_size is None:
        raise ValueError("image_size is required for a real-or-synthetic study: every image is shown at one size")
    for name, value in (("per_group", per_group), ("per_label", per_label)):
        if value is not None and not (_is_int(value) and value > 0):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    if not synthetic:
        raise ValueError("give at least one synthetic group (name -> pix2pix export folder)")
    for name in synthetic:
        if not isinstance(name, str) or not name.strip() or name.strip().lower() == "real":
            raise ValueError(f"synthetic group names must be non-empty and not 'real', got {name!r}")
    groups = {"real": _real_candidates(real_datalist, real_section, base_dir)}
    for name, export in synthetic.items():
        groups[name.strip()] = _synthetic_candidates(name.strip(), export)
    for name, candidates in groups.items():
        if not candidates:
            raise ValueError(f"group {name!r} has no images ({real_datalist} section {real_section!r})"
                             if name == "real" else f"group {name!r} has no images ({synthetic[name]})")
    if per_group is not None and repeats > per_group * len(groups):
        raise ValueError(f"repeats ({repeats}) cannot exceed the number of trials (at most {per_group * len(groups)})")
    folder = _StudyFolder(out_dir, overwrite)
    rng = np.random.default_rng(seed)
    total = sum(len(c) for c in groups.values())
    made: list[dict] = []
    keys: list[list[dict]] = []
    for name, candidates in groups.items():
        truth = "real" if name == "real" else "synthetic"
        count, per_label_count = 0, Counter()
        for index in rng.permutation(len(candidates)):
            if per_group is not None and count >= per_group:
                break
            candidate = candidates[index]
            if per_label is not None and per_label_count[candidate.label] >= per_label:
                continue
            try:
                pixels = resize_image(_read(candidate.path), (image_size, image_size))
            except Exception as error:
                if _data_error(error) is None:
                    raise
                folder.skip(candidate.path, error, total)
                continue
            count += 1
            per_label_count[candidate.label] += 1
            image = folder.write_image(pixels)
            made.append({"images": {"image": image}, "truth": truth, "group": name, "label": candidate.label})
            keys.append([{"role": "image", "image": image, "source": os.path.abspath(candidate.path),
                          "made_from": candidate.made_from, "group": name, "label": candidate.label, "truth": truth}])
        if per_group is not None and count < per_group:
            logger.warning("group %r: %d images of the %d asked (per_label %s; unreadable ones skipped)", name, count,
                           per_group, per_label)
        logger.info("group %r: %d images", name, count)
    sources = [*[synthetic[name] for name in synthetic], real_datalist]
    return folder.finish("real_or_synthetic", made, keys, seed, repeats, title, instructions, image_size, sources)


# ----------------------------------------------------------------------------------------------------------------
# command line


def add_create_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``python -m cxr_monai study create``."""
    parser.add_argument("--out", required=True, metavar="DIR", help="the study folder to create")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--inpainting", metavar="INFER_DIR",
                        help="2AFC study from a context-encoder inference folder (its index.csv)")
    source.add_argument("--synthetic", metavar="NAME=DIR", action="append",
                        help="real-or-synthetic study: a pix2pix export folder and its group name (repeatable); "
                             "needs --real")
    parser.add_argument("--real", metavar="DATALIST", help="datalist of the real images (real-or-synthetic)")
    parser.add_argument("--real-section", default="test", help="datalist section of the real images (default: test)")
    parser.add_argument("--base-dir", help="folder the real datalist's paths are relative to (default: its folder)")
    parser.add_argument("--view", choices=("patch", "image"), default="patch",
                        help="2AFC: show the patches, or the full working images (default: patch)")
    parser.add_argument("--trials", type=int, help="2AFC: number of pairs drawn (default: all)")
    parser.add_argument("--all-patches", action="store_true",
                        help="2AFC --view image: a trial for every patch, several per image (default: one patch per "
                             "image, since a repeated original could be remembered)")
    parser.add_argument("--per-group", type=int, help="real-or-synthetic: images per group (default: all)")
    parser.add_argument("--per-label", type=int,
                        help="real-or-synthetic: at most this many images per pathology label and group (seed: 25)")
    parser.add_argument("--image-size", type=int,
                        help=f"2AFC: longest side (default: as inferred); real-or-synthetic: square side (default: "
                             f"{REAL_OR_SYNTHETIC_IMAGE_SIZE}; the seed showed 224)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the draw, the order and the 2AFC sides")
    parser.add_argument("--repeats", type=int, default=0, help="trials each reader sees twice (intra-reader agreement)")
    parser.add_argument("--title", help="title shown to readers")
    parser.add_argument("--instructions", help="instructions shown to readers")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the study files of a non-empty --out (a folder with study.db is never replaced)")


def _parse_synthetic(values: Sequence[str]) -> dict[str, str]:
    groups: dict[str, str] = {}
    for value in values:
        name, separator, folder = value.partition("=")
        if not separator or not name.strip() or not folder:
            raise ValueError(f"--synthetic takes NAME=DIR, got {value!r}")
        if name.strip() in groups:
            raise ValueError(f"--synthetic: the group {name.strip()!r} is given twice")
        groups[name.strip()] = folder
    return groups


def run_create(args: argparse.Namespace) -> int:
    """Run ``study create``; prints the study folder, its trial count and the admin token file. Returns 0, or 2 on a
    bad argument or input (one line on stderr)."""
    common = {"seed": args.seed, "repeats": args.repeats, "title": args.title, "instructions": args.instructions,
              "overwrite": args.overwrite}
    try:
        if args.inpainting:
            ignored = [flag for flag, value in (("--real", args.real), ("--per-group", args.per_group),
                                                ("--per-label", args.per_label)) if value is not None]
            if ignored:
                raise ValueError(f"{', '.join(ignored)} apply to a real-or-synthetic study (--synthetic), "
                                 "not --inpainting")
            if args.all_patches and args.view != "image":
                raise ValueError("--all-patches applies to --view image (the patch view always shows every patch)")
            study = create_2afc_study(args.inpainting, args.out, view=args.view, trials=args.trials,
                                      image_size=args.image_size, one_per_image=False if args.all_patches else None,
                                      **common)
        else:
            if args.real is None:
                raise ValueError("--synthetic needs --real DATALIST: a study needs real images to tell apart")
            if args.trials is not None or args.view != "patch" or args.all_patches:
                raise ValueError("--trials, --view and --all-patches apply to a 2AFC study (--inpainting), not "
                                 "--synthetic")
            size = REAL_OR_SYNTHETIC_IMAGE_SIZE if args.image_size is None else args.image_size
            study = create_real_or_synthetic_study(args.out, _parse_synthetic(args.synthetic), args.real,
                                                   real_section=args.real_section, base_dir=args.base_dir,
                                                   per_group=args.per_group, per_label=args.per_label,
                                                   image_size=size, **common)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"study folder: {study.folder}")
    print(f"trials: {study.trials}" + (f" ({study.skipped} inputs skipped, see {study.folder / 'skipped.csv'})"
                                       if study.skipped else ""))
    print(f"admin token: {study.admin_token}")
    return 0
