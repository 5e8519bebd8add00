"""End-to-end runs of ``bundles/lung_segmentation`` on phantoms: train (MLflow), inference at the original size,
evaluation report, and a bad mask named in ``skipped.csv``. One tiny training run serves every test (64 px, width
0.125, 2 epochs); the figures are not the point here, the wiring is."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

TINY = {"image_size": 64, "width": 0.125, "max_epochs": 2, "batch_size": 4, "checkpoint_every": 0}


@pytest.fixture(scope="module")
def trained(bundle_phantoms, bundle_command, run_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lung_seg")
    args = bundle_command("lung_segmentation", ["train.json", "small.json"], dataset_dir=bundle_phantoms,
                          output_dir=out, **TINY) + ["--tracking", str(Path("bundles/lung_segmentation/configs/mlflow.json"))]
    run_bundle(args, out / "train.log", timeout=300)
    return out


def test_training_writes_model_checkpoints_grids_and_an_mlflow_run(trained):
    assert (trained / "models" / "model.pt").is_file()
    assert sorted(p.name for p in (trained / "checkpoints").glob("checkpoint_*.pt"))
    assert len(list((trained / "grids").glob("grid_epoch*.png"))) == 2
    with sqlite3.connect(trained / "mlruns.db") as db:
        (status,) = db.execute("select status from runs").fetchone()
        metrics = {name for (name,) in db.execute("select distinct key from metrics")}
    assert status == "FINISHED"
    assert {"loss", "val_mean_dice"} <= metrics


def test_inference_writes_masks_at_the_original_size_and_a_datalist(trained, bundle_phantoms, bundle_command,
                                                                      run_bundle):
    run_bundle(bundle_command("lung_segmentation", ["train.json", "small.json", "inference.json"],
                              dataset_dir=bundle_phantoms, output_dir=trained, **TINY), trained / "infer.log",
               timeout=300)
    out = trained / "inference"
    document = json.loads((out / "datalist.json").read_text())
    entries = [entry for key in ("test", "test_unhealthy") for entry in document.get(key, [])]
    source = json.loads((bundle_phantoms / "datalist.json").read_text())
    assert len(entries) == len(source["test"]) + len(source["test_unhealthy"])
    assert {e.get("label") for e in document.get("test_unhealthy", [])} <= {1}
    from cxr_monai.data import validate_datalist
    from cxr_monai.io import stored_size

    validate_datalist(out / "datalist.json")
    for entry in entries:
        mask = np.asarray(Image.open(out / entry["lung_mask"]))
        assert mask.shape[::-1] == stored_size(entry["image"])  # (W, H) of the stored image
        assert set(np.unique(mask)) <= {0, 255}
        stem = Path(entry["lung_mask"]).stem
        assert (out / "masks" / f"{stem}.nii.gz").is_file() and (out / "overlays" / f"{stem}.png").is_file()
        assert "lung_boxes" not in entry
    import nibabel as nib

    nifti = nib.load(out / "masks" / f"{Path(entries[0]['lung_mask']).stem}.nii.gz")
    assert nifti.shape[:2] == stored_size(entries[0]["image"])


def test_evaluation_writes_the_report_and_logs_it(trained, bundle_phantoms, bundle_command, run_bundle, tmp_path):
    data = tmp_path / "data"  # one test image (and its mask) at another size: batches of mixed sizes, as real data
    shutil.copytree(bundle_phantoms, data)
    source = json.loads((data / "datalist.json").read_text())
    entry = next(e for e in source["test"] if e["image"].endswith(".png"))
    for key in ("image", "lung_mask"):
        with Image.open(data / entry[key]) as image:
            image.resize((200, 240), Image.NEAREST).save(data / entry[key])
    run_bundle(bundle_command("lung_segmentation", ["train.json", "small.json", "inference.json", "evaluate.json"],
                              dataset_dir=data, output_dir=trained, **TINY), trained / "eval.log", timeout=300)
    out = trained / "evaluation"
    with open(out / "per_image.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    resized = Image.open(out / "masks" / "masks" / f"{Path(entry['image']).stem}.png")
    assert resized.size == (200, 240)
    assert len(rows) == len(source["test"]) + len(source["test_unhealthy"])
    assert all(0.0 <= float(row["dice"]) <= 1.0 for row in rows)
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == len(rows) and "dice" in report["summaries"]
    assert (out / "worst.png").is_file() and "| dice |" in (out / "table.md").read_text()
    with sqlite3.connect(trained / "mlruns.db") as db:
        tags = dict(db.execute("select key, value from tags where run_uuid = (select run_uuid from runs where "
                               "name = 'evaluate')").fetchall())
    assert tags.get("cxr_monai.kind") == "evaluate" and tags.get("training_run_id")


def test_a_mask_of_another_size_is_skipped_and_named(bundle_phantoms, bundle_command, run_bundle, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(bundle_phantoms, data)
    document = json.loads((data / "datalist.json").read_text())
    bad = document["training"][0]["lung_mask"]
    Image.open(data / bad).resize((100, 80)).save(data / bad)
    out = tmp_path / "run"
    run_bundle(bundle_command("lung_segmentation", ["train.json", "small.json"], dataset_dir=data, output_dir=out,
                              max_skipped_fraction=0.5, **{**TINY, "max_epochs": 1}), out.with_suffix(".log"),
               timeout=300)
    skipped = (out / "skipped.csv").read_text()
    assert Path(bad).name in skipped and "mask size mismatch" in skipped
