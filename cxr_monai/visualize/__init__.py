"""Figures: difference maps, inpainting grids, heatmap and mask overlays, labelled rows, PNG writing."""

from cxr_monai.visualize.figures import (
    difference_map,
    heatmap_overlay,
    inpainting_grid,
    labelled_row,
    mask_overlay,
    save_png,
    stack_rows,
    to_uint8,
)

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
