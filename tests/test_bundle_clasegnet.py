"""``bundles/clasegnet`` end to end on pneumothorax phantoms: ClaSegNet training with MLflow and early stopping on the
validation AUC, the evaluation (seed 004's table with CIs, confusion matrix, TP/FP/FN/TN examples) and inference (maps
and masks at the stored size, SIIM's submission CSV). The ResNet-50 baseline from the same bundle is trained and
evaluated by tests/test_clasegnet_table.py. Tiny sizes: the wiring is the point, not figures."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "clasegnet" / "configs"
TINY = {"image_size": 128, "layers": [1, 1, 1, 1], "batch_size": 4, "max_epochs": 2, "checkpoint_every": 0}


@pytest.fixture(scope="module")
def trained(pneumothorax_phantoms, bundle_command, run_bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clasegnet")
    run_bundle(bundle_command("clasegnet", ["train.json", "small.json"], dataset_dir=pneumothorax_phantoms,
                              output_dir=out, tracking=CONFIGS / "mlflow.json", **TINY), out / "train.log", timeout=300)
    return out


def test_training_tracks_the_losses_and_the_validation_auc(trained):
    assert (trained / "models" / "model.pt").is_file()
    with sqlite3.connect(trained / "mlruns.db") as db:
        (status,) = db.execute("select status from runs").fetchone()
        metrics = {name for (name,) in db.execute("select distinct key from metrics")}
        params = dict(db.execute("select key, value from params").fetchall())
    assert status == "FINISHED" and {"loss", "val_auc"} <= metrics and params["mode"] == "clasegnet"


def test_evaluation_writes_the_seed_table_and_examples(trained, pneumothorax_phantoms, bundle_command, run_bundle):
    run_bundle(bundle_command("clasegnet", ["train.json", "small.json", "inference.json", "evaluate.json"],
                              dataset_dir=pneumothorax_phantoms, output_dir=trained, eval_bootstrap_resamples=100,
                              **TINY), trained / "evaluate.log", timeout=300)
    out = trained / "evaluation"
    report = json.loads((out / "report.json").read_text())
    source = json.loads((pneumothorax_phantoms / "datalist.json").read_text())
    test = source["test"] + source["test_unhealthy"]
    assert report["images"] == len(test) and report["positives"] == sum(entry["label"] for entry in test)
    assert report["variant"] == "ClaSegNet" and report["dice"]["value"] is not None
    assert sum(map(sum, report["confusion"]["rows_truth_columns_prediction"])) == len(test)
    assert "| ClaSegNet |" in (out / "table.md").read_text()
    examples = [path for path in (out / "examples").rglob("*.png")]
    assert examples and {path.parent.name for path in examples} <= {"TP", "FP", "FN", "TN"}
    with sqlite3.connect(trained / "mlruns.db") as db:
        metrics = {name for (name,) in db.execute("select distinct key from metrics where run_uuid = (select "
                                                  "run_uuid from runs where name = 'evaluate')")}
    assert {"eval_auc", "eval_accuracy", "eval_dice", "eval_tp"} <= metrics


def test_inference_writes_maps_at_the_stored_size_and_a_siim_submission(trained, pneumothorax_phantoms,
                                                                         bundle_command, run_bundle):
    from PIL import Image

    from cxr_monai.io import rle_decode, stored_size

    run_bundle(bundle_command("clasegnet", ["train.json", "small.json", "inference.json"],
                              dataset_dir=pneumothorax_phantoms, output_dir=trained, **TINY),
               trained / "inference.log", timeout=300)
    out = trained / "inference"
    predictions = list(csv.DictReader(open(out / "predictions.csv", newline="")))
    probabilities = [float(row["probability"]) for row in predictions]
    assert predictions and probabilities == sorted(probabilities, reverse=True)
    submission = list(csv.DictReader(open(out / "submission.csv", newline="")))
    assert {row["ImageId"] for row in submission} == {row["image_id"] for row in predictions}
    for row in predictions:
        stem = Path(row["image"]).name.split(".")[0]
        width, height = stored_size(row["image"])
        with Image.open(out / "masks" / f"{stem}.png") as mask, Image.open(out / "probability" / f"{stem}.png") as heat:
            assert mask.size == heat.size == (width, height)
            pixels = int((np.asarray(mask) > 0).sum())
        code = next(r["EncodedPixels"] for r in submission if r["ImageId"] == row["image_id"])
        if row["pneumothorax"] == "1":
            assert int(rle_decode(code, (height, width)).sum()) == pixels  # the written mask, run-length encoded
        else:
            assert code == "-1"
    document = json.loads((out / "datalist.json").read_text())
    assert all(entry["lesion_mask"].startswith("masks/") for key in ("test", "test_unhealthy")
               for entry in document.get(key, []))
