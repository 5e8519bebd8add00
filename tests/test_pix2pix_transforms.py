"""Transforms and the generator wrapper of pathology-preserving pix2pix (seed 002): box masks, random boxes for healthy
images, ``x = y ⊙ m``, ``x̃ = x + G ⊙ (1 − m)``, resizing with boxes; one training pair per annotation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cxr_monai.apps.augmentation import one_entry_per_box, samples_per_box
from cxr_monai.networks import PathologyPreservingGenerator, SelfAttentionUNet, enable_dropout
from cxr_monai.transforms import (
    BoxMask,
    BoxMaskd,
    KeepBoxes,
    KeepBoxesd,
    PastePathology,
    PastePathologyd,
    RandBox,
    RandBoxd,
    ResizeWithBoxes,
    ResizeWithBoxesd,
    box_mask,
)


def _boxed_image(size=(64, 96), box=(20, 10, 50, 30)) -> tuple[torch.Tensor, list]:
    """A smooth ramp with a bright block where the box is: the block must follow the box through a resize."""
    height, width = size
    image = torch.linspace(0, 0.4, width).repeat(height, 1)[None].clone()
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = 1.0
    return image, [list(box)]


def test_box_mask_covers_partly_covered_pixels_and_clips_to_the_image():
    mask = box_mask([[1.5, 0, 3, 2], [6, 3, 9, 5]], (4, 8))
    assert mask[:2, 1:3].all() and mask[:2].sum() == 4  # columns 1 (half covered) and 2
    assert mask[3, 6:].all() and mask.sum() == 6  # the second box is cut at the image's edge


def test_box_mask_transform_is_a_float_mask_on_the_image_grid_with_its_meta():
    image = MetaTensor(torch.zeros(1, 8, 10), meta={"filename_or_obj": "a.png"})
    mask = BoxMask()(image, [[2, 1, 5, 3]])
    assert mask.shape == (1, 8, 10) and mask.dtype == torch.float32
    assert mask.sum() == 6 and mask.meta["filename_or_obj"] == "a.png"
    assert BoxMask()(image, []).sum() == 0
    with pytest.raises(ValueError, match="a.png.*beyond"):
        BoxMask()(image, [[2, 1, 50, 3]])
    out = BoxMaskd("boxes", mask_keys="pathology")({"image": image, "boxes": [[0, 0, 2, 2]]})
    assert out["pathology"].sum() == 4


def test_keep_boxes_and_paste_pathology_are_exact():
    y = torch.rand(2, 1, 16, 16) * 2 - 1
    m = torch.zeros(2, 1, 16, 16)
    m[0, :, 2:6, 3:9] = 1
    m[1, :, 8:, :4] = 1
    x = KeepBoxes()(y, m)
    assert torch.equal(x[m.bool()], y[m.bool()]) and (x[~m.bool()] == 0).all()
    g = torch.rand(2, 1, 16, 16) * 2 - 1
    composed = PastePathology()(x, g, m)
    assert torch.equal(composed[m.bool()], y[m.bool()])  # the box: the real pixels, bit for bit
    assert torch.equal(composed[~m.bool()], g[~m.bool()])  # elsewhere: the generator's
    np.testing.assert_array_equal(KeepBoxes()(y[0].numpy(), m[0].numpy()), x[0].numpy())  # numpy in, numpy out


def test_paste_pathology_passes_gradients_only_outside_the_box():
    x = torch.zeros(1, 1, 8, 8)
    m = torch.zeros(1, 1, 8, 8)
    m[..., 2:5, 2:5] = 1
    g = torch.randn(1, 1, 8, 8, requires_grad=True)
    PastePathology()(x, g, m).sum().backward()
    assert (g.grad[m.bool()] == 0).all() and (g.grad[~m.bool()] == 1).all()


def test_dictionary_versions_compose_the_pair():
    image = torch.rand(1, 12, 12)
    data = BoxMaskd("boxes")({"image": image, "boxes": [[2, 2, 6, 6]]})
    data = KeepBoxesd("image", output_keys="masked")(data)
    assert torch.equal(data["image"], image) and data["masked"][0, 2:6, 2:6].equal(image[0, 2:6, 2:6])
    data["pred"] = torch.full((1, 12, 12), -1.0)
    out = PastePathologyd("pred", output_keys="composed")(data)
    assert out["composed"][0, 2:6, 2:6].equal(image[0, 2:6, 2:6]) and out["composed"][0, 0, 0] == -1
    with pytest.raises(KeyError, match="box_mask"):
        KeepBoxesd("image")({"image": image})


def test_resize_keeps_the_boxes_on_the_same_anatomy():
    image, boxes = _boxed_image()
    resized, scaled = ResizeWithBoxes((32, 32))(image, boxes)
    assert resized.shape == (1, 32, 32)
    np.testing.assert_allclose(scaled, [[20 / 3, 5.0, 50 / 3, 15.0]], rtol=1e-6)
    touched = torch.from_numpy(box_mask(scaled, (32, 32)))
    covered = torch.from_numpy(box_mask([[7, 5, 16, 15]], (32, 32)))  # the pixels the scaled box covers whole
    assert (resized[0][covered] > 0.99).all()  # the block is where the box went ...
    assert (resized[0][~touched] < 0.41).all()  # ... and nowhere else

    data = {"image": MetaTensor(image), "lung_mask": MetaTensor((image > 0.9).float()), "boxes": boxes,
            "lung_boxes": [[0, 0, 96, 64]]}
    transform = ResizeWithBoxesd(["image", "lung_mask"], 32, box_keys=["boxes", "lung_boxes"],
                                 mode=["area", "nearest-exact"])
    out = transform(data)
    assert out["image"].shape == out["lung_mask"].shape == (1, 32, 32)
    assert set(out["lung_mask"].unique().tolist()) == {0.0, 1.0}  # nearest: still a mask
    assert out["lung_boxes"].tolist() == [[0.0, 0.0, 32.0, 32.0]]
    back = transform.inverse(out)
    assert back["image"].shape == (1, 64, 96)
    np.testing.assert_allclose(back["boxes"], boxes, atol=1e-4)
    with pytest.raises(ValueError, match="beyond"):
        ResizeWithBoxesd("image", 32)({"image": image, "boxes": [[0, 0, 200, 10]]})


def test_rand_box_lies_inside_the_lungs():
    lungs = torch.zeros(1, 128, 128)
    lungs[:, 20:110, 10:58] = 1
    lungs[:, 20:110, 70:118] = 1
    sampler = RandBox(width_range=(0.1, 0.3), height_range=(0.1, 0.3)).set_random_state(0)
    for _ in range(50):
        (x0, y0, x1, y1), = sampler(torch.zeros(1, 128, 128), lung_mask=lungs)
        assert 10 <= x0 < x1 <= 118 and 20 <= y0 < y1 <= 110
        assert 0.1 * 128 - 1 <= x1 - x0 <= 0.3 * 128 + 1 and 0.1 * 128 - 1 <= y1 - y0 <= 0.3 * 128 + 1
        centre_row, centre_col = int(y0 + (y1 - y0) // 2), int(x0 + (x1 - x0) // 2)
        assert lungs[0, centre_row, centre_col] == 1  # centred on lung, never on the mediastinum gap
    box = RandBox().set_random_state(1)(torch.zeros(1, 100, 100), lung_boxes=[[60, 10, 90, 80]])
    assert 60 <= box[0, 0] and box[0, 2] <= 90 and 10 <= box[0, 1] and box[0, 3] <= 80
    sampler = RandBox((0.3, 0.4), (0.3, 0.4), central_region=(0.4, 0.4, 0.6, 0.6)).set_random_state(2)
    box = sampler(torch.zeros(1, 100, 100))
    assert box.tolist() == [[40.0, 40.0, 60.0, 60.0]]  # sides longer than the region are cut to it


def test_rand_box_dict_fills_only_entries_without_boxes_and_is_seeded():
    image = torch.zeros(1, 64, 64)
    healthy = RandBoxd("image").set_random_state(3)({"image": image, "lung_boxes": [[4, 4, 60, 60]]})
    again = RandBoxd("image").set_random_state(3)({"image": image, "lung_boxes": [[4, 4, 60, 60]]})
    assert healthy["boxes"].shape == (1, 4) and healthy["box_labels"] == ["No Finding"]
    assert np.array_equal(healthy["boxes"], again["boxes"])
    boxed = {"image": image, "boxes": [[1, 1, 5, 5]], "box_labels": ["Effusion"]}
    assert RandBoxd("image", label="normal")(boxed) == boxed
    with pytest.raises(ValueError, match="width_range"):
        RandBox(width_range=(0.5, 0.2))


def test_pathology_preserving_generator_keeps_the_box_and_learns_only_outside():
    torch.manual_seed(0)
    unet = SelfAttentionUNet(2, 1, (8, 16, 16), 32, attention_sizes=(), dropout=0.5)
    generator = PathologyPreservingGenerator(unet)
    y = torch.rand(2, 1, 32, 32) * 2 - 1
    m = torch.zeros(2, 1, 32, 32)
    m[:, :, 5:15, 8:20] = 1
    out = generator(torch.cat([KeepBoxes()(y, m), m], dim=1))
    assert torch.equal(out[m.bool()], y[m.bool()])
    assert out[~m.bool()].abs().max() <= 1  # tanh outside
    out.sum().backward()
    assert all(p.grad is not None for p in generator.parameters())

    seen = []
    image_only = PathologyPreservingGenerator(SelfAttentionUNet(1, 1, (8, 16, 16), 32, attention_sizes=()),
                                              mask_input=False)
    image_only.generator.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    image_only(torch.cat([KeepBoxes()(y, m), m], dim=1))
    assert seen == [1]  # the seed's G(x): the mask channel is only used to paste
    with pytest.raises(ValueError, match="C \\+ 1"):
        generator(torch.zeros(1, 1, 32, 32))


def test_dropout_at_generation_varies_the_samples_and_eval_does_not():
    torch.manual_seed(0)
    generator = PathologyPreservingGenerator(SelfAttentionUNet(2, 1, (8, 16, 16), 32, attention_sizes=(),
                                                               dropout=0.5)).eval()
    condition = torch.cat([torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)], 1).repeat(2, 1, 1, 1)
    with torch.no_grad():
        plain = generator(condition)
        assert torch.equal(plain[0], plain[1])
        varied = enable_dropout(generator)(condition)
    assert not torch.equal(varied[0], varied[1])
    assert not generator.training  # only the dropout layers were switched


def test_one_entry_per_box_and_the_spread_of_samples():
    entries = [{"image": "a.png", "boxes": [[0, 0, 4, 4], [5, 5, 8, 8]], "box_labels": ["E", "P"], "label": 1},
               {"image": "b.png", "boxes": [], "box_labels": []}, {"image": "c.png"}]
    pairs = one_entry_per_box(entries)
    assert [p["boxes"] for p in pairs] == [[[0, 0, 4, 4]], [[5, 5, 8, 8]]]
    assert [p["box_labels"] for p in pairs] == [["E"], ["P"]] and pairs[1]["label"] == 1
    with pytest.raises(ValueError, match="a.png: 2 boxes but 1"):
        one_entry_per_box([{**entries[0], "box_labels": ["E"]}])
    counts = samples_per_box(573, total=688, seed=0)
    assert sum(counts) == 688 and counts == samples_per_box(573, total=688, seed=0)
    assert counts != samples_per_box(573, total=688, seed=1)
    with pytest.raises(ValueError, match="exactly one"):
        samples_per_box(3, per_box=1, total=3)
