"""Localisation of the classifier's heatmaps (issue #12, ChestX-ray8 protocol): the ChestX-ray14 datalist with the
BBox list's boxes (boxed patients all in test), and :class:`LocalisationEvaluation` on fake evaluator items, with
hand-made heatmaps (accuracies checked by hand) and with a tiny DenseNet on the classification phantoms."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from PIL import Image

from cxr_monai.apps.classification import (
    CHESTXRAY8_HEATMAP_THRESHOLDS,
    ClassificationEvaluation,
    LocalisationEvaluation,
)
from cxr_monai.apps.classification import localisation as localisation_module
from cxr_monai.apps.classification import outputs as outputs_module
from cxr_monai.cli import main
from cxr_monai.data import load_datalist
from cxr_monai.data.builders.classification import (
    CHESTXRAY14_CLASSES,
    build_chestxray14_datalist,
)
from cxr_monai.data.datalist import SPLIT_KEYS, validate_datalist
from cxr_monai.metrics import DEFAULT_THRESHOLDS
from cxr_monai.networks import CXRDenseNet121

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"


# ----------------------------------------------------------------------------------------------------------
# the ChestX-ray14 datalist with boxes


def _nih_lines(n_patients: int = 30) -> list[str]:
    """Patients 1..n with 1-3 images each; patients 1-3 have the boxed images below."""
    rng = np.random.default_rng(0)
    lines = ["00000001_000.png,Nodule|Infiltration,0,1,58,M,PA,2682,2749,0.143,0.143",
             "00000001_001.png,No Finding,1,1,58,M,PA,2894,2729,0.143,0.143",
             "00000002_000.png,Mass,0,2,80,F,AP,2500,2048,0.168,0.168",
             "00000003_000.png,Effusion,0,3,60,F,PA,2500,2048,0.168,0.168",
             "00000003_001.png,No Finding,1,3,60,F,PA,2500,2048,0.168,0.168"]
    for patient in range(4, 4 + n_patients):
        for follow_up in range(int(rng.integers(1, 4))):
            chosen = [name for name in CHESTXRAY14_CLASSES if rng.random() < 0.1]
            lines.append(f"{patient:08d}_{follow_up:03d}.png,{'|'.join(chosen) or 'No Finding'},{follow_up},"
                         f"{patient},50,M,PA,2048,2048,0.143,0.143")
    return lines


BBOX_LINES = ["00000001_000.png,Nodule,100.5,200,50,60",
              "00000001_000.png,Infiltrate,400,400,200,100",  # BBox list's name for Infiltration
              "00000002_000.png,Mass,512,512,256,256",
              "00000003_000.png,Effusion,0,600,300,300",
              "00009999_000.png,Mass,1,1,10,10"]  # not in Data_Entry


@pytest.fixture
def nih_files(tmp_path) -> tuple[Path, Path]:
    entry, bbox = tmp_path / "Data_Entry_2017_v2020.csv", tmp_path / "BBox_List_2017.csv"
    entry.write_text("\n".join([NIH_HEADER, *_nih_lines()]) + "\n")
    bbox.write_text("\n".join([BBOX_HEADER, *BBOX_LINES]) + "\n")
    return entry, bbox


def _by_name(document: dict) -> dict[str, tuple[str, dict]]:
    return {Path(entry["image"]).name: (key, entry) for key in SPLIT_KEYS for entry in document[key]}


def test_chestxray14_boxes_and_boxed_patients_in_test(nih_files, tmp_path):
    entry_csv, bbox_csv = nih_files
    out = tmp_path / "c14.json"
    summary = build_chestxray14_datalist(entry_csv, tmp_path / "images", out, bbox_list_csv=bbox_csv,
                                         val_fraction=0.2, test_fraction=0.2, check_images=False)
    document = validate_datalist(out)
    entries = _by_name(document)
    split, first = entries["00000001_000.png"]
    assert split == "test" and first["boxes"] == [[100.5, 200.0, 150.5, 260.0], [400.0, 400.0, 600.0, 500.0]]
    assert first["box_labels"] == ["Nodule", "Infiltration"]  # Infiltrate -> the class name
    assert all(label in CHESTXRAY14_CLASSES for _, e in entries.values() for label in e.get("box_labels", []))
    assert entries["00000002_000.png"][1]["box_labels"] == ["Mass"]
    # every image of a boxed patient is in test, boxed or not; no other entry has boxes
    for name in ("00000001_001.png", "00000003_001.png", "00000002_000.png", "00000003_000.png"):
        assert entries[name][0] == "test", name
    assert sum("boxes" in e for _, e in entries.values()) == 3 and "boxes" not in entries["00000001_001.png"][1]
    assert {k for k, _ in entries.values()} == {"training", "validation", "test"}  # the others are still split
    assert [(r.path, r.reason) for r in summary.rejected] == [
        ("00009999_000.png", "not in Data_Entry_2017_v2020.csv: listed in BBox_List_2017.csv only")]
    note = next(n for n in summary.notes if "boxes on" in n)
    assert note.startswith("4 boxes on 3 images from BBox_List_2017.csv, all in test: every image of the 3 patients")
    assert "ChestX-ray8" in note and "every patient with a boxed image is in test" in document["description"]
    assert "boxes in test_unhealthy" not in summary.format() and document["test_unhealthy"] == []

    # without the BBox list: no boxes, the patients split freely
    plain = _by_name(json.loads(Path(build_chestxray14_datalist(
        entry_csv, tmp_path / "images", tmp_path / "plain.json", check_images=False).out_path).read_text()))
    assert not any("boxes" in e for _, e in plain.values())


def test_chestxray14_boxes_with_view_test_list_and_unknown_label(nih_files, tmp_path):
    entry_csv, bbox_csv = nih_files
    with open(bbox_csv, "a") as stream:
        stream.write("00000004_000.png,Covid,1,1,10,10\n")
    test_list = tmp_path / "test_list.txt"
    test_list.write_text("00000005_000.png\n")
    summary = build_chestxray14_datalist(entry_csv, tmp_path / "images", tmp_path / "pa.json", view="PA",
                                         bbox_list_csv=bbox_csv, test_list=test_list, check_images=False)
    entries = _by_name(json.loads((tmp_path / "pa.json").read_text()))
    assert "00000002_000.png" not in entries  # AP
    assert any(n == "1 boxed images of another View Position are not listed" for n in summary.notes)
    reasons = {r.path: r.reason for r in summary.rejected}
    assert reasons["00000004_000.png"].startswith("unknown box label 'Covid' in BBox_List_2017.csv")
    tested = {name.split("_")[0] for name, (key, _) in entries.items() if key == "test"}
    assert tested == {"00000001", "00000003", "00000005"}  # the boxed patients and the test list's


def test_chestxray14_boxes_scaled_to_the_stored_pixels(nih_files, tmp_path):
    entry_csv, bbox_csv = nih_files
    image_dir = tmp_path / "nih" / "images_001" / "images"
    image_dir.mkdir(parents=True)
    for line in _nih_lines():
        Image.fromarray(np.zeros((512, 512), np.uint8)).save(image_dir / line.split(",")[0])
    summary = build_chestxray14_datalist(entry_csv, tmp_path / "nih", tmp_path / "c14.json", bbox_list_csv=bbox_csv)
    entries = _by_name(json.loads((tmp_path / "c14.json").read_text()))
    assert entries["00000002_000.png"][1]["boxes"] == [[256.0, 256.0, 384.0, 384.0]]  # 1024 px coordinates halved
    assert entries["00000002_000.png"][1]["image"] == "images_001/images/00000002_000.png"
    assert any("3 boxed images are not 1024 px" in note for note in summary.notes)
    # coordinates for 256 px images leave the 512 px ones: those images are rejected, naming the option
    summary = build_chestxray14_datalist(entry_csv, tmp_path / "nih", tmp_path / "bad.json", bbox_list_csv=bbox_csv,
                                         box_image_size=256)
    reasons = {Path(r.path).name: r.reason for r in summary.rejected}
    assert "lies outside the 512x512 px image" in reasons["00000002_000.png"]
    assert "--box-image-size" in reasons["00000002_000.png"]


def test_cli_chestxray14_bbox_list(nih_files, tmp_path, capsys):
    entry_csv, bbox_csv = nih_files
    out = tmp_path / "cli.json"
    code = main(["datalist", "chestxray14", "--data-entry", str(entry_csv), "--image-dir", str(tmp_path / "images"),
                 "--bbox-list", str(bbox_csv), "--box-image-size", "0", "--allow-missing-images", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "4 boxes on 3 images" in printed and "all in test" in printed
    assert _by_name(validate_datalist(out))["00000001_000.png"][1]["boxes"][0] == [100.5, 200.0, 150.5, 260.0]


def test_real_chestxray14_boxed_images_all_in_test(shared_path, tmp_path):
    entry_csv = shared_path("metadata", "Data_Entry_2017_v2020.csv.gz")
    bbox_csv = shared_path("metadata", "BBox_List_2017.csv.gz")
    summary = build_chestxray14_datalist(entry_csv, "/data/nih/images", tmp_path / "c14.json",
                                         bbox_list_csv=bbox_csv, check_images=False)
    document = json.loads((tmp_path / "c14.json").read_text())
    with gzip.open(entry_csv, "rt", newline="") as stream:
        patient_of = {row["Image Index"]: row["Patient ID"] for row in csv.DictReader(stream)}
    boxed = [(key, entry) for key in SPLIT_KEYS for entry in document[key] if "boxes" in entry]
    assert len(boxed) == 880 and {key for key, _ in boxed} == {"test"} and not summary.rejected
    assert sum(len(entry["boxes"]) for _, entry in boxed) == 984
    labels = Counter(label for _, entry in boxed for label in entry["box_labels"])
    assert set(labels) <= set(CHESTXRAY14_CLASSES) and labels["Infiltration"] == 123 and labels["Atelectasis"] == 180
    for _, entry in boxed:  # every box label is one of the image's positive classes
        assert all(entry["labels"][CHESTXRAY14_CLASSES.index(label)] == 1 for label in entry["box_labels"])
    boxed_patients = {patient_of[entry["image"]] for _, entry in boxed}
    assert len(boxed_patients) == 726
    in_test = [patient_of[entry["image"]] in boxed_patients for entry in document["test"]]
    assert sum(in_test) == 15_938  # all their images
    assert not any(patient_of[e["image"]] in boxed_patients for key in ("training", "validation")
                   for e in document[key])
    assert 0.2 <= len(document["test"]) / 112_120 < 0.21
    assert any("984 boxes on 880 images" in note and "726 patients" in note for note in summary.notes)


# ----------------------------------------------------------------------------------------------------------
# LocalisationEvaluation on hand-made heatmaps

CLASSES = ("Nodule", "Mass", "Effusion")
SIZE = 64  # stored size = working size: the heatmaps reach the stored pixels unchanged


def _block(rows: slice, columns: slice) -> torch.Tensor:
    heat = torch.zeros(SIZE, SIZE)
    heat[rows, columns] = 1.0
    return heat


# image -> (boxes, box labels, {class: hand-made heatmap})
CASES = {
    # a hot 10x10 square inside a 20x20 box: IoBB 1, IoU 100 / 400 = 0.25
    "a.png": ([[10, 10, 30, 30]], ["Nodule"], {"Nodule": _block(slice(15, 25), slice(15, 25))}),
    # Nodule heat beside its box (miss); Mass heat exactly on its box (IoU 1)
    "b.png": ([[0, 0, 20, 20], [40, 40, 60, 60]], ["Nodule", "Mass"],
              {"Nodule": _block(slice(30, 40), slice(30, 50)), "Mass": _block(slice(40, 60), slice(40, 60))}),
    # a class the model does not have
    "c.png": ([[5, 5, 15, 15]], ["Fracture"], {}),
    # no box: ignored
    "d.png": (None, None, {}),
}


class FakeHeatmaps:
    """Stands in for ClassHeatmaps: the hand-made map of each asked class of the image, and a log of the calls."""

    dual_branch = False

    def __init__(self):
        self.calls = []

    def __call__(self, image, classes, lateral=None, lateral_present=None):
        name = Path(image.meta["filename_or_obj"]).name
        self.calls.append((name, [CLASSES[c] for c in classes]))
        return {"frontal": [CASES[name][2][CLASSES[c]] for c in classes]}


def _tiny_densenet(num_classes: int = len(CLASSES)) -> CXRDenseNet121:
    torch.manual_seed(0)
    return CXRDenseNet121(in_channels=1, num_classes=num_classes, downsample_input=False, init_features=8,
                          growth_rate=4, block_config=(2, 2), bn_size=2).eval()


@pytest.fixture
def boxed_set(tmp_path) -> Path:
    """64 px PNGs and ``datalist.json`` (paths relative to the folder) for :data:`CASES`."""
    rng = np.random.default_rng(0)
    entries = []
    for name, (boxes, labels, _) in CASES.items():
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)).save(tmp_path / name)
        entry = {"image": name, "labels": [0, 0, 0]}
        if boxes:
            entry.update(boxes=boxes, box_labels=labels)
        entries.append(entry)
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"name": "boxes", "label_names": list(CLASSES), "test": entries}))
    return path


def _items(datalist: Path, names=None):
    return [{"image": MetaTensor(torch.rand(1, SIZE, SIZE), meta={"filename_or_obj": str(datalist.parent / name)}),
             "pred": torch.zeros(len(CLASSES))} for name in (names or CASES)]


def _handler(datalist: Path, out: Path, **kwargs) -> LocalisationEvaluation:
    handler = LocalisationEvaluation(out, CLASSES, _tiny_densenet(), datalist, base_dir=datalist.parent,
                                     **{"overlays": 0, **kwargs})
    handler.heatmaps = FakeHeatmaps()
    return handler


def _run_engine(handler, items, batch_size=2):
    engine = Engine(lambda engine, batch: batch)  # the output of each iteration: the decollated items
    handler.attach(engine)
    engine.run([items[n:n + batch_size] for n in range(0, len(items), batch_size)], max_epochs=1)
    return handler.report


def test_accuracies_by_hand(boxed_set, tmp_path, caplog):
    out = tmp_path / "evaluation"
    handler = _handler(boxed_set, out, variant="DN-121 (grey)")
    with caplog.at_level(logging.WARNING, logger="cxr_monai"):
        report = _run_engine(handler, _items(boxed_set))
    # heatmaps only for the boxed images' model classes, once per class
    assert handler.heatmaps.calls == [("a.png", ["Nodule"]), ("b.png", ["Nodule", "Mass"])]
    assert "1 boxes of classes the model does not have are left out (Fracture 1)" in caplog.text

    iou, iobb = report.accuracy["iou"], report.accuracy["iobb"]
    # Nodule: a.png IoU 0.25 / IoBB 1 (hot region inside the box: a hit at IoBB), b.png a miss (0 / 0)
    assert iou["Nodule"] == {0.1: (0.5, 2), 0.2: (0.5, 2), 0.3: (0.0, 2), 0.4: (0.0, 2), 0.5: (0.0, 2),
                             0.6: (0.0, 2), 0.7: (0.0, 2)}
    assert iobb["Nodule"] == {t: (0.5, 2) for t in DEFAULT_THRESHOLDS}
    assert iou["Mass"] == iobb["Mass"] == {t: (1.0, 1) for t in DEFAULT_THRESHOLDS}
    assert report.overall("iou") == pytest.approx({0.1: 2 / 3, 0.2: 2 / 3, 0.3: 1 / 3, 0.4: 1 / 3, 0.5: 1 / 3,
                                                   0.6: 1 / 3, 0.7: 1 / 3})
    assert report.overall("iobb") == pytest.approx({t: 2 / 3 for t in DEFAULT_THRESHOLDS})
    assert (report.images, len(report.records), report.boxes_left_out) == (2, 3, {"Fracture": 1})

    assert sorted(p.name for p in out.iterdir()) == ["localisation.json", "localisation.md"]
    document = json.loads((out / "localisation.json").read_text())
    assert document["heatmap_method"] == "cam" and document["heatmap_thresholds"] == pytest.approx(
        [60 / 255, 180 / 255])
    assert document["iobb"]["Nodule"] == {"boxes": 2, "accuracy": {f"{t:g}": 0.5 for t in DEFAULT_THRESHOLDS}}
    assert document["iou"]["all"]["accuracy"]["0.3"] == pytest.approx(1 / 3)
    first = document["per_box"][0]
    assert (Path(first["image"]).name, first["label"], first["best_iou"], first["best_iobb"]) == (
        "a.png", "Nodule", 0.25, 1.0)
    assert document["boxes_left_out"] == {"Fracture": 1} and document["variant"] == "DN-121 (grey)"
    table = (out / "localisation.md").read_text()
    assert "| class | boxes | T = 0.1 | T = 0.2 | T = 0.3 | T = 0.4 | T = 0.5 | T = 0.6 | T = 0.7 |" in table
    assert "| Nodule | 2 | 0.50 | 0.50 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 |" in table  # the IoU table
    assert "| Nodule | 2 | 0.50 | 0.50 | 0.50 | 0.50 | 0.50 | 0.50 | 0.50 |" in table  # the IoBB table
    assert "| all | 3 | 0.67 | 0.67 | 0.33 |" in table and "Fracture 1" in table
    metrics = report.metrics()
    assert metrics["loc_iobb_0.1_nodule"] == 0.5 and metrics["loc_iou_0.7_mass"] == 1.0
    assert metrics["loc_boxes"] == 3 and metrics["loc_boxes_left_out"] == 1


def test_heatmap_thresholds_pool_their_boxes(boxed_set, tmp_path):
    # a graded map: the whole box at 0.5 of the range, a 4x4 core at 1; 60/255 boxes the 20x20 box, 180/255 the core
    heat = _block(slice(10, 30), slice(10, 30)) * 0.5
    heat[18:22, 18:22] = 1.0
    handler = _handler(boxed_set, tmp_path / "out")
    handler.heatmaps = FakeHeatmaps()
    saved = dict(CASES)
    try:
        CASES["a.png"] = ([[10, 10, 30, 30]], ["Nodule"], {"Nodule": heat})
        row = handler.localise(_items(boxed_set, ["a.png"])[0]["image"], str(boxed_set.parent / "a.png"),
                               [[10, 10, 30, 30]], ["Nodule"])
        assert row["predicted"]["Nodule"] == [[10.0, 10.0, 30.0, 30.0], [18.0, 18.0, 22.0, 22.0]]
        only_high = _handler(boxed_set, tmp_path / "high", heatmap_thresholds=0.9)
        row = only_high.localise(_items(boxed_set, ["a.png"])[0]["image"], str(boxed_set.parent / "a.png"),
                                 [[10, 10, 30, 30]], ["Nodule"])
        assert row["predicted"]["Nodule"] == [[18.0, 18.0, 22.0, 22.0]]
    finally:
        CASES.update(saved)
    assert CHESTXRAY8_HEATMAP_THRESHOLDS == pytest.approx((0.2353, 0.7059), abs=1e-4)
    with pytest.raises(ValueError, match="heatmap_thresholds"):
        _handler(boxed_set, tmp_path / "x", heatmap_thresholds=[60, 180])


def test_gather_merges_the_ranks_and_drops_repeats(boxed_set, tmp_path, monkeypatch):
    """The DDP path without DDP: two ranks' rows through a faked all_gather_object (a DistributedSampler repeats
    an image on the second rank to even out the ranks)."""
    handler = _handler(boxed_set, tmp_path / "evaluation")
    items = _items(boxed_set)
    for item in items[:1]:
        handler.item(item, item["image"].meta["filename_or_obj"])
    other = _handler(boxed_set, tmp_path / "other")
    for item in items[1:] + items[:1]:  # the other rank also saw a.png
        other.item(item, item["image"].meta["filename_or_obj"])

    def all_gather_object(gathered, rows):
        gathered[:] = [rows, other.rows]

    monkeypatch.setattr(outputs_module, "is_distributed", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_gather_object", all_gather_object)
    report = handler.completed()
    assert len(report.records) == 3 and report.images == 2 and report.boxes_left_out == {"Fracture": 1}
    assert report.accuracy["iobb"]["Nodule"][0.1] == (0.5, 2)

    monkeypatch.setattr(localisation_module, "is_rank0", lambda: False)  # another rank: gathers, writes nothing
    assert _handler(boxed_set, tmp_path / "rank1").completed() is None and not (tmp_path / "rank1").exists()


def test_no_box_writes_nothing(boxed_set, tmp_path, caplog):
    out = tmp_path / "evaluation"
    handler = _handler(boxed_set, out)
    with caplog.at_level(logging.WARNING, logger="cxr_monai"):
        assert _run_engine(handler, _items(boxed_set, ["d.png"])) is None
    assert not out.exists() and handler.heatmaps.calls == []
    assert "no evaluated image has a box of the model's classes" in caplog.text
    # only boxes of classes the model does not have: left out, nothing written either
    handler = _handler(boxed_set, out)
    assert _run_engine(handler, _items(boxed_set, ["c.png", "d.png"])) is None and not out.exists()


def test_aliases_rename_box_labels(boxed_set, tmp_path):
    handler = _handler(boxed_set, tmp_path / "out", box_label_aliases={"Fracture": "Effusion"})
    handler.heatmaps = FakeHeatmaps()
    CASES["c.png"][2]["Effusion"] = _block(slice(5, 15), slice(5, 15))
    try:
        report = _run_engine(handler, _items(boxed_set, ["c.png"]))
    finally:
        CASES["c.png"][2].clear()
    assert report.accuracy["iou"]["Effusion"][0.7] == (1.0, 1) and not report.boxes_left_out


def test_localisation_goes_into_the_evaluate_run(boxed_set, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    evaluation = ClassificationEvaluation(tmp_path / "evaluation", CLASSES, "DN-121", tracking_uri=uri, n_resamples=5)
    localisation = _handler(boxed_set, tmp_path / "evaluation", tracking_uri=uri, log_with=evaluation)
    engine = Engine(lambda engine, batch: batch)
    evaluation.attach(engine)  # attached first: its run exists when the localisation completes
    localisation.attach(engine)
    items = _items(boxed_set)
    for item, labels in zip(items, ([1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0])):
        item["label"] = torch.tensor(labels, dtype=torch.float32)
    engine.run([items], max_epochs=1)
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("classifier").experiment_id])
    assert run.info.run_name == "evaluate" and "eval_auroc_macro" in run.data.metrics
    assert run.data.metrics["eval_loc_iobb_0.1_all"] == pytest.approx(2 / 3)
    assert run.data.metrics["eval_loc_boxes"] == 3
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "localisation")}
    assert artifacts == {"localisation/localisation.json", "localisation/localisation.md"}

    # no classification run in this experiment: a run of its own
    alone = _handler(boxed_set, tmp_path / "alone", tracking_uri=uri, experiment_name="localisation_only")
    _run_engine(alone, _items(boxed_set))
    [run] = client.search_runs([client.get_experiment_by_name("localisation_only").experiment_id])
    assert run.info.run_name == "evaluate" and run.info.status == "FINISHED" and "eval_loc_boxes" in run.data.metrics


# ----------------------------------------------------------------------------------------------------------
# a real (tiny) network on the classification phantoms


@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_tiny_densenet_on_phantoms(classification_phantoms, tmp_path, method):
    from cxr_monai.io import read_cxr, stored_size

    datalist = classification_phantoms / "datalist.json"
    names = json.loads(datalist.read_text())["label_names"]
    entries = [e for e in load_datalist(datalist, ["test", "test_unhealthy", "validation"]) if e.get("boxes")]
    assert entries, "the classification phantoms have boxed images"
    items = []
    for entry in entries[:3]:
        radiograph, _ = read_cxr(entry["image"])
        image = torch.nn.functional.interpolate(torch.as_tensor(radiograph)[None, None], size=(SIZE, SIZE))[0]
        items.append({"image": MetaTensor(image, meta={"filename_or_obj": entry["image"]}),
                      "pred": torch.zeros(len(names))})
    out = tmp_path / "evaluation"
    handler = LocalisationEvaluation(out, names[:-1], _tiny_densenet(len(names) - 1), datalist,
                                     datalist_keys=["test", "test_unhealthy", "validation"], heatmap_method=method,
                                     overlays=1)
    report = _run_engine(handler, items)
    kept = [label for entry in entries[:3] for label in entry["box_labels"] if label in names[:-1]]
    assert len(report.records) == len(kept) and sum(report.boxes_left_out.values()) == sum(
        label == names[-1] for entry in entries[:3] for label in entry["box_labels"])
    for measure in ("iou", "iobb"):
        for by_t in report.accuracy[measure].values():
            assert all(0.0 <= accuracy <= 1.0 for accuracy, _ in by_t.values())
    overlays = sorted((out / "overlays").glob("*.png"))
    drawn = next(entry for entry in entries[:3] if set(entry["box_labels"]) & set(names[:-1]))
    first = Path(drawn["image"])
    expected = {f"{first.stem}_{label}.png" for label in drawn["box_labels"] if label in names[:-1]}
    assert {p.name for p in overlays} == expected  # the first boxed image only
    with Image.open(overlays[0]) as png:
        assert png.size == stored_size(first) and png.mode == "RGB"
    assert json.loads((out / "localisation.json").read_text())["heatmap_method"] == method
