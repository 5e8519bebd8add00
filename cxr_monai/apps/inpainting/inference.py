"""Context-encoder inference (seed 001 §4.2, Fig. 4): inpainted patches, difference maps and full-image anomaly
heatmaps.

Intensities: patches and radiographs stay in [0, 1] (the data contract); the generator works in [-1, 1] (tanh).
:func:`to_network_range` and :func:`from_network_range` are the one place that maps between the two, and every
function here takes and returns [0, 1].

- :func:`inpaint_patches`: ``(B, C, P, P)`` patches -> the same patches with the centre predicted by the generator
  from the masked context (masked exactly as in training, by :class:`cxr_monai.apps.inpainting.CenterHole`).
- :class:`AnomalyHeatmapInferer`: slides ``P`` px windows over the lung boxes of a whole radiograph, inpaints the
  centre of each and averages ``|original - inpainted|`` per pixel over the windows whose centre covers it.
- :class:`InpaintingInference`: the runner of the bundle's ``inference.json``, writing patch PNGs (each patch before
  and after inpainting, and their difference), the working radiograph the patches were cut from, a grid per image,
  heatmaps (``.npy``) and overlays, and an ``index.csv`` of everything written: what an observer study
  (:mod:`cxr_monai.apps.study.create`) makes its 2AFC pairs from.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import dense_patch_slices
from monai.inferers import Inferer
from monai.networks import eval_mode

from cxr_monai.apps.inpainting.holes import CONTEXT_MEAN, CenterHole
from cxr_monai.data.robust import SkipLog
from cxr_monai.engines.images import iterate_images, stack_patches
from cxr_monai.metrics import image_anomaly_score
from cxr_monai.transforms import (
    as_box_array,
    from_network_range,
    source_name,
    to_network_range,
)
from cxr_monai.utils import as_bool
from cxr_monai.visualize import (
    difference_map,
    heatmap_overlay,
    inpainting_grid,
    save_png,
)

__all__ = [
    "AnomalyHeatmap",
    "AnomalyHeatmapInferer",
    "InpaintingGrid",
    "InpaintingInference",
    "NoWindowError",
    "inpaint_centres",
    "inpaint_patches",
    "lung_image_score",
    "lung_window_starts",
    "mask_patches",
    "paste_centres",
]

logger = logging.getLogger(__name__)

#: A generator: masked patches ``(B, C, P, P)`` in [-1, 1] -> centres ``(B, C, h, h)`` in [-1, 1].
Generator = Callable[[torch.Tensor], torch.Tensor]


class NoWindowError(ValueError):
    """No lung box of an image can hold a whole inference window; the message names the file and the boxes."""


def _plain(x: Any) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def _check_unit_range(x: torch.Tensor, name: str, source: str = "<in-memory array>") -> None:
    if x.numel() == 0:
        return
    low, high = torch.aminmax(x.detach())
    low, high = float(low), float(high)
    if not (np.isfinite(low) and np.isfinite(high)) or low < -1e-4 or high > 1 + 1e-4:
        raise ValueError(
            f"{source}: {name} must hold finite intensities in [0, 1] (got [{low:.4g}, {high:.4g}]); inference "
            "takes the data-contract range and maps to the generator's [-1, 1] itself."
        )


def _check_patches(patches: torch.Tensor, hole: CenterHole) -> None:
    if patches.ndim != 4 or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must be a batch of square patches (B, C, P, P), got shape {tuple(patches.shape)}.")
    hole.hole_start(patches.shape[-2:])  # raises when the hole does not fit exactly centred
    _check_unit_range(patches, "patches")


def mask_patches(
    patches: torch.Tensor, hole_size: int = 64, fill_value: float | str = CONTEXT_MEAN, overlap: int = 0
) -> torch.Tensor:
    """Patches ``(B, C, P, P)`` in [0, 1] with the centre filled exactly as the training transform does.

    This *is* :class:`cxr_monai.apps.inpainting.CenterHole`, applied once to a ``(B * C, P, P)`` view: the transform
    fills every leading index as a channel (a constant, or the mean of that channel's visible pixels for
    ``"context_mean"``), so each patch of the batch gets what it would get alone.

    Example::

        >>> mask_patches(torch.ones(2, 1, 128, 128), fill_value=0.5)[0, 0, 64, 64].item()
        0.5
    """
    hole = CenterHole(hole_size, fill_value, overlap)
    patches = _plain(patches)
    _check_patches(patches, hole)
    return _mask(patches, hole)


def _mask(patches: torch.Tensor, hole: CenterHole) -> torch.Tensor:
    batch, channels, height, width = patches.shape
    return _plain(hole(patches.reshape(batch * channels, height, width))).reshape(batch, channels, height, width)


def _network_device(network: Any, fallback: torch.device) -> torch.device:
    if isinstance(network, torch.nn.Module):
        for tensor in network.parameters():
            return tensor.device
        for tensor in network.buffers():
            return tensor.device
    return fallback


def _autocast(device: torch.device, amp: bool | str) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda") if device.type == "cuda" and as_bool(amp, "amp") else contextlib.nullcontext()


def _predict_centres(
    generator: Generator,
    patches: torch.Tensor,
    hole: CenterHole,
    batch_size: int | None,
    device: torch.device | str | None,
    amp: bool,
) -> torch.Tensor:
    """Centres ``(B, C, h, h)`` in [0, 1] on the patches' device; patches already checked."""
    run_device = torch.device(device) if device is not None else _network_device(generator, patches.device)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of patches or None, got {batch_size}.")
    count = patches.shape[0]
    step = max(count, 1) if batch_size is None else int(batch_size)
    centres = []
    with eval_mode(generator):  # eval mode (batch-norm running statistics) and no_grad; restores train mode
        for first in range(0, count, step):
            masked = _mask(patches[first : first + step].to(run_device, torch.float32), hole)
            with _autocast(run_device, amp):
                prediction = generator(to_network_range(masked))
            expected = (masked.shape[0], masked.shape[1], hole.hole_size, hole.hole_size)
            if tuple(prediction.shape) != expected:
                raise ValueError(
                    f"the generator returned shape {tuple(prediction.shape)} for {tuple(masked.shape)} masked "
                    f"patches; expected {expected}: hole_size must equal the generator's output size."
                )
            centres.append(from_network_range(_plain(prediction).float()).to(patches.device))
    if not centres:
        return patches.new_zeros((0, patches.shape[1], hole.hole_size, hole.hole_size))
    return torch.cat(centres)


