"""``python -m cxr_monai preview INPUT [INPUT ...] --out PATH [--max-size N]``: images as the reader sees them.

Writes what :class:`~cxr_monai.io.CXRReader` returns as an 8-bit grey PNG (0 -> black, 1 -> white) and
prints shape, spacing and photometric interpretation, so a user can check a new data source by eye before
training on it: lungs dark and bones bright means the intensity chain (VOI, MONOCHROME1 inversion) is right.

- **One image file**: ``--out`` is the PNG to write (unless it is an existing folder or ends with ``/``), and
  the image is described in full.
- **Several inputs, or a folder**: ``--out`` is a folder (created if needed). Folders are walked recursively
  for PNG, JPEG and DICOM files (by suffix, or by the DICOM preamble for files named without one; hidden
  entries and the output folder itself are skipped). Each image becomes ``OUT/<path inside its folder>.png``
  (a file given by name: ``OUT/<name>.png``; a second image that would land on the same PNG gets ``-2``,
  ``-3``...), one line is printed per image, and ``OUT/previews.csv`` lists every input with its preview,
  facts and any warning or error. All images are read in this one process.

A file that cannot be read is reported with its name and the reason (``error: <file>: <reason>``) and the
others are still written; the exit status is 2 when any input could not be read, 1 when any preview could
not be written, 0 otherwise.

Example::

    python -m cxr_monai preview RG1_UNCR.dcm --out rg1.png --max-size 1024
    python -m cxr_monai preview /data/siim/ extra/a.dcm extra/b.png --out previews/ --max-size 512
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# The reader (and with it MONAI and torch) is imported in `run`, so `preview --help` starts at once.

__all__ = ["add_arguments", "find_images", "run", "to_uint8_preview"]

EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 1
INDEX_NAME = "previews.csv"
INDEX_COLUMNS = (
    "input", "preview", "status", "format", "bits_stored", "rows", "columns", "pixel_spacing_mm",
    "photometric", "intensity_mapping", "min", "max", "p1", "p99", "note",
)
_TWELVE_BIT_MAX = 4095 / 65535


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", type=Path, nargs="+", metavar="INPUT",
        help="chest radiographs (DICOM, PNG or JPEG) and/or folders to walk for them",
    )
    parser.add_argument(  # kept as text: Path() would drop the trailing "/" that asks for a folder
        "--out", required=True, metavar="PATH",
        help="the 8-bit grey PNG to write for one image file; for several inputs or a folder, the output folder "
        f"(one PNG per image, mirroring subfolders, plus {INDEX_NAME})",
    )
    parser.add_argument(
        "--max-size", type=_positive_int, default=None, metavar="N",
        help="downscale (keeping the aspect ratio) so that the longer side is at most N pixels",
    )


def to_uint8_preview(image: np.ndarray, max_size: int | None = None) -> np.ndarray:
    """(H, W) float in [0, 1] -> uint8 (0..255), area-downscaled so that max(H, W) <= ``max_size``.

    >>> to_uint8_preview(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    array([[  0, 128, 255]], dtype=uint8)
    """
    height, width = image.shape
    if max_size is not None and max(height, width) > max_size:
        scale = max_size / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))  # Pillow sizes are (width, height)
        image = np.asarray(Image.fromarray(image.astype(np.float32)).resize(size, Image.Resampling.BOX))
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def find_images(folder: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The image files under ``folder``, recursively, sorted; hidden files and folders and ``exclude`` skipped.

    A file is an image by :func:`~cxr_monai.io.is_cxr_file`: a PNG, JPEG or DICOM suffix (any case), or a DICOM
    preamble in a file named without one (a DICOM named by its SOP Instance UID).

    >>> find_images("/data/siim", exclude=["/data/siim/previews"])  # doctest: +SKIP
    [PosixPath('/data/siim/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm'), ...]
    """
    from cxr_monai.io.reader import is_cxr_file

    skip = {Path(p).resolve() for p in exclude}
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(root, d).resolve() not in skip)
        found.extend(Path(root, f) for f in sorted(files) if not f.startswith(".") and is_cxr_file(Path(root, f)))
    return found


def _png_name(relative: Path) -> Path:
    """``a/b.dcm`` -> ``a/b.png``; a name without an image suffix is kept whole (``1.2.840.1`` -> ``1.2.840.1.png``)."""
    from cxr_monai.io.reader import SUFFIXES

    return relative.with_name((relative.stem if relative.suffix.lower() in SUFFIXES else relative.name) + ".png")


