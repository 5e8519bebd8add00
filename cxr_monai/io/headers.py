"""Torch-free parts of the chest X-ray reader: the error type, file signatures, the header-only image size and
the raw JSRT ``.IMG`` decoder.

Kept apart from :mod:`cxr_monai.io.reader` (which needs MONAI and torch) so that the datalist builders and the
command line can check files without importing them.

JSRT ``.IMG`` files (Japanese Society of Radiological Technology database, http://db.jsrt.or.jp/eng.php) have no
header at all: 2048 x 2048 pixels of 0.175 mm, 12-bit values stored as big-endian 16-bit words, row by row, so
every file is exactly 8,388,608 bytes. A file is taken for one by its ``.img`` suffix (any case) and checked by its
byte size; nothing else in it can be checked without decoding it (:func:`read_jsrt_raw`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Union

import numpy as np
import pydicom
from PIL import Image

PathLike = Union[str, os.PathLike]

__all__ = [
    "DICOM_SUFFIXES",
    "JSRT_FILE_BYTES",
    "JSRT_MAX_VALUE",
    "JSRT_PIXEL_SPACING_MM",
    "JSRT_SHAPE",
    "JSRT_SUFFIXES",
    "SUFFIXES",
    "CXRReadError",
    "dicom_pixel_spacing",
    "is_cxr_file",
    "read_jsrt_raw",
    "stored_size",
    "stored_spacing",
]

DICOM_SUFFIXES = (".dcm", ".dicom")
#: Headerless JSRT radiographs; recognised by name only (the format has no signature).
JSRT_SUFFIXES = (".img",)
SUFFIXES = (*DICOM_SUFFIXES, ".png", ".jpg", ".jpeg", *JSRT_SUFFIXES)

#: JSRT ``.IMG``: (rows, columns) of every image, its stored bits, pixel spacing (mm) and file size (bytes).
JSRT_SHAPE = (2048, 2048)
JSRT_MAX_VALUE = 4095  # 12 bits stored in 16-bit words
JSRT_PIXEL_SPACING_MM = 0.175
JSRT_FILE_BYTES = JSRT_SHAPE[0] * JSRT_SHAPE[1] * 2  # 8,388,608

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"
_DICOM_MAGIC_OFFSET = 128
_DICOM_MAGIC = b"DICM"


class CXRReadError(ValueError):
    """A file that cannot be read as a chest radiograph. The message is ``"<path>: <reason>"``."""


def _fail(path: PathLike, reason: str) -> CXRReadError:
    return CXRReadError(f"{path}: {reason}")


def _file_head(path: PathLike, size: int = _DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _has_dicom_preamble(head: bytes) -> bool:
    return head[_DICOM_MAGIC_OFFSET : _DICOM_MAGIC_OFFSET + len(_DICOM_MAGIC)] == _DICOM_MAGIC


def is_cxr_file(path: PathLike) -> bool:
    """Whether ``path`` looks readable by :class:`CXRReader`: a known suffix (``.dcm``, ``.dicom``, ``.png``,
    ``.jpg``, ``.jpeg``, JSRT's ``.img``; any case), or any name with a DICOM preamble.

    >>> is_cxr_file("chest.PNG"), is_cxr_file("JPCLN001.IMG"), is_cxr_file("notes.txt")
    (True, True, False)
    """
    if Path(path).suffix.lower() in SUFFIXES:
        return True
    try:
        return _has_dicom_preamble(_file_head(path))
    except OSError:
        return False


def _is_jsrt_name(path: PathLike) -> bool:
    return Path(path).suffix.lower() in JSRT_SUFFIXES


def _check_jsrt_size(path: PathLike) -> None:
    """Raise :class:`CXRReadError` unless ``path`` holds exactly one 2048 x 2048 image of 16-bit words."""
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise _fail(path, f"cannot open file ({e.strerror or e})") from e
    if size != JSRT_FILE_BYTES:
        hint = ""
        if Path(path).with_suffix(".hdr").exists() or Path(path).with_suffix(".HDR").exists():
            hint = "; a .hdr file lies next to it: an Analyze image, not a JSRT radiograph"
        raise _fail(
            path,
            f"not a JSRT .IMG radiograph: the file has {size:,} bytes, a JSRT image exactly {JSRT_FILE_BYTES:,} "
            f"({JSRT_SHAPE[1]} x {JSRT_SHAPE[0]} big-endian 16-bit values, no header){hint}",
        )


def read_jsrt_raw(path: PathLike) -> np.ndarray:
    """The stored values of a JSRT ``.IMG`` file: (2048, 2048) ``uint16`` in [0, 4095], as in the file.

    In these values the lungs are *bright* (high), the inverse of the reader's display convention;
    :func:`cxr_monai.io.read_cxr` maps them to ``1 - raw / 4095`` (see :mod:`cxr_monai.io.reader`).

    Raises :class:`CXRReadError` naming the file when its size is not 8,388,608 bytes or a value exceeds 12 bits
    (a little-endian or 16-bit copy of the data, or not a JSRT file at all).

    >>> read_jsrt_raw("JPCLN001.IMG").shape  # doctest: +SKIP
    (2048, 2048)
    """
    _check_jsrt_size(path)
    try:
        raw = np.fromfile(path, dtype=">u2")
    except OSError as e:
        raise _fail(path, f"cannot read file ({e.strerror or e})") from e
    if raw.size != JSRT_SHAPE[0] * JSRT_SHAPE[1]:  # the file changed since the size check
        raise _fail(path, f"read {raw.size * 2:,} bytes, a JSRT image has {JSRT_FILE_BYTES:,}")
    highest = int(raw.max())
    if highest > JSRT_MAX_VALUE:
        above = int(np.count_nonzero(raw > JSRT_MAX_VALUE))
        raise _fail(
            path,
            f"not JSRT 12-bit data: {above:,} values above {JSRT_MAX_VALUE} (highest {highest}); JSRT stores "
            "12-bit values as big-endian 16-bit words (a byte-swapped or 16-bit copy?)",
        )
    return raw.reshape(JSRT_SHAPE).astype(np.uint16)


def stored_size(path: PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file's stored pixels, read from its header without decoding the pixels.

    A JSRT ``.IMG`` (no header) is always ``(2048, 2048)``: only its byte size is checked.

    Raises :class:`CXRReadError` naming the file when it is not a PNG, JPEG or DICOM file with a readable size,
    or a ``.img`` file of another size than a JSRT image.

    >>> stored_size("00000001_000.png"), stored_size("JPCLN001.IMG")  # doctest: +SKIP
    ((1024, 1024), (2048, 2048))
    """
    try:
        head = _file_head(path)
    except OSError as e:
        raise _fail(path, f"cannot open file ({e.strerror or e})") from e
    try:
        if head.startswith((_PNG_SIGNATURE, _JPEG_SIGNATURE)):
            with Image.open(path) as pil:
                return pil.size
        if _has_dicom_preamble(head) or Path(path).suffix.lower() in DICOM_SUFFIXES:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=not _has_dicom_preamble(head),
                                 specific_tags=["Rows", "Columns"])
            return int(ds.Columns), int(ds.Rows)
    except Exception as e:
        raise _fail(path, f"cannot read the image size from the header ({type(e).__name__}: {e})") from e
    if _is_jsrt_name(path):
        _check_jsrt_size(path)
        return JSRT_SHAPE[1], JSRT_SHAPE[0]
    raise _fail(path, "not a PNG, JPEG or DICOM file (no PNG/JPEG signature and no DICM preamble)")


