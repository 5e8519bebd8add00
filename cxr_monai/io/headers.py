"""Torch-free parts of the chest X-ray reader: the error type, file signatures and the header-only image size.

Kept apart from :mod:`cxr_monai.io.reader` (which needs MONAI and torch) so that the datalist builders and the
command line can check files without importing them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import pydicom
from PIL import Image

PathLike = Union[str, os.PathLike]

__all__ = ["DICOM_SUFFIXES", "SUFFIXES", "CXRReadError", "is_cxr_file", "stored_size"]

DICOM_SUFFIXES = (".dcm", ".dicom")
SUFFIXES = (*DICOM_SUFFIXES, ".png", ".jpg", ".jpeg")

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
    """Whether ``path`` looks readable by :class:`CXRReader`: a known suffix, or any name with a DICOM preamble.

    >>> is_cxr_file("chest.PNG"), is_cxr_file("notes.txt")
    (True, False)
    """
    if Path(path).suffix.lower() in SUFFIXES:
        return True
    try:
        return _has_dicom_preamble(_file_head(path))
    except OSError:
        return False


def stored_size(path: PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file's stored pixels, read from its header without decoding the pixels.

    Raises :class:`CXRReadError` naming the file when it is not a PNG, JPEG or DICOM file with a readable size.

    >>> stored_size("00000001_000.png")  # doctest: +SKIP
    (1024, 1024)
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
    raise _fail(path, "not a PNG, JPEG or DICOM file (no PNG/JPEG signature and no DICM preamble)")
