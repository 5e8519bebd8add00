"""The bone image of a soft-tissue pair: ``clip(image - soft_tissue, 0, 1)``, for training on soft-tissue-only pairs.

The bone-suppression GAN (seed 003 §3.2) learns the bone image of a radiograph; the phantoms and a dual-energy
set give it as a file (datalist key ``bone``), but many real sets give only the bone-suppressed (soft-tissue)
image (``bone_suppressed``: JSRT with its BSE images, ``datalist bone-pairs --soft-tissue-dir``). In the data
contract's [0, 1] display space (docs/data_contract.md) the bone image is what the bones add to the radiograph,
``image - bone_suppressed``, bones bright on black; it is clipped to [0, 1], where noise or a slightly brighter
soft-tissue pixel would make it negative. This holds when both images are in one display scale (the phantoms,
BSE sets made from their radiographs); a dual-energy soft-tissue image windowed on its own is not, and the
difference is then no bone image: check one pair by eye first.

Apply :class:`BoneFromSoftTissued` after both images are loaded and scaled to [0, 1] on one grid, before random
augmentations that must move the image and the bone image alike.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_tensor

from cxr_monai.transforms.utils import source_name

__all__ = [
    "BoneFromSoftTissue",
    "BoneFromSoftTissueD",
    "BoneFromSoftTissueDict",
    "BoneFromSoftTissued",
]


class BoneFromSoftTissue(Transform):
    """``clip(image - soft_tissue, 0, 1)``: the bone image of a radiograph and its soft-tissue image.

    Both in [0, 1] display space and of one shape (a ``ValueError`` naming both shapes otherwise). The result
    follows the image: a tensor (a MetaTensor keeps the image's meta) for a tensor image, a numpy array for a
    numpy one; float32 unless the image is another floating type.

    >>> image = torch.tensor([[[0.75, 0.5, 0.25]]])
    >>> BoneFromSoftTissue()(image, torch.tensor([[[0.5, 0.5, 0.5]]])).tolist()
    [[[0.25, 0.0, 0.0]]]
    """

    def __call__(self, image: Any, soft_tissue: Any, source: str | None = None) -> Any:
        if tuple(image.shape) != tuple(soft_tissue.shape):
            where = f"{source}: " if source else ""
            raise ValueError(f"{where}the image (shape {tuple(image.shape)}) and its soft-tissue image (shape "
                             f"{tuple(soft_tissue.shape)}) differ in shape; the bone image is their difference, so "
                             "both need one grid (resize them alike, or pair files of one stored size)")
        if isinstance(image, torch.Tensor):
            dtype = image.dtype if image.is_floating_point() else torch.float32
            other = convert_to_tensor(soft_tissue, track_meta=False, device=image.device, dtype=dtype)
            values = image.as_tensor() if isinstance(image, MetaTensor) else image
            bone = (values.to(dtype) - other).clamp(0.0, 1.0)
            if isinstance(image, MetaTensor):
                return MetaTensor(bone, meta=image.meta, applied_operations=image.applied_operations)
            return bone
        array = np.asarray(image)
        dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float32
        other = soft_tissue.detach().cpu().numpy() if isinstance(soft_tissue, torch.Tensor) else soft_tissue
        return np.clip(array.astype(dtype) - np.asarray(other, dtype=dtype), 0.0, 1.0)


class BoneFromSoftTissued(MapTransform):
    """Dictionary version of :class:`BoneFromSoftTissue`: sets ``data[bone_key]`` when an item lacks it.

    An item with ``bone_key`` is left as it is (its bone image came from a file); one without it but with
    ``soft_tissue_key`` gets ``clip(data[image_key] - data[soft_tissue_key], 0, 1)``; one with neither (or
    without ``image_key``) raises a ``ValueError`` naming the keys it has (a problem of that entry's data, so a
    bundle's ``SkippingCompose`` skips the entry and names it in ``skipped.csv``). So one pipeline serves a
    datalist of ``bone`` pairs, of ``bone_suppressed`` pairs, or a mix of both.

    >>> item = {"image": torch.tensor([[[0.75, 0.25]]]), "bone_suppressed": torch.tensor([[[0.5, 0.5]]])}
    >>> BoneFromSoftTissued()(item)["bone"].tolist()
    [[[0.25, 0.0]]]
    >>> BoneFromSoftTissued()({"image": torch.zeros(1, 1, 2), "label": 0})
    Traceback (most recent call last):
    ...
    ValueError: BoneFromSoftTissued: the item has neither 'bone' nor 'bone_suppressed' ... (keys: image, label)
    """

    def __init__(self, image_key: str = "image", soft_tissue_key: str = "bone_suppressed",
                 bone_key: str = "bone") -> None:
        super().__init__(keys=[bone_key], allow_missing_keys=True)
        self.image_key, self.soft_tissue_key, self.bone_key = image_key, soft_tissue_key, bone_key
        self.converter = BoneFromSoftTissue()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.bone_key in d:
            return d
        missing = [key for key in (self.soft_tissue_key, self.image_key) if key not in d]
        if missing:
            has = ", ".join(str(key) for key in d) or "none"
            if self.soft_tissue_key in missing:
                what = (f"neither {self.bone_key!r} nor {self.soft_tissue_key!r} (to make the bone image from "
                        f"{self.image_key!r})")
            else:
                what = f"{self.soft_tissue_key!r} but no {self.image_key!r} to subtract it from"
            raise ValueError(f"{type(self).__name__}: the item has {what} (keys: {has})")
        d[self.bone_key] = self.converter(d[self.image_key], d[self.soft_tissue_key],
                                          source_name(d[self.image_key], d, self.image_key))
        return d


BoneFromSoftTissueD = BoneFromSoftTissueDict = BoneFromSoftTissued
