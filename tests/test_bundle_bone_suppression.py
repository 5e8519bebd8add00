"""``bundles/bone_suppression``: the seed's setting in ``train.json`` (fast), then end-to-end runs on phantom pairs
(slow): train with MLflow, inference at the original size with a datalist for the classifier, evaluation report.
One tiny training run (64 px, 3 epochs) serves the slow tests; the wiring is the point, not the figures."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "bone_suppression" / "configs"
TINY = {"image_size": 64, "g_channels": [8, 16, 32, 32], "attention_sizes": [8], "d_channels": 8, "max_epochs": 3,
        "checkpoint_every": 0}


def test_train_json_is_the_seed_setting():
    from monai.bundle import ConfigParser

    from cxr_monai.losses import AdversarialHingeLoss
    from cxr_monai.networks import SelfAttention2d

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"device": "$torch.device('cpu')"})
    g_optimizer, d_optimizer = (parser.get_parsed_content(key) for key in ("g_optimizer", "d_optimizer"))
    assert g_optimizer.param_groups[0]["lr"] == 1e-4 and d_optimizer.param_groups[0]["lr"] == 4e-4  # TTUR
    assert isinstance(parser.get_parsed_content("adversarial_loss"), AdversarialHingeLoss)
    generator = parser.get_parsed_content("generator_def")
    attention = [m for m in generator.modules() if isinstance(m, SelfAttention2d)]
    assert len(attention) == 2 and all(float(block.gamma) == 0.0 for block in attention)
    discriminator = parser.get_parsed_content("discriminator_def")
    convs = [m for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    assert len(discriminator(torch.zeros(1, 2, 256, 256))) == 2  # two scales


@pytest.fixture(scope="module")
def trained(bundle_phantoms, bundle_command, run_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bone_suppression")
    run_bundle(bundle_command("bone_suppression", ["train.json", "small.json"], dataset_dir=bundle_phantoms,
                              output_dir=out, tracking=CONFIGS / "mlflow.json", **TINY), out / "train.log", timeout=300)
    return out


@pytest.mark.slow
def test_training_writes_model_checkpoints_grids_and_an_mlflow_run(trained):
    assert (trained / "models" / "model.pt").is_file()
    assert len(list((trained / "grids").glob("grid_epoch*.png"))) == 3
    with sqlite3.connect(trained / "mlruns.db") as db:
        (status,) = db.execute("select status from runs").fetchone()
        metrics = {name for (name,) in db.execute("select distinct key from metrics")}
        params = dict(db.execute("select key, value from params").fetchall())
    assert status == "FINISHED"
    assert {"g_loss", "d_loss", "l1", "ssim", "g_adv", "d_real", "val_psnr", "val_ssim", "val_mae"} <= metrics
    assert params["g_learning_rate"] == "0.001" and params["d_learning_rate"] == "0.004"  # small.json's TTUR pair
    assert list((trained / "mlruns").rglob("grids/grid_epoch0003.png"))  # the grids are the run's artifacts
    state = torch.load(next((trained / "checkpoints").glob("checkpoint_*.pt")), weights_only=True)
    assert {"g_network", "d_network", "g_optimizer", "d_optimizer", "g_scaler", "d_scaler"} <= set(state)


@pytest.mark.slow
def test_inference_writes_both_images_at_the_original_size_and_a_datalist(trained, bundle_phantoms, bundle_command,
                                                                          run_bundle, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(bundle_phantoms, data)
    entry = json.loads((data / "datalist.json").read_text())["test"][0]
    if entry["image"].endswith(".png"):  # a radiograph of another shape than the working size's square
        with Image.open(data / entry["image"]) as image:
            image.resize((200, 240)).save(data / entry["image"])
    run_bundle(bundle_command("bone_suppression", ["train.json", "small.json", "inference.json"], dataset_dir=data,
                              output_dir=trained, inference_dir=tmp_path / "inference", **TINY),
               tmp_path / "infer.log", timeout=300)
    out = tmp_path / "inference"
    from cxr_monai.data import load_datalist
    from cxr_monai.io import read_cxr, stored_size

    entries = load_datalist(out / "datalist.json", ["test", "test_unhealthy"], base_dir=out)
    source = json.loads((data / "datalist.json").read_text())
    assert len(entries) == len(source["test"]) + len(source["test_unhealthy"])
    for written in entries:
        suppressed, _ = read_cxr(written["bone_suppressed"])
        bone, _ = read_cxr(written["bone"])
        assert suppressed.shape[::-1] == bone.shape[::-1] == stored_size(written["image"])
        radiograph, _ = read_cxr(written["image"])
        np.testing.assert_allclose(suppressed, np.clip(radiograph - bone, 0, 1), atol=2e-4)
    assert len(list((out / "figures").glob("*.png"))) == len(entries)


@pytest.mark.slow
def test_evaluation_writes_the_report_and_logs_it(trained, bundle_phantoms, bundle_command, run_bundle):
    run_bundle(bundle_command("bone_suppression", ["train.json", "small.json", "inference.json", "evaluate.json"],
                              dataset_dir=bundle_phantoms, output_dir=trained, eval_bootstrap_resamples=200, **TINY),
               trained / "eval.log", timeout=300)
    report = json.loads((trained / "evaluation" / "report.json").read_text())
    source = json.loads((bundle_phantoms / "datalist.json").read_text())
    assert report["images"] == len(source["test"]) + len(source["test_unhealthy"])
    assert {"bone_psnr", "suppressed_ssim", "rib_contrast_input", "rib_contrast_residual"} <= set(report["summaries"])
    assert report["summaries"]["rib_contrast_input"]["mean"] > 0.02  # the phantoms' ribs are visible before
    assert (trained / "evaluation" / "figure.png").is_file()
    with sqlite3.connect(trained / "mlruns.db") as db:
        tags = dict(db.execute("select key, value from tags where run_uuid = (select run_uuid from runs where "
                               "name = 'evaluate')").fetchall())
    assert tags.get("cxr_monai.kind") == "evaluate" and tags.get("training_run_id")


@pytest.mark.slow
def test_soft_tissue_only_pairs_train_with_the_bone_image_made_from_them(bundle_phantoms, bundle_command, run_bundle,
                                                                        tmp_path):
    document = json.loads((bundle_phantoms / "datalist.json").read_text())
    for split in ("training", "validation"):
        for entry in document[split]:
            entry.pop("bone")  # JSRT with its bone-suppressed images: no bone image on disk
    document["validation"][0].pop("bone_suppressed")  # and one entry with neither: skipped, named
    datalist = tmp_path / "soft_tissue_only.json"
    datalist.write_text(json.dumps(document))
    out = tmp_path / "run"
    run_bundle(bundle_command("bone_suppression", ["train.json", "small.json"], dataset_dir=bundle_phantoms,
                              datalist=datalist, output_dir=out, max_skipped_fraction=0.5,
                              **{**TINY, "max_epochs": 1}), tmp_path / "train.log", timeout=300)
    assert (out / "models" / "model.pt").is_file()
    skipped = (out / "skipped.csv").read_text()
    assert document["validation"][0]["image"].split("/")[-1] in skipped and "neither 'bone'" in skipped
