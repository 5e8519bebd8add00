"""Context-encoder inference: hole masking, inpainted patches, window grid, anomaly heatmap, the bundle runner."""

from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest
import torch
from monai.transforms import Compose
from PIL import Image

from cxr_monai.apps.inpainting import CenterHole
from cxr_monai.apps.inpainting.inference import (
    AnomalyHeatmapInferer,
    InpaintingInference,
    NoWindowError,
    inpaint_centres,
    inpaint_patches,
    lung_window_starts,
    mask_patches,
)
from cxr_monai.data.datalist import load_datalist
from cxr_monai.engines.images import output_stem
from cxr_monai.io import LoadCXRImaged
from cxr_monai.networks import ContextEncoder
from cxr_monai.transforms import (
    BoxCenteredPatchd,
    LungBoxesd,
    RandLungPatchd,
    ResizeToWorkingResolutiond,
)
from cxr_monai.transforms.intensity import from_network_range, to_network_range


def tiny_generator(seed: int = 0) -> ContextEncoder:
    torch.manual_seed(seed)
    return ContextEncoder(base_channels=8, bottleneck_channels=16)


class GreyGenerator(torch.nn.Module):
    """Predicts the network-range value ``level`` (0 = mid grey) for every centre pixel."""

    def __init__(self, level: float = 0.0, hole_size: int = 64) -> None:
        super().__init__()
        self.level, self.hole_size = level, hole_size

    def forward(self, masked: torch.Tensor) -> torch.Tensor:
        return masked.new_full((masked.shape[0], masked.shape[1], self.hole_size, self.hole_size), self.level)