def dicom_pixel_spacing(ds: pydicom.Dataset) -> tuple[tuple[float, float] | None, str | None]:
    """(row, col) mm from PixelSpacing, else ImagerPixelSpacing (detector plane, not magnification-corrected).

    Zero, negative or non-numeric values (e.g. ``0\\0`` written by some CR consoles) count as unknown.
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None:
            continue
        try:
            row_spacing, col_spacing = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if all(math.isfinite(s) and s > 0 for s in (row_spacing, col_spacing)):
            return (row_spacing, col_spacing), keyword
    return None, None


def stored_spacing(path: PathLike) -> tuple[tuple[float, float] | None, str | None]:
    """``((row, col) mm, source)`` of an image file from its header, as the reader's ``pixel_spacing`` meta.

    DICOM: ``PixelSpacing``, else ``ImagerPixelSpacing`` (:func:`dicom_pixel_spacing`), read without the pixels;
    JSRT ``.IMG``: 0.175 mm from the database specification; PNG and JPEG: ``(None, None)`` (the reader takes no
    spacing from them). Raises :class:`CXRReadError` naming the file when its header cannot be read.

    >>> stored_spacing("JPCLN001.IMG"), stored_spacing("00000001_000.png")  # doctest: +SKIP
    (((0.175, 0.175), 'jsrt_specification'), (None, None))
    """
    try:
        head = _file_head(path)
    except OSError as e:
        raise _fail(path, f"cannot open file ({e.strerror or e})") from e
    if head.startswith((_PNG_SIGNATURE, _JPEG_SIGNATURE)):
        return None, None
    if _has_dicom_preamble(head) or Path(path).suffix.lower() in DICOM_SUFFIXES:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=not _has_dicom_preamble(head),
                                 specific_tags=["PixelSpacing", "ImagerPixelSpacing"])
        except Exception as e:
            raise _fail(path, f"cannot read the DICOM header ({type(e).__name__}: {e})") from e
        return dicom_pixel_spacing(ds)
    if _is_jsrt_name(path):
        _check_jsrt_size(path)
        return (JSRT_PIXEL_SPACING_MM, JSRT_PIXEL_SPACING_MM), "jsrt_specification"
    raise _fail(path, "not a PNG, JPEG or DICOM file (no PNG/JPEG signature and no DICM preamble)")