@dataclass
class _Item:
    """One input: the image file (or a bad input path) and the PNG to write; ``problem`` when it is unusable."""

    source: Path
    target: Path | None = None
    problem: str | None = None


def _plan(inputs: Sequence[Path], out_dir: Path) -> list[_Item]:
    """Expand folders, drop repeats, and give every image its own PNG under ``out_dir``."""
    items: list[_Item] = []
    seen: set[Path] = set()
    used: set[Path] = set()
    for given in inputs:
        if given.is_dir():
            images = find_images(given, exclude=[out_dir])
            if not images:
                items.append(_Item(given, problem=f"{given}: no PNG, JPEG or DICOM files in this folder"))
            pairs = [(image, image.relative_to(given)) for image in images]
        elif given.exists() or given.is_symlink():
            pairs = [(given, Path(given.name))]
        else:
            items.append(_Item(given, problem=f"{given}: no such file or folder"))
            continue
        for source, relative in pairs:
            key = source.resolve()
            if key in seen:
                continue
            seen.add(key)
            name = _png_name(relative)
            target, number = out_dir / name, 1
            while target in used:  # a.png next to a.dcm, or the same name in two inputs
                number += 1
                target = out_dir / name.with_name(f"{name.stem}-{number}.png")
            used.add(target)
            items.append(_Item(source, target))
    return items


def _photometric(meta: dict[str, Any]) -> str:
    photometric = meta["photometric_interpretation"]
    if photometric == "MONOCHROME1":
        photometric += " (inverted on read)"
    elif meta["format"] != "dicom" and photometric != "MONOCHROME2":
        photometric += " (converted to grey)"
    return photometric


def _describe(path: Path, image: np.ndarray, meta: dict[str, Any]) -> list[str]:
    rows, columns = image.shape
    spacing = meta.get("pixel_spacing")
    spacing_text = (
        f"{spacing[0]:g} x {spacing[1]:g} mm (row x col, from {meta['pixel_spacing_source']})"
        if spacing is not None
        else "unknown"
    )
    return [
        f"image:        {path}",
        f"format:       {meta['format']}, {meta['bits_stored']} bits stored",
        f"shape:        {rows} x {columns} (rows x columns)",
        f"spacing:      {spacing_text}",
        f"photometric:  {_photometric(meta)}",
        f"intensity:    {meta['intensity_mapping']} -> [0, 1]",
        f"values:       {image.min():.3f} .. {image.max():.3f} (1st-99th percentile "
        f"{np.percentile(image, 1):.3f} .. {np.percentile(image, 99):.3f})",
    ]


def _warnings(image: np.ndarray, meta: dict[str, Any]) -> list[str]:
    if meta["format"] == "png" and meta["bits_stored"] == 16 and 0 < image.max() <= _TWELVE_BIT_MAX:
        return [f"this 16-bit PNG never exceeds {round(image.max() * 65535)} of 65535: probably "
                "12-bit values stored unscaled (PNG expects them scaled to 16 bits), which read nearly black; "
                "rescale the files (x 16) before training"]
    return []


