"""Binary masks as loaded: checked against their image and made {0, 1}.

The reader maps a mask file to [0, 1] like any image (an 8-bit PNG with values {0, 255} becomes {0, 1}, one with
{0, 1} becomes {0, 1/255}). :class:`BinaryMask` accepts exactly one background value 0 and one foreground value,
whatever it is, and rejects anything else with the file's name, so a label map, a radiograph passed as a mask or an
inverted mask never trains silently. JPEG masks (lossy: their edges hold in-between values) are thresholded at half
scale instead, the documented repair; a JPEG where more than :data:`JPEG_MID_GREY_LIMIT` of the pixels are
mid-grey is no mask and is rejected. The same rules apply to files in the datalist builders
(:func:`cxr_monai.data.builders.lung_masks.lung_mask_problem`).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor

from cxr_monai.transforms.utils import source_name, spatial_shape_2d

__all__ = [
    "JPEG_MID_GREY_LIMIT",
    "BinaryMask",
    "BinaryMaskd",
    "BinaryMaskD",
    "BinaryMaskDict",
    "MaskError",
]

#: share of pixels of a JPEG mask allowed between 0.25 and 0.75 (compression blurs only the edges)
JPEG_MID_GREY_LIMIT = 0.10
_JPEG_SUFFIXES = (".jpg", ".jpeg")


class MaskError(ValueError):
    """A mask that cannot be used: ``"<file>: <reason>"``."""


class BinaryMask(Transform):
    """Check a mask ``(1, H, W)`` and return it as float {0, 1}: same size as its image, not empty, not all
    foreground, binary (see the module docstring for JPEG masks).

    Args:
        allow_empty: accept a mask without foreground (a lesion mask of a healthy image; never a lung mask).
        allow_full: accept a mask that is foreground everywhere.

    Example::

        >>> BinaryMask()(torch.tensor([[[0.0, 1 / 255], [0.0, 1 / 255]]])).tolist()
        [[[0.0, 1.0], [0.0, 1.0]]]
    """

    def __init__(self, allow_empty: bool = False, allow_full: bool = False) -> None:
        self.allow_empty = allow_empty
        self.allow_full = allow_full

    def __call__(self, mask: Any, reference_shape: tuple[int, int] | None = None, source: str | None = None) -> Any:
        source = source or source_name(mask)
        shape = spatial_shape_2d(mask, source)
        if reference_shape is not None and tuple(reference_shape) != tuple(shape):
            raise MaskError(f"{source}: mask size mismatch: the mask is {shape[1]} x {shape[0]} px (W x H), its image "
                            f"{reference_shape[1]} x {reference_shape[0]} px")
        values = convert_to_tensor(mask, track_meta=False).float()
        if not torch.isfinite(values).all():
            raise MaskError(f"{source}: the mask holds non-finite values")
        if Path(source).suffix.lower() in _JPEG_SUFFIXES:
            mid_grey = float(((values > 0.25) & (values < 0.75)).float().mean())
            if mid_grey > JPEG_MID_GREY_LIMIT:
                raise MaskError(f"{source}: non-binary mask: {mid_grey:.0%} of the JPEG's pixels are mid-grey (more "
                                f"than the {JPEG_MID_GREY_LIMIT:.0%} compression leaves at edges); is it a mask?")
            binary = values > 0.5
        else:
            distinct = torch.unique(values)
            if distinct.numel() > 2 or (distinct.numel() == 2 and float(distinct[0]) != 0.0):
                shown = ", ".join(f"{float(v):.4g}" for v in distinct[:5]) + (", ..." if distinct.numel() > 5 else "")
                raise MaskError(f"{source}: non-binary mask: {distinct.numel()} distinct values ({shown}); expected 0 "
                                "and one positive value")
            binary = values > 0
        foreground = int(binary.sum())
        if foreground == 0 and not self.allow_empty:
            raise MaskError(f"{source}: empty mask: no foreground pixel")
        if foreground == binary.numel() and not self.allow_full:
            raise MaskError(f"{source}: all-foreground mask: every pixel is foreground (an inverted mask?)")
        out = binary.to(torch.float32)
        if isinstance(mask, MetaTensor):
            return MetaTensor(out, meta=mask.meta, applied_operations=mask.applied_operations)
        return out


class BinaryMaskd(MapTransform):
    """Dictionary version of :class:`BinaryMask`; with ``reference_key`` (the image) the sizes must match.

    >>> data = {"image": torch.rand(1, 2, 2), "lung_mask": torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])}
    >>> BinaryMaskd("lung_mask", reference_key="image")(data)["lung_mask"].sum().item()
    2.0
    """

    def __init__(
        self,
        keys: KeysCollection,
        reference_key: str | None = "image",
        allow_empty: bool = False,
        allow_full: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.reference_key = reference_key
        self.converter = BinaryMask(allow_empty=allow_empty, allow_full=allow_full)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        reference = None
        if self.reference_key is not None and self.reference_key in d:
            reference = spatial_shape_2d(d[self.reference_key], source_name(d[self.reference_key]))
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key], reference, source_name(d[key], d, key))
        return d


BinaryMaskD = BinaryMaskDict = BinaryMaskd
