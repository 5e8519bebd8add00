"""Classification labels (issue #12): the CheXpert and ChestX-ray14 datalist builders, the masked multi-label BCE and
the class-imbalance weights; on small synthetic CSVs and on the real label files under ``../shared/data/metadata``."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cxr_monai.cli import main
from cxr_monai.data import load_datalist
from cxr_monai.data.builders.classification import (
    CHESTXRAY14_CLASSES,
    CHEXPERT_CLASSES,
    build_chestxray14_datalist,
    build_chexpert_datalist,
)
from cxr_monai.data.datalist import SPLIT_KEYS, validate_datalist
from cxr_monai.losses import (
    MaskedBCEWithLogitsLoss,
    class_pos_weights,
    multilabel_targets,
    pos_weights_from_datalist,
)

# CheXpert's own column order (not Table 1's): the builder must map the classes by name
CHEXPERT_OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                         "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                         "Pleural Other", "Fracture", "Support Devices")
CHEXPERT_HEADER = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBSERVATIONS)
ROOT = "CheXpert-v1.0-small/train"
NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
TABLE_1 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion", "Pneumonia", "Pneumothorax",
           "Enlarged Cardiomediastinum", "Lung Lesion", "Lung Opacity", "Pleural Other", "Fracture", "Support Devices")


def _position(name: str) -> int:
    return CHEXPERT_CLASSES.index(name)


def _chexpert_row(path: str, kind: str = "Frontal", view: str = "AP", **labels: str) -> list[str]:
    """A CSV row: ``labels`` by observation name with spaces as underscores (``Pleural_Effusion="-1.0"``)."""
    values = {name.replace(" ", "_"): "" for name in CHEXPERT_OBSERVATIONS}
    values.update(labels)
    return [f"{ROOT}/{path}", "Female", "70", kind, view if kind == "Frontal" else "",
            *(values[name.replace(" ", "_")] for name in CHEXPERT_OBSERVATIONS)]


# the studies the tests reason about; patients 10+ only fill the splits
KNOWN_ROWS = [
    _chexpert_row("patient00001/study1/view1_frontal.jpg", No_Finding="1.0", Support_Devices="1.0"),
    _chexpert_row("patient00001/study1/view2_lateral.jpg", "Lateral", No_Finding="1.0", Support_Devices="1.0"),
    _chexpert_row("patient00002/study1/view1_frontal.jpg", view="PA", Atelectasis="-1.0", Cardiomegaly="1.0",
                  Pneumothorax="0.0"),
    _chexpert_row("patient00002/study1/view2_lateral.jpg", "Lateral", Atelectasis="-1.0", Cardiomegaly="1.0",
                  Pneumothorax="0.0"),
    _chexpert_row("patient00002/study1/view3_lateral.jpg", "Lateral", Atelectasis="-1.0", Cardiomegaly="1.0",
                  Pneumothorax="0.0"),
    _chexpert_row("patient00002/study2/view1_frontal.jpg", Pneumonia="-1.0", Edema="0.0"),
    _chexpert_row("patient00003/study1/view1_frontal.jpg", Fracture="1.0"),
    _chexpert_row("patient00003/study1/view2_frontal.jpg", view="PA", Fracture="1.0"),
    _chexpert_row("patient00003/study1/view3_lateral.jpg", "Lateral", Fracture="1.0"),
    _chexpert_row("patient00004/study1/view1_lateral.jpg", "Lateral", Edema="1.0"),
    _chexpert_row("patient00005/study1/view1_frontal.jpg", view=""),
]


def _filler_rows(n_patients: int = 40, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(10, 10 + n_patients):
        for study in range(1, 1 + int(rng.integers(1, 4))):
            values = rng.choice(["", "1.0", "0.0", "-1.0"], size=len(CHEXPERT_OBSERVATIONS) - 1)
            labels = {name.replace(" ", "_"): str(value) for name, value in zip(CHEXPERT_OBSERVATIONS[1:], values)}
            stem = f"patient{patient:05d}/study{study}"
            rows.append(_chexpert_row(f"{stem}/view1_frontal.jpg", view=str(rng.choice(["AP", "PA"])), **labels))
            if rng.random() < 0.4:
                rows.append(_chexpert_row(f"{stem}/view2_lateral.jpg", "Lateral", **labels))
    return rows


def _write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def chexpert_csv(tmp_path) -> Path:
    return _write_csv(tmp_path / "train.csv", CHEXPERT_HEADER, KNOWN_ROWS + _filler_rows())


def _entries(document: dict) -> dict[str, dict]:
    """image path -> entry, over every split (with the split under '_split')."""
    return {entry["image"]: {**entry, "_split": key} for key in SPLIT_KEYS for entry in document[key]}


def _build_chexpert(csv_path: Path, out: Path, **options) -> tuple[dict, dict]:
    options.setdefault("check_images", False)
    summary = build_chexpert_datalist(csv_path, out.parent / "data", out, **options)
    return summary, json.loads(out.read_text())


def _jpeg(path: Path, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), 128, np.uint8)).save(path)
    return path


# ----------------------------------------------------------------------------------------------------------
# CheXpert builder


def test_chexpert_classes_are_table_1():
    assert CHEXPERT_CLASSES == TABLE_1 and len(CHESTXRAY14_CLASSES) == 14
    assert CHESTXRAY14_CLASSES[:3] == ("Atelectasis", "Cardiomegaly", "Effusion") and CHESTXRAY14_CLASSES[-1] == "Hernia"


@pytest.mark.parametrize("uncertainty, uncertain_to", [("ones", 1), ("zeros", 0), ("ignore", -1)])
def test_chexpert_uncertainty_policies(chexpert_csv, tmp_path, uncertainty, uncertain_to):
    summary, document = _build_chexpert(chexpert_csv, tmp_path / "list.json", uncertainty=uncertainty)
    validate_datalist(tmp_path / "list.json")
    assert document["label_names"] == list(CHEXPERT_CLASSES)
    assert f"Uncertainty policy: {uncertainty}" in document["description"]
    entries = _entries(document)
    labels = entries[f"{ROOT}/patient00002/study1/view1_frontal.jpg"]["labels"]
    assert labels[_position("Atelectasis")] == uncertain_to
    assert labels[_position("Cardiomegaly")] == 1 and labels[_position("Pneumothorax")] == 0
    assert labels[_position("Edema")] is None  # blank -> null
    assert sum(value is None for value in labels) == 10
    # the binary label: positive pathology -> 1; No Finding (with a support device) -> 0; otherwise none
    assert entries[f"{ROOT}/patient00002/study1/view1_frontal.jpg"]["label"] == 1
    normal = entries[f"{ROOT}/patient00001/study1/view1_frontal.jpg"]
    assert normal["label"] == 0 and normal["labels"][_position("Support Devices")] == 1
    only_uncertain = entries[f"{ROOT}/patient00002/study2/view1_frontal.jpg"]
    assert only_uncertain.get("label") == (1 if uncertainty == "ones" else None)
    assert "label" not in entries[f"{ROOT}/patient00005/study1/view1_frontal.jpg"]
    # every value follows the policy: -1 only when uncertain labels are kept
    values = {value for entry in entries.values() for value in entry["labels"]}
    assert values == ({1, 0, None, -1} if uncertainty == "ignore" else {1, 0, None})
    assert any(note.startswith("positives per class") for note in summary.notes)


def test_chexpert_blank_zeros_and_entry_keys(chexpert_csv, tmp_path):
    _, document = _build_chexpert(chexpert_csv, tmp_path / "list.json", blank="zeros", uncertainty="ignore")
    entries = _entries(document)
    labels = entries[f"{ROOT}/patient00002/study1/view1_frontal.jpg"]["labels"]
    assert None not in labels and labels[_position("Edema")] == 0 and labels[_position("Atelectasis")] == -1
    assert "blank (not mentioned) -> zeros" in document["description"]
    entry = entries[f"{ROOT}/patient00002/study1/view1_frontal.jpg"]
    assert entry["study"] == "patient00002/study1" and entry["view"] == "PA"
    assert "view" not in entries[f"{ROOT}/patient00005/study1/view1_frontal.jpg"]  # blank AP/PA
    allowed = {"image", "labels", "label", "study", "view", "lateral", "_split"}
    assert all(set(entry) <= allowed for entry in entries.values())
    assert "Female" not in (tmp_path / "list.json").read_text() and '"70"' not in (tmp_path / "list.json").read_text()


def test_chexpert_lateral_pairing(chexpert_csv, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    summary, document = _build_chexpert(chexpert_csv, tmp_path / "list.json")
    entries = _entries(document)
    # frontal images only, one entry each
    assert all(path.endswith("frontal.jpg") for path in entries)
    n_frontal = sum(row[3] == "Frontal" for row in KNOWN_ROWS + _filler_rows())
    assert len(entries) == n_frontal == sum(counts.images for counts in summary.splits.values())
    assert entries[f"{ROOT}/patient00001/study1/view1_frontal.jpg"]["lateral"] == \
        f"{ROOT}/patient00001/study1/view2_lateral.jpg"
    # the first lateral of a study with two; both frontal images of a study get its lateral
    assert entries[f"{ROOT}/patient00002/study1/view1_frontal.jpg"]["lateral"].endswith("study1/view2_lateral.jpg")
    for view in ("view1", "view2"):
        assert entries[f"{ROOT}/patient00003/study1/{view}_frontal.jpg"]["lateral"].endswith("view3_lateral.jpg")
    assert "lateral" not in entries[f"{ROOT}/patient00002/study2/view1_frontal.jpg"]
    # a lateral without a frontal image in its study is rejected with the reason
    assert [(r.path, r.reason) for r in summary.rejected] == [
        (f"{ROOT}/patient00004/study1/view1_lateral.jpg", "lateral only: its study has no frontal image")]
    assert "lateral only" in caplog.text
    assert any("second or third lateral" in note for note in summary.notes)
    # the lateral's study is the frontal's
    assert all(entry["lateral"].startswith(f"{ROOT}/{entry['study']}/") for entry in entries.values()
               if "lateral" in entry)

    summary, document = _build_chexpert(chexpert_csv, tmp_path / "single.json", pair_lateral=False)
    assert not any("lateral" in entry for entry in _entries(document).values()) and not summary.rejected
    assert any("lateral images not used" in note for note in summary.notes)


def test_chexpert_split_by_patient(chexpert_csv, tmp_path):
    summary, document = _build_chexpert(chexpert_csv, tmp_path / "list.json", val_fraction=0.2, test_fraction=0.2,
                                        seed=3)
    split_of_patient: dict[str, set[str]] = defaultdict(set)
    for key in SPLIT_KEYS:
        for entry in document[key]:
            split_of_patient[entry["study"].split("/")[0]].add(key)
    assert all(len(splits) == 1 for splits in split_of_patient.values())
    sizes = {key: len(document[key]) for key in SPLIT_KEYS}
    assert sizes["validation"] >= 0.2 * sum(sizes.values()) - 3 and sizes["test"] >= 0.2 * sum(sizes.values())
    assert sizes["test_unhealthy"] == 0 and sizes["training"] > sizes["validation"]
    assert summary.splits["validation"].patients == sum("validation" in s for s in split_of_patient.values())
    _, again = _build_chexpert(chexpert_csv, tmp_path / "again.json", val_fraction=0.2, test_fraction=0.2, seed=3)
    assert again == document
    _, other = _build_chexpert(chexpert_csv, tmp_path / "other.json", val_fraction=0.2, test_fraction=0.2, seed=4)
    assert other["validation"] != document["validation"]


def test_chexpert_rejects_missing_and_broken_images(chexpert_csv, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    root = tmp_path / "chexpert_root"
    rows = KNOWN_ROWS + _filler_rows()
    for row in rows:
        _jpeg(root / row[0])
    (root / ROOT / "patient00002/study2/view1_frontal.jpg").unlink()  # missing frontal
    (root / ROOT / "patient00002/study1/view2_lateral.jpg").unlink()  # missing lateral
    truncated = root / ROOT / "patient00003/study1/view2_frontal.jpg"
    truncated.write_bytes(truncated.read_bytes()[:100])
    out = tmp_path / "checked.json"
    summary = build_chexpert_datalist(chexpert_csv, root, out)
    entries = _entries(json.loads(out.read_text()))
    # files are named by their path on disk, label-file problems (lateral only) as the CSV names them
    reasons = {Path(r.path).relative_to(root).as_posix() if Path(r.path).is_absolute() else r.path: r.reason
               for r in summary.rejected}
    assert reasons[f"{ROOT}/patient00004/study1/view1_lateral.jpg"] == "lateral only: its study has no frontal image"
    assert reasons[f"{ROOT}/patient00002/study2/view1_frontal.jpg"].startswith("missing: not found under")
    assert reasons[f"{ROOT}/patient00003/study1/view2_frontal.jpg"].startswith("truncated JPEG")
    assert "lateral: its study's frontal images are listed without it" in \
        reasons[f"{ROOT}/patient00002/study1/view2_lateral.jpg"]
    assert f"{ROOT}/patient00002/study2/view1_frontal.jpg" not in entries
    assert f"{ROOT}/patient00003/study1/view2_frontal.jpg" not in entries
    # the frontal image whose lateral is missing stays, without it (the study's second lateral is not taken)
    assert "lateral" not in entries[f"{ROOT}/patient00002/study1/view1_frontal.jpg"]
    assert len(entries) == sum(row[3] == "Frontal" for row in rows) - 2
    assert "truncated JPEG" in caplog.text
    # the images a checked list names exist where load_datalist puts them
    for entry in load_datalist(out, "training", base_dir=root)[:5]:
        assert Path(entry["image"]).is_file()

    # the dataset folder itself also works as the root: its CheXpert-v1.0-small/ prefix is stripped
    summary = build_chexpert_datalist(chexpert_csv, root / "CheXpert-v1.0-small", tmp_path / "inner.json")
    inner = json.loads((tmp_path / "inner.json").read_text())
    assert inner["training"][0]["image"].startswith("train/patient")
    assert len(_entries(inner)) == len(entries)
    assert any("stripped" in note for note in summary.notes)

    with pytest.raises(FileNotFoundError, match="allow-missing-images"):
        build_chexpert_datalist(chexpert_csv, tmp_path / "nowhere", tmp_path / "x.json")


def test_chexpert_bad_input(tmp_path):
    bad_value = _write_csv(tmp_path / "bad.csv", CHEXPERT_HEADER,
                           [_chexpert_row("patient00001/study1/view1_frontal.jpg", Edema="2.0")])
    with pytest.raises(ValueError, match=r"bad\.csv: line 2: 'Edema' must be 1, 0, -1 or blank, got '2.0'"):
        _build_chexpert(bad_value, tmp_path / "x.json")
    no_column = _write_csv(tmp_path / "short.csv", CHEXPERT_HEADER[:-1], [])
    with pytest.raises(ValueError, match="no 'Support Devices' column"):
        _build_chexpert(no_column, tmp_path / "x.json")
    with pytest.raises(ValueError, match="uncertainty must be one of ones, zeros, ignore"):
        _build_chexpert(no_column, tmp_path / "x.json", uncertainty="U-ones")
    assert not (tmp_path / "x.json").exists()


# ----------------------------------------------------------------------------------------------------------
# ChestX-ray14 builder


def _nih_rows(n_patients: int = 30, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = ["00000001_000.png,Cardiomegaly|Effusion,0,1,57,M,PA,2682,2749,0.143,0.143",
             "00000001_001.png,No Finding,1,1,58,M,AP,2894,2729,0.143,0.143",
             "00000002_000.png,Hernia,0,2,80,F,PA,2500,2048,0.168,0.168",
             "00000003_000.png,Covid,0,3,60,F,PA,2500,2048,0.168,0.168"]
    for patient in range(4, 4 + n_patients):
        for follow_up in range(int(rng.integers(1, 5))):
            chosen = [name for name in CHESTXRAY14_CLASSES if rng.random() < 0.1]
            lines.append(f"{patient:08d}_{follow_up:03d}.png,{'|'.join(chosen) or 'No Finding'},{follow_up},"
                         f"{patient},50,M,{rng.choice(['PA', 'AP'])},2048,2048,0.143,0.143")
    return lines


@pytest.fixture
def nih_csv(tmp_path) -> Path:
    path = tmp_path / "Data_Entry_2017_v2020.csv"
    path.write_text("\n".join([NIH_HEADER, *_nih_rows()]) + "\n")
    return path


def test_chestxray14_labels_and_split(nih_csv, tmp_path):
    out = tmp_path / "c14.json"
    summary = build_chestxray14_datalist(nih_csv, tmp_path / "images", out, val_fraction=0.2, test_fraction=0.2,
                                         check_images=False)
    document = validate_datalist(out)
    assert document["label_names"] == list(CHESTXRAY14_CLASSES) and document["test_unhealthy"] == []
    entries = _entries(document)
    first = entries["00000001_000.png"]
    assert first["labels"] == [0, 1, 1] + [0] * 11 and first["label"] == 1 and first["view"] == "PA"
    assert entries["00000001_001.png"]["labels"] == [0] * 14 and entries["00000001_001.png"]["label"] == 0
    assert entries["00000002_000.png"]["labels"][CHESTXRAY14_CLASSES.index("Hernia")] == 1
    assert [(r.path, r.reason.split(" in ")[0]) for r in summary.rejected] == [("00000003_000.png",
                                                                                 "unknown finding 'Covid'")]
    # split by patient: the patient is the number before the underscore
    splits_of: dict[str, set[str]] = defaultdict(set)
    for path, entry in entries.items():
        splits_of[path.split("_")[0]].add(entry["_split"])
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert {entry["_split"] for entry in entries.values()} == {"training", "validation", "test"}
    assert "not the official train_val/test lists" in document["description"]
    assert all(entry["label"] == int(any(entry["labels"])) for entry in entries.values())

    build_chestxray14_datalist(nih_csv, tmp_path / "images", tmp_path / "pa.json", view="pa", check_images=False)
    assert {entry["view"] for entry in _entries(json.loads((tmp_path / "pa.json").read_text())).values()} == {"PA"}


def test_chestxray14_official_test_list(nih_csv, tmp_path):
    test_list = tmp_path / "test_list.txt"
    test_list.write_text("00000001_000.png\n00000005_000.png\n")
    summary = build_chestxray14_datalist(nih_csv, tmp_path / "images", tmp_path / "c14.json", test_list=test_list,
                                         val_fraction=0.2, check_images=False)
    document = json.loads((tmp_path / "c14.json").read_text())
    test_patients = {entry["image"].split("_")[0] for entry in document["test"]}
    assert test_patients == {"00000001", "00000005"}  # the listed images' patients, all their images
    assert "00000001_001.png" in {entry["image"] for entry in document["test"]}
    assert any("in test with their patient" in note for note in summary.notes)


def test_chestxray14_finds_and_checks_images(nih_csv, tmp_path):
    image_dir = tmp_path / "nih"
    names = [line.split(",")[0] for line in _nih_rows()]
    for number, name in enumerate(names):
        if name not in ("00000001_001.png", "00000003_000.png"):  # one missing, one rejected for its label
            folder = image_dir / f"images_{number % 2 + 1:03d}" / "images"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / name)
    (image_dir / "images_001/images/00000002_000.png").write_bytes(b"not an image")
    summary = build_chestxray14_datalist(nih_csv, image_dir, tmp_path / "c14.json")
    reasons = {Path(r.path).name: r.reason for r in summary.rejected}
    assert reasons["00000001_001.png"].startswith("missing") and reasons["00000002_000.png"].startswith("not a PNG")
    entries = _entries(json.loads((tmp_path / "c14.json").read_text()))
    assert len(entries) == len(names) - 3 and entries["images_001/images/00000001_000.png"]["label"] == 1


# ----------------------------------------------------------------------------------------------------------
# command line


def test_cli_chexpert_and_chestxray14(chexpert_csv, nih_csv, tmp_path, capsys):
    out = tmp_path / "cli_chexpert.json"
    code = main(["datalist", "chexpert", "--csv", str(chexpert_csv), "--image-root", str(tmp_path / "data"),
                 "--out", str(out), "--uncertainty", "ignore", "--allow-missing-images", "--seed", "1"])
    printed = capsys.readouterr()
    document = validate_datalist(out)
    assert code == 0 and document["name"] == "chexpert-uignore"
    for key in SPLIT_KEYS:
        assert any(line.split()[:2] == [key, str(len(document[key]))] for line in printed.out.splitlines())
    assert "rejected: 1 (lateral only 1)" in printed.out
    assert any(-1 in entry["labels"] for entry in document["training"] + document["validation"] + document["test"])

    code = main(["datalist", "chexpert", "--csv", str(chexpert_csv), "--image-root", str(tmp_path / "data"),
                 "--out", str(tmp_path / "x.json")])
    assert code == 2 and "does not exist" in capsys.readouterr().err  # images checked by default
    with pytest.raises(SystemExit):
        main(["datalist", "chexpert", "--csv", str(chexpert_csv), "--image-root", ".", "--out", "x.json",
              "--uncertainty", "maybe"])
    capsys.readouterr()

    out = tmp_path / "cli_c14.json"
    code = main(["datalist", "chestxray14", "--data-entry", str(nih_csv), "--image-dir", str(tmp_path / "images"),
                 "--out", str(out), "--allow-missing-images", "--view", "PA", "--name", "c14"])
    printed = capsys.readouterr().out
    document = validate_datalist(out)
    assert code == 0 and document["name"] == "c14" and "positives per class" in printed
    assert all(entry["view"] == "PA" for key in SPLIT_KEYS for entry in document[key])


# ----------------------------------------------------------------------------------------------------------
# the real label files (no images: check_images=False)


@pytest.fixture(scope="module")
def chexpert_real(shared_path, tmp_path_factory):
    csv_path = shared_path("metadata", "chexpert_train.csv.gz")
    out = tmp_path_factory.mktemp("chexpert_real") / "chexpert.json"
    summary = build_chexpert_datalist(csv_path, "/data/chexpert", out, uncertainty="ignore", check_images=False)
    with gzip.open(csv_path, "rt", newline="") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        rows = list(reader)
    return summary, json.loads(out.read_text()), header, rows


@pytest.fixture(scope="module")
def chestxray14_real(shared_path, tmp_path_factory):
    csv_path = shared_path("metadata", "Data_Entry_2017_v2020.csv.gz")
    out = tmp_path_factory.mktemp("chestxray14_real") / "chestxray14.json"
    summary = build_chestxray14_datalist(csv_path, "/data/nih/images", out, check_images=False)
    with gzip.open(csv_path, "rt", newline="") as stream:
        rows = list(csv.DictReader(stream))
    return summary, json.loads(out.read_text()), rows, out


def _validate_sample(document: dict, path: Path, n: int = 500) -> None:
    """Schema-check the first ``n`` entries of each split (the whole list takes minutes)."""
    sample = {key: value[:n] if key in SPLIT_KEYS else value for key, value in document.items()}
    path.write_text(json.dumps(sample))
    validate_datalist(path)


def test_real_chexpert_counts(chexpert_real, tmp_path):
    summary, document, header, rows = chexpert_real
    path, kind, no_finding = (header.index(name) for name in ("Path", "Frontal/Lateral", "No Finding"))
    frontal = [row for row in rows if row[kind] == "Frontal"]
    assert len(rows) == 223_414 and len(frontal) == 191_027
    entries = [entry for key in SPLIT_KEYS for entry in document[key]]
    assert len(entries) == len(frontal)  # every frontal image, once
    patients = {row[path].split("/")[2] for row in frontal}
    assert sum(counts.patients for counts in summary.splits.values()) == len(patients) > 64_000
    split_of = {}
    for key in SPLIT_KEYS:
        for entry in document[key]:
            assert split_of.setdefault(entry["study"].split("/")[0], key) == key  # no patient in two splits
    sizes = {key: len(document[key]) for key in SPLIT_KEYS}
    assert 0.05 <= sizes["validation"] / len(entries) < 0.06 and 0.05 <= sizes["test"] / len(entries) < 0.06
    # every label equals the CSV's (the ignore policy keeps -1, blanks are null), whatever the split
    labels_of = {entry["image"]: entry["labels"] for entry in entries}
    csv_value = {"1.0": 1, "0.0": 0, "-1.0": -1, "": None}
    columns = [header.index(name) for name in CHEXPERT_CLASSES]
    assert all(labels_of[row[path]] == [csv_value[row[column]] for column in columns] for row in frontal)
    columns_of = list(zip(*labels_of.values()))
    positives = {name: column.count(1) for name, column in zip(CHEXPERT_CLASSES, columns_of)}
    assert positives["Support Devices"] > positives["Lung Opacity"] > positives["Pleural Effusion"] > 70_000
    assert positives["Pleural Other"] < 3_000 < positives["Lung Lesion"] < positives["Fracture"] < 10_000
    labels = Counter(entry.get("label") for entry in entries)
    assert labels[0] == sum(row[no_finding] == "1.0" for row in frontal)
    assert labels[1] > 150_000 and labels[None] > 0
    with_lateral = sum("lateral" in entry for entry in entries)
    assert 30_000 < with_lateral < 33_000
    assert all(r.reason == "lateral only: its study has no frontal image" for r in summary.rejected)
    _validate_sample(document, tmp_path / "sample.json")


def test_real_chestxray14_counts(chestxray14_real, tmp_path):
    summary, document, rows, out = chestxray14_real
    entries = [entry for key in SPLIT_KEYS for entry in document[key]]
    assert len(rows) == len(entries) == 112_120 and not summary.rejected
    assert sum(counts.patients for counts in summary.splits.values()) == 30_805
    patient_of = {row["Image Index"]: row["Patient ID"] for row in rows}
    split_of = {}
    for key in SPLIT_KEYS:
        for entry in document[key]:
            assert split_of.setdefault(patient_of[entry["image"]], key) == key  # no patient in two splits
    sizes = {key: len(document[key]) for key in SPLIT_KEYS}
    assert 0.69 < sizes["training"] / 112_120 < 0.71 and 0.2 <= sizes["test"] / 112_120 < 0.21
    findings = Counter(name for row in rows for name in row["Finding Labels"].split("|"))
    for position, name in enumerate(CHESTXRAY14_CLASSES):
        assert sum(entry["labels"][position] for entry in entries) == findings[name], name
    assert findings["No Finding"] == 60_361 == sum(entry["label"] == 0 for entry in entries)
    assert findings["Infiltration"] == 19_894 and findings["Hernia"] == 227
    _validate_sample(document, tmp_path / "sample.json")
    weights = pos_weights_from_datalist(out, "training")
    assert weights.shape == (14,) and torch.isfinite(weights).all() and (weights > 1).all()
    assert weights[CHESTXRAY14_CLASSES.index("Hernia")] == 100.0  # capped: ~490 negatives per positive
    infiltration = [entry["labels"][3] for entry in document["training"]]
    assert weights[3].item() == pytest.approx(infiltration.count(0) / infiltration.count(1), rel=1e-6)


# ----------------------------------------------------------------------------------------------------------
# the masked multi-label loss and the class weights


def test_masked_bce_equals_bce_when_nothing_is_masked():
    torch.manual_seed(0)
    logits, target = torch.randn(6, 13), (torch.rand(6, 13) > 0.7).float()
    pos_weight = torch.rand(13) * 5
    for reduction in ("mean", "sum", "none"):
        expected = F.binary_cross_entropy_with_logits(logits, target, reduction=reduction)
        torch.testing.assert_close(MaskedBCEWithLogitsLoss(reduction=reduction)(logits, target), expected)
        weighted = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight, reduction=reduction)
        torch.testing.assert_close(MaskedBCEWithLogitsLoss(pos_weight, reduction=reduction)(logits, target), weighted)


def test_masked_entries_get_no_loss_and_zero_gradient():
    torch.manual_seed(1)
    logits = torch.randn(4, 5, requires_grad=True)
    target = torch.tensor([[1, 0, -1, 1, 0], [math.nan, 1, 0, 0, -1], [0, 0, 0, 1, 1], [-1, math.nan, 1, 0, 0]])
    kept = ~torch.isnan(target) & (target != -1)
    loss = MaskedBCEWithLogitsLoss()(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and (logits.grad[~kept] == 0).all() and (logits.grad[kept] != 0).all()
    reference_logits = logits.detach().clone().requires_grad_(True)
    reference = F.binary_cross_entropy_with_logits(reference_logits[kept], target[kept])  # mean over kept entries
    reference.backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(logits.grad, reference_logits.grad)
    per_entry = MaskedBCEWithLogitsLoss(reduction="none")(logits.detach(), target)
    assert (per_entry[~kept] == 0).all() and per_entry.sum() == pytest.approx(
        MaskedBCEWithLogitsLoss(reduction="sum")(logits.detach(), target).item())
    # only NaN is masked without an ignore value
    no_ignore = MaskedBCEWithLogitsLoss(ignore_value=None, reduction="none")(logits.detach(), target)
    assert (no_ignore[target == -1] != 0).all() and (no_ignore[torch.isnan(target)] == 0).all()


def test_nothing_kept_gives_zero_loss_and_gradient():
    logits = torch.randn(2, 3, requires_grad=True)
    loss = MaskedBCEWithLogitsLoss(pos_weight=[2.0, 2.0, 2.0])(logits, torch.full((2, 3), -1.0))
    loss.backward()
    assert loss.item() == 0.0 and (logits.grad == 0).all()
    loss = MaskedBCEWithLogitsLoss()(logits, multilabel_targets([[None, None, None], [None, -1, None]]))
    assert loss.item() == 0.0


def test_pos_weight_scales_the_positive_terms_only():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.5]])
    positives, negatives = torch.ones(2, 2), torch.zeros(2, 2)
    plain, weighted = MaskedBCEWithLogitsLoss(reduction="none"), MaskedBCEWithLogitsLoss([4.0, 1.0], reduction="none")
    torch.testing.assert_close(weighted(logits, positives), plain(logits, positives) * torch.tensor([4.0, 1.0]))
    torch.testing.assert_close(weighted(logits, negatives), plain(logits, negatives))
    loss_fn = MaskedBCEWithLogitsLoss([4.0, 1.0]).to(torch.float64)
    assert loss_fn.pos_weight.dtype == torch.float64 and "pos_weight" in loss_fn.state_dict()
    assert loss_fn(logits.double(), positives.double()).dtype == torch.float64
    with pytest.raises(ValueError, match="pos_weight has 2 classes, the logits 3"):
        loss_fn(torch.zeros(1, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="same shape"):
        MaskedBCEWithLogitsLoss()(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="finite non-negative"):
        MaskedBCEWithLogitsLoss([1.0, math.inf])


def test_class_pos_weights_by_hand():
    labels = [[1, 0, None, 0, 1],
              [0, 0, 1, 0, 1],
              [0, -1, 1, 0, 0],
              [0, 0, None, 0, 1],
              [1, 0, 0, None, 1]]
    # class 0: 2 positives, 3 negatives; class 1: no positive, 4 negatives (-1 ignored); class 2: 2 / 1;
    # class 3: no positive, 4 negatives; class 4: 4 positives, 1 negative
    weights = class_pos_weights(labels)
    torch.testing.assert_close(weights, torch.tensor([1.5, 100.0, 0.5, 100.0, 0.25]))
    torch.testing.assert_close(class_pos_weights(labels, max_weight=None), torch.tensor([1.5, 4.0, 0.5, 4.0, 0.25]))
    torch.testing.assert_close(class_pos_weights(labels, max_weight=1.0), torch.tensor([1.0, 1.0, 0.5, 1.0, 0.25]))
    # -1 counts as a label of its own value when nothing is ignored: not positive, not negative
    assert class_pos_weights(labels, ignore_value=None)[1] == 100.0
    only_positive = class_pos_weights([[1], [1], [None]])
    torch.testing.assert_close(only_positive, torch.tensor([1.0]))  # nothing to balance
    array = np.array([[1, 0], [0, np.nan], [0, 1]], dtype=float)
    torch.testing.assert_close(class_pos_weights(array), torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(class_pos_weights(torch.from_numpy(array)), torch.tensor([2.0, 1.0]))
    with pytest.raises(ValueError, match="different lengths"):
        class_pos_weights([[1, 0], [1]])


def test_pos_weights_from_a_built_datalist(chexpert_csv, tmp_path):
    _, document = _build_chexpert(chexpert_csv, tmp_path / "list.json", uncertainty="ignore", val_fraction=0.2)
    training = np.array([[math.nan if v is None else v for v in entry["labels"]] for entry in document["training"]])
    positives, negatives = (training == 1).sum(0), (training == 0).sum(0)
    expected = np.where(negatives == 0, 1.0, np.where(positives == 0, 100.0, negatives / np.maximum(positives, 1)))
    weights = pos_weights_from_datalist(tmp_path / "list.json", "training")
    torch.testing.assert_close(weights, torch.tensor(np.minimum(expected, 100.0), dtype=torch.float32))
    assert pos_weights_from_datalist(tmp_path / "list.json", "validation", validate=True).shape == (13,)
    # the weights and the masked targets plug into the loss
    targets = multilabel_targets([entry["labels"] for entry in document["training"]])
    assert torch.isnan(targets).any() and (targets == -1).any()
    loss = MaskedBCEWithLogitsLoss(weights)(torch.zeros_like(targets), targets)
    assert torch.isfinite(loss)
    (tmp_path / "plain.json").write_text(json.dumps({"training": [{"image": "a.png"}]}))
    with pytest.raises(ValueError, match="no 'label_names'"):
        pos_weights_from_datalist(tmp_path / "plain.json")
