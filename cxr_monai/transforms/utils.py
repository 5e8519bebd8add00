"""Small helpers shared by the cxr-monai transforms: box arrays, source names for error messages, 2-D views."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import convert_to_numpy

__all__ = ["as_box_array", "source_name", "spatial_shape_2d", "to_2d_numpy"]


def source_name(img: Any = None, data: Mapping | None = None, key: str | None = None) -> str:
    """The file an array came from, for error messages: ``filename_or_obj`` from MetaTensor meta or a
    ``{key}_meta_dict`` entry, else ``"<in-memory array>"``.

    >>> source_name(MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "p1.png"}))
    'p1.png'
    """
    if isinstance(img, MetaTensor) and img.meta.get("filename_or_obj"):
        return str(img.meta["filename_or_obj"])
    if data is not None and key is not None:
        meta = data.get(f"{key}_meta_dict")
        if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
            return str(meta["filename_or_obj"])
    return "<in-memory array>"


def spatial_shape_2d(img: Any, source: str = "<in-memory array>") -> tuple[int, int]:
    """``(H, W)`` of a channel-first ``(C, H, W)`` array; raises for anything that is not 2-D + channel."""
    if img.ndim != 3:
        raise ValueError(f"{source}: expected a channel-first (C, H, W) array, got shape {tuple(img.shape)}.")
    return int(img.shape[1]), int(img.shape[2])


def to_2d_numpy(img: Any, source: str = "<in-memory array>") -> np.ndarray:
    """Collapse a channel-first ``(C, H, W)`` array to ``(H, W)`` numpy (max over channels, so a mask stored
    as one channel per lung becomes their union)."""
    spatial_shape_2d(img, source)
    array = convert_to_numpy(img.as_tensor() if isinstance(img, MetaTensor) else img)
    return array[0] if array.shape[0] == 1 else array.max(axis=0)


def as_box_array(
    boxes: Any, source: str = "<in-memory array>", name: str = "boxes", spatial_shape: Sequence[int] | None = None
) -> np.ndarray:
    """Boxes ``[[x_min, y_min, x_max, y_max], ...]`` (lists, arrays or tensors) as a float32 ``(N, 4)`` array.

    Raises ``ValueError`` naming ``source`` for a wrong shape, non-finite values or an empty box
    (``x_max <= x_min`` or ``y_max <= y_min``), and, given the image's ``spatial_shape`` ``(H, W)``, for a box
    reaching more than a pixel beyond the image (typically boxes meant for another size of the image).

    >>> as_box_array([[10, 20, 30, 40]]).tolist()
    [[10.0, 20.0, 30.0, 40.0]]
    """
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    if isinstance(boxes, Sequence) and len(boxes) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    array = np.asarray(boxes, dtype=np.float32)
    if array.ndim == 1 and array.shape[0] == 4:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(
            f"{source}: {name} must be a list of [x_min, y_min, x_max, y_max] boxes, got shape {array.shape}."
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{source}: {name} contain non-finite values: {array.tolist()}.")
    empty = (array[:, 2] <= array[:, 0]) | (array[:, 3] <= array[:, 1])
    if empty.any():
        raise ValueError(
            f"{source}: {name} {array[empty].tolist()} are empty (x_max <= x_min or y_max <= y_min); "
            "boxes are [x_min, y_min, x_max, y_max] with x = column."
        )
    if spatial_shape is not None:
        height, width = (int(v) for v in spatial_shape[-2:])
        size = np.asarray([width, height], dtype=np.float32)
        outside = ((array < -1.0).any(axis=1) | (array[:, :2] >= size).any(axis=1)
                   | (array[:, 2:] > size + 1.0).any(axis=1))
        if outside.any():
            raise ValueError(
                f"{source}: {name} {array[outside].tolist()} reach beyond the {width}x{height} px image (width x "
                "height); boxes are in the pixels of the image as stored (were they given for another size?)."
            )
    return array
