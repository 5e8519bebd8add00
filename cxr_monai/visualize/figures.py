"""Difference maps, inpainting grids, heatmap and mask overlays, labelled figure rows, written as plain PNGs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = [
    "difference_map",
    "heatmap_overlay",
    "inpainting_grid",
    "labelled_row",
    "mask_overlay",
    "save_png",
    "stack_rows",
    "to_uint8",
]


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def to_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """[0, 1] floats (any shape) to uint8, clipped."""
    return (np.clip(_to_numpy(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def difference_map(original: np.ndarray | torch.Tensor, inpainted: np.ndarray | torch.Tensor, gain: float = 2.0):
    """``gain * |original − inpainted|`` clipped to [0, 1], as in seed 001 Fig. 4 (gain 2).

    Example::

        >>> float(difference_map(np.full((4, 4), 0.5), np.full((4, 4), 0.25)).max())
        0.5
    """
    return np.clip(gain * np.abs(_to_numpy(original) - _to_numpy(inpainted)), 0.0, 1.0)


def inpainting_grid(
    image: np.ndarray | torch.Tensor,
    masked: np.ndarray | torch.Tensor,
    inpainted: np.ndarray | torch.Tensor,
    gain: float = 2.0,
    pad: int = 2,
    labels: bool | Sequence[str] = True,
) -> np.ndarray:
    """Grid of patches in [0, 1]: one column per sample, rows original | masked | inpainted | gain×|difference|.

    Inputs are ``(B, 1, H, W)`` or ``(B, H, W)``; returns a float ``(rows, cols)`` image with white padding. With
    ``labels`` (default) a white column on the left names each row (``original``, ``masked``, ``inpainted``,
    ``2x|difference|``; or four names of one's own) in black, so a grid found in an MLflow run or an output folder
    explains itself.

    Example::

        >>> inpainting_grid(np.zeros((3, 1, 8, 8)), np.zeros((3, 1, 8, 8)), np.ones((3, 1, 8, 8)), labels=False).shape
        (42, 32)
    """
    rows = [_to_numpy(a) for a in (image, masked, inpainted)]
    rows.append(difference_map(rows[0], rows[2], gain))
    rows = [r[:, 0] if r.ndim == 4 else r for r in rows]
    n, h, w = rows[0].shape
    grid = np.ones((4 * (h + pad) + pad, n * (w + pad) + pad), dtype=np.float32)
    for r, row in enumerate(rows):
        for c in range(n):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y : y + h, x : x + w] = row[c]
    if labels is False:
        return grid
    names = ("original", "masked", "inpainted", f"{gain:g}x|difference|") if labels is True else tuple(labels)
    if len(names) != 4:
        raise ValueError(f"inpainting_grid needs 4 row labels, got {len(names)}: {names}")
    return np.concatenate([_label_column(names, h, pad, grid.shape[0]), grid], axis=1)


def _label_column(names: Sequence[str], row_height: int, pad: int, height: int) -> np.ndarray:
    """A white ``(height, width)`` float column with ``names[r]`` in black, centred on row ``r`` of the grid."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default(size=int(np.clip(row_height // 8, 10, 24)))
    boxes = [font.getbbox(name) for name in names]
    width = max(box[2] - box[0] for box in boxes) + 2 * pad + 4
    column = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(column)
    for r, (name, box) in enumerate(zip(names, boxes)):
        centre = pad + r * (row_height + pad) + row_height / 2
        draw.text((pad + 2 - box[0], centre - (box[1] + box[3]) / 2), name, fill=0, font=font)
    return np.asarray(column, dtype=np.float32) / 255.0


def heatmap_overlay(
    image: np.ndarray | torch.Tensor,
    heatmap: np.ndarray | torch.Tensor,
    alpha: float = 0.5,
    vmax: float | None = None,
    colormap: str = "inferno",
) -> np.ndarray:
    """RGB uint8 overlay of a non-negative ``heatmap`` on a grey ``image`` (both ``(H, W)``, image in [0, 1]).

    Pixels where the heatmap is NaN (not covered) show the radiograph only. ``vmax`` defaults to the 99th
    percentile of the covered heatmap, so one hot pixel does not wash out the rest.

    Example::

        >>> heatmap_overlay(np.zeros((4, 4)), np.ones((4, 4))).shape
        (4, 4, 3)
    """
    from matplotlib import colormaps

    grey = np.clip(_to_numpy(image), 0.0, 1.0)
    heat = _to_numpy(heatmap)
    if grey.shape != heat.shape:
        raise ValueError(f"image {grey.shape} and heatmap {heat.shape} must have the same shape")
    covered = np.isfinite(heat)
    if vmax is None:
        vmax = float(np.percentile(heat[covered], 99)) if covered.any() else 1.0
    scaled = np.clip(np.where(covered, heat, 0.0) / max(vmax, 1e-8), 0.0, 1.0)
    colour = colormaps[colormap](scaled)[..., :3]
    weight = (alpha * covered * scaled)[..., None]
    rgb = (1.0 - weight) * grey[..., None] + weight * colour
    return to_uint8(rgb)


def save_png(image: np.ndarray | torch.Tensor, path: str | os.PathLike) -> Path:
    """Save ``(H, W)`` or ``(1, H, W)`` floats in [0, 1] or uint8 (numpy or torch), or ``(H, W, 3)`` uint8, as a PNG;
    creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.dtype in (np.uint8, torch.uint8):
        array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    else:
        array = to_uint8(image)
    if array.ndim == 3 and array.shape[0] == 1:  # (1, H, W): one channel, channel first
        array = array[0]
    Image.fromarray(array).save(path)
    return path


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask (foreground pixels with a background 4-neighbour)."""
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def mask_overlay(
    image: np.ndarray | torch.Tensor,
    masks: Sequence[np.ndarray | torch.Tensor],
    colours: Sequence[tuple[int, int, int]] = ((255, 64, 64), (64, 255, 64)),
    fill: float = 0.25,
    thickness: int = 2,
) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of a grey ``image`` (``(H, W)`` or ``(1, H, W)`` in [0, 1]) with each mask's outline
    in its colour (default red, then green: prediction, then reference) and its area tinted by ``fill``.

    Example::

        >>> mask = np.zeros((8, 8), bool); mask[2:6, 2:6] = True
        >>> mask_overlay(np.zeros((8, 8)), [mask], thickness=1)[2, 2].tolist()
        [255, 64, 64]
    """
    from scipy import ndimage

    grey = np.clip(_to_numpy(image).squeeze(), 0.0, 1.0)
    rgb = np.repeat(grey[..., None] * 255.0, 3, axis=-1)
    for mask, colour in zip(masks, colours):
        binary = _to_numpy(mask).squeeze() > 0.5
        if binary.shape != grey.shape:
            raise ValueError(f"image {grey.shape} and mask {binary.shape} must have the same shape")
        colour_array = np.asarray(colour, dtype=np.float32)
        rgb[binary] = (1.0 - fill) * rgb[binary] + fill * colour_array
        edge = _outline(binary)
        if thickness > 1:
            edge = ndimage.binary_dilation(edge, iterations=thickness - 1) & binary
        rgb[edge] = colour_array
    return (rgb + 0.5).clip(0, 255).astype(np.uint8)


def labelled_row(tiles: Sequence[np.ndarray], label: str, pad: int = 2) -> np.ndarray:
    """RGB uint8 tiles of one height side by side, with ``label`` in a white column on the left."""
    from PIL import ImageDraw, ImageFont

    height = max(tile.shape[0] for tile in tiles)
    rgb_tiles = []
    for tile in tiles:
        tile = tile if tile.ndim == 3 else np.repeat(to_uint8(tile)[..., None], 3, axis=-1)
        tile = np.pad(tile, ((0, height - tile.shape[0]), (0, pad), (0, 0)), constant_values=255)
        rgb_tiles.append(tile)
    row = np.concatenate(rgb_tiles, axis=1)
    font = ImageFont.load_default(size=int(np.clip(height // 12, 10, 24)))
    width = max(80, int(font.getlength(max(label.split("\n"), key=len))) + 8)
    column = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(column).multiline_text((4, 4), label, fill=(0, 0, 0), font=font)
    return np.concatenate([np.asarray(column), row], axis=1)


def stack_rows(rows: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Rows of one figure (RGB uint8) stacked top to bottom, right-padded white to the widest."""
    width = max(row.shape[1] for row in rows)
    padded = [np.pad(row, ((0, pad), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    return np.concatenate(padded, axis=0)
