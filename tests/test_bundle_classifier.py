"""``bundles/classifier`` end to end on classification phantoms (7 findings, laterals, bone pairs): training with
MLflow and the masked macro AUROC as validation metric, the evaluation report in Table 1's layout, the triage
screen with CAM overlays, and the three-channel input (radiograph, lung-segmented, bone-suppressed). One tiny
training run (128 px, one dense layer a block, 2 epochs) serves the tests; the wiring is the point, not figures."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "classifier" / "configs"
TINY = {"image_size": 128, "downsample_input": False, "block_config": [1, 1, 1, 1], "batch_size": 4,
        "max_epochs": 2, "checkpoint_every": 0}


@pytest.fixture(scope="module")
def trained(classification_phantoms, bundle_command, run_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("classifier")
    run_bundle(bundle_command("classifier", ["train.json", "small.json"], dataset_dir=classification_phantoms,
                              output_dir=out, tracking=CONFIGS / "mlflow.json", **TINY), out / "train.log",
               timeout=300)
    return out


def test_training_tracks_loss_and_masked_auroc(trained, classification_phantoms):
    assert (trained / "models" / "model.pt").is_file()
    with sqlite3.connect(trained / "mlruns.db") as db:
        (status,) = db.execute("select status from runs").fetchone()
        metrics = {name for (name,) in db.execute("select distinct key from metrics")}
        params = dict(db.execute("select key, value from params").fetchall())
    assert status == "FINISHED" and {"loss", "val_auroc"} <= metrics
    assert params["num_classes"] == "7" and params["class_weighting"] == "True"
    weights = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert weights["class_layers.out.weight"].shape[0] == 7  # the phantoms' label_names


def test_evaluation_writes_the_table_roc_and_mlflow_run(trained, classification_phantoms, bundle_command,
                                                        run_bundle):
    run_bundle(bundle_command("classifier", ["train.json", "small.json", "inference.json", "evaluate.json"],
                              dataset_dir=classification_phantoms, output_dir=trained, eval_bootstrap_resamples=200,
                              **TINY), trained / "evaluate.log", timeout=300)
    out = trained / "evaluation"
    report = json.loads((out / "report.json").read_text())
    source = json.loads((classification_phantoms / "datalist.json").read_text())
    assert report["images"] == len(source["test"]) + len(source["test_unhealthy"])
    assert report["class_names"] == source["label_names"] and report["variant"] == "DN-121 (image)"
    assert "| DN-121 (image) |" in (out / "table.md").read_text()
    assert (out / "roc.png").is_file() == any(c["auroc"] is not None for c in report["classes"])
    with sqlite3.connect(trained / "mlruns.db") as db:
        tags = dict(db.execute("select key, value from tags where run_uuid = (select run_uuid from runs where "
                               "name = 'evaluate')").fetchall())
    assert tags.get("cxr_monai.kind") == "evaluate" and tags.get("training_run_id")
    # the CAM heatmaps localised against the phantoms' lesion boxes (ChestX-ray8 protocol), in the same run
    boxes = sum(len(entry.get("boxes", [])) for key in ("test", "test_unhealthy") for entry in source[key])
    localisation = json.loads((out / "localisation.json").read_text())
    assert boxes and localisation["boxes"] == boxes and localisation["heatmap_method"] == "cam"
    with sqlite3.connect(trained / "mlruns.db") as db:
        (count,) = db.execute("select count(*) from metrics where key = 'eval_loc_boxes' and run_uuid = (select "
                              "run_uuid from runs where name = 'evaluate')").fetchone()
    assert count == 1


def test_triage_ranks_images_with_cam_overlays_at_the_stored_size(trained, classification_phantoms, bundle_command,
                                                                  run_bundle):
    from PIL import Image

    from cxr_monai.io import stored_size

    run_bundle(bundle_command("classifier", ["train.json", "small.json", "inference.json"],
                              dataset_dir=classification_phantoms, output_dir=trained, triage_top_k=2, **TINY),
               trained / "triage.log", timeout=300)
    rows = list(csv.DictReader(open(trained / "triage" / "triage.csv", newline="")))
    scores = [float(row["abnormal_score"]) for row in rows]
    assert rows and scores == sorted(scores, reverse=True) and [row["rank"] for row in rows][:2] == ["1", "2"]
    overlay = trained / "triage" / rows[0]["top1_overlay"]
    with Image.open(overlay) as image:
        assert image.size == stored_size(rows[0]["image"])


@pytest.fixture(scope="module")
def half_lateral_datalist(classification_phantoms, tmp_path_factory) -> Path:
    """The phantoms' list with every second study's lateral view taken away (studies without one must still run)."""
    document = json.loads((classification_phantoms / "datalist.json").read_text())
    for key in ("training", "validation", "test", "test_unhealthy"):
        for number, entry in enumerate(document[key]):
            entry["image"] = str(classification_phantoms / entry["image"])
            entry["lateral"] = str(classification_phantoms / entry["lateral"])
            if number % 2:
                del entry["lateral"]
    path = tmp_path_factory.mktemp("half_lateral") / "datalist.json"
    path.write_text(json.dumps(document))
    return path


@pytest.fixture(scope="module")
def binary_model(classification_phantoms, bundle_command, run_bundle, tmp_path_factory) -> Path:
    """The seed's normal/abnormal pre-training (``binary.json``: each entry's ``label``), one tiny epoch."""
    out = tmp_path_factory.mktemp("binary")
    run_bundle(bundle_command("classifier", ["train.json", "small.json", "binary.json"],
                              dataset_dir=classification_phantoms, output_dir=out, tracking=CONFIGS / "mlflow.json",
                              **{**TINY, "max_epochs": 1}), out / "train.log", timeout=300)
    return out


def test_binary_pretraining_trains_one_normal_abnormal_output(binary_model):
    weights = torch.load(binary_model / "models" / "model.pt", weights_only=True)
    assert weights["class_layers.out.weight"].shape[0] == 1
    with sqlite3.connect(binary_model / "mlruns.db") as db:
        params = dict(db.execute("select key, value from params").fetchall())
        metrics = {name for (name,) in db.execute("select distinct key from metrics")}
    assert params["num_classes"] == "1" and params["target_key"] == "label" and "val_auroc" in metrics


def test_table1_last_row_dual_branch_three_channels_from_the_binary_model(
        half_lateral_datalist, binary_model, classification_phantoms, bundle_command, run_bundle, tmp_path):
    """Table 1's "+BoneSubtracted" row: the dual branch with the radiograph, lung-segmented and bone-suppressed
    channels on the frontal branch, initialised from the binary model, on studies with and without a lateral."""
    configs = ["train.json", "small.json", "dual_branch.json"]
    common = {"dataset_dir": classification_phantoms, "datalist": half_lateral_datalist, "output_dir": tmp_path,
              "input_keys": ["image", "lung_segmented", "bone_suppressed"], **{**TINY, "max_epochs": 1}}
    pretrained = binary_model / "models" / "model.pt"
    run_bundle(bundle_command("classifier", configs, pretrained_path=pretrained, **common), tmp_path / "train.log",
               timeout=300)
    weights = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert weights["frontal.features.conv0.weight"].shape[1] == 3  # radiograph, lung-segmented, bone-suppressed
    assert weights["lateral.features.conv0.weight"].shape[1] == 1 and "fusion.conv.weight" in weights
    log = (tmp_path / "train.log").read_text()
    assert f"DenseNet tensors from {pretrained}" in log and "class_layers.out.weight 7x" in log  # one-class head skipped

    run_bundle(bundle_command("classifier", configs + ["inference.json"], triage_top_k=1, **common),
               tmp_path / "triage.log", timeout=300)
    rows = list(csv.DictReader(open(tmp_path / "triage" / "triage.csv", newline="")))
    document = json.loads(half_lateral_datalist.read_text())
    has_lateral = {entry["image"]: "lateral" in entry for key in ("test", "test_unhealthy") for entry in document[key]}
    assert {row["image"]: bool(row["top1_lateral_overlay"]) for row in rows} == has_lateral
    assert all(row["top1_lateral_overlay"].endswith("_lateral.png") for row in rows if row["top1_lateral_overlay"])

    run_bundle(bundle_command("classifier", configs + ["inference.json", "evaluate.json"],
                              eval_bootstrap_resamples=50, **common), tmp_path / "evaluate.log", timeout=300)
    report = json.loads((tmp_path / "evaluation" / "report.json").read_text())
    assert report["images"] == len(has_lateral)
    assert report["variant"] == "DualBranch DN-121 (image + lung_segmented + bone_suppressed)"