def inpaint_centres(
    generator: Generator,
    patches: torch.Tensor,
    hole_size: int = 64,
    fill_value: float | str = CONTEXT_MEAN,
    overlap: int = 0,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    amp: bool = True,
) -> torch.Tensor:
    """The generator's ``(B, C, hole_size, hole_size)`` centres, in [0, 1], for patches ``(B, C, P, P)`` in [0, 1].

    Patches are masked by :func:`mask_patches`, mapped to [-1, 1], and run through the generator in eval mode
    without gradients (the generator's train/eval mode is restored afterwards), ``batch_size`` patches at a time
    (all at once when ``None``), on ``device`` (default: the generator's), with autocast when that device is CUDA
    and ``amp`` is set. The result is on the patches' device.

    Example::

        centres = inpaint_centres(generator, patches)  # (20, 1, 128, 128) -> (20, 1, 64, 64)
    """
    hole = CenterHole(hole_size, fill_value, overlap)
    patches = _plain(patches)
    _check_patches(patches, hole)
    return _predict_centres(generator, patches, hole, batch_size, device, amp)


def paste_centres(patches: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """A copy of ``patches`` ``(B, C, P, P)`` with the centred ``(B, C, h, h)`` square replaced by ``centres``.

    >>> paste_centres(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 4, 4))[0, 0].sum().item()
    16.0
    """
    patches, centres = _plain(patches), _plain(centres)
    hole = centres.shape[-1]
    row, col = CenterHole(hole).hole_start(patches.shape[-2:])
    if patches.shape[:2] != centres.shape[:2] or centres.shape[-2] != hole:
        raise ValueError(f"cannot paste centres {tuple(centres.shape)} into patches {tuple(patches.shape)}.")
    inpainted = patches.clone()
    inpainted[..., row : row + hole, col : col + hole] = centres.to(inpainted)
    return inpainted


def inpaint_patches(
    generator: Generator,
    patches: torch.Tensor,
    hole_size: int = 64,
    fill_value: float | str = CONTEXT_MEAN,
    overlap: int = 0,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    amp: bool = True,
) -> torch.Tensor:
    """Inpainted patches ``(B, C, P, P)`` in [0, 1]: the originals with the centre predicted by ``generator``.

    Outside the centred ``hole_size`` square the result equals the input exactly. ``fill_value`` and ``overlap``
    must be the ones the generator was trained with (see :class:`cxr_monai.apps.inpainting.CenterHole`); the other
    arguments as :func:`inpaint_centres`.

    Example::

        >>> net = ContextEncoder(base_channels=8, bottleneck_channels=16)  # doctest: +SKIP
        >>> inpaint_patches(net, torch.rand(4, 1, 128, 128)).shape  # doctest: +SKIP
        torch.Size([4, 1, 128, 128])
    """
    patches = _plain(patches)
    centres = inpaint_centres(generator, patches, hole_size, fill_value, overlap, batch_size, device, amp)
    return paste_centres(patches, centres)


def lung_window_starts(
    boxes: Any,
    image_shape: Sequence[int],
    window_size: int = 128,
    stride: int = 32,
    source: str = "<in-memory array>",
    box_margin: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """Top-left ``[row, col]`` of the ``window_size`` windows tiling each lung box, and why boxes were skipped.

    Each box (``[x_min, y_min, x_max, y_max]``, grown by ``box_margin`` px on every side, rounded outwards to
    whole pixels and clipped to the image) is tiled at ``stride`` with MONAI's
    :func:`~monai.data.utils.dense_patch_slices`, the last window of each row and column flush with the box edge,
    so the windows cover the box exactly and stay inside the image. A box smaller than a window (after clipping)
    is skipped and its reason, naming ``source``, returned. Windows shared by overlapping boxes appear once; the
    result is sorted by row, then column.

    >>> starts, skipped = lung_window_starts([[10, 20, 170, 148]], (256, 256), window_size=128, stride=32)
    >>> starts.tolist(), skipped
    ([[20, 10], [20, 42]], [])
    """
    if window_size < 1 or stride < 1 or box_margin < 0:
        raise ValueError(f"window_size and stride must be positive and box_margin >= 0, got {window_size}, {stride} "
                         f"and {box_margin}.")
    height, width = (int(s) for s in image_shape)
    starts: list[tuple[int, int]] = []
    skipped: list[str] = []
    for box in as_box_array(boxes, source, name="lung boxes"):
        x0, y0 = max(int(np.floor(box[0])) - box_margin, 0), max(int(np.floor(box[1])) - box_margin, 0)
        x1, y1 = min(int(np.ceil(box[2])) + box_margin, width), min(int(np.ceil(box[3])) + box_margin, height)
        if x1 - x0 < window_size or y1 - y0 < window_size:
            skipped.append(
                f"{source}: lung box {[round(float(v), 1) for v in box]} spans {max(x1 - x0, 0)}x{max(y1 - y0, 0)} "
                f"px (width x height) inside the {width}x{height} image, less than one {window_size} px window"
            )
            continue
        for rows, cols in dense_patch_slices((y1 - y0, x1 - x0), (window_size, window_size), (stride, stride)):
            starts.append((y0 + rows.start, x0 + cols.start))
    grid = np.unique(np.asarray(starts, dtype=np.int64).reshape(-1, 2), axis=0)
    return grid, skipped


class AnomalyHeatmap(NamedTuple):
    """Result of :class:`AnomalyHeatmapInferer`."""

    #: ``(H, W)`` float32: mean ``|original - inpainted|`` (intensities in [0, 1]) over the windows whose inpainted
    #: centre covers the pixel; NaN where no window centre does.
    heatmap: torch.Tensor
    #: ``(H, W)`` int32: how many window centres cover each pixel.
    coverage: torch.Tensor
    #: ``(N, 2)`` int64 top-left ``[row, col]`` of the windows, in the order they were inpainted.
    windows: np.ndarray


class AnomalyHeatmapInferer(Inferer):
    """Full-radiograph anomaly heatmap from a context encoder trained on healthy lung patches.

    ``window_size`` windows tile every lung box at ``stride`` (:func:`lung_window_starts`); each window's centre
    ``hole_size`` square is masked (as in training), inpainted by the network, and ``|original - inpainted|``
    (averaged over channels) is added to every pixel of that square. The heatmap is the per-pixel mean over the
    windows covering it; the inpainted square, not only its removed part, counts (with ``overlap > 0`` its outer
    ``overlap`` px frame was visible to the network). With the default 128/64/32 each lung pixel away from the
    box border is covered by four windows. Windows stay inside their (grown) box, so with ``box_margin=0`` a band
    of ``(window_size - hole_size) / 2`` px along each box edge is never inside a hole and stays NaN;
    ``box_margin=(window_size - hole_size) // 2`` (32 px) extends the windows past the box, where the image
    allows, so the holes reach the box edges (apical and costophrenic lesions) at the price of context from
    outside the lungs.

    Windows go through the network ``batch_size`` at a time; ``batch_size=1`` is the one-window-at-a-time
    reference (same result up to float rounding). The image is moved once to ``device`` (default: the network's);
    outputs are on the CPU.

    Args:
        window_size: side of the network's input patch (seed 001: 128).
        hole_size: side of the inpainted centre (seed 001: 64).
        stride: window step in pixels; ``stride > hole_size`` leaves uncovered stripes between windows.
        batch_size: windows per network call.
        fill_value, overlap: the hole's fill and visible frame, as used in training (:class:`CenterHole`).
        box_margin: px added on every side of each lung box before tiling (see above).
        device: where the network runs; ``None`` for the network's device.
        amp: autocast when running on CUDA.

    Example::

        inferer = AnomalyHeatmapInferer(stride=32, batch_size=64)
        heatmap, coverage, windows = inferer(image, generator, boxes=data["lung_boxes"])  # image (1, H, W)
    """

    def __init__(
        self,
        window_size: int = 128,
        hole_size: int = 64,
        stride: int = 32,
        batch_size: int = 32,
        fill_value: float | str = CONTEXT_MEAN,
        overlap: int = 0,
        box_margin: int = 0,
        device: torch.device | str | None = None,
        amp: bool = True,
    ) -> None:
        if stride < 1 or batch_size < 1:
            raise ValueError(f"stride and batch_size must be positive, got {stride} and {batch_size}.")
        self.hole = CenterHole(hole_size, fill_value, overlap)
        self.hole_offset = self.hole.hole_start((window_size, window_size))[0]  # also checks the sizes
        self.window_size = int(window_size)
        self.stride = int(stride)
        self.batch_size = int(batch_size)
        self.box_margin = int(box_margin)
        self.device = device
        self.amp = amp

    def windows(self, boxes: Any, image_shape: Sequence[int], source: str = "<in-memory array>") -> np.ndarray:
        """The windows' top-left ``[row, col]``; logs each skipped box, raises :class:`NoWindowError` if none fits."""
        starts, skipped = lung_window_starts(boxes, image_shape, self.window_size, self.stride, source,
                                             self.box_margin)
        if len(starts) == 0:
            raise NoWindowError("; ".join(skipped) or f"{source}: no lung boxes to place windows in")
        for reason in skipped:
            logger.warning("skipping a lung box: %s", reason)
        return starts

    def __call__(  # type: ignore[override]
        self, inputs: torch.Tensor, network: Generator, boxes: Any, source: str | None = None
    ) -> AnomalyHeatmap:
        """Heatmap of ``inputs`` (``(1, H, W)`` or ``(H, W)``, [0, 1]) over the lung ``boxes`` (``(N, 4)``).

        ``source`` names the image in errors and logs (default: the MetaTensor's ``filename_or_obj``).
        """
        source = source or source_name(inputs)
        image = _plain(inputs)
        image = image[None] if image.ndim == 2 else image
        if image.ndim != 3:
            raise ValueError(f"{source}: expected an image (C, H, W) or (H, W), got shape {tuple(inputs.shape)}.")
        _check_unit_range(image, "the image", source)
        height, width = image.shape[-2:]
        windows = self.windows(boxes, (height, width), source)
        device = torch.device(self.device) if self.device is not None else _network_device(network, image.device)
        image = image.to(device, torch.float32)
        total = torch.zeros((height, width), dtype=torch.float32, device=device)
        coverage = torch.zeros((height, width), dtype=torch.int32, device=device)
        size, hole, offset = self.window_size, self.hole.hole_size, self.hole_offset
        for first in range(0, len(windows), self.batch_size):
            starts = windows[first : first + self.batch_size]
            patches = torch.stack([image[:, row : row + size, col : col + size] for row, col in starts])
            centres = _predict_centres(network, patches, self.hole, None, device, self.amp)
            originals = patches[..., offset : offset + hole, offset : offset + hole]
            differences = (originals - centres).abs().mean(dim=1)
            for (row, col), difference in zip(starts, differences):
                rows, cols = slice(row + offset, row + offset + hole), slice(col + offset, col + offset + hole)
                total[rows, cols] += difference
                coverage[rows, cols] += 1
        heatmap = torch.where(coverage > 0, total / coverage.clamp(min=1), torch.full_like(total, float("nan")))
        return AnomalyHeatmap(heatmap.cpu(), coverage.cpu(), windows)


def lung_image_score(heatmap: torch.Tensor, lung_mask: Any | None = None, quantile: float = 0.95) -> tuple[float, str]:
    """One anomaly score for a radiograph: :func:`~cxr_monai.metrics.image_anomaly_score` of its heatmap over the lung
    mask, or over every covered pixel when there is no mask. Returns the score and the region it was taken over
    (``"lung mask"`` or ``"lung boxes"``); raises :class:`NoWindowError` when the mask covers no window's hole.

    Example::

        score, region = lung_image_score(inferer(image, generator, boxes).heatmap, data.get("lung_mask"))
    """
    if lung_mask is None:
        return image_anomaly_score(heatmap, None, quantile), "lung boxes"
    region = torch.as_tensor(lung_mask).detach().cpu().reshape(heatmap.shape) > 0.5
    if not (region & torch.isfinite(heatmap)).any():
        raise NoWindowError("its lung mask covers none of the heatmap's windows")
    return image_anomaly_score(heatmap, region, quantile), "lung mask"


class InpaintingGrid:
    """The grid :class:`~cxr_monai.handlers.ImageGridSaver` writes for a context encoder: rows original | masked |
    inpainted | 2×|difference|, each labelled on its left (:func:`~cxr_monai.visualize.inpainting_grid`, the layout
    of seed 001 Fig. 4). ``hole_size``, ``fill_value`` and ``overlap`` must match training.

    Example::

        ImageGridSaver(val_dataset, "runs/ce/grids", grid=InpaintingGrid(generator, fill_value=0.5)).attach(trainer)
    """

    def __init__(
        self,
        network: torch.nn.Module,
        hole_size: int = 64,
        fill_value: float | str = CONTEXT_MEAN,
        overlap: int = 0,
        image_key: str = "image",
    ) -> None:
        self.network = network
        self.hole = {"hole_size": hole_size, "fill_value": fill_value, "overlap": overlap}
        self.image_key = image_key

    def __call__(self, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
        patches = torch.stack([_plain(sample[self.image_key]).float() for sample in samples])
        network = getattr(self.network, "module", self.network)
        inpainted = inpaint_patches(network, patches, **self.hole)
        return inpainting_grid(patches, mask_patches(patches, **self.hole), inpainted)


_INDEX_FIELDS = ("image", "kind", "patch", "path", "note")


def _patch_note(sample: Mapping[str, Any]) -> str:
    """``patch_box [x_min, y_min, x_max, y_max]`` and ``; box_label <label>`` of a patch sample, as far as known."""
    parts = []
    if sample.get("patch_box") is not None:
        parts.append(f"patch_box {np.asarray(sample['patch_box']).astype(int).tolist()}")
    label = sample.get("box_label")
    if label is not None:
        parts.append(f"box_label {label.item() if hasattr(label, 'item') else label}")
    return "; ".join(parts)


class InpaintingInference:
    """Runner of the bundle's ``inference.json``: inpainted patches, difference maps, heatmaps, as files.

    For each of the first ``max_images`` datalist entries the image is preprocessed once (``preprocessing``: load
    -> working resolution -> lung boxes, giving ``image`` ``(1, H, W)`` in [0, 1] and ``lung_boxes``), then:

    - with a ``patch_transform`` (e.g. :class:`~cxr_monai.transforms.RandLungPatchd`, reseeded per image with
      ``seed + index``): each patch ``k`` is inpainted and written as ``patches/<stem>_<k>_original.png`` (the
      patch as cut, before inpainting), ``patches/<stem>_<k>_inpainted.png`` and ``patches/<stem>_<k>_diff.png``
      (2 x |difference|, seed 001 Fig. 4), plus ``grids/<stem>_grid.png`` (one column per patch: original | masked
      | inpainted | 2 x |difference|) and ``images/<stem>_image.png``, the preprocessed working radiograph the
      patches were cut from. Each patch row's note gives ``patch_box [x_min, y_min, x_max, y_max]`` (x = column,
      y = row; the patch is ``image[y_min:y_max, x_min:x_max]`` of that working radiograph) and, when the patch
      transform records one, ``; box_label <label>``. Original, inpainted and working image go through the same
      :func:`~cxr_monai.visualize.save_png` (8-bit, [0, 1] -> 0..255), so pasting an inpainted patch into the
      working image at its ``patch_box`` gives the full radiograph with that patch inpainted, identical to the
      working image outside the hole: the 2AFC pairs of seed 001 §4.3. When the patches are not crops of the
      preprocessed image at their ``patch_box`` (a patch transform that changes the image before cutting), the
      working image is not written and a ``skipped`` row says why;
    - with ``heatmaps=True``: :class:`AnomalyHeatmapInferer` over the lung boxes (``stride``, ``batch_size``,
      ``box_margin`` as there), written as
      ``heatmaps/<stem>_heatmap.npy`` (``(H, W)`` float32 at the working resolution, NaN where no window centre
      reaches) and ``heatmaps/<stem>_overlay.png`` (the heatmap over the radiograph, coloured up to
      ``overlay_vmax``, or each image's 99th percentile when ``None``; set it to compare images by eye). An image
      whose lung boxes cannot hold a window gets no heatmap; the reason, naming the file, is logged and listed in
      the index. With ``image_score_quantile`` set, each heatmap also gives the image one anomaly score
      (:func:`lung_image_score`: that quantile over the lung mask, or the boxes), and ``image_scores.csv`` ranks
      the images by it, highest first: the order in which to look at a screened folder.

    ``index.csv`` (columns ``image, kind, patch, path, note``) lists every file written, paths relative to
    ``output_dir``, and every skipped heatmap. Kinds: ``original``, ``inpainted``, ``diff`` (per patch), ``image``,
    ``grid``, ``heatmap``, ``overlay`` (per image), ``skipped``. Output names come from the image file stem only.

    An image that cannot be read or cut into patches is skipped: a warning names the file and the reason, and
    ``skipped.csv`` (``stage, image, reason``) lists it; the run stops with
    :class:`~cxr_monai.data.robust.TooManySkippedError` only when more than ``max_skipped_fraction`` of the images
    are skipped.

    Example::

        runner = InpaintingInference(generator, load_datalist("phantom/datalist.json", "test"), preprocessing,
                                     "runs/ce/inference", patch_transform=RandLungPatchd("image", num_samples=8))
        index_csv = runner.run()
    """

    def __init__(
        self,
        generator: Generator,
        datalist: Sequence[Mapping[str, Any]],
        preprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]],
        output_dir: str | os.PathLike,
        patch_transform: Callable[[Mapping[str, Any]], Any] | None = None,
        device: torch.device | str | None = None,
        window_size: int = 128,
        hole_size: int = 64,
        stride: int = 32,
        batch_size: int = 32,
        fill_value: float | str = CONTEXT_MEAN,
        overlap: int = 0,
        box_margin: int = 0,
        heatmaps: bool = True,
        max_images: int | None = None,
        seed: int = 0,
        image_key: str = "image",
        boxes_key: str = "lung_boxes",
        difference_gain: float = 2.0,
        overlay_vmax: float | None = None,
        amp: bool = True,
        image_score_quantile: float | None = 0.95,
        mask_key: str = "lung_mask",
        max_skipped_fraction: float = 0.05,
    ) -> None:
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.generator = generator.to(self.device) if isinstance(generator, torch.nn.Module) else generator
        self.datalist = datalist
        self.preprocessing = preprocessing
        self.output_dir = Path(output_dir)
        self.patch_transform = patch_transform
        self.hole_size, self.fill_value, self.overlap = hole_size, fill_value, overlap
        self.batch_size = int(batch_size)
        self.heatmaps = heatmaps
        self.max_images = max_images
        self.seed = int(seed)
        self.image_key, self.boxes_key = image_key, boxes_key
        self.difference_gain = difference_gain
        self.overlay_vmax = overlay_vmax
        self.amp = amp
        self.image_score_quantile, self.mask_key = image_score_quantile, mask_key
        self.image_scores: list[dict[str, Any]] = []
        self.max_skipped_fraction = float(max_skipped_fraction)
        self.skip_log: SkipLog | None = None
        self.inferer = AnomalyHeatmapInferer(
            window_size, hole_size, stride, batch_size, fill_value, overlap, box_margin, device=self.device, amp=amp
        )

    def run(self) -> Path:
        """Process the datalist; returns the path of ``index.csv``."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        index_path = self.output_dir / "index.csv"
        images = 0
        self.image_scores = []
        self.skip_log = SkipLog(self.output_dir / "skipped.csv", self.max_skipped_fraction)
        with open(index_path, "w", newline="", encoding="utf-8") as index_file:
            index = csv.DictWriter(index_file, fieldnames=_INDEX_FIELDS)
            index.writeheader()
            for item in iterate_images(self.datalist, self.preprocessing, self.patch_transform, self.seed,
                                       self.max_images, self.image_key, self.skip_log, "inference"):
                stem = item.stem
                rows = self._write_patches(stem, item.data, item.patches)
                if self.heatmaps:
                    rows += self._write_heatmap(stem, item.data)
                index.writerows(rows)
                index_file.flush()
                images += 1
                logger.info("inference %d: %s, %d outputs", images, stem, sum(r["kind"] != "skipped" for r in rows))
        if self.image_scores:
            scores_path = self.output_dir / "image_scores.csv"
            ranked = sorted(self.image_scores, key=lambda row: -row["image_score"])
            with open(scores_path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=("rank", "image", "image_score", "region", "overlay"))
                writer.writeheader()
                writer.writerows({"rank": rank, **row} for rank, row in enumerate(ranked, start=1))
            logger.info("images ranked by anomaly score in %s", scores_path)
        logger.info("inference outputs of %d images in %s (index: %s)", images, self.output_dir, index_path)
        if self.skip_log.count():
            logger.warning("%d images skipped, listed in %s", self.skip_log.count(), self.skip_log.path)
        return index_path

    def _row(self, stem: str, kind: str, path: Path | None = None, patch: int | str = "", note: str = "") -> dict:
        relative = path.relative_to(self.output_dir).as_posix() if path is not None else ""
        return {"image": stem, "kind": kind, "patch": patch, "path": relative, "note": note}

    def _write_patches(self, stem: str, data: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> list[dict]:
        if self.patch_transform is None:
            return []
        if not samples:
            return [self._row(stem, "skipped", note="no patches: the patch transform gave none for this image "
                              "(e.g. box-centred patches of an image without boxes)")]
        patches = stack_patches(samples, self.image_key)
        centres = inpaint_centres(self.generator, patches, self.hole_size, self.fill_value, self.overlap,
                                  self.batch_size, self.device, self.amp)
        inpainted = paste_centres(patches, centres)
        differences = difference_map(patches, inpainted, self.difference_gain)
        folder = self.output_dir / "patches"
        rows = []
        for k, sample in enumerate(samples):
            note = _patch_note(sample)
            rows.append(self._row(stem, "original", save_png(patches[k, 0], folder / f"{stem}_{k}_original.png"),
                                  k, note))
            rows.append(self._row(stem, "inpainted", save_png(inpainted[k, 0], folder / f"{stem}_{k}_inpainted.png"),
                                  k, note))
            rows.append(self._row(stem, "diff", save_png(differences[k, 0], folder / f"{stem}_{k}_diff.png"), k, note))
        rows.append(self._write_working_image(stem, data, samples, patches))
        masked = _mask(patches, self.inferer.hole)
        grid = inpainting_grid(patches, masked, inpainted, gain=self.difference_gain)
        grid_path = save_png(grid, self.output_dir / "grids" / f"{stem}_grid.png")
        rows.append(self._row(stem, "grid", grid_path, note=f"{len(samples)} patches, rows: original | masked | "
                              f"inpainted | {self.difference_gain:g}x|difference|"))
        return rows

    def _write_working_image(self, stem: str, data: Mapping[str, Any], samples: Sequence[Mapping[str, Any]],
                             patches: torch.Tensor) -> dict:
        """``images/<stem>_image.png``, the preprocessed radiograph, once its patches are checked to be its crops at
        their ``patch_box``; a ``skipped`` row otherwise."""
        image = _plain(data[self.image_key]).detach().float().cpu()
        image = image[None] if image.ndim == 2 else image
        height, width = image.shape[-2:]
        for k, sample in enumerate(samples):
            where = sample.get("patch_box")
            reason = "it has no patch_box" if where is None else ""
            if where is not None:
                x0, y0, x1, y1 = (int(v) for v in np.asarray(where).reshape(-1)[:4])
                crop = image[:1, y0:y1, x0:x1] if 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height else None
                if crop is None or crop.shape != patches[k, :1].shape or not torch.equal(crop, patches[k, :1]):
                    reason = f"it is not the {width}x{height} preprocessed image's crop at patch_box {[x0, y0, x1, y1]}"
            if reason:
                return self._row(stem, "skipped", note=f"no working image: patch {k}: {reason} (the patch transform "
                                 "must cut the preprocessed image as it is)")
        path = save_png(image[0], self.output_dir / "images" / f"{stem}_image.png")
        return self._row(stem, "image", path, note=f"{width}x{height} px (working resolution), the image the "
                         "patches were cut from; patch_box [x_min, y_min, x_max, y_max] in its pixels")

    def _write_heatmap(self, stem: str, data: Mapping[str, Any]) -> list[dict]:
        image = data[self.image_key]
        source = source_name(image, data, self.image_key)
        if data.get(self.boxes_key) is None:
            raise KeyError(f"{source}: no '{self.boxes_key}' after preprocessing; add LungBoxesd to it.")
        try:
            result = self.inferer(image, self.generator, data[self.boxes_key], source=source)
        except NoWindowError as error:
            logger.warning("no heatmap for %s: %s", stem, error)
            return [self._row(stem, "skipped", note=f"no heatmap: {error}")]
        folder = self.output_dir / "heatmaps"
        folder.mkdir(parents=True, exist_ok=True)
        array_path = folder / f"{stem}_heatmap.npy"
        np.save(array_path, result.heatmap.numpy())
        overlay = heatmap_overlay(_plain(image)[0].cpu(), result.heatmap, vmax=self.overlay_vmax)
        overlay_path = save_png(overlay, folder / f"{stem}_overlay.png")
        height, width = result.heatmap.shape
        scale = "per-image colour scale" if self.overlay_vmax is None else f"colour scale 0-{self.overlay_vmax:g}"
        note = f"{width}x{height} px (working resolution), {len(result.windows)} windows, {scale}"
        rows = [self._row(stem, "heatmap", array_path, note=note), self._row(stem, "overlay", overlay_path, note=note)]
        if self.image_score_quantile is not None:
            try:
                score, region = lung_image_score(result.heatmap, data.get(self.mask_key), self.image_score_quantile)
            except NoWindowError as error:
                logger.warning("no image score for %s: %s", stem, error)
                return rows + [self._row(stem, "skipped", note=f"no image score: {error}")]
            self.image_scores.append({"image": stem, "image_score": score, "region": region,
                                      "overlay": rows[1]["path"]})
        return rows
