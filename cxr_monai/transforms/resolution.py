"""Bring every radiograph to one working resolution before lung boxes and patches are computed.

Real chest X-rays arrive at 250-3500 px and 0.1-0.2 mm pixels; the context encoder of seed 001 was trained on
ChestX-ray14 at 1024 px. :class:`ResizeToWorkingResolution` resizes an image either so that its longest side
is ``longest_side`` (default 1024, the ChestX-ray14 rule) or, when ``target_spacing`` is set and the meta
gives ``pixel_spacing``, to that pixel spacing in mm. Images without ``pixel_spacing`` (PNG/JPEG exports, most
public datasets) fall back to the longest-side rule, so one pipeline serves DICOM and PNG sources.

The resize itself is MONAI's :class:`monai.transforms.Resize` (area averaging when downsampling, bilinear
when upsampling; masks nearest-exact without smoothing), so the MetaTensor ``affine`` is updated by MONAI. Both
transforms are invertible (``Invertd`` or ``.inverse``): the trace holds one entry per resize (also when the
image was already at working size), and the inverse resizes back to the loaded size (nearest-exact for masks and
predictions of mask keys, bilinear otherwise), restores ``pixel_spacing`` and, in the dictionary version, scales
the boxes back. ``Spacing`` is not used because the CXR reader keeps the physical spacing in the
``pixel_spacing`` meta key rather than guaranteeing it in the affine.

Meta after the resize: ``affine`` follows the new grid; ``pixel_spacing`` (when present) is the new spacing;
``working_scale`` is ``(new_H / old_H, new_W / old_W)`` of this resize; ``spatial_shape`` keeps MONAI's
meaning, the shape as loaded (``SaveImage(resample=True)`` uses it to go back to the file's grid).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, get_track_meta
from monai.transforms import InvertibleTransform, MapTransform, Resize
from monai.utils import TraceKeys, convert_to_tensor, ensure_tuple, ensure_tuple_rep

from cxr_monai.transforms.utils import as_box_array, source_name, spatial_shape_2d

__all__ = [
    "ResizeToWorkingResolution",
    "ResizeToWorkingResolutiond",
    "ResizeToWorkingResolutionD",
    "ResizeToWorkingResolutionDict",
    "pixel_spacing_from_meta",
    "scale_boxes",
    "working_spatial_size",
]

#: Interpolation for label-like arrays: pixel-centre-aligned nearest (torch's "nearest" is shifted by half
#: an output pixel when downsampling).
MASK_MODE = "nearest-exact"


def pixel_spacing_from_meta(img: Any, source: str = "<in-memory array>") -> tuple[float, float] | None:
    """``(row, col)`` spacing in mm from a MetaTensor's ``pixel_spacing`` meta, or ``None`` when absent."""
    if not isinstance(img, MetaTensor) or img.meta.get("pixel_spacing") is None:
        return None
    value = img.meta["pixel_spacing"]
    spacing = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=float).ravel()
    if spacing.size == 1:
        spacing = np.repeat(spacing, 2)
    if spacing.size != 2 or not np.isfinite(spacing).all() or (spacing <= 0).any():
        raise ValueError(f"{source}: pixel_spacing must be two positive numbers (row, col) in mm, got {value!r}.")
    return float(spacing[0]), float(spacing[1])


def working_spatial_size(
    spatial_shape: Sequence[int],
    longest_side: int = 1024,
    target_spacing: float | Sequence[float] | None = None,
    pixel_spacing: Sequence[float] | None = None,
) -> tuple[int, int]:
    """Output ``(H, W)``: to ``target_spacing`` mm when both spacings are known, else longest side = ``longest_side``.

    >>> working_spatial_size((2000, 1500))
    (1024, 768)
    >>> working_spatial_size((2000, 1500), target_spacing=0.4, pixel_spacing=(0.2, 0.2))
    (1000, 750)
    """
    height, width = (int(s) for s in spatial_shape)
    if target_spacing is not None and pixel_spacing is not None:
        target = ensure_tuple_rep(target_spacing, 2)
        if any(float(t) <= 0 for t in target):
            raise ValueError(f"target_spacing must be positive mm, got {target_spacing!r}.")
        size = (height * pixel_spacing[0] / float(target[0]), width * pixel_spacing[1] / float(target[1]))
    else:
        if longest_side < 1:
            raise ValueError(f"longest_side must be a positive number of pixels, got {longest_side!r}.")
        scale = longest_side / max(height, width)
        size = (height * scale, width * scale)
    return max(1, int(round(size[0]))), max(1, int(round(size[1])))


