"""Image input: the chest X-ray reader for MONAI ``LoadImage`` and the ``preview`` command."""

from __future__ import annotations

from cxr_monai.io.reader import (
    META_KEYS,
    SUFFIXES,
    CXRImage,
    CXRReader,
    CXRReadError,
    LoadCXRImage,
    LoadCXRImaged,
    is_cxr_file,
    read_cxr,
    stored_size,
)

__all__ = [
    "CXRReader",
    "CXRReadError",
    "CXRImage",
    "LoadCXRImage",
    "LoadCXRImaged",
    "read_cxr",
    "is_cxr_file",
    "stored_size",
    "SUFFIXES",
    "META_KEYS",
]
