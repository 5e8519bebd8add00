"""Two boxes approximating the lungs of a frontal chest X-ray, the sampling region for lung patches (seed 001 §2).

- :class:`LungBoxesFromMask` (preferred): one box per lung from a binary lung mask.
- :class:`HeuristicLungBoxes` (fallback when no mask exists): a fixed layout of two boxes in fractions of the
  image, refined by intensity. See its docstring for what it can and cannot do.
- :class:`LungBoxesd`: picks the best source per sample: ``lung_boxes`` already in the data (datalist) >
  lung mask > heuristic, and records which one it used.

Boxes are float32 ``(2, 4)`` arrays ``[x_min, y_min, x_max, y_max]`` (x = column, max exclusive) ordered by x,
so the first box is on the image's left (the patient's right lung on a PA view).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import ensure_tuple_rep
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.transform import resize

from cxr_monai.transforms.utils import as_box_array, source_name, spatial_shape_2d, to_2d_numpy

__all__ = [
    "DEFAULT_LUNG_LAYOUT",
    "HeuristicLungBoxes",
    "HeuristicLungBoxesd",
    "HeuristicLungBoxesD",
    "HeuristicLungBoxesDict",
    "LungBoxesFromMask",
    "LungBoxesFromMaskd",
    "LungBoxesFromMaskD",
    "LungBoxesFromMaskDict",
    "LungBoxesd",
    "LungBoxesD",
    "LungBoxesDict",
    "lung_boxes_from_mask",
]

#: Lung boxes of an upright, centred adult frontal CXR as fractions ``[x_min, y_min, x_max, y_max]`` of the
#: image width/height, chosen from the four Montgomery-style masks in shared/data and the phantoms (their lungs
#: span about 9-47 % and 53-93 % of the width; the lung bases, 60-98 % of the height, vary most).
DEFAULT_LUNG_LAYOUT: tuple[tuple[float, float, float, float], ...] = (
    (0.10, 0.08, 0.47, 0.80),
    (0.53, 0.08, 0.90, 0.80),
)

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _sort_by_x(boxes: Sequence[Sequence[float]]) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return array[np.argsort((array[:, 0] + array[:, 2]) / 2, kind="stable")]


def _bounding_box(region: np.ndarray, x_offset: int = 0, y_offset: int = 0) -> list[float]:
    rows, cols = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
    return [x_offset + cols[0], y_offset + rows[0], x_offset + cols[-1] + 1, y_offset + rows[-1] + 1]


def _split_at_waist(component: np.ndarray, source: str) -> list[list[float]]:
    """Split one connected component holding both lungs at its narrowest column in the middle third of its
    width (the mediastinum), and box each side."""
    (row_slice, col_slice) = ndimage.find_objects(component.astype(np.int32))[0]
    region = component[row_slice, col_slice]
    width = region.shape[1]
    if width < 3:
        raise ValueError(f"{source}: the lung mask is a single region {width} px wide; cannot find two lungs in it.")
    counts = region.sum(axis=0)
    lo, hi = width // 3, width - width // 3
    window = counts[lo:hi]
    candidates = np.flatnonzero(window == window.min()) + lo
    split = int(candidates[np.argmin(np.abs(candidates - width / 2))])  # the narrowest column nearest the middle
    left, right = region[:, :split], region[:, split:]
    return [
        _bounding_box(left, col_slice.start, row_slice.start),
        _bounding_box(right, col_slice.start + split, row_slice.start),
    ]


def lung_boxes_from_mask(
    lung_mask: np.ndarray, source: str = "<in-memory array>", min_area_ratio: float = 0.1,
    max_lung_fraction: float = 0.75,
) -> np.ndarray:
    """Boxes of the two lungs in a 2-D boolean mask, ordered by x.

    The two largest 8-connected components are the lungs; a second component smaller than ``min_area_ratio``
    of the largest is treated as debris, and then, as when the mask has one component only (lungs merged
    across the mediastinum), that component is split at its narrowest column in its middle third. A mask of
    one genuine lung is split as well: the two boxes then still cover exactly that lung.

    Raises ``ValueError`` naming ``source`` when the mask is empty, or when all four image corners or more than
    ``max_lung_fraction`` of the image are lung (lungs cover well under half of a radiograph and never the
    corners): an inverted mask, or compression noise counted as lung.

    >>> mask = np.zeros((10, 10), bool); mask[2:8, 1:4] = True; mask[2:9, 6:9] = True
    >>> lung_boxes_from_mask(mask).tolist()
    [[1.0, 2.0, 4.0, 8.0], [6.0, 2.0, 9.0, 9.0]]
    """
    lung = np.asarray(lung_mask, dtype=bool)
    if lung.size and (lung.mean() > max_lung_fraction or lung[[0, 0, -1, -1], [0, -1, 0, -1]].all()):
        raise ValueError(
            f"{source}: the lung mask marks {lung.mean():.0%} of the image as lung, image corners included: is it "
            "inverted (lungs must be the non-zero pixels) or lossy-compressed (noise above the threshold; use "
            "threshold 0.5)?"
        )
    labels, count = ndimage.label(lung, structure=_EIGHT_CONNECTED)
    if count == 0:
        raise ValueError(f"{source}: the lung mask is empty (no lung pixel); cannot place lung boxes.")
    areas = np.bincount(labels.ravel())[1:]
    largest_first = np.argsort(areas, kind="stable")[::-1]
    if count >= 2 and areas[largest_first[1]] >= min_area_ratio * areas[largest_first[0]]:
        slices = ndimage.find_objects(labels)
        boxes = []
        for index in largest_first[:2]:
            rows, cols = slices[index]
            boxes.append([cols.start, rows.start, cols.stop, rows.stop])
    else:
        boxes = _split_at_waist(labels == largest_first[0] + 1, source)
    return _sort_by_x(boxes)


class LungBoxesFromMask(Transform):
    """Two lung boxes ``(2, 4)`` from a channel-first lung mask (see :func:`lung_boxes_from_mask`).

    Args:
        threshold: a pixel is lung when its value is above this. The default 0 accepts 0/1 and 0/255 masks
            whatever the reader's scaling (the CXR reader maps a 0/1 8-bit PNG to 0 and 1/255); use 0.5
            for masks with lossy-compression noise or soft (resampled) edges.
        min_area_ratio: a second component smaller than this fraction of the largest is ignored.
        max_lung_fraction: more lung than this fraction of the image is an error (inverted or noisy mask).

    Example::

        boxes = LungBoxesFromMask()(lung_mask)  # (1, H, W) -> [[x0, y0, x1, y1] image-left lung, [...] right]
    """

    def __init__(self, threshold: float = 0.0, min_area_ratio: float = 0.1, max_lung_fraction: float = 0.75) -> None:
        self.threshold = threshold
        self.min_area_ratio = min_area_ratio
        self.max_lung_fraction = max_lung_fraction

    def __call__(self, lung_mask: Any, source: str | None = None) -> np.ndarray:
        source = source or source_name(lung_mask)
        mask = to_2d_numpy(lung_mask, source) > self.threshold
        return lung_boxes_from_mask(mask, source, self.min_area_ratio, self.max_lung_fraction)


class HeuristicLungBoxes(Transform):
    """Fallback lung boxes for a frontal CXR without a lung mask: a fixed layout refined by intensity.

    Method, on a copy downsampled to ``analysis_size`` px and lightly smoothed: the lungs are the dark regions
    inside the body, so pixels darker than the Otsu threshold are candidate air. Each image half is searched
    for the dark region overlapping that side's ``layout`` box most. Outside-body air (neck, axillae,
    background) often joins the lung at the apex or the side, so the dark mask is eroded by a growing disk
    (up to ``max_erosion`` px) until the chosen region no longer reaches the image border; its box, grown back
    by the erosion radius, is clipped to the layout box enlarged by ``max_growth`` of its size. A side keeps
    its layout box when no region qualifies or the result is smaller than ``min_area_fraction`` of it.

    On the four Montgomery-style images with real masks in ``shared/data`` the refined boxes hold 46-77 % lung
    pixels (layout alone: 34-61 %; the masks' own boxes: 54-65 %) and cover 88-94 % of the lungs.

    Limits (prefer a lung mask from a segmentation model or dataset whenever you have one):

    - frontal (PA/AP), upright, roughly centred adult images only: lateral views, strong rotation, a patient
      off centre or children do not follow the layout;
    - the lower lungs behind the diaphragm domes and heart are brighter than the threshold, so boxes tend to
      stop above the costophrenic angles (patches stay in the lung, part of it is never sampled);
    - a white lung (large effusion, consolidation, collapse) or one merged with outside air beyond the
      largest erosion falls back to the layout box, which may include non-lung tissue;
    - dark bowel gas, a pneumothorax or dark collimation borders can pull a box away from the lung;
    - boxes are approximate sampling regions, not a segmentation.

    Args:
        layout: two boxes in fractions of width/height, image-left lung first.
        refine: ``False`` returns the layout boxes scaled to the image.
        analysis_size: longest side of the downsampled copy used for the intensity analysis.
        max_erosion: largest erosion radius in ``analysis_size`` pixels.
        max_growth: a refined box stays within the layout box enlarged by this fraction of its size per side.
        min_area_fraction: a refined box smaller than this fraction of the layout box is not trusted.

    Example::

        boxes = HeuristicLungBoxes()(image)  # (1, H, W) in [0, 1], lungs dark -> (2, 4) boxes
    """

    def __init__(
        self,
        layout: Sequence[Sequence[float]] = DEFAULT_LUNG_LAYOUT,
        refine: bool = True,
        analysis_size: int = 256,
        max_erosion: int = 12,
        max_growth: float = 0.1,
        min_area_fraction: float = 0.25,
    ) -> None:
        self.layout = np.asarray(layout, dtype=np.float64).reshape(-1, 4)
        if len(self.layout) != 2 or not ((self.layout >= 0) & (self.layout <= 1)).all():
            raise ValueError(f"layout must be two [x_min, y_min, x_max, y_max] boxes in [0, 1], got {layout!r}.")
        self.refine = refine
        self.analysis_size = int(analysis_size)
        self.max_erosion = int(max_erosion)
        self.max_growth = max_growth
        self.min_area_fraction = min_area_fraction

    def __call__(self, img: Any, source: str | None = None) -> np.ndarray:
        source = source or source_name(img)
        image = to_2d_numpy(img, source).astype(np.float32)
        height, width = image.shape
        layout_boxes = self.layout * np.asarray([width, height, width, height])
        if not self.refine:
            return _sort_by_x(layout_boxes)
        scale = min(1.0, self.analysis_size / max(height, width))
        small_shape = (max(1, round(height * scale)), max(1, round(width * scale)))
        small = ndimage.gaussian_filter(resize(image, small_shape, anti_aliasing=scale < 1), sigma=1.5)
        if np.ptp(small) <= 0:
            return _sort_by_x(layout_boxes)
        dark = small < threshold_otsu(small)
        to_small = np.asarray([small_shape[1] / width, small_shape[0] / height] * 2)
        half = small_shape[1] // 2
        boxes = []
        for side, prior in enumerate(layout_boxes * to_small):
            side_dark = dark.copy()
            if side == 0:
                side_dark[:, half:] = False
            else:
                side_dark[:, :half] = False
            boxes.append(self._refine_side(side_dark, prior) / to_small)
        return _sort_by_x(boxes)

    def _refine_side(self, dark: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """Box of the dark region overlapping ``prior`` most once cut off the image border, else ``prior``."""
        height, width = dark.shape
        x0, y0, x1, y1 = (int(round(v)) for v in prior)
        prior_size = np.asarray([prior[2] - prior[0], prior[3] - prior[1]])
        limit = prior + self.max_growth * np.concatenate([-prior_size, prior_size])
        for radius in range(0, self.max_erosion + 1, 2):
            eroded = ndimage.binary_erosion(dark, structure=_disk(radius)) if radius else dark
            labels, _ = ndimage.label(eroded)
            overlap = np.bincount(labels[y0:y1, x0:x1].ravel(), minlength=labels.max() + 1)
            overlap[0] = 0
            if overlap.max() == 0:
                break
            box = np.asarray(_bounding_box(labels == int(np.argmax(overlap))), dtype=np.float64)
            box += np.asarray([-radius, -radius, radius, radius])
            if box[0] <= 0 or box[1] <= 0 or box[2] >= width or box[3] >= height:
                continue  # still joined to outside-body air: erode more
            box = np.concatenate([np.maximum(box[:2], limit[:2]), np.minimum(box[2:], limit[2:])])
            if (box[2:] - box[:2]).prod() >= self.min_area_fraction * prior_size.prod():
                return box
        return prior


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return xx**2 + yy**2 <= radius**2


class LungBoxesFromMaskd(MapTransform):
    """Dictionary version of :class:`LungBoxesFromMask`: ``data[boxes_key] = boxes of data[key]``.

    Example::

        LungBoxesFromMaskd(keys="lung_mask", boxes_key="lung_boxes")
    """

    def __init__(
        self,
        keys: KeysCollection = "lung_mask",
        boxes_key: str | Sequence[str] = "lung_boxes",
        threshold: float = 0.0,
        min_area_ratio: float = 0.1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.boxes_key = ensure_tuple_rep(boxes_key, len(self.keys))
        self.from_mask = LungBoxesFromMask(threshold, min_area_ratio)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, boxes_key in self.key_iterator(d, self.boxes_key):
            d[boxes_key] = self.from_mask(d[key], source_name(d[key], d, key))
        return d


class HeuristicLungBoxesd(MapTransform):
    """Dictionary version of :class:`HeuristicLungBoxes`: ``data[boxes_key] = heuristic boxes of data[key]``.

    Example::

        HeuristicLungBoxesd(keys="image", boxes_key="lung_boxes")
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        boxes_key: str | Sequence[str] = "lung_boxes",
        layout: Sequence[Sequence[float]] = DEFAULT_LUNG_LAYOUT,
        refine: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.boxes_key = ensure_tuple_rep(boxes_key, len(self.keys))
        self.heuristic = HeuristicLungBoxes(layout, refine)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, boxes_key in self.key_iterator(d, self.boxes_key):
            d[boxes_key] = self.heuristic(d[key], source_name(d[key], d, key))
        return d


class LungBoxesd(MapTransform):
    """Lung boxes from the best source each sample has, for datalists that mix ``lung_boxes``, ``lung_mask``
    and bare images.

    Order: ``data[boxes_key]`` already present (datalist boxes, in pixels of the current image) > boxes from
    ``data[mask_key]`` > :class:`HeuristicLungBoxes` on ``data[image_key]`` (only if ``use_heuristic``,
    otherwise a ``KeyError`` naming the image). ``data[source_key]`` records ``"datalist"``, ``"mask"`` or
    ``"heuristic"``.

    Example::

        LungBoxesd(image_key="image", mask_key="lung_mask", boxes_key="lung_boxes")
    """

    def __init__(
        self,
        image_key: str = "image",
        mask_key: str | None = "lung_mask",
        boxes_key: str = "lung_boxes",
        source_key: str | None = "lung_boxes_source",
        use_heuristic: bool = True,
        threshold: float = 0.0,
        min_area_ratio: float = 0.1,
        layout: Sequence[Sequence[float]] = DEFAULT_LUNG_LAYOUT,
    ) -> None:
        super().__init__(image_key, allow_missing_keys=True)
        self.image_key, self.mask_key, self.boxes_key, self.source_key = image_key, mask_key, boxes_key, source_key
        self.use_heuristic = use_heuristic
        self.from_mask = LungBoxesFromMask(threshold, min_area_ratio)
        self.heuristic = HeuristicLungBoxes(layout)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image_source = source_name(d.get(self.image_key), d, self.image_key)
        if d.get(self.boxes_key) is not None:
            image = d.get(self.image_key)
            shape = spatial_shape_2d(image, image_source) if image is not None else None
            boxes = as_box_array(d[self.boxes_key], image_source, name=f"'{self.boxes_key}'", spatial_shape=shape)
            origin = "datalist"
        elif self.mask_key is not None and d.get(self.mask_key) is not None:
            mask = d[self.mask_key]
            boxes, origin = self.from_mask(mask, source_name(mask, d, self.mask_key)), "mask"
        elif self.use_heuristic and d.get(self.image_key) is not None:
            boxes, origin = self.heuristic(d[self.image_key], image_source), "heuristic"
        else:
            raise KeyError(
                f"{image_source}: no '{self.boxes_key}' and no '{self.mask_key}' for this sample, and the "
                "heuristic fallback is off (use_heuristic=False)."
            )
        d[self.boxes_key] = boxes
        if self.source_key is not None:
            d[self.source_key] = origin
        return d


LungBoxesFromMaskD = LungBoxesFromMaskDict = LungBoxesFromMaskd
HeuristicLungBoxesD = HeuristicLungBoxesDict = HeuristicLungBoxesd
LungBoxesD = LungBoxesDict = LungBoxesd
