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

Lesions and lung (issue #9, real radiographs): the *hole* of a patch is its centred ``hole_size`` square, the part
the context encoder inpaints and the evaluation scores. Given a lung mask, every sample also records
``hole_lung_fraction`` (the share of the hole that is lung), and ``min_hole_lung_fraction`` keeps holes that
straddle ribs, mediastinum and diaphragm out. Given a lesion mask (or lesion boxes), :class:`RandLungPatch`
never draws a patch whose ``lesion_free`` region (the whole patch by default, or only its hole) touches a
lesion, and :class:`BoxCenteredPatch` moves each box's patch onto the lesion, so the hole of an "unhealthy"
patch holds lesion rather than whatever lies at the centre of a coarse box (``hole_lesion_fraction``). Window
counts come from summed-area tables, one per mask and image, so each candidate centre costs O(1).
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

from cxr_monai.transforms.boxes import box_mask
from cxr_monai.transforms.utils import as_box_array, source_name, spatial_shape_2d, to_2d_numpy

__all__ = [
    "LESION_FREE_REGIONS",
    "BoxCenteredPatch",
    "BoxCenteredPatchd",
    "BoxCenteredPatchD",
    "BoxCenteredPatchDict",
    "NoLesionFreeLungError",
    "RandLungPatch",
    "RandLungPatchd",
    "RandLungPatchD",
    "RandLungPatchDict",
    "WindowCounts",
    "crop_patch",
    "valid_center_range",
]

#: what must stay clear of lesions for a training patch: the whole patch (context and hole) or the hole only
LESION_FREE_REGIONS = ("patch", "hole")


class NoLesionFreeLungError(ValueError):
    """An image has no patch centre clear of its lesions: expected for diffuse disease, and so told apart from an
    unusable file (robust runs count such images against their own limit, ``max_lesion_covered_fraction``)."""


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


class WindowCounts:
    """Foreground pixels of a 2-D mask inside square windows, each in O(1) from a summed-area table.

    ``counts(rows, cols, size)`` counts the pixels of the ``size`` px window centred on each pixel ``(row, col)``
    the way patches are centred (rows ``[row - size // 2, row - size // 2 + size)``), clipped to the image;
    ``fractions`` divides by ``size ** 2``.

    Example::

        >>> lesion = np.zeros((8, 8), bool); lesion[2, 2] = True
        >>> WindowCounts(lesion).counts(np.array([2, 6]), np.array([2, 6]), 4).tolist()
        [1, 0]
    """

    def __init__(self, mask: np.ndarray, threshold: float = 0.0) -> None:
        self.foreground = np.asarray(mask) > threshold
        self.shape = self.foreground.shape
        self._table: np.ndarray | None = None

    @property
    def table(self) -> np.ndarray:
        """``(H + 1, W + 1)`` int64 summed-area table, built on first use (a few ms for a 1024 px mask)."""
        if self._table is None:
            self._table = np.zeros((self.shape[0] + 1, self.shape[1] + 1), dtype=np.int64)
            np.cumsum(np.cumsum(self.foreground, axis=0, dtype=np.int64), axis=1, out=self._table[1:, 1:])
        return self._table

    @property
    def total(self) -> int:
        """Foreground pixels of the whole mask."""
        return int(self.table[-1, -1])

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether each pixel ``(rows[i], cols[i])`` is foreground (no table needed)."""
        return self.foreground[rows, cols]

    def counts(self, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
        """Foreground pixels of the ``size`` px window centred on each ``(rows[i], cols[i])``."""
        first_row, first_col = np.asarray(rows) - size // 2, np.asarray(cols) - size // 2
        r0, r1 = np.clip(first_row, 0, self.shape[0]), np.clip(first_row + size, 0, self.shape[0])
        c0, c1 = np.clip(first_col, 0, self.shape[1]), np.clip(first_col + size, 0, self.shape[1])
        table = self.table
        return table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]

    def fractions(self, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
        """:meth:`counts` divided by the window's area ``size ** 2``."""
        return self.counts(rows, cols, size) / float(size * size)


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
    every centre pixel is lung, and ``min_hole_lung_fraction`` further requires that share of the hole to be lung.
    With a lesion mask (or, without one, lesion boxes), centres whose ``lesion_free`` region touches a lesion
    pixel (box) are never drawn: the sample is uniform over the centres that satisfy every condition.

    Args:
        patch_size: patch side in pixels (int or ``(h, w)``); seed 001: 128.
        num_samples: patches per image; seed 001: 20.
        mask_threshold: a lung- or lesion-mask pixel is foreground when above this (0 accepts 0/1 and 0/255 masks).
        track_meta: whether patches of a MetaTensor are MetaTensors (default: MONAI's ``get_track_meta()``);
            ``False`` gives plain tensor views, which training needs and which cost a fraction as much.
        hole_size: side of the centred hole the fractions and ``lesion_free="hole"`` refer to (default: half the
            patch, seed 001's 64 in 128).
        min_hole_lung_fraction: least share of the hole that is lung (needs a lung mask; 0 disables).
        lesion_free: ``"patch"`` (default: neither the context nor the hole may show a lesion, so the network only
            ever learns healthy tissue from healthy context) or ``"hole"`` (only the inpainted square must be
            clear; more lung qualifies when lesions are large, but lesion context is then learnt from).

    After a call, ``centers`` holds the ``(N, 2)`` ``[x, y]`` centres and ``hole_lung_fractions`` their holes'
    lung fractions (``None`` without a lung mask).

    Raises ``ValueError`` naming the file when the image is smaller than a patch, there are no boxes, or no centre
    satisfies the conditions; :class:`NoLesionFreeLungError` (a ``ValueError``) when lesions were given and no centre
    keeps clear of them.

    Example::

        sampler = RandLungPatch(patch_size=128, num_samples=20).set_random_state(seed=0)
        patches = sampler(image, lung_boxes)  # list of 20 (1, 128, 128) views; sampler.centers: (20, 2) [x, y]
        healthy = RandLungPatch(num_samples=4, min_hole_lung_fraction=0.9)(image, boxes, lung, lesion_mask=lesion)
    """

    #: rounds of rejection sampling before falling back to listing every allowed centre
    rejection_rounds = 8

    def __init__(
        self,
        patch_size: int | Sequence[int] = 128,
        num_samples: int = 20,
        mask_threshold: float = 0.0,
        track_meta: bool | None = None,
        hole_size: int | None = None,
        min_hole_lung_fraction: float = 0.0,
        lesion_free: str = "patch",
    ):
        self.patch_size = tuple(int(p) for p in ensure_tuple_rep(patch_size, 2))
        if num_samples < 1 or min(self.patch_size) < 1:
            raise ValueError(f"num_samples and patch_size must be positive, got {num_samples}, {patch_size}.")
        self.num_samples = int(num_samples)
        self.mask_threshold = mask_threshold
        self.track_meta = track_meta
        self.hole_size = int(hole_size) if hole_size is not None else min(self.patch_size) // 2
        if not 0 < self.hole_size <= min(self.patch_size):
            raise ValueError(f"hole_size must be in (0, {min(self.patch_size)}], got {hole_size}.")
        if not 0.0 <= min_hole_lung_fraction <= 1.0:
            raise ValueError(f"min_hole_lung_fraction must be in [0, 1], got {min_hole_lung_fraction}.")
        self.min_hole_lung_fraction = float(min_hole_lung_fraction)
        if lesion_free not in LESION_FREE_REGIONS:
            raise ValueError(f"lesion_free must be one of {LESION_FREE_REGIONS}, got {lesion_free!r}.")
        self.lesion_free = lesion_free
        self.centers = np.zeros((0, 2), dtype=np.int64)
        self._lung: WindowCounts | None = None
        self._rows = self._cols = np.zeros(0, dtype=np.int64)

    def randomize(
        self,
        spatial_shape: Sequence[int],
        lung_boxes: Any,
        lung_mask: Any = None,
        source: str = "<in-memory array>",
        lesion_mask: Any = None,
        lesion_boxes: Any = None,
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
        lung = _window_counts(lung_mask, (height, width), source, "lung", self.mask_threshold)
        lesion = _window_counts(lesion_mask, (height, width), source, "lesion", self.mask_threshold)
        if lesion is None and lesion_boxes is not None and len(lesion_boxes):
            lesion = WindowCounts(box_mask(as_box_array(lesion_boxes, source, spatial_shape=(height, width)),
                                           (height, width)))
        accept = self._acceptance(lung, lesion)
        if accept is None:
            rows, cols = self._sample_union(ranges)
        else:
            rows, cols = self._sample_accepted(ranges, accept, lung, lesion, source)
        self.centers = np.stack([cols, rows], axis=1).astype(np.int64)
        self._lung, self._rows, self._cols = lung, rows, cols  # hole fractions are computed on demand

    @property
    def hole_lung_fractions(self) -> np.ndarray | None:
        """Lung share of each drawn centre's hole (``None`` without a lung mask)."""
        if self._lung is None:
            return None
        return self._lung.fractions(self._rows, self._cols, self.hole_size)


    def _acceptance(self, lung: WindowCounts | None, lesion: WindowCounts | None):
        """Vectorised test of candidate centres ``(rows, cols)``, or ``None`` when every centre in the boxes goes."""
        if lung is None and (lesion is None or lesion.total == 0):
            return None
        clear = self.patch_size[0] if self.lesion_free == "patch" else self.hole_size
        hole_lung_pixels = self.min_hole_lung_fraction * self.hole_size**2

        def accept(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            ok = np.ones(rows.shape, dtype=bool)
            if lung is not None:
                ok &= lung.at(rows, cols)  # the centre pixel itself is lung
                if self.min_hole_lung_fraction > 0:
                    ok[ok] = lung.counts(rows[ok], cols[ok], self.hole_size) >= hole_lung_pixels - 1e-9
            if lesion is not None and lesion.total:
                if self.lesion_free == "patch" and self.patch_size[0] != self.patch_size[1]:
                    raise ValueError("lesion_free='patch' needs a square patch.")
                ok[ok] = lesion.counts(rows[ok], cols[ok], clear) == 0
            return ok

        return accept

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

    def _sample_accepted(
        self, ranges: np.ndarray, accept, lung: WindowCounts | None, lesion: WindowCounts | None, source: str
    ) -> tuple[np.ndarray, np.ndarray]:
        # Rejection: centres uniform over the union of the boxes, kept where `accept` holds, are uniform over the
        # accepted centres of the union; a few O(1) window counts per candidate cost far less than a full map.
        rows, cols = np.zeros(0, np.int64), np.zeros(0, np.int64)
        for _ in range(self.rejection_rounds):
            r, c = self._sample_union(ranges, 2 * self.num_samples)
            ok = accept(r, c)
            rows, cols = np.concatenate([rows, r[ok]]), np.concatenate([cols, c[ok]])
            if rows.size >= self.num_samples:
                return rows[: self.num_samples], cols[: self.num_samples]
        # few accepted centres: draw the rest from the list of them (the same distribution)
        more_rows, more_cols = self._sample_listed(ranges, accept, self.num_samples - rows.size, lung, lesion, source)
        return np.concatenate([rows, more_rows]), np.concatenate([cols, more_cols])

    def _sample_listed(
        self, ranges: np.ndarray, accept, count: int, lung: WindowCounts | None, lesion: WindowCounts | None,
        source: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        # only the rectangle around the boxes' centre ranges is searched; its row-major order is the image's
        top, left = ranges[:, 0].min(), ranges[:, 2].min()
        allowed = np.zeros((ranges[:, 1].max() + 1 - top, ranges[:, 3].max() + 1 - left), dtype=bool)
        for row_lo, row_hi, col_lo, col_hi in ranges - [top, top, left, left]:
            allowed[row_lo : row_hi + 1, col_lo : col_hi + 1] = True
        candidates = np.flatnonzero(allowed)
        rows, cols = np.divmod(candidates, allowed.shape[1])
        rows, cols = rows + top, cols + left
        ok = accept(rows, cols)
        if not ok.any():
            # told apart: lung that lesions cover entirely (expected) vs no usable lung at all (a data problem)
            without_lesions = self._acceptance(lung, None)
            covered = bool(lesion is not None and lesion.total)
            covered = covered and (without_lesions is None or bool(without_lesions(rows, cols).any()))
            error = NoLesionFreeLungError if covered else ValueError
            raise error(f"{source}: no patch centre inside the lung boxes {self._conditions(lung, lesion)}.")
        rows, cols = rows[ok], cols[ok]
        picks = self.R.randint(rows.size, size=count)
        return rows[picks], cols[picks]

    def _conditions(self, lung: WindowCounts | None, lesion: WindowCounts | None) -> str:
        parts = [f"fits a {self.patch_size} px patch in the image"]
        if lung is not None:
            parts.append("lies on the lung mask")
            if self.min_hole_lung_fraction > 0:
                parts.append(f"has a {self.hole_size} px hole at least {self.min_hole_lung_fraction:g} lung")
        if lesion is not None and lesion.total:
            parts.append(f"keeps its {self.lesion_free} clear of the lesions (no lesion-free lung)")
        return "that " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]

    def patch_starts(self) -> np.ndarray:
        """``(N, 2)`` ``[row, col]`` top-left pixels of the patches around ``self.centers``."""
        return self.centers[:, ::-1] - np.asarray(self.patch_size) // 2

    def crop(self, img: Any, start: Sequence[int]) -> Any:
        """The patch of ``img`` at ``start`` (``[row, col]``), with or without meta as set by ``track_meta``."""
        track_meta = get_track_meta() if self.track_meta is None else self.track_meta
        return crop_patch(img, start, self.patch_size, track_meta=track_meta)

    def __call__(
        self,
        img: Any,
        lung_boxes: Any = None,
        lung_mask: Any = None,
        randomize: bool = True,
        lesion_mask: Any = None,
        lesion_boxes: Any = None,
    ) -> list:
        """Patches of ``img`` (``(C, H, W)``); ``randomize=False`` reuses the last centres (same positions
        for another array of the same image)."""
        if randomize:
            source = source_name(img)
            self.randomize(spatial_shape_2d(img, source), lung_boxes, lung_mask, source, lesion_mask, lesion_boxes)
        return [self.crop(img, start) for start in self.patch_starts()]


class BoxCenteredPatch(Transform, MultiSampleTrait):
    """One ``patch_size`` patch centred on each box (the unhealthy test set of seed 001), deterministic.

    Without a lesion mask the patch is placed so its centre is as close as possible to the box centre, then
    shifted to stay inside the image; a box larger than the patch is cut. With a lesion mask the patch moves,
    within the box, to where its ``hole_size`` hole holds the most lesion pixels (ties: the one nearest the box
    centre), among the centres whose hole is at least ``min_hole_lung_fraction`` lung when a lung mask is given
    and any is: coarse boxes, much larger than their lesion, otherwise put holes beside it. A box without a lesion
    pixel keeps its centre.

    Example::

        patches = BoxCenteredPatch(128)(image, [[412, 300, 470, 350]])  # [one (1, 128, 128) patch]
        on_lesion = BoxCenteredPatch(128, hole_size=64)(image, boxes, lesion_mask=lesion, lung_mask=lung)
    """

    def __init__(
        self,
        patch_size: int | Sequence[int] = 128,
        hole_size: int | None = None,
        min_hole_lung_fraction: float = 0.0,
        mask_threshold: float = 0.0,
    ) -> None:
        self.patch_size = tuple(int(p) for p in ensure_tuple_rep(patch_size, 2))
        self.hole_size = int(hole_size) if hole_size is not None else min(self.patch_size) // 2
        if not 0.0 <= min_hole_lung_fraction <= 1.0:
            raise ValueError(f"min_hole_lung_fraction must be in [0, 1], got {min_hole_lung_fraction}.")
        self.min_hole_lung_fraction = float(min_hole_lung_fraction)
        self.mask_threshold = mask_threshold

    def patch_starts(
        self,
        spatial_shape: Sequence[int],
        boxes: Any,
        source: str = "<in-memory array>",
        lesion_mask: Any = None,
        lung_mask: Any = None,
    ) -> np.ndarray:
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
        starts = np.clip(starts, 0, np.asarray([height, width]) - size)
        lesion = _window_counts(lesion_mask, (height, width), source, "lesion", self.mask_threshold)
        if lesion is None or lesion.total == 0:
            return starts
        lung = _window_counts(lung_mask, (height, width), source, "lung", self.mask_threshold)
        ranges = _pixel_ranges(box_array, (height, width), self.patch_size)
        for index, (row_lo, row_hi, col_lo, col_hi) in enumerate(ranges):
            rows, cols = np.mgrid[row_lo : row_hi + 1, col_lo : col_hi + 1]
            rows, cols = rows.ravel(), cols.ravel()
            if lung is not None and self.min_hole_lung_fraction > 0:
                lung_enough = lung.fractions(rows, cols, self.hole_size) >= self.min_hole_lung_fraction - 1e-9
                if lung_enough.any():
                    rows, cols = rows[lung_enough], cols[lung_enough]
            counts = lesion.counts(rows, cols, self.hole_size)
            if counts.max() == 0:
                continue
            best = np.flatnonzero(counts == counts.max())
            centre = box_centers[index]
            nearest = best[np.argmin((rows[best] - centre[0]) ** 2 + (cols[best] - centre[1]) ** 2)]
            starts[index] = np.asarray([rows[nearest], cols[nearest]]) - size // 2
        return starts

    def hole_fractions(self, starts: np.ndarray, mask: Any, source: str = "<in-memory array>") -> np.ndarray | None:
        """Share of each patch's hole (patches at ``starts``) that is foreground in ``mask`` (``None`` without one)."""
        if mask is None:
            return None
        counts = _window_counts(mask, spatial_shape_2d(mask, source), source, "", self.mask_threshold)
        centres = np.asarray(starts) + np.asarray(self.patch_size) // 2
        return counts.fractions(centres[:, 0], centres[:, 1], self.hole_size)

    def context_fractions(self, starts: np.ndarray, mask: Any, source: str = "<in-memory array>") -> np.ndarray | None:
        """Share of each patch's context (the patch less its hole) that is foreground in ``mask`` (``None`` without
        one): a hole inside a large lesion is inpainted from lesion and so comes out lesion-like."""
        if mask is None:
            return None
        counts = _window_counts(mask, spatial_shape_2d(mask, source), source, "", self.mask_threshold)
        centres = np.asarray(starts) + np.asarray(self.patch_size) // 2
        if self.patch_size[0] != self.patch_size[1]:
            raise ValueError("context fractions need a square patch.")
        patch = counts.counts(centres[:, 0], centres[:, 1], self.patch_size[0])
        hole = counts.counts(centres[:, 0], centres[:, 1], self.hole_size)
        return (patch - hole) / float(self.patch_size[0] ** 2 - self.hole_size**2)

    def __call__(self, img: Any, boxes: Any, lesion_mask: Any = None, lung_mask: Any = None) -> list:
        source = source_name(img)
        starts = self.patch_starts(spatial_shape_2d(img, source), boxes, source, lesion_mask, lung_mask)
        return [crop_patch(img, start, self.patch_size) for start in starts]


def _window_counts(
    mask: Any, spatial_shape: Sequence[int], source: str, what: str, threshold: float
) -> WindowCounts | None:
    if mask is None:
        return None
    array = to_2d_numpy(mask, source)
    if array.shape != tuple(spatial_shape):
        raise ValueError(f"{source}: {what + ' ' if what else ''}mask shape {array.shape} does not match the image's "
                         f"spatial shape {tuple(spatial_shape)}.")
    return WindowCounts(array, threshold)


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
        lesion_mask_key, lesion_boxes_key: optional keys of the lesions to keep clear of (the mask when present,
            else the boxes); an entry without either is sampled as a healthy image.
        patch_size, num_samples, mask_threshold, track_meta, hole_size, min_hole_lung_fraction, lesion_free: see
            :class:`RandLungPatch`.
        center_key, patch_box_key: output keys recording each patch's position.
        lung_fraction_key: output key of each hole's lung fraction (``None``: not computed; written only when
            the entry has a lung mask).

    Example::

        RandLungPatchd(keys="image", box_key="lung_boxes", mask_key="lung_mask", patch_size=128, num_samples=20,
                       lesion_mask_key="lesion_mask", lesion_boxes_key="boxes")
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
        lesion_mask_key: str | None = None,
        lesion_boxes_key: str | None = None,
        hole_size: int | None = None,
        min_hole_lung_fraction: float = 0.0,
        lesion_free: str = "patch",
        lung_fraction_key: str | None = None,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.box_key, self.mask_key = box_key, mask_key
        self.lesion_mask_key, self.lesion_boxes_key = lesion_mask_key, lesion_boxes_key
        self.center_key, self.patch_box_key = center_key, patch_box_key
        self.lung_fraction_key = lung_fraction_key
        self.sampler = RandLungPatch(
            patch_size, num_samples, mask_threshold, track_meta, hole_size, min_hole_lung_fraction, lesion_free
        )

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandLungPatchd:
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def randomize(
        self,
        spatial_shape: Sequence[int],
        lung_boxes: Any,
        lung_mask: Any = None,
        source: str = "<in-memory array>",
        lesion_mask: Any = None,
        lesion_boxes: Any = None,
    ) -> None:
        """Draw the patch centres (see :meth:`RandLungPatch.randomize`)."""
        self.sampler.randomize(spatial_shape, lung_boxes, lung_mask, source, lesion_mask, lesion_boxes)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return [d]
        source, ref_shape = _reference_shape(d, keys)
        if self.box_key not in d:
            raise KeyError(f"{source}: no '{self.box_key}' in the data; add LungBoxesd before {type(self).__name__}.")

        def optional(key: str | None) -> Any:
            return d.get(key) if key is not None else None

        self.randomize(ref_shape, d[self.box_key], optional(self.mask_key), source,
                       optional(self.lesion_mask_key), optional(self.lesion_boxes_key))
        starts = self.sampler.patch_starts()
        fractions = self.sampler.hole_lung_fractions if self.lung_fraction_key is not None else None
        results = []
        for index, (start, (center, patch_box)) in enumerate(zip(starts, _patch_records(starts, self.sampler.patch_size))):
            out = dict(d)
            for key in keys:
                out[key] = self.sampler.crop(d[key], start)
            out[self.center_key], out[self.patch_box_key] = center, patch_box
            if fractions is not None:
                out[self.lung_fraction_key] = float(fractions[index])
            results.append(out)
        return results


class BoxCenteredPatchd(MapTransform, MultiSampleTrait):
    """Dictionary version of :class:`BoxCenteredPatch`: one output dict per box in ``data[box_key]``.

    Each output records ``box_index`` (position in the list), ``box`` (float32 ``[x_min, y_min, x_max,
    y_max]`` in image pixels), ``box_label`` (when ``data[label_key]`` exists), ``patch_center`` and
    ``patch_box``.

    An entry without boxes is an error (a box-centred test set needs them) unless ``allow_missing_boxes``: then it
    gives no patches, so inference can run over images that carry no annotation.

    With ``lesion_mask_key`` (and optionally ``lung_mask_key`` with ``min_hole_lung_fraction``) each patch moves onto
    the lesion inside its box (see :class:`BoxCenteredPatch`); ``lung_fraction_key`` / ``lesion_fraction_key`` name
    output keys for the share of each hole that is lung / lesion, ``context_lesion_fraction_key`` for the share of the
    context around the hole that is lesion (written when the entry has that mask).

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
        lesion_mask_key: str | None = None,
        lung_mask_key: str | None = None,
        hole_size: int | None = None,
        min_hole_lung_fraction: float = 0.0,
        lung_fraction_key: str | None = None,
        lesion_fraction_key: str | None = None,
        context_lesion_fraction_key: str | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.box_key, self.label_key = box_key, label_key
        self.context_lesion_fraction_key = context_lesion_fraction_key
        self.allow_missing_boxes = allow_missing_boxes
        self.center_key, self.patch_box_key = center_key, patch_box_key
        self.lesion_mask_key, self.lung_mask_key = lesion_mask_key, lung_mask_key
        self.lung_fraction_key, self.lesion_fraction_key = lung_fraction_key, lesion_fraction_key
        self.patcher = BoxCenteredPatch(patch_size, hole_size, min_hole_lung_fraction)

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
        lesion_mask = d.get(self.lesion_mask_key) if self.lesion_mask_key is not None else None
        lung_mask = d.get(self.lung_mask_key) if self.lung_mask_key is not None else None
        starts = self.patcher.patch_starts(ref_shape, boxes, source, lesion_mask, lung_mask)
        fractions = {
            key: self.patcher.hole_fractions(starts, mask, source)
            for key, mask in ((self.lung_fraction_key, lung_mask), (self.lesion_fraction_key, lesion_mask))
            if key is not None and mask is not None
        }
        if self.context_lesion_fraction_key is not None and lesion_mask is not None:
            fractions[self.context_lesion_fraction_key] = self.patcher.context_fractions(starts, lesion_mask, source)
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
            for key, values in fractions.items():
                out[key] = float(values[index])
            if labels is not None:
                out["box_label"] = labels[index]
            results.append(out)
        return results


RandLungPatchD = RandLungPatchDict = RandLungPatchd
BoxCenteredPatchD = BoxCenteredPatchDict = BoxCenteredPatchd
