"""Bone suppression outside the bundle: the writer at the original size, the evaluation (image quality, rib
contrast) on phantom pairs, the training grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cxr_monai.apps.bone_suppression import (
    BoneImageWriter,
    BoneSuppressionEvaluation,
    BoneSuppressionGrid,
    image_quality,
    rib_contrast,
    suppress_bones,
    write_png16,
)
from cxr_monai.io import read_cxr


def _entries(phantoms, split="training", count=3):
    document = json.loads((phantoms / "datalist.json").read_text())
    return [{key: str(phantoms / value) if isinstance(value, str) and key != "view" else value
             for key, value in entry.items()} for entry in document[split][:count]]


def test_png16_round_trips_through_the_reader(tmp_path):
    image = np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(64, 48)
    read, meta = read_cxr(write_png16(image, tmp_path / "x.png"))
    assert meta["bits_stored"] == 16 and np.abs(read - image).max() <= 0.5 / 65535 + 1e-7


def test_suppression_subtracts_and_clips():
    np.testing.assert_allclose(suppress_bones(np.array([0.2, 0.8]), np.array([0.3, 0.1])), [0.0, 0.7])
    with pytest.raises(ValueError, match="differ in size"):
        suppress_bones(np.zeros((2, 2)), np.zeros((2, 3)))


def test_quality_and_rib_contrast_by_hand():
    target = np.zeros((32, 32), np.float32)
    assert image_quality(target + 0.1, target)["psnr"] == pytest.approx(20.0, abs=1e-4)
    assert image_quality(target, target)["ssim"] == pytest.approx(1.0)
    image = np.full((4, 4), 0.2)
    ribs = np.zeros((4, 4), bool)
    ribs[::2] = True
    image[ribs] = 0.5
    assert rib_contrast(image, ribs, np.ones((4, 4), bool)) == pytest.approx(0.3)
    assert np.isnan(rib_contrast(image, np.zeros((4, 4), bool), np.ones((4, 4), bool)))


def test_writer_writes_both_images_at_the_original_size_and_a_datalist(bundle_phantoms, tmp_path):
    source = bundle_phantoms / "datalist.json"
    writer = BoneImageWriter(tmp_path / "out", datalist=source, base_dir=bundle_phantoms)
    entry = _entries(bundle_phantoms, "test", 1)[0]
    radiograph, _ = read_cxr(entry["image"])
    bone = np.full(radiograph.shape, 0.1, np.float32)
    written = writer.write(MetaTensor(torch.from_numpy(bone)[None]), entry["image"])
    assert written["bone_suppressed"].startswith("suppressed/") and written["bone"].startswith("bones/")
    suppressed, _ = read_cxr(tmp_path / "out" / written["bone_suppressed"])
    np.testing.assert_allclose(suppressed, np.clip(radiograph - 0.1, 0, 1), atol=1e-4)
    assert (tmp_path / "out" / "figures").is_dir()
    document = json.loads(writer.completed().read_text())
    assert document["test"] == [written] and document["test_unhealthy"] == []  # the source's splits, even empty
    from cxr_monai.data import load_datalist

    loaded = load_datalist(tmp_path / "out" / "datalist.json", "test", base_dir=tmp_path / "out")
    assert loaded[0]["bone_suppressed"] == str(tmp_path / "out" / written["bone_suppressed"])
    with pytest.raises(ValueError, match="Invertd"):
        writer.write(torch.zeros(1, 8, 8), entry["image"])


def test_evaluation_on_phantom_pairs_scores_a_good_and_a_useless_suppression(bundle_phantoms, tmp_path):
    datalist = bundle_phantoms / "datalist.json"
    entries = _entries(bundle_phantoms, "test", 5)
    results = {}
    for name, noise in (("good", 0.01), ("none", None)):
        evaluation = BoneSuppressionEvaluation(tmp_path / name, datalist=datalist, base_dir=bundle_phantoms,
                                               n_resamples=200, figure_images=2)
        rng = np.random.default_rng(0)
        for entry in entries:
            target = read_cxr(entry["bone"])[0]
            bone = np.clip(target + rng.normal(0, noise, target.shape), 0, 1) if noise else np.zeros_like(target)
            evaluation.item({"pred": MetaTensor(torch.from_numpy(bone.astype(np.float32))[None])}, entry["image"])
        report = evaluation.completed()
        results[name] = report.summaries
        assert (tmp_path / name / "figure.png").is_file() and (tmp_path / name / "table.md").is_file()
    good, none = results["good"], results["none"]
    assert good["suppressed_psnr"].mean > none["suppressed_psnr"].mean + 10
    assert none["rib_contrast_residual"].mean == pytest.approx(1.0)  # nothing subtracted: the ribs stay
    assert good["rib_contrast_residual"].mean < 0.35  # near the soft-tissue target's own (ribs crowd the apices)
    assert good["rib_contrast_suppressed"].mean == pytest.approx(good["rib_contrast_target"].mean, abs=0.01)


def test_grid_shows_input_bone_suppressed_and_target():
    network = torch.nn.Conv2d(1, 1, 3, padding=1)
    samples = [{"image": torch.rand(1, 32, 32) * 2 - 1, "bone": torch.rand(1, 32, 32) * 0.2} for _ in range(2)]
    grid = BoneSuppressionGrid(network)(samples)
    assert grid.ndim == 3 and grid.shape[-1] == 3 and grid.shape[0] >= 64


def test_grid_saver_passes_over_the_records_of_unusable_images(tmp_path):
    from ignite.engine import Engine

    from cxr_monai.data.robust import SkippedImage
    from cxr_monai.handlers import ImageGridSaver

    good = {"image": torch.rand(1, 32, 32) * 2 - 1, "bone": torch.rand(1, 32, 32) * 0.2}
    saver = ImageGridSaver([SkippedImage("bad.png", "ValueError: unreadable"), good], tmp_path,
                           grid=BoneSuppressionGrid(torch.nn.Conv2d(1, 1, 3, padding=1)), num_samples=2)
    assert saver.samples() == [good]
    engine = Engine(lambda engine, batch: None)
    engine.state.epoch = 1
    saver(engine)
    assert saver.written == [tmp_path / "grid_epoch0001.png"]
