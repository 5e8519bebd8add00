"""Lung-patch transforms: working resolution, lung boxes, random/box-centred patches, centre holes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import (
    DataLoader,
    Dataset,
    MetaTensor,
    list_data_collate,
    load_decathlon_datalist,
)
from monai.transforms import Compose, DeleteItemsd, LoadImaged
from PIL import Image

from cxr_monai.apps.inpainting import (
    CenterHole,
    CenterHoleCollate,
    CenterHoled,
    border_weight_map,
    whole_image_hole_transforms,
)
from cxr_monai.data.phantom import generate_phantoms, make_phantom
from cxr_monai.io import CXRReader
from cxr_monai.transforms import (
    DEFAULT_LUNG_LAYOUT,
    BoxCenteredPatch,
    BoxCenteredPatchd,
    HeuristicLungBoxes,
    LungBoxesd,
    LungBoxesFromMask,
    LungBoxesFromMaskd,
    NoLesionFreeLungError,
    RandLungPatch,
    RandLungPatchd,
    ResizeToWorkingResolution,
    ResizeToWorkingResolutiond,
    crop_patch,
    lung_boxes_from_mask,
    scale_boxes,
    working_spatial_size,
)



def meta_image(array: np.ndarray, filename: str = "p0001.png", **meta) -> MetaTensor:
    """(H, W) or (C, H, W) array as a channel-first float32 MetaTensor, as LoadImaged + CXRReader give it."""
    tensor = torch.as_tensor(np.asarray(array, dtype=np.float32))
    tensor = tensor[None] if tensor.ndim == 2 else tensor
    return MetaTensor(tensor, meta={"filename_or_obj": filename, "spatial_shape": tuple(tensor.shape[1:]), **meta})


def rectangles_mask(shape: tuple[int, int], boxes: list[list[int]]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.float32)
    for x0, y0, x1, y1 in boxes:
        mask[y0:y1, x0:x1] = 1.0
    return mask


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(size=512, seed=3)


def phantom_sample(radiograph, name: str = "phantom_00003.png") -> dict:
    return {
        "image": meta_image(radiograph.image, name),
        "lung_mask": meta_image(radiograph.lung_mask, name.replace(".png", "_lungs.png")),
    }


def inside(box, x, y) -> bool:
    return box[0] <= x < box[2] and box[1] <= y < box[3]


# ------------------------------------------------------------------------------------------ working resolution


def test_working_spatial_size_rules():
    assert working_spatial_size((2000, 1500)) == (1024, 768)
    assert working_spatial_size((250, 300), longest_side=1024) == (853, 1024)  # small images are upsampled
    assert working_spatial_size((1000, 2000), target_spacing=0.4, pixel_spacing=(0.2, 0.1)) == (500, 500)
    assert working_spatial_size((1000, 2000), target_spacing=0.4, pixel_spacing=None) == (512, 1024)


def test_resize_scales_image_mask_and_boxes_together():
    height, width = 2048, 1536
    lung_boxes = [[200, 300, 600, 1500], [900, 280, 1300, 1520]]
    image = meta_image(np.random.default_rng(0).random((height, width)), "big.dcm")
    mask = meta_image(rectangles_mask((height, width), lung_boxes), "big_lungs.png")
    resize = ResizeToWorkingResolutiond(
        keys=["image", "lung_mask"], mode=["bilinear", "nearest-exact"], box_keys=["lung_boxes", "boxes"]
    )
    out = resize({"image": image, "lung_mask": mask, "lung_boxes": lung_boxes})

    assert out["image"].shape == (1, 1024, 768) and out["lung_mask"].shape == (1, 1024, 768)
    assert "boxes" not in out  # absent box keys are skipped
    np.testing.assert_allclose(out["lung_boxes"], np.asarray(lung_boxes) / 2)
    assert set(np.unique(out["lung_mask"].numpy())) == {0.0, 1.0}  # nearest: no blurred mask edges
    np.testing.assert_array_equal(LungBoxesFromMask()(out["lung_mask"]), out["lung_boxes"])
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    assert out["image"].meta["working_scale"] == (0.5, 0.5)
    assert tuple(out["image"].meta["spatial_shape"]) == (height, width)  # MONAI: the shape as loaded
    np.testing.assert_allclose(out["image"].pixdim[:2], (2.0, 2.0))  # affine follows the new grid


def test_resize_at_working_size_is_the_identity_without_a_copy():
    image = meta_image(np.random.default_rng(0).random((256, 200)), "p.png")
    out = ResizeToWorkingResolutiond(keys="image", box_keys="boxes", longest_side=256)(
        {"image": image, "boxes": [[10, 20, 30, 40]]}
    )
    assert out["image"].data_ptr() == image.data_ptr() and out["image"].shape == (1, 256, 200)
    assert out["image"].meta["working_scale"] == (1.0, 1.0)
    np.testing.assert_array_equal(out["boxes"], [[10, 20, 30, 40]])


def test_resize_antialiases_when_downsampling():
    stripes = np.tile(np.asarray([0.0, 1.0], dtype=np.float32), (512, 256))  # 1 px columns, (512, 512)
    smooth = ResizeToWorkingResolution(longest_side=160)(meta_image(stripes))  # a non-integer factor, 3.2
    aliased = ResizeToWorkingResolution(longest_side=160, anti_aliasing=False)(meta_image(stripes))
    assert smooth.shape == (1, 160, 160)
    assert float(smooth.std()) < 0.05 < float(aliased.std())
    assert abs(float(smooth.mean()) - 0.5) < 0.01
    step = np.zeros((250, 200), dtype=np.float32)
    step[:, 100:] = 1.0
    upsampled = ResizeToWorkingResolution(longest_side=1000)(meta_image(step))  # x4, bilinear
    assert upsampled.shape == (1, 1000, 800)
    assert ((upsampled > 0.05) & (upsampled < 0.95)).sum() >= 2 * 1000  # a smooth edge, not replicated pixels


def test_resize_to_target_spacing_updates_spacing_and_falls_back_without_it():
    resize = ResizeToWorkingResolution(target_spacing=0.4)
    image = meta_image(np.zeros((1000, 2000)), "cr.dcm", pixel_spacing=np.asarray([0.2, 0.1]))
    out = resize(image)
    assert out.shape == (1, 500, 500)
    np.testing.assert_allclose(out.meta["pixel_spacing"], (0.4, 0.4))
    assert out.meta["working_scale"] == (0.5, 0.25)
    no_spacing = resize(meta_image(np.zeros((1000, 2000)), "export.png"))
    assert no_spacing.shape == (1, 512, 1024)  # longest-side rule


def test_resize_errors_name_the_files():
    image = meta_image(np.zeros((100, 80)), "a.png", pixel_spacing=np.asarray([0.0, 0.1]))
    with pytest.raises(ValueError, match="a.png: pixel_spacing"):
        ResizeToWorkingResolution(target_spacing=0.2)(image)
    data = {"image": meta_image(np.zeros((100, 80)), "a.png"), "lung_mask": meta_image(np.zeros((90, 80)), "m.png")}
    with pytest.raises(ValueError, match=r"m.png.*a.png"):
        ResizeToWorkingResolutiond(keys=["image", "lung_mask"], mode=["bilinear", "nearest-exact"])(data)
    boxes_for_twice_the_size = {"image": data["image"], "boxes": [[100, 120, 150, 190]]}  # image is 80 x 100 px
    with pytest.raises(ValueError, match=r"a.png: 'boxes' .* beyond the 80x100 px image"):
        ResizeToWorkingResolutiond(keys="image", box_keys="boxes", longest_side=200)(boxes_for_twice_the_size)


def test_scale_boxes_uses_x_for_columns():
    np.testing.assert_allclose(scale_boxes([[10, 20, 30, 40]], (100, 200), (50, 400)), [[20, 10, 60, 20]])


# ------------------------------------------------------------------------------------------------- lung boxes


def test_boxes_from_two_components_are_tight_and_ordered_by_x():
    mask = rectangles_mask((200, 300), [[180, 40, 260, 170], [20, 30, 120, 160]])
    boxes = LungBoxesFromMask()(meta_image(mask))
    np.testing.assert_array_equal(boxes, [[20, 30, 120, 160], [180, 40, 260, 170]])
    assert boxes.dtype == np.float32


def test_merged_lungs_are_split_at_the_mediastinum():
    mask = rectangles_mask((200, 300), [[20, 30, 120, 160], [180, 40, 260, 170], [120, 60, 180, 66]])  # bridge
    boxes = lung_boxes_from_mask(mask > 0)
    np.testing.assert_array_equal(boxes[0][[1, 3]], [30, 160])
    np.testing.assert_array_equal(boxes[1][[1, 3]], [40, 170])
    assert boxes[0][0] == 20 and boxes[1][2] == 260
    assert 120 <= boxes[0][2] <= boxes[1][0] <= 180  # the split column lies on the thin bridge


def test_small_debris_is_not_a_lung():
    mask = rectangles_mask((200, 300), [[20, 30, 260, 170], [280, 5, 284, 9]])  # one wide region + a speck
    boxes = LungBoxesFromMask(min_area_ratio=0.1)(meta_image(mask))
    assert boxes[0][0] == 20 and boxes[1][2] == 260
    assert boxes[0][2] == boxes[1][0]  # split of the wide region, the speck ignored


def test_empty_mask_error_names_the_file():
    with pytest.raises(ValueError, match="p0042_lungs.png: the lung mask is empty"):
        LungBoxesFromMaskd(keys="lung_mask")({"lung_mask": meta_image(np.zeros((64, 64)), "p0042_lungs.png")})


def test_boxes_from_real_lung_masks(shared_path):
    montgomery = shared_path("real-samples", "montgomery-like")
    masks = sorted(montgomery.glob("*-mask.png"))
    if not masks:
        pytest.skip(f"real lung masks not found under {montgomery}")
    for path in masks:
        mask = np.asarray(Image.open(path).convert("L")) > 127
        boxes = LungBoxesFromMask()(meta_image(mask, str(path)))
        width = mask.shape[1]
        assert boxes[0][2] <= width / 2 <= boxes[1][0], path  # left box on the image left; no overlap
        for box, half in zip(boxes, (slice(0, width // 2), slice(width // 2, width))):
            rows, cols = np.nonzero(mask[:, half])
            cols = cols + half.start
            tight = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]  # the lung of this half, exactly
            np.testing.assert_array_equal(box, tight, err_msg=str(path))
    inverted = ~(np.asarray(Image.open(masks[0]).convert("L")) > 127)
    with pytest.raises(ValueError, match=r"1-mask.png: the lung mask marks 72% of the image as lung.*inverted"):
        LungBoxesFromMask()(meta_image(inverted, str(masks[0])))


def lung_fraction_and_coverage(boxes: np.ndarray, lung: np.ndarray) -> tuple[float, float]:
    covered = np.zeros_like(lung)
    for x0, y0, x1, y1 in np.round(boxes).astype(int):
        covered[y0:y1, x0:x1] = True
    return (covered & lung).sum() / covered.sum(), (covered & lung).sum() / lung.sum()


def test_heuristic_boxes_on_real_radiographs(shared_path):
    montgomery = shared_path("real-samples", "montgomery-like")
    pairs = [(montgomery / f"{i}.jpg", montgomery / f"{i}-mask.png") for i in range(1, 5)]
    if not all(image.exists() and mask.exists() for image, mask in pairs):
        pytest.skip(f"real radiographs with lung masks not found under {montgomery}")
    for image_path, mask_path in pairs:
        image = np.asarray(Image.open(image_path).convert("L"), dtype=np.float32) / 255
        lung = np.asarray(Image.open(mask_path).convert("L")) > 127
        refined = lung_fraction_and_coverage(HeuristicLungBoxes()(meta_image(image)), lung)
        layout = lung_fraction_and_coverage(HeuristicLungBoxes(refine=False)(meta_image(image)), lung)
        assert refined[0] >= layout[0] and refined[0] > 0.45 and refined[1] > 0.85, (image_path, refined, layout)


def test_heuristic_boxes_on_phantoms():
    for seed in range(3):
        radiograph = make_phantom(size=256, seed=seed)
        boxes = HeuristicLungBoxes()(meta_image(radiograph.image))
        fraction, coverage = lung_fraction_and_coverage(boxes, radiograph.lung_mask)
        assert fraction > 0.45 and coverage > 0.85, (seed, fraction, coverage)
        for box, truth in zip(boxes, radiograph.lung_boxes):  # each box is on its own lung
            assert inside(box, (truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2)


def test_heuristic_without_refinement_is_the_layout():
    boxes = HeuristicLungBoxes(refine=False)(meta_image(np.zeros((100, 200))))
    np.testing.assert_allclose(boxes, np.asarray(DEFAULT_LUNG_LAYOUT) * [200, 100, 200, 100], rtol=1e-6)


def test_lung_boxes_source_priority(phantom):
    sample = phantom_sample(phantom)
    from_datalist = LungBoxesd()({**sample, "lung_boxes": [[1, 2, 3, 4]]})
    assert from_datalist["lung_boxes_source"] == "datalist"
    np.testing.assert_array_equal(from_datalist["lung_boxes"], [[1, 2, 3, 4]])
    from_mask = LungBoxesd()(sample)
    assert from_mask["lung_boxes_source"] == "mask"
    np.testing.assert_array_equal(from_mask["lung_boxes"], phantom.lung_boxes)
    assert LungBoxesd()({"image": sample["image"]})["lung_boxes_source"] == "heuristic"
    with pytest.raises(KeyError, match="phantom_00003.png"):
        LungBoxesd(use_heuristic=False)({"image": sample["image"]})


# ---------------------------------------------------------------------------------------------- lung patches


def test_every_phantom_patch_lies_inside_the_lungs():
    for seed in range(3):
        radiograph = make_phantom(size=512, seed=seed)
        sample = LungBoxesd()(phantom_sample(radiograph, f"phantom_{seed:05d}.png"))
        for mask_key in ("lung_mask", None):
            patcher = RandLungPatchd(keys=["image", "lung_mask"], mask_key=mask_key, num_samples=20)
            patches = patcher.set_random_state(seed=seed)(sample)
            assert len(patches) == 20
            for patch in patches:
                x, y = patch["patch_center"]
                x0, y0, x1, y1 = patch["patch_box"]
                assert any(inside(box, x, y) for box in sample["lung_boxes"])
                if mask_key is not None:
                    assert radiograph.lung_mask[y, x]
                assert 0 <= x0 and 0 <= y0 and x1 <= 512 and y1 <= 512 and (x1 - x0, y1 - y0) == (128, 128)
                np.testing.assert_array_equal(patch["image"][0].numpy(), radiograph.image[y0:y1, x0:x1])
                np.testing.assert_array_equal(patch["lung_mask"][0].numpy(), radiograph.lung_mask[y0:y1, x0:x1])


@pytest.fixture(scope="module")
def phantom_dataset(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("phantoms")
    generate_phantoms(out_dir, num_images=6, size=512, seed=0, abnormal_fraction=0.34)
    return out_dir


def test_patches_from_phantom_files_lie_inside_the_lungs(phantom_dataset):
    entries = []
    for section in ("training", "validation", "test", "test_unhealthy"):
        entries += load_decathlon_datalist(str(phantom_dataset / "datalist.json"), True, section, str(phantom_dataset))
    assert len(entries) == 6 and any(entry["image"].endswith(".dcm") for entry in entries)
    load = LoadImaged(keys=["image", "lung_mask"], reader=CXRReader(), ensure_channel_first=True)
    resize = ResizeToWorkingResolutiond(
        keys=["image", "lung_mask"], mode=["bilinear", "nearest-exact"], box_keys="lung_boxes", longest_side=384
    )
    patcher = RandLungPatchd(keys=["image", "lung_mask"], mask_key="lung_mask", num_samples=20)
    patcher.set_random_state(seed=0)
    for entry in entries:
        sample = load({key: entry[key] for key in ("image", "lung_mask", "lung_boxes")})
        np.testing.assert_array_equal(LungBoxesFromMask()(sample["lung_mask"]), entry["lung_boxes"])
        sample = LungBoxesd()(resize(sample))
        assert sample["lung_boxes_source"] == "datalist" and sample["image"].shape == (1, 384, 384)
        lung_mask = sample["lung_mask"][0]
        for patch in patcher(sample):
            x, y = patch["patch_center"]
            assert lung_mask[y, x] > 0, entry["image"]
            assert any(inside(box, x, y) for box in sample["lung_boxes"]), entry["image"]
            assert patch["lung_mask"][0, 64, 64] > 0 and patch["image"].shape == (1, 128, 128)


def test_box_centred_patches_hold_the_phantom_lesions(phantom_dataset):
    datalist = str(phantom_dataset / "datalist.json")
    entries = load_decathlon_datalist(datalist, True, "test_unhealthy", str(phantom_dataset))
    assert entries
    pipeline = Compose(
        [
            LoadImaged(keys=["image", "lesion_mask"], reader=CXRReader(), ensure_channel_first=True),
            BoxCenteredPatchd(keys=["image", "lesion_mask"], box_key="boxes", patch_size=128),
            CenterHoled(keys="image"),
        ]
    )
    for entry in entries:
        patches = pipeline(entry)
        assert [patch["box_label"] for patch in patches] == entry["box_labels"]
        for patch in patches:
            x0, y0, x1, y1 = patch["box"] - np.tile(patch["patch_box"][:2], 2)  # the box in patch pixels
            lesion_in_box = patch["lesion_mask"][0, max(0, int(y0)) : int(y1), max(0, int(x0)) : int(x1)]
            assert lesion_in_box.sum() > 0, (entry["image"], patch["box"])  # x = column, y = row, end to end


def test_random_state_makes_patches_reproducible(phantom):
    sample = LungBoxesd()(phantom_sample(phantom))

    def centers(seed: int) -> np.ndarray:
        patcher = RandLungPatchd(keys="image", num_samples=20).set_random_state(seed=seed)
        return np.stack([patch["patch_center"] for patch in patcher(sample)])

    np.testing.assert_array_equal(centers(5), centers(5))
    assert not np.array_equal(centers(5), centers(6))
    patcher = RandLungPatchd(keys="image", num_samples=3).set_random_state(seed=5)
    assert not np.array_equal(*(np.stack([p["patch_center"] for p in patcher(sample)]) for _ in range(2)))


def test_patches_stay_inside_the_image_for_boxes_at_the_edge():
    image = meta_image(np.random.default_rng(1).random((300, 400)))
    edge_boxes = [[0, 0, 40, 30], [380, 250, 400, 300]]  # both entirely in the 64 px border band
    sampler = RandLungPatch(patch_size=128, num_samples=50).set_random_state(seed=0)
    patches = sampler(image, edge_boxes)
    assert all(patch.shape == (1, 128, 128) for patch in patches)
    xs, ys = sampler.centers.T
    assert set(xs) <= {64, 400 - 64} and set(ys) <= {64, 300 - 64}  # centres shifted to the nearest valid ones
    straddling = [[30, 100, 200, 200]]  # partly in the band: centres are clipped into box and valid range
    sampler(image, straddling)
    assert sampler.centers[:, 0].min() >= 64 and sampler.centers[:, 0].max() < 200


def test_centres_are_uniform_over_the_union_of_boxes():
    sampler = RandLungPatch(patch_size=16, num_samples=6000).set_random_state(seed=0)
    overlapping = [[100, 100, 200, 200], [150, 100, 250, 200]]  # overlap is 1/3 of the union
    sampler.randomize((512, 512), overlapping)
    in_overlap = ((sampler.centers[:, 0] >= 150) & (sampler.centers[:, 0] < 200)).mean()
    assert abs(in_overlap - 1 / 3) < 0.03  # picking a box, then a point, would give 1/2
    disjoint = [[10, 10, 40, 110], [300, 10, 330, 43]]  # areas 3000 and 990
    sampler.randomize((512, 512), disjoint)
    assert abs((sampler.centers[:, 0] < 100).mean() - 3000 / 3990) < 0.03


def test_mask_requirement_and_errors():
    mask = rectangles_mask((256, 256), [[100, 100, 120, 200]])
    sampler = RandLungPatch(patch_size=64, num_samples=40).set_random_state(seed=0)
    for lung_mask in (mask, mask / 255):  # a 0/1 PNG mask reads as 0 and 1/255: the default threshold is 0
        sampler.randomize((256, 256), [[60, 60, 200, 200]], meta_image(lung_mask))
        assert (sampler.centers[:, 0] >= 100).all() and (sampler.centers[:, 0] < 120).all()
    with pytest.raises(ValueError, match="lungs.png: no patch centre inside the lung boxes .* lies on the lung mask"):
        sampler.randomize((256, 256), [[10, 10, 40, 40]], meta_image(mask), source="lungs.png")
    with pytest.raises(ValueError, match="tiny.png: image 100x100"):
        RandLungPatch(patch_size=128)(meta_image(np.zeros((100, 100)), "tiny.png"), [[0, 0, 50, 50]])
    with pytest.raises(ValueError, match="empty"):
        RandLungPatch()(meta_image(np.zeros((256, 256))), [[50, 50, 40, 60]])


def test_patches_are_views_with_the_affine_moved_to_the_patch():
    image = MetaTensor(torch.rand(1, 512, 512), affine=torch.diag(torch.tensor([0.2, 0.3, 1.0], dtype=torch.float64)))
    patch = crop_patch(image, (100, 40), (128, 128))
    assert patch.untyped_storage().data_ptr() == image.untyped_storage().data_ptr()  # no copy of the image
    np.testing.assert_allclose(patch.affine[:2, 2], (0.2 * 100, 0.3 * 40))
    np.testing.assert_allclose(image.affine[:2, 2], (0, 0))
    patches = RandLungPatch(num_samples=20).set_random_state(seed=0)(image, [[100, 100, 400, 400]])
    assert len({p.untyped_storage().data_ptr() for p in patches}) == 1
    plain = RandLungPatch(num_samples=20, track_meta=False).set_random_state(seed=0)(image, [[100, 100, 400, 400]])
    assert all(type(p) is torch.Tensor for p in plain) and all(isinstance(p, MetaTensor) for p in patches)
    assert all(torch.equal(a, b.as_tensor()) for a, b in zip(plain, patches))
    assert plain[0].untyped_storage().data_ptr() == image.untyped_storage().data_ptr()
    sample = {"image": image, "lung_boxes": [[100, 100, 400, 400]]}
    samples = RandLungPatchd(keys="image", num_samples=3, track_meta=False)(sample)
    assert all(type(sample["image"]) is torch.Tensor for sample in samples)


@pytest.mark.parametrize("rejection_rounds", [8, 0])  # rejection sampling, and the list of lung pixels it falls back to
def test_mask_sampling_is_uniform_over_the_lung_pixels_in_the_boxes(rejection_rounds):
    mask = rectangles_mask((300, 300), [[150, 200, 160, 220], [60, 70, 64, 75]])  # 200 + 20 lung pixels
    sampler = RandLungPatch(patch_size=64, num_samples=4000).set_random_state(seed=1)
    sampler.rejection_rounds = rejection_rounds
    sampler.randomize((300, 300), [[140, 190, 170, 230], [50, 60, 66, 80]], meta_image(mask))
    allowed = {(x, y) for x in range(150, 160) for y in range(200, 220)}
    allowed |= {(x, y) for x in range(60, 64) for y in range(70, 75)}
    assert len(sampler.centers) == 4000
    assert {tuple(int(v) for v in c) for c in sampler.centers} == allowed  # all 220 pixels, nothing else
    assert abs(float((sampler.centers[:, 0] >= 150).mean()) - 200 / 220) < 0.03  # per pixel, not per box


def test_box_centred_patches():
    image = meta_image(np.random.default_rng(2).random((512, 600)), "sick.png")
    data = {
        "image": image,
        "lesion_mask": meta_image(np.zeros((512, 600)), "sick_lesion.png"),
        "boxes": [[290, 240, 310, 270], [0, 490, 30, 512]],
        "box_labels": ["Nodule", "Mass"],
    }
    patches = BoxCenteredPatchd(keys=["image", "lesion_mask"], box_key="boxes")(data)
    assert [p["box_index"] for p in patches] == [0, 1] and [p["box_label"] for p in patches] == ["Nodule", "Mass"]
    np.testing.assert_array_equal(patches[0]["patch_center"], [300, 255])  # box centre
    np.testing.assert_array_equal(patches[0]["patch_box"], [236, 191, 364, 319])
    np.testing.assert_array_equal(patches[1]["patch_box"], [0, 384, 128, 512])  # shifted inside at the corner
    np.testing.assert_array_equal(patches[1]["box"], data["boxes"][1])
    for patch in patches:
        x0, y0, x1, y1 = patch["patch_box"]
        np.testing.assert_array_equal(patch["image"][0].numpy(), image[0, y0:y1, x0:x1].numpy())
        assert patch["lesion_mask"].shape == (1, 128, 128)
    again = BoxCenteredPatch(128)(image, data["boxes"])
    np.testing.assert_array_equal(again[1].numpy(), patches[1]["image"].numpy())
    with pytest.raises(ValueError, match="sick.png: 2 boxes but 1"):
        BoxCenteredPatchd(keys="image")({**data, "box_labels": ["Nodule"]})
    with pytest.raises(ValueError, match="sick.png: no boxes"):
        BoxCenteredPatchd(keys="image")({**data, "boxes": []})
    with pytest.raises(ValueError, match=r"sick.png: 'boxes' \[\[590.0, 100.0, 700.0, 200.0\]\] reach beyond the 600x"):
        BoxCenteredPatchd(keys="image")({**data, "boxes": [[590, 100, 700, 200]], "box_labels": None})
    assert len(BoxCenteredPatchd(keys="image")({**data, "boxes": [[500, 400, 600.5, 512.5]], "box_labels": None})) == 1
    with pytest.raises(KeyError, match="sick.png: no 'boxes'"):
        BoxCenteredPatchd(keys="image")({"image": image})
    lenient = BoxCenteredPatchd(keys="image", allow_missing_boxes=True)
    assert lenient({"image": image}) == [] and lenient({**data, "boxes": []}) == []
    assert [p["box_index"] for p in lenient(data)] == [0, 1]


def test_patch_lists_batch_with_monai_dataloader(phantom):
    other = make_phantom(size=512, seed=4)
    transform = Compose(
        [
            LungBoxesd(),
            RandLungPatchd(keys="image", mask_key="lung_mask", num_samples=4),
            CenterHoled(keys="image", fill_value=0.45),
            DeleteItemsd(keys="lung_mask"),  # full-size arrays are shared by the patches; drop before batching
        ]
    )
    dataset = Dataset([phantom_sample(phantom), phantom_sample(other, "phantom_00004.png")], transform=transform)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=list_data_collate)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 1, 128, 128) and batch["masked"].shape == (8, 1, 128, 128)
    assert batch["target"].shape == (8, 1, 64, 64) and batch["weight"].shape == (8, 1, 64, 64)
    assert batch["hole_mask"].shape == (8, 1, 128, 128) and batch["patch_center"].shape == (8, 2)
    assert batch["lung_boxes"].shape == (8, 2, 4)
    assert torch.equal(batch["masked"][:, :, 32:96, 32:96], torch.full((8, 1, 64, 64), 0.45))
    assert torch.equal(batch["target"], batch["image"][:, :, 32:96, 32:96])


# ------------------------------------------------------------------------------------------------------ holes


def test_border_weight_map_counts():
    weights = border_weight_map(64, 4, 10.0)
    assert weights.shape == (64, 64) and weights.dtype == torch.float32
    assert int((weights == 10).sum()) == 64**2 - 56**2 and int((weights == 1).sum()) == 56**2
    assert torch.all(weights[4:60, 4:60] == 1) and torch.all(weights[:4] == 10) and torch.all(weights[:, 60:] == 10)
    assert int((border_weight_map(32, 2, 5.0) == 5).sum()) == 32**2 - 28**2
    assert torch.all(border_weight_map(16, 0) == 1)
    with pytest.raises(ValueError):
        border_weight_map(8, 5)


def test_center_hole_outputs_follow_the_data_contract():
    patch = meta_image(np.random.default_rng(3).random((128, 128)), "p.png")
    out = CenterHoled(keys="image", hole_size=64, fill_value=0.25)({"image": patch})
    hole = (slice(None), slice(32, 96), slice(32, 96))
    assert torch.equal(out["image"], patch)  # the patch itself is untouched
    assert torch.all(out["masked"][hole] == 0.25)
    outside = torch.ones(1, 128, 128, dtype=torch.bool)
    outside[hole] = False
    assert torch.equal(out["masked"][outside], patch[outside])
    assert torch.equal(out["target"], patch[hole]) and out["target"].shape == (1, 64, 64)
    assert out["weight"].shape == (1, 64, 64) and int((out["weight"] == 10).sum()) == 960
    assert out["hole_mask"].shape == (1, 128, 128) and int(out["hole_mask"].sum()) == 64**2
    assert torch.all(out["hole_mask"][hole] == 1)


def test_context_mean_fill_uses_only_visible_pixels():
    patch = torch.zeros(2, 128, 128)
    patch[:, 32:96, 32:96] = 1.0  # bright centre must not leak into the fill
    patch[1] += 0.5
    masked = CenterHole(hole_size=64, fill_value="context_mean")(patch)
    torch.testing.assert_close(masked[:, 64, 64], torch.tensor([0.0, 0.5]))
    ring = torch.rand(1, 128, 128)
    visible = torch.ones(128, 128, dtype=torch.bool)
    visible[32:96, 32:96] = False
    torch.testing.assert_close(CenterHole(64)(ring)[0, 50, 50], ring[0][visible].mean())


def test_overlap_keeps_a_visible_frame_of_the_target():
    patch = torch.rand(1, 128, 128)
    out = CenterHoled(keys="image", hole_size=64, overlap=4, fill_value=0.0)({"image": patch})
    assert int(out["hole_mask"].sum()) == 56**2 and torch.all(out["masked"][:, 36:92, 36:92] == 0)
    assert torch.equal(out["masked"][:, 32:36, 32:96], patch[:, 32:36, 32:96])  # the band stays context
    assert out["target"].shape == (1, 64, 64) and int((out["weight"] == 10).sum()) == 960


def test_hole_sizes_are_general_and_checked():
    out = CenterHoled(keys="image", hole_size=32, band=2, border_weight=3.0)({"image": torch.rand(1, 64, 64)})
    assert out["target"].shape == (1, 32, 32) and int((out["weight"] == 3).sum()) == 32**2 - 28**2
    with pytest.raises(ValueError, match="even margin"):
        CenterHole(hole_size=63)(torch.rand(1, 128, 128))
    with pytest.raises(ValueError, match="smaller than"):
        CenterHole(hole_size=128)(torch.rand(1, 128, 128))
    with pytest.raises(ValueError, match="fill_value"):
        CenterHole(fill_value="mean")


def patches_centres(samples: list[dict]) -> torch.Tensor:
    return torch.stack([sample["image"][:, 32:96, 32:96] for sample in samples])


def test_hole_collate_equals_the_per_sample_transform():
    patches = [{"image": torch.rand(2, 128, 128), "index": i} for i in range(5)]  # two channels: each its own mean
    for fill_value, overlap in (("context_mean", 0), (0.45, 4)):
        per_sample = CenterHoled(keys="image", fill_value=fill_value, overlap=overlap, band=2, border_weight=3.0)
        collate = CenterHoleCollate(keys="image", fill_value=fill_value, overlap=overlap, band=2, border_weight=3.0,
                                    hole_mask_key="hole_mask")
        batch = collate(patches)
        expected = list_data_collate([per_sample(patch) for patch in patches])
        assert batch["index"].tolist() == list(range(5)) and torch.equal(batch["image"], expected["image"])
        for key in ("masked", "target", "hole_mask"):
            assert type(batch[key]) is torch.Tensor
            torch.testing.assert_close(batch[key], expected[key].expand_as(batch[key]), rtol=0, atol=1e-7)
        assert batch["weight"].shape == (5, 1, 64, 64) and torch.equal(batch["weight"], expected["weight"])
        assert batch["weight"].is_contiguous() and batch["hole_mask"].is_contiguous()  # pin_memory copies into them
        assert batch["target"].data_ptr() != batch["masked"].data_ptr()
        assert batch["target"].untyped_storage().data_ptr() == batch["image"].untyped_storage().data_ptr()  # a view
    assert "hole_mask" not in CenterHoleCollate()(patches)
    lean = CenterHoleCollate(keep_patches=False)(patches)
    assert "image" not in lean and set(lean) == {"index", "masked", "target", "weight"}
    assert lean["target"].is_contiguous() and torch.equal(lean["target"], patches_centres(patches))
    with pytest.raises(KeyError, match="no 'patch'"):
        CenterHoleCollate(keys="patch")(patches)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        CenterHoleCollate()([{"image": torch.rand(128, 128)}])


def test_hole_collate_in_worker_processes(phantom):
    sampler = RandLungPatchd(keys="image", mask_key="lung_mask", num_samples=4, track_meta=False)
    transform = Compose([LungBoxesd(), sampler])
    dataset = Dataset([phantom_sample(phantom)] * 2, transform=transform)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=CenterHoleCollate(fill_value=0.5))
    batch = next(iter(loader))
    assert batch["masked"].shape == (8, 1, 128, 128) and batch["weight"].shape == (8, 1, 64, 64)
    assert torch.all(batch["masked"][:, :, 32:96, 32:96] == 0.5)
    assert torch.equal(batch["target"], batch["image"][:, :, 32:96, 32:96])
    assert int((batch["weight"] == 10).sum()) == 8 * 960


def test_whole_image_mode(phantom):
    transform = whole_image_hole_transforms(keys="image", image_size=128, hole_size=64, fill_value="context_mean")
    out = transform({"image": meta_image(phantom.image)})
    assert out["image"].shape == (1, 128, 128) and out["masked"].shape == (1, 128, 128)
    assert out["target"].shape == (1, 64, 64) and int(out["hole_mask"].sum()) == 64**2
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0
    np.testing.assert_allclose(float(out["image"].mean()), phantom.image.mean(), atol=0.01)


# ---------------------------------------------------------------------------------------------------------------
# lesions and lung fractions (issue #9)


def test_window_counts_match_a_direct_sum():
    from cxr_monai.transforms.patches import WindowCounts

    rng = np.random.default_rng(0)
    mask = rng.random((40, 50)) > 0.7
    counts = WindowCounts(mask)
    rows, cols = rng.integers(0, 40, 30), rng.integers(0, 50, 30)
    for size in (1, 4, 7, 16):
        expected = [mask[max(r - size // 2, 0): r - size // 2 + size, max(c - size // 2, 0): c - size // 2 + size].sum()
                    for r, c in zip(rows, cols)]
        assert counts.counts(rows, cols, size).tolist() == expected
    assert counts.total == mask.sum()


@pytest.mark.parametrize("lesion_free", ["patch", "hole"])
def test_training_patches_never_touch_a_lesion(lesion_free):
    lung = rectangles_mask((256, 256), [[20, 20, 236, 236]])
    lesion = rectangles_mask((256, 256), [[100, 90, 140, 130]])
    sampler = RandLungPatchd(keys=["image", "lesion_mask"], mask_key="lung_mask", lesion_mask_key="lesion_mask",
                             patch_size=64, hole_size=32, num_samples=200, lesion_free=lesion_free)
    data = {"image": meta_image(np.random.rand(256, 256)), "lung_mask": meta_image(lung),
            "lesion_mask": meta_image(lesion), "lung_boxes": [[20, 20, 236, 236]]}
    samples = sampler.set_random_state(seed=0)(data)
    clear = 64 if lesion_free == "patch" else 32
    margin = (64 - clear) // 2
    touched = [s["lesion_mask"][0, margin: margin + clear, margin: margin + clear].sum().item() for s in samples]
    assert len(samples) == 200 and max(touched) == 0
    if lesion_free == "hole":  # the context may show the lesion when only the hole must be clear
        assert any(s["lesion_mask"].sum() > 0 for s in samples)
    # boxes stand in for a missing mask
    boxed = {k: v for k, v in data.items() if k != "lesion_mask"} | {"boxes": [[100, 90, 140, 130]]}
    centres = np.stack([s["patch_center"] for s in RandLungPatchd(
        keys="image", mask_key="lung_mask", lesion_boxes_key="boxes", patch_size=64, num_samples=200
    ).set_random_state(seed=1)(boxed)])
    assert not ((np.abs(centres[:, 0] - 120) < 20 + 32) & (np.abs(centres[:, 1] - 110) < 20 + 32)).any()


def test_lesion_exclusion_keeps_centres_uniform_over_the_allowed_lung():
    """Rejection and the listing fallback draw from the same distribution: uniform over the allowed centres."""
    lung = rectangles_mask((128, 128), [[10, 10, 118, 118]])
    lesion = rectangles_mask((128, 128), [[10, 10, 100, 118]])  # leaves a narrow lesion-free strip on the right
    sampler = RandLungPatch(patch_size=16, num_samples=4000, lesion_free="patch").set_random_state(seed=0)
    sampler.randomize((128, 128), [[10, 10, 118, 118]], meta_image(lung), lesion_mask=meta_image(lesion))
    x = sampler.centers[:, 0]
    assert x.min() >= 108 and x.max() <= 117  # patch [x - 8, x + 8) clear of x < 100, centre on the lung
    counts = np.bincount(x - 108, minlength=10)
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()


def test_min_hole_lung_fraction_and_clear_errors():
    lung = rectangles_mask((256, 256), [[40, 40, 216, 216]])
    sampler = RandLungPatch(patch_size=64, hole_size=32, num_samples=100, min_hole_lung_fraction=1.0)
    sampler.set_random_state(seed=0).randomize((256, 256), [[0, 0, 256, 256]], meta_image(lung))
    assert (sampler.hole_lung_fractions == 1.0).all()
    assert sampler.centers.min() >= 40 + 16 and sampler.centers.max() <= 216 - 16
    lesion = rectangles_mask((256, 256), [[0, 0, 256, 256]])
    with pytest.raises(NoLesionFreeLungError, match="lungs.png: no patch centre .* clear of the lesions"):
        sampler.randomize((256, 256), [[0, 0, 256, 256]], meta_image(lung), "lungs.png", lesion_mask=meta_image(lesion))
    # no lung at all is a data problem, not lesions covering the lung, even when lesions were given too
    with pytest.raises(ValueError, match="no patch centre") as raised:
        sampler.randomize((256, 256), [[0, 0, 256, 256]], meta_image(np.zeros((256, 256))), "empty.png",
                          lesion_mask=meta_image(lesion))
    assert not isinstance(raised.value, NoLesionFreeLungError)
    with pytest.raises(ValueError, match="lesion mask shape"):
        sampler.randomize((256, 256), [[0, 0, 256, 256]], meta_image(lung), lesion_mask=meta_image(lesion[:10]))


def test_box_centred_patches_move_onto_the_lesion():
    """A coarse box much larger than its lesion: without a mask the hole lands beside the lesion, with it on it."""
    lesion = rectangles_mask((512, 512), [[300, 300, 340, 340]])
    lung = rectangles_mask((512, 512), [[60, 60, 450, 450]])
    data = {"image": meta_image(np.random.rand(512, 512)), "lesion_mask": meta_image(lesion),
            "lung_mask": meta_image(lung), "boxes": [[100, 100, 350, 350]], "box_labels": ["Consolidation"]}
    plain = BoxCenteredPatchd(keys="image", box_key="boxes", lung_mask_key="lung_mask", lesion_fraction_key="lesion",
                              lung_fraction_key="lung")(data)
    moved = BoxCenteredPatchd(keys="image", box_key="boxes", lesion_mask_key="lesion_mask", lung_mask_key="lung_mask",
                              min_hole_lung_fraction=0.9, lesion_fraction_key="lesion", lung_fraction_key="lung")(data)
    assert "lesion" not in plain[0] and plain[0]["lung"] == 1.0  # no lesion mask given to the plain one
    assert plain[0]["patch_center"].tolist() == [225, 225]
    assert moved[0]["lesion"] == pytest.approx(40 * 40 / 64**2) and moved[0]["lung"] == 1.0
    context = BoxCenteredPatchd(keys="image", box_key="boxes", lesion_mask_key="lesion_mask",
                                context_lesion_fraction_key="context")(data)[0]
    assert context["context"] == 0.0  # the whole 40 px lesion fits in the hole: nothing of it in the context
    big = {**data, "lesion_mask": meta_image(rectangles_mask((512, 512), [[100, 100, 400, 400]]))}
    assert BoxCenteredPatchd(keys="image", box_key="boxes", lesion_mask_key="lesion_mask",
                             context_lesion_fraction_key="context")(big)[0]["context"] == 1.0  # inside a large lesion
    x, y = moved[0]["patch_center"]
    assert 300 - 12 <= x <= 340 + 12 and 300 - 12 <= y <= 340 + 12  # the 40 px lesion lies inside the 64 px hole
    # ties go to the centre nearest the box centre; a box with no lesion pixel keeps its centre
    far = {**data, "boxes": [[100, 100, 200, 200]], "box_labels": ["x"]}
    assert BoxCenteredPatchd(keys="image", box_key="boxes", lesion_mask_key="lesion_mask")(far)[0][
        "patch_center"].tolist() == [150, 150]


def test_working_resolution_is_invertible_for_images_masks_boxes_and_predictions():
    from monai.transforms import Compose, Invertd

    image = MetaTensor(torch.rand(1, 300, 200), meta={"filename_or_obj": "a.dcm", "pixel_spacing": (0.2, 0.2)})
    mask = MetaTensor(torch.zeros(1, 300, 200), meta={"filename_or_obj": "a_mask.png"})
    mask[:, 60:240, 40:160] = 1
    resize = ResizeToWorkingResolutiond(["image", "lung_mask"], mode=["bilinear", "nearest-exact"],
                                        box_keys="boxes", longest_side=150)
    data = resize({"image": image, "lung_mask": mask, "boxes": [[40, 60, 160, 240]]})
    assert data["image"].shape == (1, 150, 100) and np.allclose(data["image"].meta["pixel_spacing"], (0.4, 0.4))
    back = resize.inverse(data)
    assert back["image"].shape == (1, 300, 200) and back["lung_mask"].shape == (1, 300, 200)
    assert set(back["lung_mask"].unique().tolist()) == {0.0, 1.0} and torch.equal(back["lung_mask"], mask)
    assert np.allclose(back["boxes"], [[40, 60, 160, 240]]) and np.allclose(back["image"].meta["pixel_spacing"], 0.2)
    assert not back["image"].applied_operations and "working_scale" not in back["image"].meta
    # a network output on the working grid goes back to the loaded grid through Invertd, as the bundles do it
    preprocessing = Compose([resize])
    data = preprocessing({"image": image, "lung_mask": mask})
    data["pred"] = MetaTensor(data["lung_mask"].clone(), meta=dict(data["image"].meta))
    data["pred"].applied_operations = []
    inverted = Invertd("pred", transform=preprocessing, orig_keys="image", nearest_interp=True)(data)
    assert inverted["pred"].shape == (1, 300, 200) and torch.equal(inverted["pred"].as_tensor(), mask.as_tensor())
    # already at working size: one trace entry all the same, and the inverse is the identity
    at_size = ResizeToWorkingResolution(longest_side=300)  # MONAI matches the trace to the instance that wrote it
    same = at_size(image)
    assert len(same.applied_operations) == 1 and torch.equal(at_size.inverse(same), image)


def test_random_window_stretches_mid_tones_keeps_range_and_applies_one_window_per_item():
    from monai.data import MetaTensor

    from cxr_monai.transforms import RandWindow, RandWindowd

    ramp = torch.linspace(0, 1, 101)[None, None]
    identity = RandWindow(prob=1.0, level_range=(0.5, 0.5), width_range=(1.0, 1.0))
    torch.testing.assert_close(identity(ramp), ramp)
    window = RandWindow(prob=1.0, level_range=(0.3, 0.7), width_range=(0.4, 0.8))
    window.set_random_state(0)
    out = window(MetaTensor(ramp, meta={"filename_or_obj": "x.png"}))
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.png"
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0  # the ends saturate
    assert float((out[..., 1:] - out[..., :-1]).max()) > 0.0099  # the mid-tones are stretched
    assert torch.equal(RandWindow(prob=0.0)(ramp), ramp)
    paired = RandWindowd(keys=["image", "bone_suppressed"], prob=1.0).set_random_state(1)
    item = paired({"image": ramp.clone(), "bone_suppressed": ramp.clone(), "label": 1})
    torch.testing.assert_close(item["image"], item["bone_suppressed"])  # one window for both channels
    with pytest.raises(ValueError, match="width_range"):
        RandWindow(width_range=(0.0, 1.0))


def test_multi_hot_labels_collate_as_one_tensor_per_item_with_nan_for_null():
    from monai.data import list_data_collate

    from cxr_monai.transforms import MultiHotd

    items = [MultiHotd(num_classes=3)({"labels": [1, None, -1]}), MultiHotd(num_classes=3)({"labels": [0, 1, 0]})]
    batch = list_data_collate(items)["labels"]
    assert batch.shape == (2, 3) and batch.dtype == torch.float32 and torch.isnan(batch[0, 1])
    with pytest.raises(ValueError, match="2 labels where the datalist's label_names give 3"):
        MultiHotd(num_classes=3)({"labels": [1, 0]})
