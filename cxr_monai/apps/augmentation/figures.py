"""The figure of seed 002 Fig. 2: one row per image set (Real, Pix2Pix, Pix2Pix-N, ...), one column per pathology, the
pathology's box drawn on each image.

:func:`augmentation_grid` picks, for each pathology, a real image that every synthetic set made synthetic images of
(matched by the synthetic entries' ``source``), so a column shows one radiograph and what each generator made around
its box; where no such image exists the column takes any real and any synthetic image with a box of the class. Boxes
are ``[x_min, y_min, x_max, y_max]`` in the pixels of each entry's own image, drawn after resizing it to the tile.

Example::

    real = load_datalist("boxes.json", ["training", "test"], base_dir="/data/nih/images")
    synthetic = {"Pix2Pix": load_datalist("runs/p2p/synthetic/synthetic.json", "training"),
                 "Pix2Pix-N": load_datalist("runs/p2pn/synthetic/synthetic.json", "training")}
    write_augmentation_grid("fig2.png", real, synthetic, classes=["Atelectasis", "Effusion"])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cxr_monai.transforms.boxes import box_mask
from cxr_monai.transforms.resolution import scale_boxes
from cxr_monai.visualize import labelled_row, mask_overlay, save_png, stack_rows

__all__ = ["augmentation_grid", "write_augmentation_grid"]

REAL_ROW = "Real"


def _key(path: Any) -> str:
    return os.path.normpath(os.path.abspath(str(path)))


def _with_label(entries: Sequence[Mapping[str, Any]], label: str) -> list[Mapping[str, Any]]:
    return [entry for entry in entries if label in (entry.get("box_labels") or [])]


def _tile(entry: Mapping[str, Any] | None, label: str, size: int) -> np.ndarray:
    """The entry's image resized to ``size`` x ``size`` with its boxes of ``label`` outlined in red; grey when
    ``entry`` is ``None`` (no image of the class in that set)."""
    if entry is None:
        return np.full((size, size, 3), 200, dtype=np.uint8)
    from cxr_monai.io import LoadCXRImaged

    image = np.asarray(LoadCXRImaged(keys="image", ensure_channel_first=True)({"image": entry["image"]})["image"])[0]
    resized = np.asarray(Image.fromarray(image.astype(np.float32)).resize((size, size), Image.BILINEAR))
    boxes = [box for box, name in zip(entry["boxes"], entry["box_labels"]) if name == label]
    scaled = scale_boxes(boxes, image.shape, (size, size))
    return mask_overlay(resized, [box_mask(scaled, (size, size))], fill=0.0, thickness=2)


def _title(text: str, width: int, height: int) -> np.ndarray:
    font = ImageFont.load_default(size=int(np.clip(height * 0.6, 10, 24)))
    tile = Image.new("RGB", (width, height), (255, 255, 255))
    left, top, right, bottom = font.getbbox(text)
    ImageDraw.Draw(tile).text(((width - right - left) / 2, (height - bottom - top) / 2), text, fill=(0, 0, 0),
                              font=font)
    return np.asarray(tile)


def _columns(real: Sequence[Mapping[str, Any]], synthetic: Mapping[str, Sequence[Mapping[str, Any]]],
             label: str) -> list[Mapping[str, Any] | None]:
    """One entry per row for the column of ``label``: the real image whose synthetic images every set has, when there
    is one; else the first real and the first synthetic image with a box of ``label``."""
    real_by_path = {_key(entry["image"]): entry for entry in _with_label(real, label)}
    per_set = {name: _with_label(entries, label) for name, entries in synthetic.items()}
    shared = set(real_by_path)
    for entries in per_set.values():
        shared &= {_key(entry.get("source", "")) for entry in entries}
    if shared:
        source = min(shared)
        return [real_by_path[source], *(next(e for e in entries if _key(e.get("source", "")) == source)
                                         for entries in per_set.values())]
    first_real = next(iter(real_by_path.values()), None)
    return [first_real, *(entries[0] if entries else None for entries in per_set.values())]


def augmentation_grid(
    real: Sequence[Mapping[str, Any]],
    synthetic: Mapping[str, Sequence[Mapping[str, Any]]],
    classes: Sequence[str] | None = None,
    tile_size: int = 192,
    pad: int = 2,
) -> np.ndarray:
    """RGB uint8 grid: a header row of the class names, then the row ``Real`` and one row per synthetic set (in the
    order of ``synthetic``), each labelled on the left; ``tile_size`` px square tiles with ``pad`` px white between.

    ``real`` / ``synthetic[name]``: loaded datalist entries (absolute ``image``, ``boxes``, ``box_labels``; synthetic
    ones with ``source``). ``classes``: the columns (default: the box labels of ``real``, sorted). A set without an
    image of a class shows a grey tile there.
    """
    if classes is None:
        classes = sorted({label for entry in real for label in entry.get("box_labels") or []})
    if not classes:
        raise ValueError("no class to show: the real entries have no box_labels and no classes were given")
    columns = [_columns(real, synthetic, label) for label in classes]
    names = [REAL_ROW, *synthetic]
    rows = [labelled_row([_tile(column[row], label, tile_size) for column, label in zip(columns, classes)],
                         name, pad) for row, name in enumerate(names)]
    label_width = rows[0].shape[1] - len(classes) * (tile_size + pad)
    header_height = int(np.clip(tile_size // 8, 16, 32))
    header = np.concatenate([np.full((header_height, label_width, 3), 255, dtype=np.uint8),
                             *(np.pad(_title(label, tile_size, header_height), ((0, 0), (0, pad), (0, 0)),
                                      constant_values=255) for label in classes)], axis=1)
    return stack_rows([header, *rows], pad)


def write_augmentation_grid(
    path: str | os.PathLike,
    real: Sequence[Mapping[str, Any]],
    synthetic: Mapping[str, Sequence[Mapping[str, Any]]],
    classes: Sequence[str] | None = None,
    tile_size: int = 192,
) -> Path:
    """:func:`augmentation_grid` written as a PNG at ``path`` (folder created); returns the path."""
    return save_png(augmentation_grid(real, synthetic, classes, tile_size), path)
