"""End to end: the localisation bundle (seed 002's Faster R-CNN) on the classification phantoms' boxes.

Slow: one quick training (train.json + small.json at 64 px on a ResNet-18 FPN, evaluated every 2 steps, report steps 2
and 4 with a window of 2, an extra synthetic datalist appended, MLflow on), then evaluate.json on the model chosen for
step 4 and inference.json on the test images without their boxes. Skipped, with the reason, where torchvision is
missing or does not fit torch. Fast (no torchvision): inference.json's runner and preprocessing on a stand-in
detector, and the boxes mapped back to the stored image's pixels.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "localisation" / "configs"

# 64 px, a ResNet-18 FPN with a 32-wide box head: a step takes a fraction of a second on a CPU core; 2 epochs of 3
# steps reach max_steps = 4 + window
TINY = {"image_size": 64, "backbone": "resnet18", "representation_size": 32, "box_batch_size_per_image": 32,
        "eval_every": 2, "report_steps": [2, 4], "window": 2, "steps_per_epoch": 3, "checkpoint_every": 100,
        "num_workers": 0}
# one OpenMP thread: the runs share 2 busy cores, where idle OpenMP threads spinning for work slow a step 10x
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


BOX_SPLITS = {"training": ("training", "validation"), "test": ("test_unhealthy", "test")}


def localisation_phantom_datalist(phantoms: Path) -> Path:
    """The phantoms' boxed images as a detector's datalist, written next to the phantom folder (absolute paths):
    training = their training + validation lists, test = test_unhealthy + test (entries with boxes only)."""
    source = json.loads((phantoms / "datalist.json").read_text())
    document = {"label_names": source["label_names"]}
    for split, keys in BOX_SPLITS.items():
        document[split] = [{**entry, "image": str(phantoms / entry["image"])} for key in keys
                           for entry in source.get(key, []) if entry.get("boxes")]
    path = phantoms.parent / f"{phantoms.name}_localisation.json"
    path.write_text(json.dumps(document))
    return path


def phantom_class_names(datalist: Path) -> list[str]:
    """The box labels of a datalist's training and test entries, sorted: the phantoms' classes."""
    document = json.loads(datalist.read_text())
    return sorted({label for split in BOX_SPLITS for entry in document[split] for label in entry["box_labels"]})


def _torchvision() -> None:
    from cxr_monai.utils import require_torchvision

    try:
        require_torchvision()
    except ImportError as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def boxes_data(classification_phantoms, tmp_path_factory) -> dict:
    """The phantoms' detector datalist (:func:`localisation_phantom_datalist`), their box labels as the classes,
    and a 'synthetic' datalist elsewhere whose training entries are two of the training images, one copied beside
    it (a relative path), one by its absolute path."""
    datalist = localisation_phantom_datalist(classification_phantoms)
    document = json.loads(datalist.read_text())
    training, test = document["training"], document["test"]
    synthetic = tmp_path_factory.mktemp("localisation_data") / "synthetic"
    (synthetic / "images").mkdir(parents=True)
    first, second = training[0], training[1]
    shutil.copy(first["image"], synthetic / "images" / Path(first["image"]).name)
    extra = [{"image": f"images/{Path(first['image']).name}", "boxes": first["boxes"],
              "box_labels": first["box_labels"], "source": first["image"], "synthetic": True},
             {"image": second["image"], "boxes": second["boxes"], "box_labels": second["box_labels"],
              "source": second["image"], "synthetic": True}]
    (synthetic / "synthetic.json").write_text(json.dumps({"training": extra}))
    return {"dataset_dir": classification_phantoms, "datalist": datalist, "extra": synthetic / "synthetic.json",
            "class_names": phantom_class_names(datalist), "training": len(training),
            "test_boxes": sum(len(e["boxes"]) for e in test),
            "test_classes": sorted({label for entry in test for label in entry["box_labels"]})}


@pytest.fixture(scope="module")
def trained(boxes_data, tmp_path_factory, bundle_command, run_bundle) -> dict:
    _torchvision()
    out = tmp_path_factory.mktemp("localisation_run") / "run"
    command = bundle_command("localisation", ["train.json", "small.json"], dataset_dir=boxes_data["dataset_dir"],
                             datalist=boxes_data["datalist"], extra_datalists=[str(boxes_data["extra"])],
                             class_names=boxes_data["class_names"], output_dir=out, variant="Ori+synthetic",
                             tracking=Path("bundles/localisation/configs/mlflow.json").resolve(), **TINY)
    run_bundle(command, out.parent / "train.log", timeout=400, env=ENV)
    return {"out": out, "log": (out.parent / "train.log").read_text(errors="replace")}


def _mlflow(out: Path):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{out / 'mlruns.db'}")
    runs = client.search_runs(client.get_experiment_by_name("localisation").experiment_id)
    return client, runs


@pytest.mark.slow
def test_training_appends_the_extra_datalist_and_evaluates_every_few_steps(trained, boxes_data):
    out = trained["out"]
    assert f"2 'training' entries with boxes added to the {boxes_data['training']} of" in trained["log"]
    history = json.loads((out / "localisation" / "history.json").read_text())
    assert [entry["step"] for entry in history["evaluations"]] == [2, 4, 6]
    assert history["class_names"] == boxes_data["class_names"] and history["window"] == 2
    for entry in history["evaluations"]:
        assert sorted(entry["accuracy"]["iou"]) == boxes_data["test_classes"]
        assert sum(entry["boxes"].values()) == boxes_data["test_boxes"]
        assert set(entry["accuracy"]["iobb"][boxes_data["test_classes"][0]]) == {f"{t / 10:g}" for t in range(1, 8)}


@pytest.mark.slow
def test_the_table_has_the_seeds_layout_and_names_the_chosen_models(trained, boxes_data):
    out = trained["out"]
    table = json.loads((out / "localisation" / "cl_table.json").read_text())
    history = {e["step"]: e for e in json.loads((out / "localisation" / "history.json").read_text())["evaluations"]}
    for step in ("2", "4"):
        column = table["columns"][step]
        assert column["complete"] and column["evaluations"] == (2 if step == "2" else 3)  # [0, 4] and [2, 6]
        chosen = column["selected_step"]
        assert abs(chosen - int(step)) <= 2
        assert column["best"]["Total"] == max(history[s]["mean"]["iou"]["0.1"] for s in history
                                              if abs(s - int(step)) <= 2)
        assert column["at_step"]["Total"] == history[int(step)]["mean"]["iou"]["0.1"]
        assert column["model_step"] == chosen and Path(column["model_file"]).is_file()
    markdown = (out / "localisation" / "cl_table.md").read_text()
    assert markdown.startswith("# Ori+synthetic: CL at IoU 0.1")
    assert "| Pathology | CL@2 | CL@4 |" in markdown
    rows = [f"| {name}" for name in [*boxes_data["class_names"], "Total"]]
    first_table = [line.split(" |")[0] for line in markdown.splitlines() if line.startswith("| ")][:len(rows) + 1]
    assert first_table == ["| Pathology", *rows]  # seed 002 Table 2: the classes, then Total


@pytest.mark.slow
def test_mlflow_has_the_loss_terms_and_the_cl_history(trained):
    client, runs = _mlflow(trained["out"])
    (run,) = [r for r in runs if r.data.tags.get("cxr_monai.kind") == "train"]
    metrics = run.data.metrics
    assert {"loss", "loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(metrics)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loc_iou_0.1_mean")]
    assert steps == [2, 4, 6]
    assert {"cl_2_mean", "cl_4_mean", "cl_4_step"} <= set(metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "localisation")}
    assert {"localisation/cl_table.md", "localisation/cl_table.json", "localisation/history.json"} <= artifacts


@pytest.mark.slow
def test_evaluate_scores_one_model_with_cl_tables_and_overlays(trained, boxes_data, bundle_command, run_bundle):
    out = trained["out"]
    model = out / "models" / "model_cl_4.pt"
    command = bundle_command("localisation", ["train.json", "small.json", "evaluate.json"],
                             dataset_dir=boxes_data["dataset_dir"], datalist=boxes_data["datalist"],
                             class_names=boxes_data["class_names"], output_dir=out, ckpt_path=model,
                             eval_overlays=2, **TINY)
    run_bundle(command, out.parent / "evaluate.log", timeout=300, env=ENV)
    report = json.loads((out / "evaluation" / "localisation.json").read_text())
    assert report["boxes"] == boxes_data["test_boxes"] and report["thresholds"] == [t / 10 for t in range(1, 8)]
    assert sorted(c for c in report["iou"] if c not in ("all", "mean")) == boxes_data["test_classes"]
    assert report["predicted_boxes"]["top_k"] == 1
    markdown = (out / "evaluation" / "localisation.md").read_text()
    assert "## CL at IoU >= T" in markdown and "| Total |" in markdown
    assert len(list((out / "evaluation" / "overlays").glob("*.png"))) == 2
    _, runs = _mlflow(out)
    (evaluation,) = [r for r in runs if r.data.tags.get("cxr_monai.kind") == "evaluate"]
    assert "eval_loc_iou_0.1_mean" in evaluation.data.metrics


@pytest.mark.slow
def test_inference_writes_boxes_in_stored_pixels_and_overlays_without_ground_truth(trained, boxes_data, bundle_command,
                                                                                  run_bundle, tmp_path):
    """inference.json on the test images with their boxes and labels removed, on the model trained above. A score
    threshold of 0 (the detector's box_score_thresh follows it) so that the 6-step model keeps boxes to check."""
    from cxr_monai.io import read_cxr

    test = json.loads(boxes_data["datalist"].read_text())["test"]
    datalist = tmp_path / "no_boxes.json"
    datalist.write_text(json.dumps({"test": [{"image": entry["image"]} for entry in test]}))
    out = trained["out"]
    command = bundle_command("localisation", ["train.json", "small.json", "inference.json"],
                             dataset_dir=boxes_data["dataset_dir"], datalist=datalist,
                             class_names=boxes_data["class_names"], output_dir=out, score_threshold=0.0, top_k=2,
                             **TINY)
    run_bundle(command, tmp_path / "inference.log", timeout=300, env=ENV)
    with open(out / "inference" / "detections.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["image", "class", "score", "x_min", "y_min", "x_max", "y_max"]
    assert rows, "a detector at score threshold 0 keeps boxes"
    sizes = {entry["image"]: read_cxr(entry["image"])[0].shape for entry in test}  # (height, width) as stored
    assert set(sizes.values()) == {(256, 256)} and TINY["image_size"] == 64  # the boxes must be scaled back x4
    per_class: dict[tuple[str, str], int] = {}
    for row in rows:
        height, width = sizes[row["image"]]
        x_min, y_min, x_max, y_max = (float(row[key]) for key in ("x_min", "y_min", "x_max", "y_max"))
        assert 0 <= x_min < x_max <= width and 0 <= y_min < y_max <= height, row
        assert row["class"] in boxes_data["class_names"] and 0.0 <= float(row["score"]) <= 1.0
        per_class[row["image"], row["class"]] = per_class.get((row["image"], row["class"]), 0) + 1
    assert max(per_class.values()) <= 2  # top_k per class
    assert max(float(row["x_max"]) for row in rows) > TINY["image_size"]  # in stored pixels, not the 64 px grid
    overlays = sorted((out / "inference" / "overlays").glob("*.png"))
    assert [path.stem for path in overlays] == sorted(Path(entry["image"]).stem for entry in test)
    for path in overlays:
        with Image.open(path) as overlay:
            overlay.verify()
        with Image.open(path) as overlay:
            assert overlay.mode == "RGB" and overlay.size == (256, 256)  # drawn on the stored image


# ----------------------------------------------------------------------------------------------------------
# fast: inference.json's runner on a stand-in detector (no torchvision)


def test_boxes_go_back_to_the_stored_pixels_through_the_resize():
    from monai.data import MetaTensor
    from monai.transforms import SpatialPadd

    from cxr_monai.apps.localisation import boxes_to_stored_pixels
    from cxr_monai.transforms import ResizeWithBoxesd

    stored = {"image": MetaTensor(torch.zeros(1, 100, 200)), "boxes": [[20, 10, 120, 60]]}
    resized = ResizeWithBoxesd("image", 64, box_keys="boxes")(stored)
    np.testing.assert_allclose(resized["boxes"], [[6.4, 6.4, 38.4, 38.4]], rtol=1e-6)  # x / 3.125, y / 1.5625
    np.testing.assert_allclose(boxes_to_stored_pixels(resized["boxes"], resized["image"]), [[20, 10, 120, 60]],
                               rtol=1e-6)
    np.testing.assert_allclose(boxes_to_stored_pixels([[0, 0, 64, 64], [60, 60, 70, 70]], resized["image"]),
                               [[0, 0, 200, 100], [187.5, 93.75, 200, 100]])  # clipped to the stored image
    assert boxes_to_stored_pixels([], resized["image"]).shape == (0, 4)
    assert boxes_to_stored_pixels([[1, 2, 3, 4]], torch.zeros(1, 64, 64)).tolist() == [[1, 2, 3, 4]]  # no trace
    padded = SpatialPadd("image", (80, 80))(resized)["image"]
    with pytest.raises(ValueError, match="SpatialPad"):
        boxes_to_stored_pixels([[1, 2, 3, 4]], padded)


class _StandInDetector(torch.nn.Module):
    """Eval-mode detector stand-in: fixed detections (on the network input's grid) per grey level of a flat image."""

    def __init__(self, by_level: dict) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.by_level = by_level
        self.inputs: list[tuple[int, ...]] = []

    def forward(self, images):
        assert not self.training and not torch.is_grad_enabled()
        self.inputs += [tuple(image.shape) for image in images]
        empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
        return [self.by_level.get(round(float(image.mean()) * 255), empty) for image in images]


def _inference_parser(**overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "inference.json")])
    parser.update({"bundle_root": str(CONFIGS.parent), "device": "$torch.device('cpu')", "use_amp": False,
                   **overrides})
    return parser