def scale_boxes(boxes: Any, src_shape: Sequence[int], dst_shape: Sequence[int]) -> np.ndarray:
    """Scale ``[x_min, y_min, x_max, y_max]`` boxes from an ``(H, W)`` grid to another (x = column).

    >>> scale_boxes([[100, 50, 300, 250]], (1000, 2000), (500, 1000)).tolist()
    [[50.0, 25.0, 150.0, 125.0]]
    """
    scale_y, scale_x = dst_shape[0] / src_shape[0], dst_shape[1] / src_shape[1]
    return as_box_array(boxes) * np.asarray([scale_x, scale_y, scale_x, scale_y], dtype=np.float32)


class ResizeToWorkingResolution(InvertibleTransform):
    """Resize a channel-first 2-D image to the working resolution (see module docstring for the rule and meta).

    Args:
        longest_side: pixels of the longest side after resizing (ChestX-ray14: 1024).
        target_spacing: mm per pixel (one value or ``(row, col)``); used instead of ``longest_side`` when the
            image meta has ``pixel_spacing``.
        mode: interpolation, ``"bilinear"`` for images (stays inside the input range), ``"nearest-exact"``
            for masks.
        anti_aliasing: when the image shrinks, average each output pixel's footprint (``"area"`` mode, the
            usual decimation filter) instead of point-sampling with ``mode``; if one axis shrinks while the
            other grows, MONAI's Gaussian pre-filter on the shrinking axis. Ignored for nearest modes.

    Example::

        resize = ResizeToWorkingResolution(longest_side=1024)
        image = resize(image)  # (1, 2500, 2048) -> (1, 1024, 839); image.meta["working_scale"] ~ (0.41, 0.41)
    """

    backend = Resize.backend

    def __init__(
        self,
        longest_side: int = 1024,
        target_spacing: float | Sequence[float] | None = None,
        mode: str = "bilinear",
        anti_aliasing: bool = True,
    ) -> None:
        self.longest_side = int(longest_side)
        self.target_spacing = target_spacing
        self.mode = mode
        self.anti_aliasing = anti_aliasing

    def compute_spatial_size(self, img: Any) -> tuple[int, int]:
        """The ``(H, W)`` this transform resizes ``img`` to."""
        source = source_name(img)
        pixel_spacing = pixel_spacing_from_meta(img, source) if self.target_spacing is not None else None
        spatial_shape = spatial_shape_2d(img, source)
        return working_spatial_size(spatial_shape, self.longest_side, self.target_spacing, pixel_spacing)

    def __call__(self, img: Any, spatial_size: Sequence[int] | None = None, mode: str | None = None) -> torch.Tensor:
        """Resize ``img`` (``(C, H, W)``) to ``spatial_size`` (default: :meth:`compute_spatial_size`)."""
        source = source_name(img)
        old_shape = spatial_shape_2d(img, source)
        new_shape = tuple(int(s) for s in (spatial_size or self.compute_spatial_size(img)))
        mode = mode or self.mode
        pixel_spacing = pixel_spacing_from_meta(img, source)
        smooth = self.anti_aliasing and not mode.startswith("nearest")
        if smooth and new_shape != old_shape and all(n <= o for n, o in zip(new_shape, old_shape)):
            mode, smooth = "area", False  # footprint averaging: anti-aliased, and ~25x faster than the Gaussian
        if new_shape == old_shape:  # already at working size (e.g. ChestX-ray14 at 1024): MONAI's Resize would copy
            out = convert_to_tensor(img, track_meta=get_track_meta())
        else:
            resize = Resize(spatial_size=new_shape, mode=mode, anti_aliasing=smooth)
            with resize.trace_transform(False):  # this transform's own entry below is the one to invert
                out = resize(img)
        if isinstance(out, MetaTensor):
            scale = (new_shape[0] / old_shape[0], new_shape[1] / old_shape[1])
            out.meta["working_scale"] = scale
            if pixel_spacing is not None:
                out.meta["pixel_spacing"] = np.asarray(pixel_spacing, dtype=np.float64) / np.asarray(scale)
            if get_track_meta():
                spacing = None if pixel_spacing is None else [float(v) for v in pixel_spacing]
                self.push_transform(out, orig_size=old_shape, extra_info={"mode": mode, "pixel_spacing": spacing})
        return out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Resize back to the size before :meth:`__call__` (nearest-exact for masks, bilinear otherwise)."""
        transform = self.pop_transform(data)
        orig_size = tuple(int(v) for v in transform[TraceKeys.ORIG_SIZE])
        mode = transform[TraceKeys.EXTRA_INFO]["mode"]
        spacing = transform[TraceKeys.EXTRA_INFO]["pixel_spacing"]
        if tuple(data.shape[-2:]) == orig_size:
            out = convert_to_tensor(data, track_meta=get_track_meta())
        else:
            resize = Resize(spatial_size=orig_size, mode=MASK_MODE if mode.startswith("nearest") else "bilinear",
                            anti_aliasing=False)
            with resize.trace_transform(False):
                out = resize(data)
        if isinstance(out, MetaTensor):
            out.meta.pop("working_scale", None)
            if spacing is not None:
                out.meta["pixel_spacing"] = np.asarray(spacing, dtype=np.float64)
        return out


class ResizeToWorkingResolutiond(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`ResizeToWorkingResolution`: resizes images and masks together and scales
    boxes.

    The output size is computed from the first of ``keys`` present (its shape and ``pixel_spacing``); every
    other key must have the same spatial shape (a mask that does not match its image is an error naming both
    files). Box keys (``[x_min, y_min, x_max, y_max]`` lists, e.g. datalist ``boxes`` and ``lung_boxes``) are
    scaled when present and become float32 ``(N, 4)`` arrays; absent box keys are skipped.

    Args:
        keys: image-like keys to resize, reference first.
        mode: interpolation per key, e.g. ``("bilinear", "nearest-exact")`` for ``("image", "lung_mask")``.
        box_keys: keys holding boxes in pixels of the reference image.
        longest_side, target_spacing, anti_aliasing: see :class:`ResizeToWorkingResolution`.

    Example::

        ResizeToWorkingResolutiond(keys=["image", "lung_mask"], mode=["bilinear", "nearest-exact"],
                                   box_keys=["boxes", "lung_boxes"], longest_side=1024)
    """

    backend = ResizeToWorkingResolution.backend

    def __init__(
        self,
        keys: KeysCollection,
        mode: str | Sequence[str] = "bilinear",
        box_keys: KeysCollection = (),
        longest_side: int = 1024,
        target_spacing: float | Sequence[float] | None = None,
        anti_aliasing: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mode = ensure_tuple_rep(mode, len(self.keys))
        self.box_keys = ensure_tuple(box_keys)
        self.resizer = ResizeToWorkingResolution(longest_side, target_spacing, anti_aliasing=anti_aliasing)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = list(self.key_iterator(d, self.mode))  # KeyError for a missing key unless allowed
        if not present:
            return d
        ref_key = present[0][0]
        ref_source = source_name(d[ref_key], d, ref_key)
        old_shape = spatial_shape_2d(d[ref_key], ref_source)
        new_shape = self.resizer.compute_spatial_size(d[ref_key])
        for key, mode in present:
            shape = spatial_shape_2d(d[key], source_name(d[key], d, key))
            if shape != old_shape:
                raise ValueError(
                    f"{source_name(d[key], d, key)}: '{key}' has spatial shape {shape} but '{ref_key}' "
                    f"({ref_source}) has {old_shape}; a mask must match its image."
                )
            d[key] = self.resizer(d[key], spatial_size=new_shape, mode=mode)
        for key in self.box_keys:
            if key in d and d[key] is not None:
                boxes = as_box_array(d[key], ref_source, name=f"'{key}'", spatial_shape=old_shape)
                d[key] = scale_boxes(boxes, old_shape, new_shape)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Each image-like key back to its loaded size, the boxes scaled back (from the reference key's trace)."""
        d = dict(data)
        present = [key for key in self.key_iterator(d)]
        if not present:
            return d
        reference = d[present[0]]
        if isinstance(reference, MetaTensor) and reference.applied_operations:
            old_shape = tuple(int(v) for v in reference.applied_operations[-1][TraceKeys.ORIG_SIZE])
            new_shape = tuple(int(v) for v in reference.shape[-2:])
            for key in self.box_keys:
                if key in d and d[key] is not None:
                    d[key] = scale_boxes(as_box_array(d[key]), new_shape, old_shape)
        for key in present:
            d[key] = self.resizer.inverse(d[key])
        return d


ResizeToWorkingResolutionD = ResizeToWorkingResolutionDict = ResizeToWorkingResolutiond