def random_patches(n: int = 5, size: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def whole_image_preprocessing(longest_side: int) -> Compose:
    return Compose([
        LoadCXRImaged(keys=["image", "lung_mask"], ensure_channel_first=True, allow_missing_keys=True),
        ResizeToWorkingResolutiond(keys=["image", "lung_mask"], mode=["bilinear", "nearest-exact"],
                                   box_keys=["boxes", "lung_boxes"], longest_side=longest_side,
                                   allow_missing_keys=True),
        LungBoxesd(),
    ])


def test_network_range_round_trip():
    x = torch.linspace(0, 1, 11)
    assert to_network_range(x).min() == -1 and to_network_range(x).max() == 1
    torch.testing.assert_close(from_network_range(to_network_range(x)), x)
    assert from_network_range(torch.tensor([-1.5, 1.5])).tolist() == [0.0, 1.0]  # clipped


@pytest.mark.parametrize("fill_value, overlap", [("context_mean", 0), (0.4, 0), ("context_mean", 4)])
def test_mask_patches_is_the_training_hole(fill_value, overlap):
    patches = random_patches(4)
    masked = mask_patches(patches, 64, fill_value, overlap)
    hole = CenterHole(64, fill_value, overlap)
    for patch, batched in zip(patches, masked):
        torch.testing.assert_close(batched, torch.as_tensor(hole(patch)), rtol=0, atol=0)
    inner = slice(32 + overlap, 96 - overlap)
    assert not torch.equal(masked[..., inner, inner], patches[..., inner, inner])


def test_inpainted_patch_equals_original_outside_the_hole():
    generator = tiny_generator()
    generator.train()
    patches = random_patches(6)
    inpainted = inpaint_patches(generator, patches, batch_size=4)
    assert inpainted.shape == patches.shape and inpainted.dtype == torch.float32
    assert 0 <= inpainted.min() and inpainted.max() <= 1
    outside = torch.ones(128, 128, dtype=torch.bool)
    outside[32:96, 32:96] = False
    assert torch.equal(inpainted[..., outside], patches[..., outside])
    centres = inpaint_centres(generator, patches)
    torch.testing.assert_close(inpainted[..., 32:96, 32:96], centres)  # batch size does not change eval-mode output
    assert not torch.allclose(centres, patches[..., 32:96, 32:96])
    assert generator.training, "the generator's train mode must be restored"
    assert all(p.grad is None for p in generator.parameters())


def test_inpainting_rejects_bad_inputs():
    generator = tiny_generator()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inpaint_patches(generator, random_patches(2) * 2 - 1)  # network range passed by mistake
    with pytest.raises(ValueError, match="hole_size must equal"):
        inpaint_patches(generator, random_patches(2), hole_size=32)
    with pytest.raises(ValueError, match=r"\(B, C, P, P\)"):
        inpaint_patches(generator, random_patches(2)[:, 0])


def test_grey_generator_gives_grey_centre():
    patches = random_patches(3)
    inpainted = inpaint_patches(GreyGenerator(0.0), patches)
    assert torch.all(inpainted[..., 32:96, 32:96] == 0.5)


@pytest.mark.parametrize("stride", [32, 50])
def test_window_grid_covers_boxes_and_stays_inside(stride):
    image_shape = (300, 420)  # rows, cols
    boxes = [[10.4, 5.0, 200.0, 290.7], [180.0, 100.0, 430.0, 260.0], [300.0, 10.0, 360.0, 60.0]]
    starts, skipped = lung_window_starts(boxes, image_shape, window_size=128, stride=stride, source="img.png")
    assert len(skipped) == 1 and "img.png" in skipped[0] and "60x50" in skipped[0]
    assert (starts >= 0).all() and (starts[:, 0] + 128 <= 300).all() and (starts[:, 1] + 128 <= 420).all()
    covered = np.zeros(image_shape, dtype=bool)
    for row, col in starts:
        covered[row : row + 128, col : col + 128] = True
    for x0, y0, x1, y1 in ((10, 5, 200, 291), (180, 100, 420, 260)):  # rounded outwards, clipped to the image
        assert covered[y0:y1, x0:x1].all()
        inside = starts[(starts[:, 0] >= y0) & (starts[:, 1] >= x0) & (starts[:, 0] + 128 <= y1)
                        & (starts[:, 1] + 128 <= x1)]
        assert inside[:, 0].max() + 128 == y1 and inside[:, 1].max() + 128 == x1  # last window flush with the edge
        steps = np.diff(np.unique(inside[:, 1]))
        assert steps.max() <= stride
    assert len(np.unique(starts, axis=0)) == len(starts)


def test_heatmap_batched_equals_one_window_at_a_time():
    generator = tiny_generator(1)
    image = torch.rand(1, 210, 240, generator=torch.Generator().manual_seed(4))
    boxes = [[0, 0, 160, 200], [100, 70, 240, 210]]  # overlapping, so some windows are shared
    batched = AnomalyHeatmapInferer(stride=32, batch_size=16)(image, generator, boxes)
    single = AnomalyHeatmapInferer(stride=32, batch_size=1)(image, generator, boxes)
    np.testing.assert_array_equal(batched.windows, single.windows)
    assert torch.equal(batched.coverage, single.coverage)
    torch.testing.assert_close(batched.heatmap, single.heatmap, equal_nan=True, rtol=1e-5, atol=1e-6)
    assert batched.heatmap.shape == (210, 240) and batched.heatmap.dtype == torch.float32

    expected_coverage = np.zeros((210, 240), dtype=np.int32)
    for row, col in batched.windows:
        expected_coverage[row + 32 : row + 96, col + 32 : col + 96] += 1
    np.testing.assert_array_equal(batched.coverage.numpy(), expected_coverage)
    heat = batched.heatmap.numpy()
    assert np.isnan(heat[expected_coverage == 0]).all() and np.isfinite(heat[expected_coverage > 0]).all()
    assert (heat[expected_coverage > 0] >= 0).all()


def test_heatmap_values_with_a_known_generator():
    image = torch.full((1, 200, 200), 0.7)
    heatmap, coverage, windows = AnomalyHeatmapInferer(stride=36)(image, GreyGenerator(0.0), [[0, 0, 200, 200]])
    np.testing.assert_allclose(heatmap[coverage > 0].numpy(), 0.2, atol=1e-6)  # |0.7 - 0.5|
    # windows start at 0, 36 and 72 (flush with 200): holes [32, 96), [68, 132), [104, 168) per axis
    assert coverage[80, 80] == 4 and coverage[100, 100] == 1 and coverage[80, 100] == 2
    assert torch.isnan(heatmap[:32]).all() and torch.isnan(heatmap[:, 168:]).all()  # the box border band


def test_box_margin_lets_the_holes_reach_the_box_edges():
    image, box = torch.full((1, 300, 300), 0.6), [[60, 50, 250, 260]]
    plain = AnomalyHeatmapInferer(stride=32)(image, GreyGenerator(), box)
    grown = AnomalyHeatmapInferer(stride=32, box_margin=32)(image, GreyGenerator(), box)
    assert (plain.coverage[50:260, 60:250] == 0).any()  # the 32 px band along the box edges
    assert (grown.coverage[50:260, 60:250] > 0).all()
    assert (grown.windows >= 0).all() and (grown.windows + 128 <= 300).all()
    edge = AnomalyHeatmapInferer(stride=32, box_margin=32)(image, GreyGenerator(), [[0, 0, 200, 200]])
    assert edge.windows.min() == 0 and (edge.coverage[:32] == 0).all()  # clipped to the image, not padded


def test_heatmap_without_a_fitting_box_names_the_file():
    inferer = AnomalyHeatmapInferer()
    with pytest.raises(NoWindowError, match="small.png"):
        inferer(torch.rand(1, 256, 256), GreyGenerator(), [[0, 0, 100, 256]], source="small.png")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inferer(torch.rand(1, 256, 256) + 1, GreyGenerator(), [[0, 0, 256, 256]], source="bright.png")


def test_output_stem_keeps_uid_dots():
    assert output_stem("/d/00000003_000.png") == "00000003_000"
    assert output_stem("/d/1.2.840.10008.5.1.dcm") == "1.2.840.10008.5.1"
    assert output_stem("/d/1.2.840.10008.5.1") == "1.2.840.10008.5.1"


def test_inference_runner_writes_patches_heatmaps_and_index(phantom_datalist, tmp_path, caplog):
    datalist = load_datalist(phantom_datalist, "test")[:2]
    tiny = dict(datalist[0], image=datalist[0]["image"], lung_boxes=[[10, 10, 60, 200], [70, 10, 120, 200]])
    tiny.pop("lung_mask")
    datalist.append(tiny)  # same file, same stem, boxes too small for a window after resizing
    patch_transform = RandLungPatchd(keys="image", box_key="lung_boxes", num_samples=3)
    runner = InpaintingInference(
        tiny_generator(), datalist, whole_image_preprocessing(384), tmp_path / "out", patch_transform,
        device="cpu", stride=48, batch_size=8, overlay_vmax=0.2,
    )
    with caplog.at_level(logging.WARNING):
        index_path = runner.run()
    rows = list(csv.DictReader(open(index_path, newline="")))
    stems = [output_stem(entry["image"]) for entry in datalist[:2]]
    kinds = {(row["image"], row["kind"]) for row in rows}
    for stem in stems:
        assert {(stem, "grid"), (stem, "heatmap"), (stem, "overlay"), (stem, "image")} <= kinds
        for k in range(3):
            for suffix in ("original", "inpainted", "diff"):
                patch_png = Image.open(tmp_path / "out" / "patches" / f"{stem}_{k}_{suffix}.png")
                assert patch_png.size == (128, 128) and patch_png.mode == "L"
        # the working radiograph: each original patch is its crop at patch_box [x0, y0, x1, y1]
        working = np.asarray(Image.open(tmp_path / "out" / "images" / f"{stem}_image.png"))
        assert working.shape == (384, 384) and working.dtype == np.uint8
        for row in rows:
            if row["image"] == stem and row["kind"] in ("original", "inpainted"):
                x0, y0, x1, y1 = json.loads(row["note"].removeprefix("patch_box "))
                patch = np.asarray(Image.open(tmp_path / "out" / row["path"]))
                crop = working[y0:y1, x0:x1]
                if row["kind"] == "original":
                    np.testing.assert_array_equal(patch, crop)
                else:  # the inpainted patch differs from the working image only inside its centred hole
                    outside = np.ones((128, 128), bool)
                    outside[32:96, 32:96] = False
                    np.testing.assert_array_equal(patch[outside], crop[outside])
        heatmap = np.load(tmp_path / "out" / "heatmaps" / f"{stem}_heatmap.npy")
        assert heatmap.dtype == np.float32 and heatmap.shape == (384, 384)
        assert np.isfinite(heatmap).any() and np.isnan(heatmap).any()
        overlay = Image.open(tmp_path / "out" / "heatmaps" / f"{stem}_overlay.png")
        assert overlay.size == (384, 384) and overlay.mode == "RGB"
        grid = Image.open(tmp_path / "out" / "grids" / f"{stem}_grid.png")
        assert grid.size[1] == 4 * 130 + 2 and grid.size[0] > 3 * 130 + 2  # and a column of row labels
    assert all("colour scale 0-0.2" in row["note"] for row in rows if row["kind"] == "overlay")
    skipped = [row for row in rows if row["kind"] == "skipped"]
    assert len(skipped) == 1 and skipped[0]["image"] == f"{stems[0]}-2"
    assert stems[0] in skipped[0]["note"] and "window" in skipped[0]["note"]
    assert any("no heatmap" in message and stems[0] in message for message in caplog.messages)
    for row in rows:
        if row["path"]:
            assert (tmp_path / "out" / row["path"]).is_file()


def test_inference_on_images_without_boxes_writes_heatmaps_only(phantom_datalist, tmp_path):
    """The bundle's box-centred patches (``allow_missing_boxes``) on unannotated images: heatmap, no patches."""
    healthy = load_datalist(phantom_datalist, "test")[0]
    unhealthy = load_datalist(phantom_datalist, "test_unhealthy")[0]
    patch_transform = BoxCenteredPatchd(keys="image", box_key="boxes", allow_missing_boxes=True)
    runner = InpaintingInference(tiny_generator(), [healthy, unhealthy], whole_image_preprocessing(384),
                                 tmp_path / "out", patch_transform, device="cpu", stride=64, batch_size=8)
    rows = list(csv.DictReader(open(runner.run(), newline="")))
    healthy_stem, unhealthy_stem = output_stem(healthy["image"]), output_stem(unhealthy["image"])
    kinds = {stem: sorted(row["kind"] for row in rows if row["image"] == stem)
             for stem in (healthy_stem, unhealthy_stem)}
    assert kinds[healthy_stem] == ["heatmap", "overlay", "skipped"]
    assert "no patches" in next(row["note"] for row in rows if row["kind"] == "skipped")
    boxes = len(unhealthy["boxes"])
    assert kinds[unhealthy_stem] == sorted(["diff", "inpainted", "original"] * boxes
                                           + ["grid", "heatmap", "image", "overlay"])
    assert not list((tmp_path / "out" / "patches").glob(f"{healthy_stem}_*"))
    assert not (tmp_path / "out" / "images" / f"{healthy_stem}_image.png").exists()
    notes = [row["note"] for row in rows if row["kind"] == "original"]
    assert all(note.startswith("patch_box [") for note in notes)
    if unhealthy.get("box_labels"):
        assert [note.split("; box_label ")[1] for note in notes] == [str(label) for label in unhealthy["box_labels"]]


def test_inference_patches_are_seeded_per_image(phantom_datalist, tmp_path):
    datalist = load_datalist(phantom_datalist, "test")
    outputs = []
    for run, subset in enumerate((datalist[:1], datalist[:2])):
        runner = InpaintingInference(
            tiny_generator(), subset, whole_image_preprocessing(256), tmp_path / str(run),
            RandLungPatchd(keys="image", box_key="lung_boxes", num_samples=2), device="cpu", heatmaps=False, seed=7,
        )
        runner.run()
        stem = output_stem(datalist[0]["image"])
        outputs.append(np.asarray(Image.open(tmp_path / str(run) / "grids" / f"{stem}_grid.png")))
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_inference_ranks_the_images_by_their_heatmaps(phantom_datalist, tmp_path):
    """``image_scores.csv``: one row per heatmap, highest score first; each score is the quantile of the saved
    heatmap over the image's lung mask (or over every covered pixel when the datalist has no mask)."""
    datalist = load_datalist(phantom_datalist, "test") + load_datalist(phantom_datalist, "test_unhealthy")
    no_mask = {key: value for key, value in datalist[-1].items() if key != "lung_mask"}
    preprocessing = whole_image_preprocessing(256)
    runner = InpaintingInference(GreyGenerator(), [*datalist, no_mask], preprocessing, tmp_path, device="cpu",
                                 stride=32, batch_size=16, box_margin=32, image_score_quantile=0.9)
    runner.run()
    rows = list(csv.DictReader(open(tmp_path / "image_scores.csv", newline="")))
    assert [int(row["rank"]) for row in rows] == list(range(1, len(datalist) + 2))
    scores = [float(row["image_score"]) for row in rows]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    by_stem = {row["image"]: row for row in rows}
    for entry, stem in ((datalist[0], output_stem(datalist[0]["image"])),
                        (no_mask, f"{output_stem(no_mask['image'])}-2")):
        heatmap = np.load(tmp_path / "heatmaps" / f"{stem}_heatmap.npy")
        counted = np.isfinite(heatmap)
        if "lung_mask" in entry:
            counted &= preprocessing(dict(entry))["lung_mask"][0].numpy() > 0.5
        assert float(by_stem[stem]["image_score"]) == pytest.approx(np.quantile(heatmap[counted], 0.9), rel=1e-6)
        assert by_stem[stem]["region"] == ("lung mask" if "lung_mask" in entry else "lung boxes")
        assert (tmp_path / by_stem[stem]["overlay"]).is_file()


def test_inference_skips_an_unreadable_image_and_stops_past_the_fraction(phantom_datalist, tmp_path, caplog):
    """A bad file (here a DICOM cut to nothing) is skipped, named in the log and in skipped.csv, and its neighbours
    are processed; with max_skipped_fraction 0 the same run stops with one line naming the file."""
    from cxr_monai.data.robust import TooManySkippedError

    datalist = load_datalist(phantom_datalist, "test_unhealthy")[:2]
    broken = tmp_path / "cut_short.dcm"
    broken.write_bytes(b"DICM")
    datalist.insert(1, dict(datalist[0], image=str(broken)))
    runner = InpaintingInference(tiny_generator(), datalist, whole_image_preprocessing(256), tmp_path / "out",
                                 BoxCenteredPatchd("image", box_key="boxes", label_key="box_labels",
                                                   allow_missing_boxes=True),
                                 device="cpu", stride=64, max_skipped_fraction=0.5)
    with caplog.at_level(logging.WARNING):
        index_path = runner.run()
    skipped = list(csv.DictReader(open(tmp_path / "out" / "skipped.csv", newline="")))
    assert [(row["stage"], row["image"]) for row in skipped] == [("inference", str(broken))]
    assert skipped[0]["reason"] and str(broken) not in skipped[0]["reason"]
    assert any(str(broken) in message and "(inference)" in message for message in caplog.messages)
    images = {row["image"] for row in csv.DictReader(open(index_path, newline=""))}
    assert images == {output_stem(entry["image"]) for entry in (datalist[0], datalist[2])}

    strict = InpaintingInference(tiny_generator(), datalist, whole_image_preprocessing(256), tmp_path / "strict",
                                 device="cpu", stride=64, max_skipped_fraction=0.0)
    with pytest.raises(TooManySkippedError, match=rf"inference: 1 of 3 images .*{broken.name}"):
        strict.run()


def test_inference_writes_no_working_image_when_patches_are_not_its_crops(phantom_datalist, tmp_path):
    """A patch transform that changes the image before cutting: patch_box no longer locates the patches in the
    preprocessed radiograph, so the full image a 2AFC study would paste into is not written, and the index says why."""
    entry = load_datalist(phantom_datalist, "test")[0]
    sampler = RandLungPatchd(keys="image", box_key="lung_boxes", num_samples=1)
    darkened = Compose([lambda data: {**data, "image": data["image"] * 0.5}, sampler])
    runner = InpaintingInference(GreyGenerator(), [entry], whole_image_preprocessing(256), tmp_path, darkened,
                                 device="cpu", heatmaps=False)
    rows = list(csv.DictReader(open(runner.run(), newline="")))
    assert sorted(row["kind"] for row in rows) == ["diff", "grid", "inpainted", "original", "skipped"]
    skipped = next(row for row in rows if row["kind"] == "skipped")
    assert "no working image" in skipped["note"] and "patch_box" in skipped["note"]
    assert not (tmp_path / "images").exists()
