"""The context encoder's input and targets: a square hole in the centre of a patch (seed 001 §3, §3.4, §4.1).

:class:`CenterHoled` turns a patch ``image`` (``(C, P, P)``, seed 001: 1x128x128) into the keys of the data
contract: ``masked`` (the patch with its centre filled), ``target`` (the ``hole_size`` centre, 1x64x64),
``weight`` (per-pixel L2 weights over ``target``: ``border_weight`` in a ``band`` px frame, 1 inside; seed
001: 10 in a 4 px band) and ``hole_mask`` (1 where input pixels were removed).

Fill value: a float (e.g. the training set's mean intensity in [0, 1], as Pathak et al. fill with the dataset
mean) or ``"context_mean"`` (the default), the mean of the patch's visible pixels. The default needs no
dataset statistic and keeps the filled square close to the local brightness, so the network sees no
dataset-dependent step at the hole edge; it never reads a hidden pixel. Bundle configs that reproduce the
paper pass the dataset mean.

Per sample or per batch: :class:`CenterHoled` makes the keys for one patch; :class:`CenterHoleCollate`, a
``collate_fn``, makes the same keys once for a whole collated batch, which is what the training loaders use
(the per-patch call overhead of :class:`CenterHoled` was the largest cost of the data path after decoding).

``overlap`` is Pathak's ``overlapPred``: the removed square is ``hole_size - 2 * overlap`` px, so an
``overlap`` px frame of the target stays visible as context; the target and weights still cover the whole
``hole_size`` square. Seed 001 removes the whole 64 px centre: ``overlap=0`` (default).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, get_track_meta, list_data_collate
from monai.transforms import Compose, MapTransform, Resized, Transform
from monai.utils import TransformBackends, convert_to_tensor

from cxr_monai.transforms.patches import crop_patch
from cxr_monai.transforms.utils import source_name, spatial_shape_2d

__all__ = [
    "CONTEXT_MEAN",
    "CenterHole",
    "CenterHoleCollate",
    "CenterHoled",
    "CenterHoleD",
    "CenterHoleDict",
    "border_weight_map",
    "whole_image_hole_transforms",
]

CONTEXT_MEAN = "context_mean"


def border_weight_map(hole_size: int = 64, band: int = 4, weight: float = 10.0) -> torch.Tensor:
    """``(hole_size, hole_size)`` float32 L2 weights: ``weight`` in the ``band`` px frame along the border of
    the hole, 1 inside (seed 001 §3.4: x10 in a 4 px band). ``band=0`` gives all ones.

    >>> int((border_weight_map(64, 4, 10.0) == 10).sum())  # 64**2 - 56**2
    960
    """
    if hole_size < 1 or band < 0 or 2 * band > hole_size:
        raise ValueError(f"need hole_size >= 1 and 0 <= band <= hole_size / 2, got hole_size={hole_size}, band={band}.")
    weights = torch.full((hole_size, hole_size), float(weight), dtype=torch.float32)
    weights[band : hole_size - band, band : hole_size - band] = 1.0
    return weights


class CenterHole(Transform):
    """Fill the centred ``hole_size`` square of a ``(C, H, W)`` patch (shrunk by ``overlap`` px per side).

    Args:
        hole_size: side of the centre square the network predicts (seed 001: 64 in a 128 patch). Must be
            smaller than the patch, with ``patch - hole_size`` even so the hole is exactly centred.
        fill_value: a float, or ``"context_mean"`` for the per-channel mean of the pixels left visible.
        overlap: px per side of the centre square that stay visible (Pathak's overlapPred; default 0).

    The output is a MetaTensor (with the input's meta) when the input is one and MONAI tracks meta, else a plain
    tensor.

    Example::

        masked = CenterHole(hole_size=64, fill_value=0.45)(patch)  # patch (1, 128, 128); [32:96, 32:96] = 0.45
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, hole_size: int = 64, fill_value: float | str = CONTEXT_MEAN, overlap: int = 0) -> None:
        if isinstance(fill_value, str) and fill_value != CONTEXT_MEAN:
            raise ValueError(f"fill_value must be a number or {CONTEXT_MEAN!r}, got {fill_value!r}.")
        if hole_size < 1 or overlap < 0 or 2 * overlap >= hole_size:
            raise ValueError(f"need hole_size >= 1 and 0 <= overlap < hole_size / 2, got {hole_size}, {overlap}.")
        self.hole_size = int(hole_size)
        self.fill_value = fill_value if isinstance(fill_value, str) else float(fill_value)
        self.overlap = int(overlap)

    def hole_start(self, spatial_shape: Sequence[int], source: str = "<in-memory array>") -> tuple[int, int]:
        """``(row, col)`` of the top-left pixel of the centred ``hole_size`` square."""
        starts = []
        for size in spatial_shape:
            if size <= self.hole_size or (size - self.hole_size) % 2:
                raise ValueError(
                    f"{source}: a {self.hole_size} px hole must be smaller than the {tuple(spatial_shape)} patch "
                    "and leave an even margin so it is exactly centred."
                )
            starts.append((size - self.hole_size) // 2)
        return starts[0], starts[1]

    def removed_region(self, spatial_shape: Sequence[int], source: str = "<in-memory array>") -> tuple[slice, slice]:
        """Row and column slices of the pixels replaced by the fill value."""
        row, col = self.hole_start(spatial_shape, source)
        inner = self.hole_size - 2 * self.overlap
        return (
            slice(row + self.overlap, row + self.overlap + inner),
            slice(col + self.overlap, col + self.overlap + inner),
        )

    def __call__(self, img: Any) -> torch.Tensor:
        source = source_name(img)
        rows, cols = self.removed_region(spatial_shape_2d(img, source), source)
        # a MetaTensor stays one (with its meta); a plain tensor stays plain, which the batched hole relies on
        # (wrapping a batch in a MetaTensor costs more than filling its holes)
        track_meta = get_track_meta() and isinstance(img, MetaTensor)
        masked = convert_to_tensor(img, track_meta=track_meta).clone()
        values = masked.as_tensor() if isinstance(masked, MetaTensor) else masked  # same storage, no meta overhead
        if self.fill_value == CONTEXT_MEAN:
            total, removed = values.double().sum(dim=(1, 2)), values[:, rows, cols].double().sum(dim=(1, 2))
            visible_count = values.shape[1] * values.shape[2] - (rows.stop - rows.start) * (cols.stop - cols.start)
            values[:, rows, cols] = ((total - removed) / visible_count).to(values.dtype)[:, None, None]
        else:
            values[:, rows, cols] = self.fill_value
        return masked


class CenterHoled(MapTransform):
    """Dictionary version of :class:`CenterHole`, writing the context-encoder keys of the data contract.

    From the patch in ``data[key]`` it adds ``masked`` (``(C, P, P)``), ``target`` (``(C, hole, hole)`` view of
    the centre), ``weight`` (``(1, hole, hole)``, :func:`border_weight_map`) and ``hole_mask`` (``(1, P, P)``
    float, 1 on the removed pixels). ``data[key]`` itself is left unchanged.

    Args:
        keys: the one patch key.
        hole_size, fill_value, overlap: see :class:`CenterHole`.
        band, border_weight: the weighted frame of ``target``; see :func:`border_weight_map`.
        masked_key, target_key, weight_key, hole_mask_key: output keys; ``hole_mask_key=None`` skips the mask
            (training does not need it).

    Example::

        CenterHoled(keys="image", hole_size=64, fill_value="context_mean", band=4, border_weight=10.0)
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        hole_size: int = 64,
        fill_value: float | str = CONTEXT_MEAN,
        overlap: int = 0,
        band: int = 4,
        border_weight: float = 10.0,
        masked_key: str = "masked",
        target_key: str = "target",
        weight_key: str = "weight",
        hole_mask_key: str | None = "hole_mask",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"CenterHoled takes one patch key, got {self.keys}; use one instance per key.")
        self.hole = CenterHole(hole_size, fill_value, overlap)
        self.weight = border_weight_map(hole_size, band, border_weight)[None]
        self.masked_key, self.target_key = masked_key, target_key
        self.weight_key, self.hole_mask_key = weight_key, hole_mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            patch = d[key]
            source = source_name(patch, d, key)
            spatial_shape = spatial_shape_2d(patch, source)
            d[self.masked_key] = self.hole(patch)
            hole = self.hole.hole_size
            d[self.target_key] = crop_patch(patch, self.hole.hole_start(spatial_shape, source), (hole, hole))
            d[self.weight_key] = self.weight.clone()
            if self.hole_mask_key is not None:
                hole_mask = torch.zeros((1, *spatial_shape), dtype=torch.float32)
                hole_mask[(slice(None), *self.hole.removed_region(spatial_shape, source))] = 1.0
                d[self.hole_mask_key] = hole_mask
        return d


class CenterHoleCollate:
    """``collate_fn`` for patch loaders: ``list_data_collate``, then :class:`CenterHoled`'s keys made once for
    the whole batch instead of once per patch.

    The collated patches ``batch[key]`` (``(B, C, P, P)``) go through :class:`CenterHoled` as one
    ``(B * C, P, P)`` array, so every patch gets exactly what it would get alone (its own context mean), and:

    - ``masked``: ``(B, C, P, P)``, a new tensor;
    - ``target``: ``(B, C, h, h)``, a view of the centres of ``batch[key]`` (no copy), or with
      ``keep_patches=False`` a copy, and ``batch[key]`` itself is dropped: worker processes then ship only what
      training reads (a third fewer bytes a batch for 128/64 px);
    - ``weight`` ``(B, 1, h, h)`` and ``hole_mask`` ``(B, 1, P, P)``: one map repeated over the batch (a real
      copy, not a stride-0 view, which ``pin_memory`` would refuse to copy into).

    Plain tensors come out (the network inputs carry no per-patch metadata). The rest of the batch is
    ``collate_fn``'s (default MONAI's ``list_data_collate``, which also flattens the lists of patches that
    ``RandLungPatchd`` returns).

    Args:
        keys: the one patch key.
        hole_size, fill_value, overlap, band, border_weight, masked_key, target_key, weight_key, hole_mask_key:
            see :class:`CenterHoled` (``hole_mask_key=None``, the default here, skips the mask).
        keep_patches: keep the unmasked patches ``batch[key]`` in the batch (default ``True``).
        collate_fn: collates the samples before the hole is made.

    Example::

        DataLoader(dataset, batch_size=3, collate_fn=CenterHoleCollate("image", hole_size=64, fill_value=0.45))
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        hole_size: int = 64,
        fill_value: float | str = CONTEXT_MEAN,
        overlap: int = 0,
        band: int = 4,
        border_weight: float = 10.0,
        masked_key: str = "masked",
        target_key: str = "target",
        weight_key: str = "weight",
        hole_mask_key: str | None = None,
        keep_patches: bool = True,
        collate_fn: Callable[[Sequence], Any] = list_data_collate,
    ) -> None:
        self.hole = CenterHoled(
            keys, hole_size, fill_value, overlap, band, border_weight, masked_key, target_key, weight_key, hole_mask_key
        )
        self.key = self.hole.keys[0]
        self.keep_patches = keep_patches
        self.collate_fn = collate_fn

    def __call__(self, batch: Sequence) -> dict[Hashable, Any]:
        collated = self.collate_fn(batch)
        if not isinstance(collated, Mapping) or self.key not in collated:
            found = sorted(map(str, collated)) if isinstance(collated, Mapping) else type(collated).__name__
            raise KeyError(f"CenterHoleCollate: the collated batch has no '{self.key}' (found {found}).")
        patches = collated[self.key]
        patches = patches.as_tensor() if isinstance(patches, MetaTensor) else torch.as_tensor(patches)
        if patches.ndim != 4:
            raise ValueError(
                f"CenterHoleCollate: '{self.key}' must collate to (B, C, H, W) patches, "
                f"got shape {tuple(patches.shape)}."
            )
        count, channels = patches.shape[:2]
        holed = self.hole({self.key: patches.reshape(count * channels, *patches.shape[2:])})
        out = dict(collated)
        for out_key, per_patch in ((self.hole.masked_key, True), (self.hole.target_key, True),
                                   (self.hole.weight_key, False), (self.hole.hole_mask_key, False)):
            if out_key is None:
                continue
            value = holed[out_key]
            value = value.as_tensor() if isinstance(value, MetaTensor) else value
            if per_patch:
                out[out_key] = value.reshape(count, channels, *value.shape[1:])
            else:
                out[out_key] = value[None].repeat(count, *(1,) * value.ndim)
        if not self.keep_patches:
            out[self.hole.target_key] = out[self.hole.target_key].contiguous()
            del out[self.key]
        return out


def whole_image_hole_transforms(
    keys: KeysCollection = "image",
    image_size: int = 128,
    hole_size: int = 64,
    fill_value: float | str = CONTEXT_MEAN,
    overlap: int = 0,
    band: int = 4,
    border_weight: float = 10.0,
) -> Compose:
    """Seed 001 §4.1, inpainting the whole chest: resize the image to ``image_size`` x ``image_size`` (bilinear
    with anti-aliasing; 1024 -> 128 in the paper), then :class:`CenterHoled`.

    The resize goes straight to a square, as in the paper (ChestX-ray14 images are square); a non-square
    radiograph is stretched, so crop or pad it first if its aspect ratio matters.

    Example::

        Compose([LoadImaged(...), whole_image_hole_transforms("image", image_size=128, hole_size=64)])
    """
    return Compose(
        [
            Resized(keys, spatial_size=(image_size, image_size), mode="bilinear", anti_aliasing=True),
            CenterHoled(keys, hole_size, fill_value, overlap, band, border_weight),
        ]
    )


CenterHoleD = CenterHoleDict = CenterHoled
