"""Boxes that travel with their image, and the pathology-preserving masks of seed 002 (Xing et al. 2019).

Boxes are ``[x_min, y_min, x_max, y_max]`` in pixels of the array (x = column, max exclusive; docs/data_contract.md).

- :class:`ResizeWithBoxes`: MONAI's ``Resize`` of the images, the boxes scaled to the new grid.
- :class:`BoxMask`: the union of the boxes rasterised on the image's grid, a ``(1, H, W)`` float 0/1 mask ``m``
  (a pixel partly covered by a box is in it: :func:`box_mask`).
- :class:`RandBox`: one random box of annotation-like size inside the lungs, for a healthy image (Pix2Pix-N).
- :class:`KeepBoxes`: the pix2pix input ``x = y ⊙ m`` (the image inside the boxes, zero elsewhere).
- :class:`PastePathology`: the pathology-preserving output ``x̃ = x + g ⊙ (1 − m)``: the generator's image ``g``
  outside the boxes, the input's pixels inside them, exactly (torch, differentiable; used inside the generator).

MONAI's detection box transforms (``monai.apps.detection``) order box coordinates by array axis, i.e. they would read
these boxes as ``(y, x)``; they are not used here.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, get_track_meta
from monai.transforms import InvertibleTransform, MapTransform, Randomizable, Resize, Resized, Transform
from monai.utils import TraceKeys, ensure_tuple, ensure_tuple_rep

from cxr_monai.transforms.resolution import scale_boxes
from cxr_monai.transforms.utils import as_box_array, source_name, spatial_shape_2d, to_2d_numpy

#: Side of a random box as a fraction of the image width / height: the interquartile ranges of the 820 boxes of the
#: six classes the seed trains on (Atelectasis, Cardiomegaly, Effusion, Infiltrate, Pneumonia, Pneumothorax) in
#: ChestX-ray14's BBox_List_2017.csv (widths 0.17-0.36 of 1024 px, median 0.23; heights 0.15-0.38, median 0.25).
ANNOTATION_WIDTH_RANGE = (0.17, 0.36)
ANNOTATION_HEIGHT_RANGE = (0.15, 0.38)
#: ``[x_min, y_min, x_max, y_max]`` fractions of the image where a random box goes when the lungs are unknown: the
#: lung fields of a centred frontal radiograph (cf. :data:`~cxr_monai.transforms.DEFAULT_LUNG_LAYOUT`).
CENTRAL_REGION = (0.10, 0.08, 0.90, 0.85)

__all__ = [
    "ANNOTATION_HEIGHT_RANGE",
    "ANNOTATION_WIDTH_RANGE",
    "CENTRAL_REGION",
    "BoxMask",
    "BoxMaskD",
    "BoxMaskDict",
    "BoxMaskd",
    "KeepBoxes",
    "KeepBoxesD",
    "KeepBoxesDict",
    "KeepBoxesd",
    "PastePathology",
    "PastePathologyD",
    "PastePathologyDict",
    "PastePathologyd",
    "RandBox",
    "RandBoxD",
    "RandBoxDict",
    "RandBoxd",
    "box_mask",
    "paste_pathology",
    "ResizeWithBoxes",
    "ResizeWithBoxesD",
    "ResizeWithBoxesDict",
    "ResizeWithBoxesd",
]


def _square(spatial_size: int | Sequence[int]) -> tuple[int, ...]:
    """``(s, s)`` for one int (Resize reads an int as the longest side only with ``size_mode="longest"``)."""
    if isinstance(spatial_size, (int, np.integer)):
        return (int(spatial_size), int(spatial_size))
    return tuple(int(s) for s in spatial_size)


class ResizeWithBoxes(InvertibleTransform):
    """MONAI :class:`~monai.transforms.Resize` of a ``(C, H, W)`` image, and its boxes scaled to the new grid.

    Returns ``(image, boxes)``; ``boxes`` is a float32 ``(N, 4)`` array (``None`` stays ``None``). A box reaching
    beyond the image before the resize is an error naming the file.

    Args:
        spatial_size: output ``(H, W)`` (an int for a square; ``-1`` keeps that side), as ``Resize``.
        mode: interpolation, ``"area"`` (default: anti-aliased when shrinking), ``"bilinear"``, or
            ``"nearest-exact"`` for masks.
        kwargs: other ``Resize`` arguments (``align_corners``, ``anti_aliasing``, ...).

    >>> image, boxes = ResizeWithBoxes(64)(torch.zeros(1, 128, 256), [[32, 16, 96, 48]])
    >>> tuple(image.shape), boxes.tolist()
    ((1, 64, 64), [[8.0, 8.0, 24.0, 24.0]])
    """

    backend = Resize.backend

    def __init__(self, spatial_size: int | Sequence[int], mode: str = "area", **kwargs: Any) -> None:
        self.resizer = Resize(spatial_size=_square(spatial_size), mode=mode, **kwargs)

    def __call__(self, img: Any, boxes: Any = None, mode: str | None = None) -> tuple[Any, np.ndarray | None]:
        source = source_name(img)
        old_shape = spatial_shape_2d(img, source)
        out = self.resizer(img, mode=mode)
        new_shape = tuple(int(s) for s in out.shape[-2:])
        if boxes is not None:
            boxes = scale_boxes(as_box_array(boxes, source, spatial_shape=old_shape), old_shape, new_shape)
        return out, boxes

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """The image back to its size before the resize (MONAI ``Resize.inverse``; boxes: the dict version)."""
        return self.resizer.inverse(data)


class ResizeWithBoxesd(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`ResizeWithBoxes`: MONAI :class:`~monai.transforms.Resized` of ``keys`` and the
    boxes under ``box_keys`` scaled from the first key's grid to the new one.

    Every key must have the first key's spatial shape (an error naming both files otherwise). Absent box keys, and
    ``None`` boxes, are skipped; present ones become float32 ``(N, 4)`` arrays. Invertible (``Invertd`` or
    :meth:`inverse`): the images go back through ``Resized.inverse`` and the boxes are scaled back.

    Args:
        keys: image-like keys, reference first.
        spatial_size: output ``(H, W)`` (int: square).
        box_keys: keys of boxes in pixels of the reference key (e.g. ``"boxes"``, ``("boxes", "lung_boxes")``).
        mode: interpolation per key, e.g. ``("area", "nearest-exact")`` for ``("image", "lung_mask")``.
        kwargs: other ``Resized`` arguments.

    >>> out = ResizeWithBoxesd("image", 64, box_keys="boxes")({"image": torch.zeros(1, 128, 128),
    ...                                                       "boxes": [[32, 16, 96, 48]]})
    >>> tuple(out["image"].shape), out["boxes"].tolist()
    ((1, 64, 64), [[16.0, 8.0, 48.0, 24.0]])
    """

    backend = Resized.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: int | Sequence[int],
        box_keys: KeysCollection = ("boxes",),
        mode: str | Sequence[str] = "area",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.box_keys = ensure_tuple(box_keys)
        self.resized = Resized(keys, spatial_size=_square(spatial_size), mode=mode, allow_missing_keys=allow_missing_keys,
                               **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = list(self.key_iterator(d))
        if not present:
            return d
        ref_source = source_name(d[present[0]], d, present[0])
        old_shape = spatial_shape_2d(d[present[0]], ref_source)
        for key in present[1:]:
            shape = spatial_shape_2d(d[key], source_name(d[key], d, key))
            if shape != old_shape:
                raise ValueError(
                    f"{source_name(d[key], d, key)}: '{key}' has spatial shape {shape} but '{present[0]}' "
                    f"({ref_source}) has {old_shape}; arrays resized together must match."
                )
        boxes = {key: as_box_array(d[key], ref_source, name=f"'{key}'", spatial_shape=old_shape)
                 for key in self.box_keys if d.get(key) is not None}
        d = dict(self.resized(d))
        new_shape = tuple(int(s) for s in d[present[0]].shape[-2:])
        for key, value in boxes.items():
            d[key] = scale_boxes(value, old_shape, new_shape)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Images back to their size before the resize, boxes scaled back (from the reference key's trace)."""
        d = dict(data)
        present = list(self.key_iterator(d))
        if not present:
            return d
        reference = d[present[0]]
        if isinstance(reference, MetaTensor) and reference.applied_operations:
            old_shape = tuple(int(v) for v in reference.applied_operations[-1][TraceKeys.ORIG_SIZE])
            new_shape = tuple(int(v) for v in reference.shape[-2:])
            for key in self.box_keys:
                if d.get(key) is not None:
                    d[key] = scale_boxes(as_box_array(d[key]), new_shape, old_shape)
        return dict(self.resized.inverse(d))


ResizeWithBoxesD = ResizeWithBoxesDict = ResizeWithBoxesd


def box_mask(boxes: Any, spatial_shape: Sequence[int]) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the pixels inside any ``[x_min, y_min, x_max, y_max]`` box (max exclusive; a pixel
    a fractional box covers in part is inside).

    >>> box_mask([[1, 0, 3, 1.5]], (3, 4)).astype(int).tolist()
    [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    mask = np.zeros(tuple(int(s) for s in spatial_shape), dtype=bool)
    for x_min, y_min, x_max, y_max in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        mask[max(int(np.floor(y_min)), 0) : int(np.ceil(y_max)), max(int(np.floor(x_min)), 0) : int(np.ceil(x_max))] = True
    return mask


def _like_image(mask: np.ndarray, img: Any) -> Any:
    """A ``(1, H, W)`` float32 tensor of ``mask``: a MetaTensor with the image's meta (affine) when tracking meta."""
    out = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)[None])
    if isinstance(img, MetaTensor) and get_track_meta():
        out = MetaTensor(out, meta=dict(img.meta))
    return out


class BoxMask(Transform):
    """The union of the boxes rasterised on a ``(C, H, W)`` image's grid: a ``(1, H, W)`` float32 mask, 1 inside.

    A box reaching beyond the image is an error naming the file; no boxes give an all-zero mask.

    >>> BoxMask()(torch.zeros(1, 3, 4), [[1, 0, 3, 2]])[0].int().tolist()
    [[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """

    def __call__(self, img: Any, boxes: Any) -> torch.Tensor:
        source = source_name(img)
        shape = spatial_shape_2d(img, source)
        return _like_image(box_mask(as_box_array(boxes, source, spatial_shape=shape), shape), img)


class BoxMaskd(MapTransform):
    """Dictionary version of :class:`BoxMask`: the boxes under each of ``keys`` become a mask under ``mask_keys``, on
    the grid of ``image_key``.

    Args:
        keys: box keys (e.g. ``"boxes"``).
        image_key: the image whose grid (and meta) the mask takes.
        mask_keys: output key per box key (default ``"box_mask"``).

    >>> out = BoxMaskd("boxes")({"image": torch.zeros(1, 4, 4), "boxes": [[0, 0, 2, 2]]})
    >>> int(out["box_mask"].sum())
    4
    """

    def __init__(self, keys: KeysCollection = "boxes", image_key: str = "image",
                 mask_keys: KeysCollection = "box_mask", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.mask_keys = ensure_tuple_rep(mask_keys, len(self.keys))
        self.masker = BoxMask()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, mask_key in self.key_iterator(d, self.mask_keys):
            if self.image_key not in d:
                raise KeyError(f"{source_name(None, d, self.image_key)}: no '{self.image_key}' to rasterise "
                               f"'{key}' on.")
            d[mask_key] = self.masker(d[self.image_key], d[key] if d[key] is not None else [])
        return d


def _has_boxes(value: Any) -> bool:
    return value is not None and len(value) > 0


class RandBox(Randomizable, Transform):
    """One random box of annotation-like size for an image without one: Pix2Pix-N's "randomly generated masks with
    reasonable size" (seed 002 §2.2), as a float32 ``(1, 4)`` array ``[x_min, y_min, x_max, y_max]`` (integer pixels).

    Width and height are drawn uniformly from ``width_range`` and ``height_range`` (fractions of the image's width
    and height; the defaults are the interquartile ranges of ChestX-ray14's annotations of the six classes the seed
    uses, :data:`ANNOTATION_WIDTH_RANGE`, :data:`ANNOTATION_HEIGHT_RANGE`). The box lies inside the lungs' bounding
    box and is centred on a lung pixel: the lungs are the lung mask when given, else the lung boxes, else
    ``central_region`` (fractions of the image, :data:`CENTRAL_REGION`). A side longer than the lungs' bounding box
    is cut to it.

    >>> lungs = np.zeros((1, 64, 64)); lungs[:, 8:56, 4:28] = 1; lungs[:, 8:56, 36:60] = 1
    >>> box = RandBox().set_random_state(0)(torch.zeros(1, 64, 64), lung_mask=lungs)
    >>> bool(box[0, 0] >= 4 and box[0, 2] <= 60 and box[0, 1] >= 8 and box[0, 3] <= 56)
    True
    """

    def __init__(
        self,
        width_range: Sequence[float] = ANNOTATION_WIDTH_RANGE,
        height_range: Sequence[float] = ANNOTATION_HEIGHT_RANGE,
        central_region: Sequence[float] = CENTRAL_REGION,
        mask_threshold: float = 0.0,
    ) -> None:
        for name, value in (("width_range", width_range), ("height_range", height_range)):
            if len(value) != 2 or not 0 < float(value[0]) <= float(value[1]) <= 1:
                raise ValueError(f"{name} must be (low, high) fractions with 0 < low <= high <= 1, got {value!r}.")
        if len(central_region) != 4 or not (0 <= central_region[0] < central_region[2] <= 1
                                            and 0 <= central_region[1] < central_region[3] <= 1):
            raise ValueError(f"central_region must be [x_min, y_min, x_max, y_max] fractions, got {central_region!r}.")
        self.width_range = (float(width_range[0]), float(width_range[1]))
        self.height_range = (float(height_range[0]), float(height_range[1]))
        self.central_region = tuple(float(v) for v in central_region)
        self.mask_threshold = mask_threshold
        self._fractions = (0.0, 0.0)
        self._pick = 0.0

    def randomize(self, data: Any = None) -> None:
        self._fractions = (self.R.uniform(*self.width_range), self.R.uniform(*self.height_range))
        self._pick = self.R.random_sample()

    def lung_region(self, spatial_shape: Sequence[int], lung_mask: Any = None, lung_boxes: Any = None,
                    source: str = "<in-memory array>") -> np.ndarray:
        """Boolean ``(H, W)`` map of where a box may be centred: the lung mask, the lung boxes or the central region."""
        height, width = (int(s) for s in spatial_shape)
        if lung_mask is not None:
            region = to_2d_numpy(lung_mask, source) > self.mask_threshold
            if region.shape != (height, width):
                raise ValueError(f"{source}: lung mask shape {region.shape} does not match the image's spatial shape "
                                 f"{(height, width)}.")
            if region.any():
                return region
        if _has_boxes(lung_boxes):
            return box_mask(as_box_array(lung_boxes, source, "lung boxes", (height, width)), (height, width))
        x0, y0, x1, y1 = self.central_region
        return box_mask([[x0 * width, y0 * height, x1 * width, y1 * height]], (height, width))

    def __call__(self, img: Any, lung_mask: Any = None, lung_boxes: Any = None, randomize: bool = True) -> np.ndarray:
        source = source_name(img)
        height, width = spatial_shape_2d(img, source)
        if randomize:
            self.randomize()
        region = self.lung_region((height, width), lung_mask, lung_boxes, source)
        rows, cols = np.nonzero(region)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        box_w = int(np.clip(round(self._fractions[0] * width), 1, right - left))
        box_h = int(np.clip(round(self._fractions[1] * height), 1, bottom - top))
        # centres whose box lies inside the lungs' bounding box (a box spans [c - side // 2, c - side // 2 + side))
        fits = ((cols >= left + box_w // 2) & (cols <= right - box_w + box_w // 2)
                & (rows >= top + box_h // 2) & (rows <= bottom - box_h + box_h // 2))
        if fits.any():
            index = int(self._pick * int(fits.sum()))
            row, col = rows[fits][index], cols[fits][index]
        else:  # no lung pixel where a whole box fits (irregular lungs): the middle of the bounding box
            row, col = (top + bottom) // 2, (left + right) // 2
        x_min = int(np.clip(col - box_w // 2, left, right - box_w))
        y_min = int(np.clip(row - box_h // 2, top, bottom - box_h))
        return np.asarray([[x_min, y_min, x_min + box_w, y_min + box_h]], dtype=np.float32)


class RandBoxd(Randomizable, MapTransform):
    """Dictionary version of :class:`RandBox`: an entry without boxes (a healthy image) gets one random box under
    ``box_key`` and ``[label]`` under ``label_key``; an entry with boxes passes unchanged.

    Args:
        keys: the image whose grid the box is drawn on (one key).
        box_key, label_key: output keys (and the keys that, when non-empty, make the entry pass unchanged).
        label: the box's label (default ``"No Finding"``, ChestX-ray14's name for a healthy image).
        lung_mask_key, lung_boxes_key: where the lungs are, when the entry has them (on the image's grid).
        width_range, height_range, central_region, mask_threshold: see :class:`RandBox`.

    >>> out = RandBoxd("image").set_random_state(0)({"image": torch.zeros(1, 64, 64)})
    >>> out["boxes"].shape, out["box_labels"]
    ((1, 4), ['No Finding'])
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        box_key: str = "boxes",
        label_key: str = "box_labels",
        label: str = "No Finding",
        lung_mask_key: str | None = "lung_mask",
        lung_boxes_key: str | None = "lung_boxes",
        width_range: Sequence[float] = ANNOTATION_WIDTH_RANGE,
        height_range: Sequence[float] = ANNOTATION_HEIGHT_RANGE,
        central_region: Sequence[float] = CENTRAL_REGION,
        mask_threshold: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.box_key, self.label_key, self.label = box_key, label_key, label
        self.lung_mask_key, self.lung_boxes_key = lung_mask_key, lung_boxes_key
        self.sampler = RandBox(width_range, height_range, central_region, mask_threshold)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandBoxd:
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.sampler.randomize(data)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if _has_boxes(d.get(self.box_key)):
            return d
        for key in self.key_iterator(d):
            self.randomize()
            lung_mask = d.get(self.lung_mask_key) if self.lung_mask_key else None
            lung_boxes = d.get(self.lung_boxes_key) if self.lung_boxes_key else None
            d[self.box_key] = self.sampler(d[key], lung_mask, lung_boxes, randomize=False)
            d[self.label_key] = [self.label]
        return d


def _mask_like(mask: Any, img: Any) -> Any:
    """``mask`` as the image's type (tensor on its device and dtype, or numpy), a plain tensor (no meta)."""
    if isinstance(img, torch.Tensor):
        mask = mask.as_tensor() if isinstance(mask, MetaTensor) else mask
        return torch.as_tensor(mask, device=img.device, dtype=img.dtype if img.is_floating_point() else torch.float32)
    return np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask, dtype=np.float32)


def _check_mask_shape(img: Any, mask: Any, what: str = "mask") -> None:
    if tuple(mask.shape[-2:]) != tuple(img.shape[-2:]) or mask.ndim > img.ndim:
        raise ValueError(f"{source_name(img)}: the {what} (shape {tuple(mask.shape)}) does not match the image "
                         f"(shape {tuple(img.shape)}); it must be (1, H, W) or (C, H, W) on the image's grid.")


class KeepBoxes(Transform):
    """The pix2pix input of seed 002: ``x = y ⊙ m``, the image inside the boxes and zero elsewhere.

    ``mask`` is ``(1, H, W)`` (broadcast over the channels) or the image's shape; works on numpy arrays and (batched)
    tensors, in whatever intensity range the image is (the bundle masks in the network range [-1, 1], where the zero
    outside is mid-grey).

    >>> KeepBoxes()(torch.full((1, 2, 2), 0.5), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])).tolist()
    [[[0.5, 0.0], [0.0, 0.0]]]
    """

    def __call__(self, img: Any, mask: Any) -> Any:
        _check_mask_shape(img, mask)
        return img * _mask_like(mask, img)


class KeepBoxesd(MapTransform):
    """Dictionary version of :class:`KeepBoxes`: ``keys`` times ``mask_key``, written to ``output_keys`` (default:
    in place).

    >>> out = KeepBoxesd("image", output_keys="masked")({"image": torch.ones(1, 2, 2),
    ...                                                   "box_mask": torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])})
    >>> out["masked"].sum().item(), out["image"].sum().item()
    (1.0, 4.0)
    """

    def __init__(self, keys: KeysCollection = "image", mask_key: str = "box_mask",
                 output_keys: KeysCollection | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.output_keys = self.keys if output_keys is None else ensure_tuple_rep(output_keys, len(self.keys))
        self.masker = KeepBoxes()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, output_key in self.key_iterator(d, self.output_keys):
            if self.mask_key not in d:
                raise KeyError(f"{source_name(d[key], d, key)}: no '{self.mask_key}'; add BoxMaskd before "
                               f"{type(self).__name__}.")
            d[output_key] = self.masker(d[key], d[self.mask_key])
        return d


def paste_pathology(inputs: torch.Tensor, generated: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``inputs + generated * (1 - mask)``: seed 002's ``x̃ = x + G(x) ⊙ (1 − m)`` (TorchScript-compatible)."""
    return inputs + generated * (1.0 - mask)


class PastePathology(Transform):
    """The pathology-preserving composition of seed 002: ``x̃ = x + g ⊙ (1 − m)``.

    ``x = y ⊙ m`` is the masked input (:class:`KeepBoxes`), ``g`` the generator's image, ``m`` the box mask: inside
    the boxes the result is the input's pixels exactly, outside it is ``g``. Differentiable (tensors keep their graph;
    the gradient reaching ``g`` is zero inside the boxes), so the generator applies it to its own output
    (:class:`~cxr_monai.networks.PathologyPreservingGenerator`). ``mask`` broadcasts over batch and channels.

    >>> x = torch.tensor([[[0.3, 0.0]]]); g = torch.tensor([[[0.9, 0.8]]]); m = torch.tensor([[[1.0, 0.0]]])
    >>> [round(value, 2) for value in PastePathology()(x, g, m)[0, 0].tolist()]
    [0.3, 0.8]
    """

    def __call__(self, inputs: Any, generated: Any, mask: Any) -> Any:
        if tuple(inputs.shape) != tuple(generated.shape):
            raise ValueError(f"{source_name(inputs)}: the input (shape {tuple(inputs.shape)}) and the generated image "
                             f"(shape {tuple(generated.shape)}) differ in shape.")
        _check_mask_shape(inputs, mask)
        if isinstance(inputs, torch.Tensor) or isinstance(generated, torch.Tensor):
            reference = inputs if isinstance(inputs, torch.Tensor) else generated
            inputs = torch.as_tensor(inputs, device=reference.device)
            generated = torch.as_tensor(generated, device=reference.device)
        return paste_pathology(inputs, generated, _mask_like(mask, inputs))


class PastePathologyd(MapTransform):
    """Dictionary version of :class:`PastePathology`: the generated images under ``keys`` (e.g. ``"pred"``) composed
    with ``input_key`` (the masked input ``x``) and ``mask_key``, written to ``output_keys`` (default: in place).

    >>> out = PastePathologyd("pred")({"pred": torch.ones(1, 2, 2), "masked": torch.zeros(1, 2, 2),
    ...                                "box_mask": torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])})
    >>> out["pred"].tolist()
    [[[0.0, 1.0], [1.0, 1.0]]]
    """

    def __init__(self, keys: KeysCollection = "pred", input_key: str = "masked", mask_key: str = "box_mask",
                 output_keys: KeysCollection | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.input_key, self.mask_key = input_key, mask_key
        self.output_keys = self.keys if output_keys is None else ensure_tuple_rep(output_keys, len(self.keys))
        self.paster = PastePathology()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, output_key in self.key_iterator(d, self.output_keys):
            for needed in (self.input_key, self.mask_key):
                if needed not in d:
                    raise KeyError(f"{source_name(d[key], d, key)}: no '{needed}' to compose '{key}' with.")
            d[output_key] = self.paster(d[self.input_key], d[key], d[self.mask_key])
        return d


BoxMaskD = BoxMaskDict = BoxMaskd
RandBoxD = RandBoxDict = RandBoxd
KeepBoxesD = KeepBoxesDict = KeepBoxesd
PastePathologyD = PastePathologyDict = PastePathologyd