def test_inference_runner_keeps_the_top_box_per_class_in_stored_pixels_and_skips_bad_files(tmp_path, caplog):
    """inference.json's preprocessing and runner (the network swapped for a stand-in): a 100 x 200 image with two
    boxes of one class (top_k 1 keeps the better) and one below the threshold; an image without detection (no row,
    an overlay, a log line); an unreadable file (skipped, named)."""
    from cxr_monai.apps.localisation import DetectionInference

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((100, 200), 200, np.uint8)).save(images / "wide.png")
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(images / "empty.png")
    (images / "broken.png").write_bytes(b"not a png")
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"test": [{"image": "images/wide.png"}, {"image": "images/broken.png"},
                                             {"image": "images/empty.png"}]}))
    wide = {"boxes": torch.tensor([[8.0, 8.0, 16.0, 16.0], [0.0, 0.0, 4.0, 4.0], [16.0, 0.0, 32.0, 32.0]]),
            "labels": torch.tensor([2, 2, 1]), "scores": torch.tensor([0.9, 0.5, 0.03])}
    detector = _StandInDetector({200: wide})
    parser = _inference_parser(dataset_dir=str(tmp_path), datalist=str(datalist), image_size=32,
                               output_dir=str(tmp_path / "run"), class_names=["Effusion", "Nodule"],
                               max_skipped_fraction=0.5)
    parser["network"] = detector  # the runner as inference.json builds it, on the stand-in
    runner = parser.get_parsed_content("infer#runner")
    assert isinstance(runner, DetectionInference) and runner.network is detector
    assert (runner.top_k, runner.score_threshold) == (1, 0.05)  # train.json's keys and defaults
    with caplog.at_level(logging.INFO):
        path = runner.run()
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"image": str(images / "wide.png"), "class": "Nodule", "score": "0.9000", "x_min": "50.0",
                     "y_min": "25.0", "x_max": "100.0", "y_max": "50.0"}]  # x * 200/32, y * 100/32
    assert detector.inputs == [(1, 32, 32), (1, 32, 32)]  # the working grid; the broken file never reached it
    overlays = {p.name: Image.open(p).size for p in (tmp_path / "run" / "inference" / "overlays").glob("*.png")}
    assert overlays == {"wide.png": (200, 100), "empty.png": (64, 64)}  # on the stored images
    assert any(str(images / "empty.png") in m and "no detection with score >= 0.05" in m for m in caplog.messages)
    with open(tmp_path / "run" / "inference" / "skipped.csv", newline="") as handle:
        skipped = list(csv.DictReader(handle))
    assert [(row["stage"], row["image"]) for row in skipped] == [("inference", str(images / "broken.png"))]
    assert any(str(images / "broken.png") in m and "(inference)" in m for m in caplog.messages)
