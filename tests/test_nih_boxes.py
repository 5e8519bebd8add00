"""``datalist nih-boxes``: the boxed images of seed 002 split by patient, the healthy images of the other patients."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from cxr_monai.cli import main
from cxr_monai.data import load_datalist, validate_datalist
from cxr_monai.data.builders.nih_boxes import (
    NIH_BOXES_CLASSES,
    build_nih_boxes_datalist,
)

SEED_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Pneumonia", "Pneumothorax")


def _write_labels(root: Path, boxed_patients: int = 20, healthy_patients: int = 30) -> tuple[Path, Path]:
    """Patients ``b0..``: one or two images, each with one or two boxes cycling through the seed's six classes and
    Mass; patients ``h0..``: two No Finding images each; one BBox row of an image not in Data_Entry."""
    entries, boxes = [], []
    labels = (*SEED_CLASSES, "Mass")
    n = 0
    for patient in range(boxed_patients):
        for image in range(1 + patient % 2):
            index = f"b{patient:03d}_{image}.png"
            names = [labels[n % len(labels)], labels[(n + 3) % len(labels)]][: 1 + n % 2]
            n += 1
            findings = "|".join(dict.fromkeys("Infiltration" if name == "Infiltrate" else name for name in names))
            entries.append([index, findings, f"b{patient}", "PA" if n % 3 else "AP"])
            boxes.extend([index, name, 10 + k, 20, 100, 50 + k] for k, name in enumerate(names))
        entries.append([f"b{patient:03d}_9.png", "No Finding", f"b{patient}", "PA"])  # a boxed patient's healthy image
    for patient in range(healthy_patients):
        entries.extend([f"h{patient:03d}_{image}.png", "No Finding", f"h{patient}", "PA"] for image in range(2))
    boxes.append(["ghost.png", "Effusion", 1, 1, 10, 10])
    data_entry, bbox_list = root / "Data_Entry.csv", root / "BBox_List.csv"
    with open(data_entry, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["Image Index", "Finding Labels", "Patient ID", "View Position"])
        writer.writerows(entries)
    with open(bbox_list, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"])
        writer.writerows(boxes)
    return data_entry, bbox_list


def _patient(entry: dict) -> str:
    return Path(entry["image"]).name.split("_")[0]


@pytest.fixture()
def labels(tmp_path) -> tuple[Path, Path]:
    return _write_labels(tmp_path)


def test_split_by_patient_with_class_filter_and_healthy_count(labels, tmp_path):
    out = tmp_path / "boxes.json"
    summary = build_nih_boxes_datalist(*labels, tmp_path / "images", out, healthy=7, seed=3, check_images=False)
    document = validate_datalist(out)
    assert document["box_label_names"] == list(NIH_BOXES_CLASSES)
    patients = {key: {_patient(entry) for entry in document[key]} for key in ("training", "test", "healthy")}
    assert not patients["training"] & patients["test"]
    assert not (patients["training"] | patients["test"]) & patients["healthy"]
    with open(labels[1], newline="") as stream:
        kept = {row[0].split("_")[0] for row in list(csv.reader(stream))[1:] if row[1] != "Mass" and row[0] != "ghost.png"}
    assert patients["training"] | patients["test"] == kept
    # Mass is dropped; an image whose only box was Mass is not listed; Infiltrate is written as Infiltration
    boxed = document["training"] + document["test"]
    box_labels = Counter(label for entry in boxed for label in entry["box_labels"])
    assert set(box_labels) == set(NIH_BOXES_CLASSES) and "Mass" not in box_labels
    assert all(len(entry["boxes"]) == len(entry["box_labels"]) >= 1 and entry["label"] == 1 for entry in boxed)
    assert any("boxes of other classes dropped: Mass" in note for note in summary.notes)
    # test holds at least 30 % of the boxes, overshooting by at most one patient's boxes
    n_train, n_test = (sum(len(entry["boxes"]) for entry in document[key]) for key in ("training", "test"))
    assert 0.3 * (n_train + n_test) <= n_test <= 0.3 * (n_train + n_test) + 4
    # healthy: the count asked for, No Finding images of patients in neither list (never a boxed patient's)
    assert len(document["healthy"]) == 7 and summary.splits["healthy"].images == 7
    assert all(entry["label"] == 0 and entry["image"].startswith("h") for entry in document["healthy"])
    # boxes as [x_min, y_min, x_max, y_max]
    first = next(entry for entry in boxed if entry["image"] == "b000_0.png")
    assert first["boxes"] == [[10.0, 20.0, 110.0, 70.0]] and first["box_labels"] == ["Atelectasis"]
    # the bad row: its image is not in Data_Entry
    assert [(r.path, r.reason) for r in summary.rejected] == [
        ("ghost.png", "not in Data_Entry.csv: listed in BBox_List.csv only")]
    # the healthy list loads like the splits
    assert len(load_datalist(out, "healthy", base_dir=tmp_path)) == 7


def test_same_seed_same_lists_and_no_healthy(labels, tmp_path):
    first, second, none = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    for out in (first, second):
        build_nih_boxes_datalist(*labels, tmp_path, out, healthy=5, seed=1, check_images=False)
    assert json.loads(first.read_text()) == json.loads(second.read_text())
    build_nih_boxes_datalist(*labels, tmp_path, none, healthy=0, classes=["Effusion", "Infiltrate"],
                             check_images=False)
    document = json.loads(none.read_text())
    assert document["healthy"] == [] and document["box_label_names"] == ["Effusion", "Infiltration"]
    assert {label for key in ("training", "test") for entry in document[key]
            for label in entry["box_labels"]} == {"Effusion", "Infiltration"}


def test_missing_image_is_rejected_with_its_reason(labels, tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    with open(labels[0], newline="") as stream:
        names = [row[0] for row in list(csv.reader(stream))[1:]]
    for name in names:
        if name not in ("b001_0.png", "h002_1.png"):
            Image.new("L", (128, 128)).save(images / name)
    out = tmp_path / "boxes.json"
    summary = build_nih_boxes_datalist(*labels, images, out, healthy=1000, box_image_size=None)
    reasons = {Path(r.path).name: r.reason for r in summary.rejected}
    assert reasons["b001_0.png"].startswith("missing: not found under") and reasons["h002_1.png"].startswith("missing")
    document = validate_datalist(out)
    listed = {Path(entry["image"]).name for key in ("training", "test", "healthy") for entry in document[key]}
    assert "b001_0.png" not in listed and "b001_1.png" in listed
    assert len(document["healthy"]) == 59 and any(note.startswith("healthy: 59 of the 1000") for note in summary.notes)
    with pytest.raises(ValueError, match="no box of the classes Fracture"):
        build_nih_boxes_datalist(*labels, images, out, classes=["Fracture"])


def test_command_line(labels, tmp_path, capsys):
    out = tmp_path / "boxes.json"
    assert main(["datalist", "nih-boxes", "--data-entry", str(labels[0]), "--bbox-list", str(labels[1]),
                 "--image-dir", str(tmp_path), "--out", str(out), "--healthy", "4", "--classes", "Effusion",
                 "Pneumothorax", "--allow-missing-images"]) == 0
    printed = capsys.readouterr().out
    assert "healthy" in printed and "training:" in printed and "rejected: 1" in printed
    assert json.loads(out.read_text())["box_label_names"] == ["Effusion", "Pneumothorax"]


def test_real_label_files_give_the_seeds_counts(shared_path, tmp_path):
    metadata = shared_path("metadata")
    data_entry, bbox_list = metadata / "Data_Entry_2017_v2020.csv.gz", metadata / "BBox_List_2017.csv.gz"
    if not (data_entry.is_file() and bbox_list.is_file()):
        pytest.skip(f"{metadata} lacks the NIH label files")
    out = tmp_path / "nih_boxes.json"
    summary = build_nih_boxes_datalist(data_entry, bbox_list, tmp_path / "images", out, check_images=False)
    document = json.loads(out.read_text())
    boxed = document["training"] + document["test"]
    # seed 002: 820 annotations on 741 images of six classes, 70 % (573) for training
    assert len(boxed) == 741 and sum(len(entry["boxes"]) for entry in boxed) == 820
    n_train = sum(len(entry["boxes"]) for entry in document["training"])
    assert abs(n_train - 573) <= 5
    assert len(document["healthy"]) == 2000 and not summary.rejected
    patients = {key: {e["image"].split("_")[0] for e in document[key]} for key in ("training", "test", "healthy")}
    assert not patients["training"] & patients["test"]
    assert not (patients["training"] | patients["test"]) & patients["healthy"]
    assert any(note.startswith("boxes of other classes dropped: Mass 85, Nodule 79") for note in summary.notes)


def test_phantoms(classification_phantoms, tmp_path):
    out = tmp_path / "boxes.json"
    summary = build_nih_boxes_datalist(
        classification_phantoms / "Data_Entry_2017.csv", classification_phantoms / "BBox_List_2017.csv",
        classification_phantoms / "images", out, classes=["Effusion", "Cardiomegaly", "Nodule", "Mass"],
        test_fraction=0.3, healthy=3, box_image_size=256)
    assert not summary.rejected
    document = validate_datalist(out)
    boxed = document["training"] + document["test"]
    assert document["training"] and document["test"] and len(document["healthy"]) == 3
    entries = load_datalist(out, "training", base_dir=classification_phantoms / "images")
    assert all(Path(entry["image"]).is_file() for entry in entries)
    # the phantom's boxes are in its stored pixels: they stay as listed
    assert all(0 <= v <= 256 for entry in boxed for box in entry["boxes"] for v in box)
    assert all(label in ("Effusion", "Cardiomegaly", "Nodule", "Mass") for e in boxed for label in e["box_labels"])
