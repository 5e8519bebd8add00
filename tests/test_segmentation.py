"""Unit tests of the lung-segmentation pieces: mask checks, metrics, report, mask writer, grid, prepare_batch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from cxr_monai.apps.segmentation import (
    LungMaskWriter,
    SegmentationGrid,
    SegmentationReport,
    dice_score,
    hd95,
    segmentation_row,
)
from cxr_monai.engines import KeyedBatch
from cxr_monai.networks import VGG16UNet
from cxr_monai.reports import summarize_metric
from cxr_monai.transforms import BinaryMask, BinaryMaskd, MaskError


def _square(size=32, lo=8, hi=24):
    mask = np.zeros((size, size), bool)
    mask[lo:hi, lo:hi] = True
    return mask


def _named(array, name):
    return MetaTensor(torch.as_tensor(array, dtype=torch.float32)[None], meta={"filename_or_obj": name})


@pytest.mark.parametrize("foreground", [1.0, 1 / 255, 0.5])
def test_binary_mask_accepts_any_single_foreground_value(foreground):
    mask = _named(_square() * foreground, "lungs.png")
    out = BinaryMask()(mask)
    assert set(out.unique().tolist()) == {0.0, 1.0} and int(out.sum()) == 16 * 16
    assert out.meta["filename_or_obj"] == "lungs.png"


@pytest.mark.parametrize("values, reason", [
    (np.zeros((32, 32)), "empty mask"),
    (np.ones((32, 32)), "all-foreground mask"),
    (np.arange(32 * 32).reshape(32, 32) / 1024, "non-binary mask"),
    (_square() * 0.5 + (~_square()) * 0.2, "non-binary mask"),
])
def test_binary_mask_rejects_with_the_file_and_the_reason(values, reason):
    with pytest.raises(MaskError, match=rf"^lungs\.png: {reason}"):
        BinaryMask()(_named(values, "lungs.png"))


def test_binary_mask_thresholds_jpeg_and_rejects_a_radiograph_saved_as_jpeg():
    noisy = _square() * 0.97 + 0.02
    assert int(BinaryMask()(_named(noisy, "m.jpg")).sum()) == 16 * 16
    ramp = np.tile(np.linspace(0, 1, 32), (32, 1))
    with pytest.raises(MaskError, match="mid-grey"):
        BinaryMask()(_named(ramp, "m.jpg"))


def test_binary_maskd_checks_the_size_against_the_image():
    data = {"image": _named(np.zeros((32, 40)), "img.png"), "lung_mask": _named(_square(), "lungs.png")}
    with pytest.raises(MaskError, match=r"lungs\.png: mask size mismatch: the mask is 32 x 32 px .* 40 x 32 px"):
        BinaryMaskd("lung_mask")(data)


def test_dice_and_hd95():
    a, b = _square(), _square(lo=10, hi=26)
    assert dice_score(a, a) == 1.0 and dice_score(a, np.zeros_like(a)) == 0.0
    assert hd95(a, a) == 0.0 and hd95(a, b) == pytest.approx(2.0, abs=1.0)
    assert np.isnan(hd95(a, np.zeros_like(a)))
    row = segmentation_row("x.png", a, b, spacing=(0.5, 0.5))
    assert row["hd95_mm"] == pytest.approx(row["hd95_px"] * 0.5)
    assert np.isnan(segmentation_row("x.png", a, b, spacing=(0.5, 0.7))["hd95_mm"])
    with pytest.raises(ValueError, match="differ in size"):
        segmentation_row("x.png", a, _square(size=16, lo=2, hi=8))


def test_report_summaries_count_empty_predictions_apart(tmp_path):
    a = _square()
    rows = [segmentation_row(f"{i}.png", a, a) for i in range(4)] + [segmentation_row("e.png", np.zeros_like(a), a)]
    report = SegmentationReport.from_rows(rows, n_resamples=200)
    assert report.empty_predictions == 1 and report.summaries["hd95_px"].n == 4
    assert report.summaries["dice"].mean == pytest.approx(0.8) and report.worst[0] == "e.png"
    metrics = report.metrics()
    assert metrics["dice_mean"] == pytest.approx(0.8) and metrics["empty_predictions"] == 1
    files = report.write(tmp_path)
    assert set(files) == {"report.json", "per_image.csv", "table.md"}
    assert json.loads(files["report.json"].read_text())["summaries"]["dice"]["n"] == 5


def test_summarize_metric_refuses_non_finite_values():
    summary = summarize_metric("dice", [0.9, 0.95, 0.97, 0.92], n_resamples=300)
    assert summary.ci_low <= summary.mean <= summary.ci_high and summary.std > 0
    with pytest.raises(ValueError, match="not finite"):
        summarize_metric("hd95", [1.0, float("nan")])


def test_mask_writer_writes_png_nifti_overlay_and_datalist(tmp_path):
    image_path = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)).save(image_path)
    mask = np.zeros((40, 30), np.float32)
    mask[5:30, 4:12] = 1
    source = tmp_path / "list.json"
    source.write_text(json.dumps({"test": [], "test_unhealthy": [{"image": "img.png", "label": 1,
                                                                  "lung_boxes": [[0, 0, 1, 1]],
                                                                  "lesion_mask": "lesion.png"}]}))
    writer = LungMaskWriter(tmp_path / "out", datalist=source)
    entry = writer.write(torch.from_numpy(mask)[None], str(image_path))
    assert entry == {"image": str(image_path), "label": 1, "lung_mask": "masks/img.png",
                     "lesion_mask": str(tmp_path / "lesion.png")}
    written = np.asarray(Image.open(tmp_path / "out" / "masks" / "img.png"))
    assert written.shape == (40, 30) and (written > 0).sum() == mask.sum()
    import nibabel as nib

    assert nib.load(tmp_path / "out" / "masks" / "img.nii.gz").shape == (30, 40, 1)
    assert (tmp_path / "out" / "overlays" / "img.png").is_file()
    document = json.loads(writer.completed().read_text())
    assert document["test_unhealthy"] == [entry] and document["test"] == []  # an empty split is kept
    with pytest.raises(ValueError, match="Invertd"):
        writer.write(torch.zeros(1, 20, 20), str(image_path))


def test_per_image_handlers_must_say_what_they_do_with_an_item():
    from cxr_monai.handlers import PerImageHandler

    with pytest.raises(TypeError, match="abstract"):
        PerImageHandler()


def test_segmentation_grid_and_keyed_batch():
    network = VGG16UNet(in_channels=1, out_channels=1, width=0.125, norm=None)
    samples = [{"image": torch.rand(1, 64, 64), "lung_mask": torch.from_numpy(_square(64, 16, 48)).float()[None]}
               for _ in range(2)]
    grid = SegmentationGrid(network)(samples)
    assert grid.ndim == 3 and grid.shape[2] == 3 and grid.shape[0] >= 2 * 64
    batch = {"image": torch.zeros(2, 1, 4, 4), "lung_mask": torch.ones(2, 1, 4, 4)}
    image, label = KeyedBatch(label_key="lung_mask")(batch)
    assert label.sum() == 32
    assert KeyedBatch(label_key=None)({"image": torch.zeros(1, 1, 4, 4)})[1] is None
    with pytest.raises(KeyError, match="lung_mask"):
        KeyedBatch(label_key="lung_mask")({"image": torch.zeros(1, 1, 4, 4)})


def test_evaluation_gives_millimetres_from_the_dicom_header_only(bundle_phantoms, tmp_path):
    from cxr_monai.apps.segmentation import SegmentationEvaluation
    from cxr_monai.io import read_cxr, stored_spacing

    document = json.loads((bundle_phantoms / "datalist.json").read_text())
    entries = [e for e in document["training"] if e["image"].endswith(".dcm")][:1]
    entries += [e for e in document["training"] if e["image"].endswith(".png")][:1]
    evaluation = SegmentationEvaluation(tmp_path)
    for entry in entries:
        image_path, mask_path = str(bundle_phantoms / entry["image"]), str(bundle_phantoms / entry["lung_mask"])
        reference = np.asarray(Image.open(mask_path)) > 0
        shifted = np.roll(reference, 4, axis=1).astype(np.float32)  # a prediction 4 px to the right
        item = {"pred": MetaTensor(torch.from_numpy(shifted)[None]),
                "label": MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": mask_path})}
        evaluation.item(item, image_path)
    dicom_row, png_row = evaluation.rows
    spacing = read_cxr(bundle_phantoms / entries[0]["image"])[1]["pixel_spacing"]
    assert stored_spacing(bundle_phantoms / entries[0]["image"])[0] == tuple(spacing)
    assert dicom_row["hd95_px"] == pytest.approx(4.0, abs=0.5)
    assert dicom_row["hd95_mm"] == pytest.approx(dicom_row["hd95_px"] * spacing[0])
    assert png_row["hd95_px"] == pytest.approx(4.0, abs=0.5) and np.isnan(png_row["hd95_mm"])
