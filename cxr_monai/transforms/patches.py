"""Lung patches for the context encoder (seed 001 §2): random patches inside the lung boxes for training, and
patches centred on annotated boxes for the unhealthy test set.

Both transforms take the decoded image once and return a list of samples, like MONAI's
``RandCropByPosNegLabeld``, so ``Compose`` applies the following transforms to every patch and
``list_data_collate`` flattens them into the batch.

Geometry (integer pixels, ``(C, H, W)`` arrays, x = column): a ``P`` px patch "centred" on pixel ``c`` spans
``[c - P // 2, c - P // 2 + P)``. A centre is *valid* when the whole patch lies inside the image, i.e.
``P // 2 <= c <= size - P + P // 2``. A pixel ``i`` is inside a box ``[x_min, x_max)`` when
``x_min <= i < x_max``.

Cropping is slicing: every patch is a view of the decoded image (no resampling, no copy of the image per
patch); a MetaTensor patch keeps the image meta with its ``affine`` moved to the patch origin, unless
``track_meta=False`` asks for plain tensor views (a MetaTensor costs ~0.1 ms a patch, most of the sampler's
time, and training drops the per-patch meta anyway). Each output sample records ``patch_center`` ``[x, y]`` and
``patch_box`` ``[x_min, y_min, x_max, y_max]`` (int64, pixels of the image the patch was cut from).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, get_track_meta
from monai.transforms import MapTransform, Randomizable, Transform
from monai.transforms.traits import MultiSampleTrait
from monai.utils import ensure_tuple_rep

from cxr_monai.transforms.utils import as_box_array, source_name, spatial_shape_2d, to_2d_numpy

__all__ = [
    "BoxCenteredPatch",
    "BoxCenteredPatchd",
    "BoxCenteredPatchD",
    "BoxCenteredPatchDict",
    "RandLungPatch",
    "RandLungPatchd",
    "RandLungPatchD",
    "RandLungPatchDict",
    "crop_patch",
    "valid_center_range",
]


def valid_center_range(size: int, patch_size: int) -> tuple[int, int]:
    """Smallest and largest (inclusive) centre pixel whose ``patch_size`` patch fits in ``size`` pixels.

    >>> valid_center_range(1024, 128)
    (64, 960)
    """
    return patch_size // 2, size - patch_size + patch_size // 2


def crop_patch(img: Any, start: Sequence[int], patch_size: Sequence[int], track_meta: bool = True) -> Any:
    """``img[:, r0:r0 + h, c0:c0 + w]`` for ``start=(r0, c0)``, ``patch_size=(h, w)``: a view, not a copy.

    A MetaTensor patch gets its own meta dict with the affine translated to the patch origin (the same
    affine MONAI's ``SpatialCrop`` computes, at a fraction of its cost; no entry is added to
    ``applied_operations``, the patch position is kept in ``patch_box`` instead). ``track_meta=False`` gives
    a plain tensor view of a MetaTensor instead.
    """
    r0, c0 = (int(s) for s in start)
    rows, cols = slice(r0, r0 + int(patch_size[0])), slice(c0, c0 + int(patch_size[1]))
    if isinstance(img, MetaTensor) and not track_meta:
        return img.as_tensor()[:, rows, cols]
    patch = img[:, rows, cols]
    if isinstance(img, MetaTensor):
        rank = img.affine.shape[0] - 1
        shift = torch.eye(rank + 1, dtype=img.affine.dtype)
        shift[0, rank], shift[1, rank] = float(r0), float(c0)
        patch.affine = img.affine @ shift
    return patch


def _pixel_ranges(boxes: np.ndarray, spatial_shape: Sequence[int], patch_size: Sequence[int]) -> np.ndarray:
    """Per box, the inclusive ``[row_lo, row_hi, col_lo, col_hi]`` of valid centre pixels inside it.

    Ranges are clipped to the valid centres; a box lying entirely in the border band collapses to the nearest
    valid row/column, so its patches are shifted inwards (and their centres are then outside that box).
    """
    ranges = []
    for axis, (box_min, box_max) in enumerate(((1, 3), (0, 2))):  # rows from y, columns from x
        lo_valid, hi_valid = valid_center_range(spatial_shape[axis], patch_size[axis])
        first = np.ceil(boxes[:, box_min])
        last = np.maximum(np.ceil(boxes[:, box_max]) - 1, first)
        ranges += [np.clip(first, lo_valid, hi_valid), np.clip(last, lo_valid, hi_valid)]
    return np.stack(ranges, axis=1).astype(np.int64)


class RandLungPatch(Randomizable, Transform, MultiSampleTrait):
    """``num_samples`` random ``patch_size`` patches whose centres lie inside the lung boxes.

    Centres are uniform over the union of the boxes' valid centre pixels (a box is picked with probability
    proportional to its area, a point in it uniformly, and points in the overlap of ``k`` boxes are kept with
    probability ``1 / k``), so overlapping boxes are not over-sampled. The whole patch always lies inside the
    image: each box's centre range is clipped to the valid centres, and a box lying entirely within
    ``patch_size // 2`` px of the border collapses to the nearest valid row/column (its patches are shifted
    inwards). With a lung mask, centres are uniform over the mask pixels inside the clipped boxes instead, so
    every centre pixel is lung.

    Args:
        patch_size: patch side in pixels (int or ``(h, w)``); seed 001: 128.
        num_samples: patches per image; seed 001: 20.
        mask_threshold: a lung-mask pixel is lung when above this (0 accepts 0/1 and 0/255 masks).
        track_meta: whether patches of a MetaTensor are MetaTensors (default: MONAI's ``get_track_meta()``);
            ``False`` gives plain tensor views, which training needs and which cost a fraction as much.

    Raises ``ValueError`` naming the file when the image is smaller than a patch, there are no boxes, or the
    mask has no lung pixel where a patch fits.

    Example::

        sampler = RandLungPatch(patch_size=128, num_samples=20).set_random_state(seed=0)
        patches = sampler(image, lung_boxes)  # list of 20 (1, 128, 128) views; sampler.centers: (20, 2) [x, y]
    """

    #: rounds of rejection sampling against the lung mask before falling back to listing its lung pixels
    rejection_rounds = 8

    def __init__(
        self,
        patch_size: int | Sequence[int] = 128,
        num_samples: int = 20,
        mask_threshold: float = 0.0,
        track_meta: bool | None = None,
    ):
        self.patch_size = tuple(int(p) for p in ensure_tuple_rep(patch_size, 2))
        if num_samples < 1 or min(self.patch_size) < 1:
            raise ValueError(f"num_samples and patch_size must be positive, got {num_samples}, {patch_size}.")
        self.num_samples = int(num_samples)
        self.mask_threshold = mask_threshold
        self.track_meta = track_meta
        self.centers = np.zeros((0, 2), dtype=np.int64)

    def randomize(
        self,
        spatial_shape: Sequence[int],
        lung_boxes: Any,
        lung_mask: Any = None,
        source: str = "<in-memory array>",
    ) -> None:
        """Draw ``num_samples`` centres into ``self.centers`` (``(N, 2)`` int64, ``[x, y]``)."""
        height, width = (int(s) for s in spatial_shape)
        if height < self.patch_size[0] or width < self.patch_size[1]:
            raise ValueError(f"{source}: image {height}x{width} px is smaller than the {self.patch_size} px patch.")
        if lung_boxes is None:
            raise ValueError(f"{source}: lung boxes are required to sample patch centres.")
        boxes = as_box_array(lung_boxes, source, name="lung boxes", spatial_shape=(height, width))
        if len(boxes) == 0:
            raise ValueError(f"{source}: no lung boxes to sample patch centres from.")
        ranges = _pixel_ranges(boxes, (height, width), self.patch_size)
        if lung_mask is None:
            rows, cols = self._sample_union(ranges)
        else:
            rows, cols = self._sample_mask(ranges, lung_mask, (height, width), source)
        self.centers = np.stack([cols, rows], axis=1).astype(np.int64)

    def _sample_union(self, ranges: np.ndarray, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``count`` (default ``num_samples``) centres uniform over the union of the boxes' centre ranges."""
        count = self.num_samples if count is None else count
        row_lo, row_hi, col_lo, col_hi = ranges.T
        areas = (row_hi - row_lo + 1) * (col_hi - col_lo + 1)
        rows, cols = np.zeros(0, np.int64), np.zeros(0, np.int64)
        while rows.size < count:
            box = self.R.choice(len(ranges), size=count, p=areas / areas.sum())
            r = self.R.randint(row_lo[box], row_hi[box] + 1)
            c = self.R.randint(col_lo[box], col_hi[box] + 1)
            covering = (
                (r[:, None] >= row_lo) & (r[:, None] <= row_hi) & (c[:, None] >= col_lo) & (c[:, None] <= col_hi)
            ).sum(axis=1)
            keep = self.R.random_sample(count) * covering < 1.0
            rows, cols = np.concatenate([rows, r[keep]]), np.concatenate([cols, c[keep]])
        return rows[:count], cols[:count]

    def _sample_mask(
        self, ranges: np.ndarray, lung_mask: Any, spatial_shape: tuple[int, int], source: str
    ) -> tuple[np.ndarray, np.ndarray]:
        mask = to_2d_numpy(lung_mask, source)
        if mask.shape != spatial_shape:
            raise ValueError(
                f"{source}: lung mask shape {mask.shape} does not match the image's spatial shape {spatial_shape}."
            )
        # Rejection: centres uniform over the union of the boxes, kept where the mask is lung, are uniform over the
        # lung pixels of the union, and reading ~2 x num_samples mask pixels costs far less than scanning the mask.
        rows, cols = np.zeros(0, np.int64), np.zeros(0, np.int64)
        for _ in range(self.rejection_rounds):
            r, c = self._sample_union(ranges, 2 * self.num_samples)
            lung = mask[r, c] > self.mask_threshold
            rows, cols = np.concatenate([rows, r[lung]]), np.concatenate([cols, c[lung]])
            if rows.size >= self.num_samples:
                return rows[: self.num_samples], cols[: self.num_samples]
        # little lung in the boxes: draw the rest from the list of lung pixels (the same distribution)
        more_rows, more_cols = self._sample_mask_pixels(ranges, mask, self.num_samples - rows.size, source)
        return np.concatenate([rows, more_rows]), np.concatenate([cols, more_cols])

    def _sample_mask_pixels(
        self, ranges: np.ndarray, mask: np.ndarray, count: int, source: str
    ) -> tuple[np.ndarray, np.ndarray]:
        # only the rectangle around the boxes' centre ranges is searched; its row-major order is the image's
        top, left = ranges[:, 0].min(), ranges[:, 2].min()
        lung = mask[top : ranges[:, 1].max() + 1, left : ranges[:, 3].max() + 1] > self.mask_threshold
        allowed = np.zeros_like(lung)
        for row_lo, row_hi, col_lo, col_hi in ranges - [top, top, left, left]:
            allowed[row_lo : row_hi + 1, col_lo : col_hi + 1] = True
        candidates = np.flatnonzero(allowed & lung)
        if candidates.size == 0:
            raise ValueError(
                f"{source}: no lung-mask pixel inside the lung boxes can centre a {self.patch_size} px patch "
                "that fits in the image."
            )
        picks = candidates[self.R.randint(candidates.size, size=count)]
        rows, cols = np.divmod(picks, lung.shape[1])
        return rows + top, cols + left

    def patch_starts(self) -> np.ndarray:
        """``(N, 2)`` ``[row, col]`` top-left pixels of the patches around ``self.centers``."""
        return self.centers[:, ::-1] - np.asarray(self.patch_size) // 2

    def crop(self, img: Any, start: Sequence[int]) -> Any:
        """The patch of ``img`` at ``start`` (``[row, col]``), with or without meta as set by ``track_meta``."""
        track_meta = get_track_meta() if self.track_meta is None else self.track_meta
        return crop_patch(img, start, self.patch_size, track_meta=track_meta)

    def __call__(self, img: Any, lung_boxes: Any = None, lung_mask: Any = None, randomize: bool = True) -> list:
        """Patches of ``img`` (``(C, H, W)``); ``randomize=False`` reuses the last centres (same positions
        for another array of the same image)."""
        if randomize:
            source = source_name(img)
            self.randomize(spatial_shape_2d(img, source), lung_boxes, lung_mask, source)
        return [self.crop(img, start) for start in self.patch_starts()]


class BoxCenteredPatch(Transform, MultiSampleTrait):
    """One ``patch_size`` patch centred on each box (the unhealthy test set of seed 001), deterministic.

    The patch is placed so its centre is as close as possible to the box centre, then shifted to stay inside
    the image; a box larger than the patch is cut.

    Example::

        patches = BoxCenteredPatch(128)(image, [[412, 300, 470, 350]])  # [one (1, 128, 128) patch]
    """

    def __init__(self, patch_size: int | Sequence[int] = 128) -> None:
        self.patch_size = tuple(int(p) for p in ensure_tuple_rep(patch_size, 2))

    def patch_starts(self, spatial_shape: Sequence[int], boxes: Any, source: str = "<in-memory array>") -> np.ndarray:
        """``(N, 2)`` ``[row, col]`` top-left pixels of the patches around ``boxes``."""
        height, width = (int(s) for s in spatial_shape)
        if height < self.patch_size[0] or width < self.patch_size[1]:
            raise ValueError(f"{source}: image {height}x{width} px is smaller than the {self.patch_size} px patch.")
        box_array = as_box_array(boxes, source, spatial_shape=(height, width))
        if len(box_array) == 0:
            raise ValueError(f"{source}: no boxes to centre patches on.")
        box_centers = np.stack([box_array[:, [1, 3]].mean(1), box_array[:, [0, 2]].mean(1)], axis=1)  # row, col
        size = np.asarray(self.patch_size)
        starts = np.floor(box_centers - size / 2 + 0.5).astype(np.int64)
        return np.clip(starts, 0, np.asarray([height, width]) - size)

    def __call__(self, img: Any, boxes: Any) -> list:
        source = source_name(img)
        starts = self.patch_starts(spatial_shape_2d(img, source), boxes, source)
        return [crop_patch(img, start, self.patch_size) for start in starts]


def _reference_shape(d: Mapping, keys: Sequence[Hashable]) -> tuple[str, tuple[int, int]]:
    """Source name and spatial shape of the first of ``keys``; every other key must have the same shape."""
    ref_key = keys[0]
    source = source_name(d[ref_key], d, ref_key)
    ref_shape = spatial_shape_2d(d[ref_key], source)
    for key in keys[1:]:
        shape = spatial_shape_2d(d[key], source_name(d[key], d, key))
        if shape != ref_shape:
            raise ValueError(
                f"{source_name(d[key], d, key)}: '{key}' has spatial shape {shape} but '{ref_key}' "
                f"({source}) has {ref_shape}; arrays cropped together must match."
            )
    return source, ref_shape


def _patch_records(starts: np.ndarray, patch_size: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(patch_center [x, y], patch_box [x0, y0, x1, y1])`` int64 arrays per ``[row, col]`` start."""
    size = np.asarray(patch_size, dtype=np.int64)
    records = []
    for row, col in starts:
        center = np.asarray([col + size[1] // 2, row + size[0] // 2], dtype=np.int64)
        box = np.asarray([col, row, col + size[1], row + size[0]], dtype=np.int64)
        records.append((center, box))
    return records


class RandLungPatchd(Randomizable, MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`RandLungPatch`: one decoded image in, a list of ``num_samples`` dicts out.

    All ``keys`` (e.g. ``image`` and a ``lesion_mask``) are cropped at the same positions; the first present
    key is the reference for the shape. Other entries are shared between the output dicts (not copied); drop
    full-size arrays you do not need per patch (e.g. with ``DeleteItemsd``) before batching.

    Args:
        keys: keys to crop.
        box_key: key of the lung boxes (see :class:`~cxr_monai.transforms.LungBoxesd`).
        mask_key: optional lung-mask key; when set (and present), every centre pixel is a lung-mask pixel.
        patch_size, num_samples, mask_threshold, track_meta: see :class:`RandLungPatch`.
        center_key, patch_box_key: output keys recording each patch's position.

    Example::

        RandLungPatchd(keys="image", box_key="lung_boxes", mask_key="lung_mask", patch_size=128, num_samples=20)
    """

    def __init__(
        self,
        keys: KeysCollection,
        box_key: str = "lung_boxes",
        mask_key: str | None = None,
        patch_size: int | Sequence[int] = 128,
        num_samples: int = 20,
        mask_threshold: float = 0.0,
        track_meta: bool | None = None,
        center_key: str = "patch_center",
        patch_box_key: str = "patch_box",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.box_key, self.mask_key = box_key, mask_key
        self.center_key, self.patch_box_key = center_key, patch_box_key
        self.sampler = RandLungPatch(patch_size, num_samples, mask_threshold, track_meta)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandLungPatchd:
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def randomize(
        self, spatial_shape: Sequence[int], lung_boxes: Any, lung_mask: Any = None, source: str = "<in-memory array>"
    ) -> None:
        """Draw the patch centres (see :meth:`RandLungPatch.randomize`)."""
        self.sampler.randomize(spatial_shape, lung_boxes, lung_mask, source)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return [d]
        source, ref_shape = _reference_shape(d, keys)
        if self.box_key not in d:
            raise KeyError(f"{source}: no '{self.box_key}' in the data; add LungBoxesd before {type(self).__name__}.")
        mask = d.get(self.mask_key) if self.mask_key is not None else None
        self.randomize(ref_shape, d[self.box_key], mask, source)
        starts = self.sampler.patch_starts()
        results = []
        for start, (center, patch_box) in zip(starts, _patch_records(starts, self.sampler.patch_size)):
            out = dict(d)
            for key in keys:
                out[key] = self.sampler.crop(d[key], start)
            out[self.center_key], out[self.patch_box_key] = center, patch_box
            results.append(out)
        return results


class BoxCenteredPatchd(MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`BoxCenteredPatch`: one output dict per box in ``data[box_key]``.

    Each output records ``box_index`` (position in the list), ``box`` (float32 ``[x_min, y_min, x_max,
    y_max]`` in image pixels), ``box_label`` (when ``data[label_key]`` exists), ``patch_center`` and
    ``patch_box``.

    An entry without boxes is an error (a box-centred test set needs them) unless ``allow_missing_boxes``: then it
    gives no patches, so inference can run over images that carry no annotation.

    Example::

        BoxCenteredPatchd(keys="image", box_key="boxes", label_key="box_labels", patch_size=128)
    """

    def __init__(
        self,
        keys: KeysCollection,
        box_key: str = "boxes",
        label_key: str | None = "box_labels",
        patch_size: int | Sequence[int] = 128,
        center_key: str = "patch_center",
        patch_box_key: str = "patch_box",
        allow_missing_keys: bool = False,
        allow_missing_boxes: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.box_key, self.label_key = box_key, label_key
        self.allow_missing_boxes = allow_missing_boxes
        self.center_key, self.patch_box_key = center_key, patch_box_key
        self.patcher = BoxCenteredPatch(patch_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return [d]
        source, ref_shape = _reference_shape(d, keys)
        if d.get(self.box_key) is None:
            if self.allow_missing_boxes:
                return []
            raise KeyError(f"{source}: no '{self.box_key}' in the data to centre patches on.")
        boxes = as_box_array(d[self.box_key], source, name=f"'{self.box_key}'", spatial_shape=ref_shape)
        if len(boxes) == 0 and self.allow_missing_boxes:
            return []
        starts = self.patcher.patch_starts(ref_shape, boxes, source)
        labels = d.get(self.label_key) if self.label_key is not None else None
        if labels is not None and len(labels) != len(boxes):
            raise ValueError(f"{source}: {len(boxes)} boxes but {len(labels)} '{self.label_key}'.")
        records = _patch_records(starts, self.patcher.patch_size)
        results = []
        for index, (start, (center, patch_box)) in enumerate(zip(starts, records)):
            out = dict(d)
            for key in keys:
                out[key] = crop_patch(d[key], start, self.patcher.patch_size)
            out[self.center_key], out[self.patch_box_key] = center, patch_box
            out["box_index"], out["box"] = index, boxes[index]
            if labels is not None:
                out["box_label"] = labels[index]
            results.append(out)
        return results


RandLungPatchD = RandLungPatchDict = RandLungPatchd
BoxCenteredPatchD = BoxCenteredPatchDict = BoxCenteredPatchd