def _write_png(preview: np.ndarray, out: Path) -> str | None:
    """Write ``preview``; the reason it failed, naming ``out``, or None."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(preview).save(out, format="PNG")
    except OSError as e:
        return f"{out}: cannot write the preview ({e})"
    return None


def _read(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """``read_cxr``, with any failure as a :class:`~cxr_monai.io.CXRReadError` whose message names the file."""
    from cxr_monai.io.reader import CXRReadError, read_cxr

    try:
        return read_cxr(path)
    except CXRReadError:
        raise
    except Exception as e:  # a decoder's own error on a damaged file: still one file, named, with its reason
        raise CXRReadError(f"{path}: {type(e).__name__}: {e}") from e


def _run_one(image_path: Path, out: Path, max_size: int | None) -> int:
    """The single-file form: ``--out`` is the PNG; the image is described in full."""
    from cxr_monai.io.reader import CXRReadError

    try:
        image, meta = _read(image_path)
    except CXRReadError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT

    preview = to_uint8_preview(image, max_size)
    problem = _write_png(preview, out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_WRITE_FAILED

    lines = _describe(image_path, image, meta) + [f"warning:      {w}" for w in _warnings(image, meta)]
    print("\n".join(lines))
    print(f"wrote:        {out} ({preview.shape[0]} x {preview.shape[1]}, 8-bit grey)")
    print("check:        lungs should look dark and bones bright; if not, the file's intensity metadata is off")
    return 0


def _index_row(item: _Item, out_dir: Path, image: np.ndarray | None, meta: dict[str, Any] | None,
               status: str, note: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(INDEX_COLUMNS, "")
    row.update(input=str(item.source), status=status, note=note)
    if item.target is not None and status == "ok":
        row["preview"] = item.target.relative_to(out_dir).as_posix()
    if image is not None and meta is not None:
        spacing = meta.get("pixel_spacing")
        row.update(
            format=meta["format"], bits_stored=meta["bits_stored"], rows=image.shape[0], columns=image.shape[1],
            pixel_spacing_mm=f"{spacing[0]:g} x {spacing[1]:g}" if spacing is not None else "",
            photometric=_photometric(meta), intensity_mapping=meta["intensity_mapping"],
            min=f"{image.min():.4f}", max=f"{image.max():.4f}",
            p1=f"{np.percentile(image, 1):.4f}", p99=f"{np.percentile(image, 99):.4f}",
        )
    return row


def _run_many(inputs: Sequence[Path], out_dir: Path, max_size: int | None) -> int:
    """The folder form: one PNG per image under ``out_dir``, one line each, ``previews.csv``, failures at the end."""
    from cxr_monai.io.reader import CXRReadError

    if out_dir.exists() and not out_dir.is_dir():
        print(f"error: {out_dir}: is a file; several inputs or a folder need an output folder", file=sys.stderr)
        return EXIT_BAD_INPUT
    items = _plan(inputs, out_dir)
    rows: list[dict[str, Any]] = []
    unreadable: list[str] = []
    unwritable: list[str] = []
    total = sum(item.problem is None for item in items)
    done = 0
    for item in items:
        if item.problem is not None:
            print(f"error: {item.problem}", file=sys.stderr)
            unreadable.append(item.problem)
            rows.append(_index_row(item, out_dir, None, None, "failed", item.problem))
            continue
        assert item.target is not None
        done += 1
        try:
            image, meta = _read(item.source)
        except CXRReadError as e:
            print(f"error: {e}", file=sys.stderr)
            unreadable.append(str(e))
            rows.append(_index_row(item, out_dir, None, None, "failed", str(e)))
            continue
        preview = to_uint8_preview(image, max_size)
        problem = _write_png(preview, item.target)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            unwritable.append(problem)
            rows.append(_index_row(item, out_dir, image, meta, "failed", problem))
            continue
        warnings = _warnings(image, meta)
        spacing = meta.get("pixel_spacing")
        print(f"[{done}/{total}] {item.source} -> {item.target}: {meta['format']} "
              f"{meta['bits_stored']} bits, {image.shape[0]} x {image.shape[1]}, "
              f"{f'{spacing[0]:g} x {spacing[1]:g} mm' if spacing is not None else 'spacing unknown'}, "
              f"{_photometric(meta)}, values {image.min():.3f} .. {image.max():.3f}", flush=True)
        for warning in warnings:
            print(f"  warning: {warning}", flush=True)
        rows.append(_index_row(item, out_dir, image, meta, "ok", "; ".join(f"warning: {w}" for w in warnings)))

    index = out_dir / INDEX_NAME
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(index, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as e:
        unwritable.append(f"{index}: cannot write the index ({e})")
        print(f"error: {unwritable[-1]}", file=sys.stderr)

    written = sum(row["status"] == "ok" for row in rows)
    print(f"wrote {written} of {total} previews to {out_dir} (index: {index})")
    print("check: lungs should look dark and bones bright; if not, the file's intensity metadata is off")
    failures = unreadable + unwritable
    if failures:
        print(f"{len(failures)} input(s) failed:", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
    if unreadable:
        return EXIT_BAD_INPUT
    return EXIT_WRITE_FAILED if unwritable else 0


def run(args: argparse.Namespace) -> int:
    """Run ``python -m cxr_monai preview``; returns the exit status (0, 1 write failed, 2 unreadable input)."""
    inputs = [Path(given) for given in args.inputs]
    out = Path(args.out)
    out_is_folder = out.is_dir() or str(args.out).endswith(("/", os.sep))
    if len(inputs) == 1 and not inputs[0].is_dir() and not out_is_folder:
        return _run_one(inputs[0], out, args.max_size)
    if not out_is_folder and out.suffix.lower() == ".png":
        print(f"error: {out}: {len(inputs)} inputs (or a folder) need an output folder, not a .png file",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    return _run_many(inputs, out, args.max_size)
