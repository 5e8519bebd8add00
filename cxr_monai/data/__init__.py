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

__all__ = [
    "DatalistError",
    "DatalistSummary",
    "build_folder_datalist",
    "build_nih_datalist",
    "image_file_problem",
    "load_datalist",
    "split_groups",
    "validate_datalist",
]
