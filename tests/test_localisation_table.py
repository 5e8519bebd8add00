"""`python -m cxr_monai localisation-table`: seed 002's Table 2 from one command (generators, then one detector per
protocol, then the merged table)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxr_monai.apps.localisation.table import GENERATORS, LocalisationTable, merge_cl_tables

REPO = Path(__file__).resolve().parents[1]
PHANTOM_CLASSES = ["Nodule", "Mass", "Consolidation", "Effusion", "Pneumothorax", "Cardiomegaly"]


def _cl_table(classes, best, at_step, selected=30, steps=(20, 40)):
    return {"measure": "iou", "threshold": 0.1, "window": 10, "report_steps": list(steps), "class_names": classes,
            "columns": {str(s): {"label": f"CL@{s}", "window": [s - 10, s + 10], "evaluations": 3, "complete": True,
                                 "selected_step": selected, "best": best, "at_step": at_step} for s in steps}}


def _boxes_datalist(folder: Path, healthy: bool = True) -> Path:
    box = {"image": "a.png", "boxes": [[1, 1, 5, 5]], "box_labels": ["Effusion"]}
    document = {"training": [box], "test": [box], "box_label_names": ["Effusion", "Nodule"],
                **({"healthy": [{"image": "b.png"}]} if healthy else {})}
    path = folder / "boxes.json"
    path.write_text(json.dumps(document))
    return path


def test_merge_puts_the_protocols_side_by_side(tmp_path):
    classes = ["Effusion", "Nodule"]
    ori = _cl_table(classes, {"Effusion": 0.5, "Nodule": 0.25, "Total": 0.375}, {"Effusion": 0.5, "Nodule": 0.0,
                                                                              "Total": 0.25})
    augmented = _cl_table(classes, {"Effusion": 1.0, "Nodule": 0.5, "Total": 0.75}, None, selected=None)
    path = merge_cl_tables({"Ori": ori, "Ori+Pix2Pix-N": augmented}, tmp_path / "table.md", digits=2)
    text = path.read_text()
    assert "| Pathology | Ori CL@20 | Ori CL@40 | Ori+Pix2Pix-N CL@20 | Ori+Pix2Pix-N CL@40 |" in text
    assert "| Total | 0.38 | 0.38 | 0.75 | 0.75 |" in text  # the window rule's block
    assert "| Nodule | 0.00 | 0.00 | - | - |" in text  # no model at s itself: '-'
    assert "- Ori+Pix2Pix-N: CL@20 step -, CL@40 step -" in text
    assert set(json.loads(path.with_suffix(".json").read_text())["rows"]) == {"Ori", "Ori+Pix2Pix-N"}
    other = _cl_table(["Effusion"], {"Effusion": 1.0, "Total": 1.0}, None)
    with pytest.raises(ValueError, match="class_names"):
        merge_cl_tables({"Ori": ori, "B": other}, tmp_path / "bad.md")


def test_commands_of_the_three_protocols(tmp_path):
    datalist = _boxes_datalist(tmp_path)
    table = LocalisationTable(tmp_path, datalist, tmp_path / "out", pix2pix_configs=["small.json"],
                              pix2pix_overrides=["--max_epochs", "2"], overrides=["--max_steps", "9"])
    table.check()
    steps = table.steps()
    titles = [title for title, _, _ in steps]
    assert titles[:4] == ["Pix2Pix: training", "Pix2Pix: synthetic.json", "Pix2Pix-N: training",
                          "Pix2Pix-N: synthetic.json"]
    for name, (_, command, _) in zip(GENERATORS, steps[0:4:2]):
        assert command[command.index("--use_healthy") + 1] == json.dumps(GENERATORS[name])
        assert command[-2:] == ["--max_epochs", "2"] and "small.json" in command[command.index("--config_file") + 1]
    assert "inference.json" in steps[1][1][steps[1][1].index("--config_file") + 1]
    trainings = {title: command for title, command, _ in steps[4:] if title.endswith("training")}
    assert list(trainings) == ["Ori: training", "Ori+Pix2Pix: training", "Ori+Pix2Pix-N: training"]
    extras = {title: json.loads(command[command.index("--extra_datalists") + 1]) for title, command in trainings.items()}
    assert extras["Ori: training"] == []
    assert extras["Ori+Pix2Pix-N: training"] == [str(tmp_path / "out" / "pix2pix-n" / "synthetic" / "synthetic.json")]
    for command in trainings.values():  # the datalist's classes, and the detector overrides
        assert json.loads(command[command.index("--class_names") + 1]) == ["Effusion", "Nodule"]
        assert command[-2:] == ["--max_steps", "9"]
    title, realism, _ = steps[-1]  # FID of both sets on the features of the Ori detector, as it was trained
    assert title == "realism" and "evaluate.json" in realism[realism.index("--config_file") + 1]
    feature = json.loads(realism[realism.index("--feature_network_def") + 1])
    assert feature["class_names"] == ["Effusion", "Nodule"] and feature["image_size"] == 256
    assert realism[realism.index("--feature_model_path") + 1] == str(tmp_path / "out" / "ori" / "models" / "model.pt")
    assert set(json.loads(realism[realism.index("--synthetic_datalists") + 1])) == set(GENERATORS)
    only_ori = LocalisationTable(tmp_path, datalist, tmp_path / "out", protocols=("Ori",))
    assert only_ori.realism_command() is None and only_ori.steps()[0][0] == "Ori: training"


def test_bad_inputs_are_refused_before_any_run(tmp_path):
    without_healthy = _boxes_datalist(tmp_path, healthy=False)
    with pytest.raises(ValueError, match="healthy"):
        LocalisationTable(tmp_path, without_healthy, tmp_path / "out").check()
    LocalisationTable(tmp_path, without_healthy, tmp_path / "out", protocols=("Ori", "Pix2Pix")).check()
    with pytest.raises(ValueError, match="extra_datalists"):
        LocalisationTable(tmp_path, without_healthy, tmp_path / "out", overrides=["--extra_datalists", "[]"])
    with pytest.raises(ValueError, match="use_healthy"):  # the protocol decides Pix2Pix vs Pix2Pix-N
        LocalisationTable(tmp_path, without_healthy, tmp_path / "out", pix2pix_overrides=["--use_healthy", "true"])
    with pytest.raises(ValueError, match="unknown protocol"):
        LocalisationTable(tmp_path, without_healthy, tmp_path / "out", protocols=("Ori", "StarGAN"))


@pytest.mark.slow
def test_table_from_one_command(classification_phantoms, tmp_path):
    """Pix2Pix-N trained and sampled, a detector on Ori and one on Ori + its images, the merged table, the realism
    report on the Ori detector's features; a second call skips all."""
    from cxr_monai.data import build_nih_boxes_datalist
    from cxr_monai.utils import require_torchvision

    try:
        require_torchvision()
    except ImportError as error:  # the detectors need it; the commands and the merge are tested above without it
        pytest.skip(str(error))
    datalist = tmp_path / "boxes.json"
    build_nih_boxes_datalist(classification_phantoms / "Data_Entry_2017.csv",
                             classification_phantoms / "BBox_List_2017.csv", classification_phantoms / "images",
                             datalist, classes=PHANTOM_CLASSES, box_image_size=256, healthy=8, test_fraction=0.5)
    assert len(json.loads(datalist.read_text())["test"]) >= 4  # the realism reference splits the test images in two
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cxr_monai", "localisation-table", "--dataset-dir",
               str(classification_phantoms / "images"), "--datalist", str(datalist), "--out", str(out),
               "--protocol", "Ori", "--protocol", "Pix2Pix-N", "--pix2pix-configs", "small.json",
               "--pix2pix-args", "--image_size 64 --load_size 72 --g_channels [8,16,32,32] --d_channels 8 "
                                 "--max_epochs 1 --synthetic_total 6 --checkpoint_every 0",
               "--", "--image_size", "64", "--backbone", "resnet18", "--representation_size", "32",
               "--box_batch_size_per_image", "32", "--eval_every", "1", "--report_steps", "[1, 2]", "--window", "1",
               "--steps_per_epoch", "3", "--checkpoint_every", "100", "--num_workers", "0"]  # 3 steps, 3 evaluations
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    synthetic = json.loads((out / "pix2pix-n" / "synthetic" / "synthetic.json").read_text())["training"]
    assert len(synthetic) == 6 and all(entry["synthetic"] for entry in synthetic)
    row = out / "ori-pix2pix-n"
    train_log = (row / "train.log").read_text()
    assert str(out / "pix2pix-n" / "synthetic" / "synthetic.json") in (row / "row.json").read_text()
    assert (row / "evaluation" / "localisation.json").is_file(), train_log[-2000:]
    table = (out / "table.md").read_text()
    assert "| Pathology | Ori CL@1 | Ori CL@2 | Ori+Pix2Pix-N CL@1 | Ori+Pix2Pix-N CL@2 |" in table
    assert "| Effusion |" in table and "| Atelectasis |" not in table  # the datalist's classes, not the seed's
    realism = (out / "realism" / "realism.md").read_text()
    assert "backbone.body.layer4" in realism and "| Pix2Pix-N | 6 |" in realism, realism
    assert (out / "realism" / "realism.png").is_file()
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("skipped") == 4, again.stdout[-2000:]
