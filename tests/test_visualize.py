"""Figures: PNG writing, difference maps, inpainting grids, heatmap overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_monai.visualize import difference_map, heatmap_overlay, inpainting_grid, save_png

RAMP = np.array([[0, 64, 128, 255]], dtype=np.uint8)


@pytest.mark.parametrize("image", [RAMP, torch.from_numpy(RAMP), RAMP[None], RAMP / 255.0,
                                   torch.from_numpy(RAMP / 255.0)[None].float()],
                         ids=["numpy-uint8", "torch-uint8", "numpy-uint8-channel-first", "float", "torch-float-chw"])
def test_save_png_keeps_values_and_shape(image, tmp_path):
    path = save_png(image, tmp_path / "sub" / "ramp.png")
    with Image.open(path) as written:
        assert written.mode == "L"
        np.testing.assert_array_equal(np.asarray(written), RAMP)


def test_save_png_writes_rgb_uint8(tmp_path):
    rgb = np.zeros((3, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    with Image.open(save_png(rgb, tmp_path / "rgb.png")) as written:
        assert written.mode == "RGB" and np.asarray(written)[0, 0].tolist() == [200, 0, 0]


def test_difference_map_and_grid_layout():
    original = torch.full((2, 1, 8, 8), 0.5)
    inpainted = original.clone()
    inpainted[1, 0, 2:6, 2:6] = 0.1
    np.testing.assert_allclose(difference_map(original, inpainted).max(), 0.8, rtol=1e-6)  # 2 x 0.4
    grid = inpainting_grid(original, original, inpainted, pad=2, labels=False)
    assert grid.shape == (4 * 10 + 2, 2 * 10 + 2)
    difference_row = grid[2 + 3 * 10 : 2 + 3 * 10 + 8]
    assert difference_row[:, 2:10].max() == 0.0  # first sample: inpainted == original
    np.testing.assert_allclose(difference_row[2:6, 14:18], 0.8, rtol=1e-6)
    assert (grid[:2] == 1.0).all()  # white padding


def test_grid_rows_carry_their_labels():
    """Each row's label is drawn beside that row, in a white column left of the patches; the patches are unchanged."""
    patches = torch.full((3, 1, 64, 64), 0.5)
    bare = inpainting_grid(patches, patches, patches, pad=2, labels=False)
    labelled = inpainting_grid(patches, patches, patches, pad=2)
    width = labelled.shape[1] - bare.shape[1]
    assert labelled.shape[0] == bare.shape[0] and width > 30
    np.testing.assert_array_equal(labelled[:, width:], bare)
    column = labelled[:, :width]
    for row in range(4):  # ink in every row's band, none in the padding between rows
        top = 2 + row * 66
        assert column[top : top + 64].min() < 0.5
        assert (column[top - 2 : top] == 1.0).all()
    short = inpainting_grid(patches, patches, patches, labels=["a", "b", "c", "d"])
    assert short.shape[1] < labelled.shape[1]  # the column fits the longest label
    with pytest.raises(ValueError, match="4 row labels"):
        inpainting_grid(patches, patches, patches, labels=["a", "b"])


def test_heatmap_overlay_leaves_uncovered_pixels_as_the_radiograph():
    image = np.full((4, 4), 0.25)
    heat = np.full((4, 4), np.nan)
    heat[1, 1], heat[2, 2] = 1.0, 0.0
    overlay = heatmap_overlay(image, heat, vmax=1.0)
    grey = round(0.25 * 255)
    assert overlay.dtype == np.uint8 and overlay.shape == (4, 4, 3)
    assert (overlay[0, 0] == grey).all() and (overlay[2, 2] == grey).all()  # NaN and zero heat: radiograph only
    assert len(set(overlay[1, 1].tolist())) > 1  # the hot pixel is coloured
    with pytest.raises(ValueError, match="same shape"):
        heatmap_overlay(image, heat[:3])
