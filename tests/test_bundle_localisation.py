"""End to end: the localisation bundle (seed 002's Faster R-CNN) on the classification phantoms' boxes.

One quick training (train.json + small.json at 64 px on a ResNet-18 FPN, evaluated every 2 steps, report steps 2 and
4 with a window of 2, an extra synthetic datalist appended, MLflow on), then evaluate.json on the model chosen for
step 4. Skipped, with the reason, where torchvision is missing or does not fit torch.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cxr_monai.utils import require_torchvision

try:
    require_torchvision()
except ImportError as error:
    pytest.skip(str(error), allow_module_level=True)

pytestmark = pytest.mark.slow

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
