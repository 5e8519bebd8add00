"""A study's optional second view (the dual-branch classifier's lateral radiograph) as a tensor every item has.

A batch cannot collate an item without the key next to items with it, so a study without the view gets a stand-in
of zeros and a flag: :class:`OptionalViewd` writes ``lateral_present`` (1.0 with the view, 0.0 without), which
:class:`~cxr_monai.networks.DualBranchDenseNet121` takes to run its lateral branch on the flagged studies only (what
the stand-in holds never reaches the output). There is no array version: the transform is about a key being absent.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from cxr_monai.transforms.utils import spatial_shape_2d

__all__ = ["OptionalViewD", "OptionalViewDict", "OptionalViewd"]


class OptionalViewd(MapTransform):
    """Give every item its ``keys`` view: a missing (or ``None``) view becomes zeros ``(channels, H, W)`` of the
    ``reference_key`` image's size, and ``flag_key`` says which it was (a float32 scalar tensor, 1 present, 0 not).

    Put it after the views are loaded and resized to the working size (the stand-in takes the reference's size).
    The stand-in is a MetaTensor with the reference's meta (so that a batch of present and missing views collates)
    but naming no file (``filename_or_obj`` empty), so writers that read the view's file back (the triage overlays)
    skip it.

    Args:
        keys: the optional view (one key; default ``lateral``).
        reference_key: the image whose spatial size the stand-in takes.
        flag_key: where the presence flag goes.
        channels: channels of the stand-in (those of the view when present).

    Example::

        >>> t = OptionalViewd()
        >>> item = t({"image": torch.rand(1, 4, 4)})
        >>> item["lateral"].shape, float(item["lateral_present"])
        (torch.Size([1, 4, 4]), 0.0)
        >>> float(t({"image": torch.rand(1, 4, 4), "lateral": torch.rand(1, 4, 4)})["lateral_present"])
        1.0
    """

    def __init__(self, keys: KeysCollection = "lateral", reference_key: str = "image",
                 flag_key: str = "lateral_present", channels: int = 1) -> None:
        super().__init__(keys, allow_missing_keys=True)
        if len(self.keys) != 1:
            raise ValueError(f"OptionalViewd takes one view key, got {list(self.keys)}")
        self.reference_key = reference_key
        self.flag_key = flag_key
        self.channels = int(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        (key,) = self.keys
        present = d.get(key) is not None
        if not present:
            if self.reference_key not in d:
                raise KeyError(f"OptionalViewd: no '{self.reference_key}' to size the missing '{key}' on")
            reference = d[self.reference_key]
            zeros = torch.zeros((self.channels, *spatial_shape_2d(reference)), dtype=torch.float32)
            if isinstance(reference, MetaTensor):  # the reference's meta keys and affine, so that a batch collates
                d[key] = MetaTensor(zeros, affine=reference.affine.clone(),
                                    meta={**reference.meta, "filename_or_obj": ""})
            else:
                d[key] = MetaTensor(zeros)
        d[self.flag_key] = torch.tensor(1.0 if present else 0.0)
        return d


OptionalViewD = OptionalViewDict = OptionalViewd
