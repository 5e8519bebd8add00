"""Image input: the chest X-ray reader for MONAI ``LoadImage``, the ``preview`` command and SIIM's run-length
masks.

The names below are imported on first use (module ``__getattr__``), so ``import cxr_monai.io`` and the
``preview`` command's ``--help`` do not import MONAI and torch; ``from cxr_monai.io import CXRReader`` works
as before.

Example::

    from cxr_monai.io import read_cxr

    image, meta = read_cxr("chest.dcm")  # (H, W) float32 in [0, 1], lungs dark

    from cxr_monai.io import rle_decode, rle_encode

    mask = rle_decode("557374 2 1015 8")  # SIIM-ACR EncodedPixels -> bool (1024, 1024)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # static tools see the eager imports
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
    from cxr_monai.io.headers import stored_spacing
    from cxr_monai.io.rle import (
        NO_PNEUMOTHORAX,
        SIIM_IMAGE_SIZE,
        RLEError,
        merge_rle,
        read_rle_csv,
        rle_decode,
        rle_encode,
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
    "stored_spacing",
    "SUFFIXES",
    "META_KEYS",
    "RLEError",
    "rle_decode",
    "rle_encode",
    "merge_rle",
    "read_rle_csv",
    "NO_PNEUMOTHORAX",
    "SIIM_IMAGE_SIZE",
]

# public name -> the submodule that defines it
_LAZY = dict.fromkeys(__all__, "cxr_monai.io.reader")
_LAZY.update(dict.fromkeys(("CXRReadError", "is_cxr_file", "stored_size", "stored_spacing", "SUFFIXES"), "cxr_monai.io.headers"))
_LAZY.update(dict.fromkeys(("RLEError", "rle_decode", "rle_encode", "merge_rle", "read_rle_csv", "NO_PNEUMOTHORAX",
                            "SIIM_IMAGE_SIZE"), "cxr_monai.io.rle"))


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups (and mock.patch) see a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
