"""Datalists (NIH ChestX-ray14, folders), their schema, and the phantom generator."""

from __future__ import annotations

from cxr_monai.data.datalist import (
    DatalistError,
    DatalistSummary,
    build_folder_datalist,
    build_nih_datalist,
    image_file_problem,
    load_datalist,
    split_groups,
    validate_datalist,
)
from cxr_monai.data.phantom import (
    FINDINGS,
    PhantomLesion,
    PhantomRadiograph,
    PhantomSummary,
    generate_phantoms,
    make_phantom,
)

__all__ = [
    "FINDINGS",
    "DatalistError",
    "DatalistSummary",
    "PhantomLesion",
    "PhantomRadiograph",
    "PhantomSummary",
    "build_folder_datalist",
    "build_nih_datalist",
    "generate_phantoms",
    "image_file_problem",
    "load_datalist",
    "make_phantom",
    "split_groups",
    "validate_datalist",
]
