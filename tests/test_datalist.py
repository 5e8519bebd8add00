"""Datalist builders, schema and loader, on the real NIH label files and real sample radiographs."""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import logging
import shutil
import time
from collections import Counter
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from cxr_monai.data.builders.folder import build_folder_datalist
from cxr_monai.data.builders.nih import build_nih_datalist
from cxr_monai.data.datalist import (
    SPLIT_KEYS,
    DatalistError,
    add_arguments,
    datalist_schema,
    image_file_problem,
    load_datalist,
    run,
    split_groups,
    validate_datalist,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA_ENTRY = SHARED_DATA / "metadata" / "Data_Entry_2017_v2020.csv.gz"
BBOX_LIST = SHARED_DATA / "metadata" / "BBox_List_2017.csv.gz"
NIH_SAMPLES = SHARED_DATA / "real-samples" / "nih"
MONTGOMERY = SHARED_DATA / "real-samples" / "montgomery-like"

needs_nih = pytest.mark.skipif(not (DATA_ENTRY.is_file() and BBOX_LIST.is_file() and NIH_SAMPLES.is_dir()),
                               reason=f"NIH label files or samples not found under {SHARED_DATA} "
                                      "(../shared/data is not part of a user checkout)")
needs_montgomery = pytest.mark.skipif(not MONTGOMERY.is_dir(), reason=f"{MONTGOMERY} not found "
                                      "(../shared/data is not part of a user checkout)")

SUBSET_PATIENTS = {f"{patient:08d}" for patient in range(1, 301)} | {"00013118", "00018427", "00027426"}
FAKE_DICOM = b"\0" * 128 + b"DICM" + b"\2\0\1\0UL\4\0" + b"\0" * 16
NIH_ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args(argv))


def _images(document: dict, key: str) -> list[str]:
    return [entry["image"] for entry in document[key]]


def _write_datalist(path: Path, entries: list[dict]) -> Path:
    path.write_text(json.dumps({"name": "t", "training": entries}))
    return path


# ----------------------------------------------------------------------------------------------------------
# reference values read straight from the NIH files


@pytest.fixture(scope="module")
def nih_rows() -> dict[str, dict[str, str]]:
    with gzip.open(DATA_ENTRY, "rt", newline="") as stream:
        return {row["Image Index"]: row for row in csv.DictReader(stream)}


@pytest.fixture(scope="module")
def bbox_rows() -> list[list[str]]:
    with gzip.open(BBOX_LIST, "rt", newline="") as stream:
        return list(csv.reader(stream))[1:]


@pytest.fixture(scope="module")
def full_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("nih") / "nih.json"
    start = time.perf_counter()
    summary = build_nih_datalist(DATA_ENTRY, BBOX_LIST, "/data/nih/images", out, check_images=False)
    seconds = time.perf_counter() - start
    return summary, json.loads(out.read_text()), seconds


@pytest.fixture(scope="module")
def nih_subset(tmp_path_factory) -> tuple[Path, Path]:
    """Plain-CSV copies of the NIH files cut to the rows of a few hundred patients, lines kept verbatim."""
    root = tmp_path_factory.mktemp("nih_subset")
    copies = []
    for source, name in ((DATA_ENTRY, "Data_Entry_2017_v2020.csv"), (BBOX_LIST, "BBox_List_2017.csv")):
        with gzip.open(source, "rb") as stream:
            header, *lines = stream.read().splitlines(keepends=True)
        (root / name).write_bytes(header + b"".join(line for line in lines if line[:8].decode() in SUBSET_PATIENTS))
        copies.append(root / name)
    return copies[0], copies[1]


@pytest.fixture(scope="module")
def pa_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("nih_pa") / "nih_pa.json"
    summary = build_nih_datalist(DATA_ENTRY, BBOX_LIST, "/data/nih/images", out, view="pa", check_images=False)
    return summary, out


# ----------------------------------------------------------------------------------------------------------
# NIH builder on the real label files


@needs_nih
def test_full_nih_build_counts(full_build, nih_rows, bbox_rows):
    summary, document, seconds = full_build
    healthy_rows = [index for index, row in nih_rows.items() if row["Finding Labels"] == "No Finding"]
    boxed_images = {row[0] for row in bbox_rows}
    assert not boxed_images & set(healthy_rows)
    healthy_listed = [image for key in ("training", "validation", "test") for image in _images(document, key)]
    assert sorted(healthy_listed) == sorted(healthy_rows)  # every healthy image exactly once (60,361)
    assert sorted(_images(document, "test_unhealthy")) == sorted(boxed_images)  # 880 images
    assert summary.boxes == len(bbox_rows) == 984
    assert summary.rejected == []
    assert {key: summary.splits[key].images for key in SPLIT_KEYS} == {key: len(document[key]) for key in SPLIT_KEYS}
    assert seconds < 30, f"full NIH build took {seconds:.1f} s"


@needs_nih
def test_nih_splits_are_patient_disjoint(full_build, nih_rows, bbox_rows):
    summary, document, _ = full_build
    patients = {key: {nih_rows[image]["Patient ID"] for image in _images(document, key)} for key in SPLIT_KEYS}
    held_out = patients["test"] | patients["test_unhealthy"]
    assert not patients["training"] & patients["validation"]
    assert not patients["training"] & held_out
    assert not patients["validation"] & held_out
    assert {key: summary.splits[key].patients for key in SPLIT_KEYS} == {k: len(v) for k, v in patients.items()}
    # every healthy image of a patient with a boxed image is in test
    boxed_patients = {nih_rows[row[0]]["Patient ID"] for row in bbox_rows}
    their_healthy = {index for index, row in nih_rows.items()
                     if row["Patient ID"] in boxed_patients and row["Finding Labels"] == "No Finding"}
    assert their_healthy <= set(_images(document, "test"))
    # validation holds val_fraction of the healthy images, overshooting by less than one patient's images
    n_healthy = sum(len(document[key]) for key in ("training", "validation", "test"))
    most_per_patient = max(Counter(row["Patient ID"] for row in nih_rows.values()).values())
    assert 0.03 * n_healthy <= len(document["validation"]) < 0.03 * n_healthy + most_per_patient
    assert "Patient" not in json.dumps(document)
    allowed = {"image", "label", "view", "findings", "boxes", "box_labels"}
    assert all(set(entry) <= allowed for key in SPLIT_KEYS for entry in document[key])


@needs_nih
def test_nih_boxes_and_findings(full_build, nih_rows, bbox_rows):
    _, document, _ = full_build
    unhealthy = {entry["image"]: entry for entry in document["test_unhealthy"]}
    entry = unhealthy["00013118_008.png"]  # its one row: Atelectasis,225.084745762712,547.019216763771,86.77...
    assert entry["label"] == 1 and entry["findings"] == ["Atelectasis"] and entry["box_labels"] == ["Atelectasis"]
    assert entry["boxes"] == [pytest.approx([225.084745762712, 547.019216763771,
                                             225.084745762712 + 86.7796610169491, 547.019216763771 + 79.1864406779661],
                                            abs=1e-5)]
    three = unhealthy["00018427_004.png"]  # three boxes, four findings
    assert three["box_labels"] == ["Atelectasis", "Effusion", "Mass"]
    assert three["findings"] == ["Atelectasis", "Effusion", "Mass", "Nodule"]
    x, y, w, h = 770.438095238095, 351.085714285714, 184.21164021164, 548.300529100529  # its Effusion row
    assert three["boxes"][1] == pytest.approx([x, y, x + w, y + h], abs=1e-5)
    # the BBox list says "Infiltrate"; box labels use Data_Entry's "Infiltration", so each is one of the findings
    infiltrate_images = {row[0] for row in bbox_rows if row[1] == "Infiltrate"}
    assert infiltrate_images and all("Infiltration" in unhealthy[image]["box_labels"] for image in infiltrate_images)
    for entry in unhealthy.values():
        assert set(entry["box_labels"]) <= set(entry["findings"])
        assert entry["findings"] == nih_rows[entry["image"]]["Finding Labels"].split("|")
        assert entry["view"] == nih_rows[entry["image"]]["View Position"]


@needs_nih
def test_nih_view_filter(pa_build, nih_rows, bbox_rows):
    summary, out = pa_build
    document = json.loads(out.read_text())
    assert document["name"] == "nih-chestxray14-pa" and "View Position PA only" in document["description"]
    assert all(entry["view"] == "PA" for key in SPLIT_KEYS for entry in document[key])
    healthy_pa = sum(row["Finding Labels"] == "No Finding" and row["View Position"] == "PA"
                     for row in nih_rows.values())
    boxed_pa = {row[0] for row in bbox_rows if nih_rows[row[0]]["View Position"] == "PA"}
    assert sum(len(document[key]) for key in ("training", "validation", "test")) == healthy_pa
    assert set(_images(document, "test_unhealthy")) == boxed_pa
    assert summary.splits["training"].views == {"PA": summary.splits["training"].images}


@needs_nih
def test_nih_unknown_view(nih_subset, tmp_path):
    with pytest.raises(ValueError, match=r"Data_Entry_2017_v2020\.csv: no image with View Position 'LL'"):
        build_nih_datalist(*nih_subset, "/data/nih/images", tmp_path / "ll.json", view="LL", check_images=False)


@needs_nih
def test_nih_build_is_deterministic(nih_subset, tmp_path):
    first, again, other_seed = tmp_path / "first.json", tmp_path / "again.json", tmp_path / "seed1.json"
    build_nih_datalist(*nih_subset, "/data/nih/images", first, check_images=False)
    build_nih_datalist(*nih_subset, "/data/nih/images", again, check_images=False)
    build_nih_datalist(*nih_subset, "/data/nih/images", other_seed, check_images=False, seed=1)
    assert again.read_bytes() == first.read_bytes()
    first, second = json.loads(first.read_text()), json.loads(other_seed.read_text())
    assert _images(first, "validation") != _images(second, "validation")
    assert _images(first, "test_unhealthy") == _images(second, "test_unhealthy")


@needs_nih
def test_nih_rejects_missing_and_unreadable_images(nih_subset, tmp_path, nih_rows, bbox_rows, caplog):
    subset = {index: row for index, row in nih_rows.items() if index[:8] in SUBSET_PATIENTS}
    healthy_pa = [index for index, row in subset.items()
                  if row["Finding Labels"] == "No Finding" and row["View Position"] == "PA"]
    boxed_pa = {row[0] for row in bbox_rows if row[0] in subset and subset[row[0]]["View Position"] == "PA"}
    real_healthy = "00027426_000.png"
    empty, truncated, text, duplicated = [index for index in healthy_pa if index != real_healthy][:4]
    dataset = tmp_path / "nih"
    nested = dataset / "images_001" / "images"
    nested.mkdir(parents=True)
    (nested / real_healthy).symlink_to(NIH_SAMPLES / real_healthy)
    shutil.copy(NIH_SAMPLES / "00000001_000.png", nested / "00013118_008.png")  # a real PNG named as a boxed PA image
    (nested / empty).touch()
    (nested / truncated).write_bytes((NIH_SAMPLES / real_healthy).read_bytes()[:5000])
    (nested / text).write_text("404 Not Found")
    for folder in ("images_001", "images_002"):
        (dataset / folder / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(NIH_SAMPLES / real_healthy, dataset / folder / "images" / duplicated)

    out = tmp_path / "checked.json"
    with caplog.at_level(logging.WARNING, logger="cxr_monai.data.datalist"):
        summary = build_nih_datalist(*nih_subset, dataset, out, view="PA")
    document = validate_datalist(out)
    listed = [image for key in SPLIT_KEYS for image in _images(document, key)]
    assert sorted(listed) == [f"images_001/images/{name}" for name in ("00013118_008.png", real_healthy)]
    assert _images(document, "test_unhealthy") == ["images_001/images/00013118_008.png"]

    reasons = {Path(rejected.path).name: rejected.reason for rejected in summary.rejected}
    assert reasons[empty] == "empty file"
    assert reasons[truncated].startswith("truncated PNG")
    assert reasons[text].startswith("not a PNG, JPEG or DICOM")
    assert reasons[duplicated].startswith("ambiguous: 2 files named")
    missing = [reason for reason in reasons.values() if reason.startswith("missing")]
    assert len(missing) == len(summary.rejected) - 4 == len(healthy_pa) + len(boxed_pa) - 6
    logged = caplog.text
    assert f"{empty}: empty file" in logged and f"{truncated}: truncated PNG" in logged
    assert "missing or unreadable images were left out" in document["description"]
    assert "rejected: " in summary.format() and "missing " in summary.format()

    with pytest.raises(FileNotFoundError, match="allow-missing-images"):
        build_nih_datalist(*nih_subset, tmp_path / "not_there", tmp_path / "x.json")
    (tmp_path / "wrong_dir").mkdir()
    with pytest.raises(ValueError, match=r"x\.json: not written, no usable image: \d+ rejected \(first: .*: missing"):
        build_nih_datalist(*nih_subset, tmp_path / "wrong_dir", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


@needs_nih
def test_nih_unchecked_paths_and_base_dir(nih_subset, tmp_path):
    images = tmp_path / "dataset" / "images"
    (images / "images_003").mkdir(parents=True)
    (images / "images_003" / "00000002_000.png").write_bytes(b"not checked")
    out = tmp_path / "list.json"
    summary = build_nih_datalist(*nih_subset, images, out, view="PA", check_images=False,
                                 base_dir=tmp_path / "dataset")
    document = json.loads(out.read_text())
    listed = {image for key in SPLIT_KEYS for image in _images(document, key)}
    assert "images/images_003/00000002_000.png" in listed  # found: its real place
    assert "images/00000005_000.png" in listed  # not there yet: the flat layout
    assert summary.rejected == []
    assert "relative to the dataset directory, the directory holding 'images'" in document["description"]
    with pytest.raises(ValueError, match="not inside base_dir"):
        build_nih_datalist(*nih_subset, images, out, check_images=False, base_dir=tmp_path / "elsewhere")


# ----------------------------------------------------------------------------------------------------------
# NIH builder on plain CSVs in the NIH layout (as the phantom generator writes them)


def _write_phantom_like(tmp_path: Path, bbox_header: str) -> Path:
    root = tmp_path / "phantom"
    (root / "images").mkdir(parents=True)
    rows = [("p_000.dcm", "No Finding", "1"), ("p_001.png", "No Finding", "1"), ("p_002.dcm", "No Finding", "2"),
            ("p_003.dcm", "Nodule|Effusion", "3"), ("p_004.png", "No Finding", "3"), ("p_005.png", "Mass", "4"),
            ("p_006.dcm", "No Finding", "5"), ("p_007.dcm", "No Finding", "6")]
    lines = [NIH_ENTRY_HEADER] + [f"{index},{findings},0,{patient},50,F,PA,256,256,1.68,1.68"
                                  for index, findings, patient in rows]
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    (root / "BBox_List_2017.csv").write_text(f"{bbox_header}\np_003.dcm,Nodule,10,20,30,40\n"
                                             "p_003.dcm,Effusion,100.5,150,20.25,10\n")
    for index, _, _ in rows:
        if index == "p_003.dcm":  # the boxed image: its size is read, so a real (1024 px) DICOM
            shutil.copy(next((SHARED_DATA / "real-samples" / "siim").glob("*.dcm")), root / "images" / index)
        elif index.endswith(".dcm"):
            (root / "images" / index).write_bytes(FAKE_DICOM)
        else:
            shutil.copy(NIH_SAMPLES / "00027426_000.png", root / "images" / index)
    return root


@needs_nih
@pytest.mark.parametrize("bbox_header", ["Image Index,Finding Label,Bbox [x,y,w,h],,,",
                                         'Image Index,Finding Label,"Bbox [x,y,w,h]",,,',
                                         "Image Index,Finding Label,x,y,w,h"])
def test_nih_builder_reads_plain_csv_in_nih_layout(tmp_path, bbox_header):
    root = _write_phantom_like(tmp_path, bbox_header)
    summary = build_nih_datalist(root / "Data_Entry_2017.csv", root / "BBox_List_2017.csv", root / "images",
                                 root / "datalist.json", val_fraction=0.2, test_fraction=0.2, base_dir=root)
    document = validate_datalist(root / "datalist.json")
    assert summary.rejected == []
    assert document["test_unhealthy"] == [{
        "image": "images/p_003.dcm", "label": 1, "findings": ["Nodule", "Effusion"],
        "boxes": [[10.0, 20.0, 40.0, 60.0], [100.5, 150.0, 120.75, 160.0]], "box_labels": ["Nodule", "Effusion"],
        "view": "PA"}]
    assert "images/p_004.png" in _images(document, "test")  # patient 3 has the boxed image
    assert sorted(image for key in ("training", "validation", "test") for image in _images(document, key)) == \
        [f"images/p_00{i}.{'png' if i in (1, 4) else 'dcm'}" for i in (0, 1, 2, 4, 6, 7)]
    files = load_datalist(root / "datalist.json", "test_unhealthy", base_dir=root)
    assert files[0]["image"] == str(root / "images" / "p_003.dcm")


@needs_nih
def test_nih_builder_scales_boxes_of_resized_copies_and_rejects_boxes_outside(tmp_path):
    """A 512 px copy of a released (1024 px) image gets its boxes halved; a box off the image rejects it."""
    (tmp_path / "images").mkdir()
    for name in ("00000001_000.png", "00000002_000.png", "00000003_000.png"):
        shutil.copy(NIH_SAMPLES / "00000001_000.png", tmp_path / "images" / name)  # 512 x 512
    entry, bbox = tmp_path / "entry.csv", tmp_path / "bbox.csv"
    entry.write_text(f"{NIH_ENTRY_HEADER}\n" + "".join(
        f"0000000{i}_000.png,{finding},0,{i},50,F,PA,2500,2048,0.14,0.14\n"
        for i, finding in ((1, "Mass"), (2, "Nodule"), (3, "No Finding"))))
    bbox.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Mass,600,500,300,350\n"
                    "00000002_000.png,Nodule,100,100,20,20\n")
    out = tmp_path / "nih.json"
    summary = build_nih_datalist(entry, bbox, tmp_path / "images", out, val_fraction=0.0, test_fraction=0.0)
    boxed = {e["image"]: e["boxes"] for e in json.loads(out.read_text())["test_unhealthy"]}
    assert boxed == {"00000001_000.png": [[300.0, 250.0, 450.0, 425.0]], "00000002_000.png": [[50.0, 50.0, 60.0, 60.0]]}
    assert any("2 boxed images are not 1024 px" in note for note in summary.notes)

    summary = build_nih_datalist(entry, bbox, tmp_path / "images", out, val_fraction=0.0, test_fraction=0.0,
                                 box_image_size=None)  # coordinates kept: the first box leaves the 512 px image
    assert [e["image"] for e in json.loads(out.read_text())["test_unhealthy"]] == ["00000002_000.png"]
    [rejected] = summary.rejected
    assert rejected.path.endswith("00000001_000.png") and "outside the 512x512 px image" in rejected.reason
    assert _cli(["nih", "--data-entry", str(entry), "--bbox-list", str(bbox), "--image-dir", str(tmp_path / "images"),
                 "--out", str(out), "--box-image-size", "0", "--val-fraction", "0", "--test-fraction", "0"]) == 0
    assert len(json.loads(out.read_text())["test_unhealthy"]) == 1


def test_nih_builder_reports_bad_csv(tmp_path):
    entry, bbox = tmp_path / "entry.csv", tmp_path / "bbox.csv"
    entry.write_text("Image Index,Finding Labels,Patient ID\na.png,No Finding,1\n")
    bbox.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
    with pytest.raises(ValueError, match=r"entry\.csv: no 'View Position' column"):
        build_nih_datalist(entry, bbox, tmp_path, tmp_path / "o.json", check_images=False)
    entry.write_text(f"{NIH_ENTRY_HEADER}\na.png,No Finding,0,1,5,M,PA,1,1,1,1\na.png,Mass,0,1,5,M,PA,1,1,1,1\n")
    with pytest.raises(ValueError, match=r"entry\.csv: line 3: Image Index a\.png appears twice"):
        build_nih_datalist(entry, bbox, tmp_path, tmp_path / "o.json", check_images=False)
    entry.write_text(f"{NIH_ENTRY_HEADER}\na.png,Mass,0,1,5,M,PA,1,1,1,1\n")
    bbox.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\na.png,Mass,1,2,three,4\n")
    with pytest.raises(ValueError, match=r"bbox\.csv: line 2: box x, y, w, h must be 4 numbers"):
        build_nih_datalist(entry, bbox, tmp_path, tmp_path / "o.json", check_images=False)
    bbox.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\na.png,Mass,1,2,0,4\n")
    with pytest.raises(ValueError, match=r"bbox\.csv: line 2: box needs x, y >= 0 and w, h > 0"):
        build_nih_datalist(entry, bbox, tmp_path, tmp_path / "o.json", check_images=False)
    with pytest.raises(FileNotFoundError, match=r"nope\.csv: no such CSV file"):
        build_nih_datalist(tmp_path / "nope.csv", bbox, tmp_path, tmp_path / "o.json", check_images=False)
    with pytest.raises(ValueError, match="val_fraction"):
        build_nih_datalist(entry, bbox, tmp_path, tmp_path / "o.json", val_fraction=1.5)
    assert not (tmp_path / "o.json").exists()


# ----------------------------------------------------------------------------------------------------------
# helpers


@needs_montgomery
def test_image_file_problem(tmp_path):
    png = (NIH_SAMPLES / "00027426_000.png").read_bytes() if NIH_SAMPLES.is_dir() else None
    jpeg = (MONTGOMERY / "1.jpg").read_bytes()
    cases = {"ok.jpg": (jpeg, None), "cut.jpg": (jpeg[:3000], "truncated JPEG"), "ok.dcm": (FAKE_DICOM, None),
             "empty.png": (b"", "empty file"), "page.png": (b"<html>", "not a PNG, JPEG or DICOM")}
    if png is not None:
        cases.update({"ok.png": (png, None), "cut.png": (png[:-20], "truncated PNG")})
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        problem = image_file_problem(tmp_path / name)
        assert problem == expected if expected is None else problem.startswith(expected), (name, problem)
    assert image_file_problem(tmp_path / "absent.png") == "missing"
    assert image_file_problem(tmp_path).startswith("unreadable")
    siim = next((SHARED_DATA / "real-samples" / "siim").glob("*.dcm"), None)
    if siim is not None:  # a bare data set (no preamble) named .dcm reads, so the builders take it
        import pydicom

        dataset = pydicom.dcmread(siim)
        dataset.preamble = None
        dataset.save_as(tmp_path / "bare.dcm", implicit_vr=False, little_endian=True)
        assert (tmp_path / "bare.dcm").read_bytes()[128:132] != b"DICM"
        assert image_file_problem(tmp_path / "bare.dcm") is None
        (tmp_path / "bare.png").write_bytes((tmp_path / "bare.dcm").read_bytes())
        assert image_file_problem(tmp_path / "bare.png").startswith("not a PNG, JPEG or DICOM")


def test_split_groups():
    sizes = {f"p{i:03d}": 1 + i % 4 for i in range(200)}  # 500 images
    assignment = split_groups(sizes, val_fraction=0.1, test_fraction=0.05, seed=3, test_groups=["p007", "zzz"])
    assert set(assignment) == set(sizes) and assignment["p007"] == "test"
    images = Counter()
    for group, split in assignment.items():
        images[split] += sizes[group]
    assert 25 <= images["test"] < 25 + 4 and 50 <= images["validation"] < 50 + 4
    assert split_groups(dict(reversed(sizes.items())), val_fraction=0.1, test_fraction=0.05, seed=3,
                        test_groups=["p007"]) == assignment
    assert split_groups(sizes, val_fraction=0.1, test_fraction=0.05, seed=4, test_groups=["p007"]) != assignment
    assert split_groups({"only": 5}, val_fraction=0.5, test_fraction=0.2) == {"only": "training"}
    tiny = split_groups({"a": 4, "b": 1, "c": 3}, val_fraction=0.15, test_fraction=0.15, test_groups=["c"])
    assert sorted(tiny.values()) == ["test", "training", "validation"]
    with pytest.raises(ValueError, match="below 1"):
        split_groups(sizes, val_fraction=0.6, test_fraction=0.4)


# ----------------------------------------------------------------------------------------------------------
# folder builder


@needs_montgomery
def test_folder_builder_on_montgomery_like(tmp_path):
    out = tmp_path / "montgomery.json"
    summary = build_folder_datalist(MONTGOMERY, out)
    document = validate_datalist(out)
    entries = [entry for key in SPLIT_KEYS for entry in document[key]]
    with open(MONTGOMERY / "idx.csv", newline="") as stream:
        expected_pairs = sorted((row["img"], row["mask"]) for row in csv.DictReader(stream))
    assert sorted((entry["image"], entry["lung_mask"]) for entry in entries) == expected_pairs
    assert [summary.splits[key].images for key in SPLIT_KEYS] == [2, 1, 1, 0]  # ceil(3 % of 4), ceil(2 % of 4)
    assert summary.rejected == [] and any("idx.csv" in note for note in summary.notes)
    files = load_datalist(out, "training", base_dir=MONTGOMERY)
    assert all(Path(entry["image"]).is_file() and Path(entry["lung_mask"]).is_file() for entry in files)


@needs_montgomery
def test_folder_builder_test_only_lists_every_image_for_screening(tmp_path):
    out = tmp_path / "screen.json"
    assert _cli(["folder", "--image-dir", str(MONTGOMERY), "--out", str(out), "--test-only"]) == 0
    document = validate_datalist(out)
    assert sorted(_images(document, "test")) == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    assert document["training"] == document["validation"] == document["test_unhealthy"] == []
    assert "every image in test" in document["description"]


@needs_montgomery
def test_folder_builder_labels_orphans_and_bad_masks(tmp_path, caplog):
    folder = tmp_path / "cxr"
    shutil.copytree(MONTGOMERY, folder)
    shutil.copy(MONTGOMERY / "1-mask.png", folder / "5-mask.png")  # mask without image
    shutil.copy(MONTGOMERY / "1.jpg", folder / "6.jpg")  # image without mask
    shutil.copy(MONTGOMERY / "1.jpg", folder / "7.jpg")  # image without a labels row
    (folder / "3-mask.png").write_bytes((MONTGOMERY / "3-mask.png").read_bytes()[:100])  # truncated mask
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label,findings\n1.jpg,0,\n2.jpg,1,Tuberculosis\n3.jpg,0,\n4.jpg,0,\n6.jpg,0,\n9.jpg,1,\n")
    with caplog.at_level(logging.WARNING, logger="cxr_monai.data.datalist"):
        summary = build_folder_datalist(folder, tmp_path / "out.json", labels_csv=labels, val_fraction=0.0,
                                        test_fraction=0.0)
    document = validate_datalist(tmp_path / "out.json")
    assert document["test_unhealthy"] == [{"image": "2.jpg", "lung_mask": "2-mask.png", "label": 1,
                                           "findings": ["Tuberculosis"]}]
    assert document["training"] == [{"image": "1.jpg", "lung_mask": "1-mask.png", "label": 0},
                                    {"image": "4.jpg", "lung_mask": "4-mask.png", "label": 0},
                                    {"image": "6.jpg", "label": 0}]
    reasons = {Path(rejected.path).name: rejected.reason for rejected in summary.rejected}
    assert reasons["5-mask.png"].startswith("mask without image")
    assert reasons["3-mask.png"].startswith("truncated PNG")
    assert reasons["3.jpg"].startswith("mask rejected: 3-mask.png: truncated PNG")
    assert reasons["7.jpg"] == "no row in labels.csv"
    assert reasons["9.jpg"].startswith("no such image: line 7 of labels.csv")
    assert len(reasons) == 5 and "5-mask.png: mask without image" in caplog.text

    labels.write_text("image,label\n1.jpg,yes\n")
    with pytest.raises(ValueError, match=r"labels\.csv: line 2: label must be 0 \(healthy\) or 1"):
        build_folder_datalist(folder, tmp_path / "out.json", labels_csv=labels)


@needs_montgomery
def test_folder_builder_with_separate_mask_dir(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks" / "lungs").mkdir(parents=True)
    for number in (1, 2, 3):
        shutil.copy(MONTGOMERY / f"{number}.jpg", tmp_path / "data" / "images" / f"case{number}.jpg")
        shutil.copy(MONTGOMERY / f"{number}-mask.png", tmp_path / "data" / "masks" / "lungs" / f"case{number}.png")
    out = tmp_path / "list.json"
    build_folder_datalist(tmp_path / "data" / "images", out, mask_dir=tmp_path / "data" / "masks", mask_suffix="",
                          val_fraction=0.0, test_fraction=0.0)
    assert json.loads(out.read_text())["training"][0] == {"image": "images/case1.jpg",
                                                          "lung_mask": "masks/lungs/case1.png"}
    with pytest.raises(ValueError, match="empty mask suffix"):
        build_folder_datalist(MONTGOMERY, out, mask_suffix="")


# ----------------------------------------------------------------------------------------------------------
# folder builder: lesion masks, boxes, label columns, patients (small synthetic folders)


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)
    return path


def _radiograph(width: int = 64, height: int = 48) -> np.ndarray:
    return np.tile(np.linspace(20, 220, width), (height, 1))


def _lesion_folder(root: Path, lesions: dict[str, bool], size: tuple[int, int] = (64, 48)) -> Path:
    """``images/``, ``lungs/`` and ``lesions/`` with identically named PNGs: one image per name; its lesion mask
    has a foreground blob when ``lesions[name]``, is all zero otherwise."""
    width, height = size
    for stem, has_lesion in lesions.items():
        _png(root / "images" / f"{stem}.png", _radiograph(width, height))
        lungs = np.zeros((height, width))
        lungs[8:40, 6:28] = lungs[8:40, 36:58] = 255
        _png(root / "lungs" / f"{stem}.png", lungs)
        lesion = np.zeros((height, width))
        if has_lesion:
            lesion[20:26, 10:16] = 255
        _png(root / "lesions" / f"{stem}.png", lesion)
    return root


def _all_entries(document: dict) -> dict[str, tuple[str, dict]]:
    return {Path(entry["image"]).stem: (key, entry) for key in SPLIT_KEYS for entry in document[key]}


def test_folder_pairs_identically_named_masks_in_their_own_dir(tmp_path, capsys):
    root = _lesion_folder(tmp_path / "data", {"a": False, "b": False, "c": False})
    (root / "lungs" / "a.png").rename(root / "lungs" / "a-mask.png")  # the suffixed name, tried first
    out = tmp_path / "list.json"
    assert _cli(["folder", "--image-dir", str(root / "images"), "--mask-dir", str(root / "lungs"), "--out", str(out),
                 "--val-fraction", "0", "--test-fraction", "0"]) == 0  # default --mask-suffix -mask
    document = validate_datalist(out)
    assert [(entry["image"], entry["lung_mask"]) for entry in document["training"]] == [
        ("images/a.png", "lungs/a-mask.png"), ("images/b.png", "lungs/b.png"), ("images/c.png", "lungs/c.png")]
    printed = capsys.readouterr().out
    assert "3 of 3 images have a lung mask (<image>-mask.* or <image>.* in 'lungs'; 3 paired by name)" in printed
    assert "rejected: 0" in printed
    # a stray mask in the mask dir is rejected, named with its reason
    _png(root / "lungs" / "zz.png", np.zeros((48, 64)))
    summary = build_folder_datalist(root / "images", out, mask_dir=root / "lungs")
    assert [(Path(r.path).name, r.reason) for r in summary.rejected] == [
        ("zz.png", "mask without image: no image named zz.*")]


def test_folder_mask_dir_that_pairs_none_fails_naming_it(tmp_path, capsys):
    root = _lesion_folder(tmp_path / "data", {"a": False, "b": False})
    for mask in (root / "lungs").iterdir():
        mask.rename(mask.with_name(f"lung_{mask.name}"))
    with pytest.raises(ValueError, match=r"lungs: no lung mask pairs with any of the 2 images under .*images: looked "
                                         r"for <image>-mask\.\* or <image>\.\* \(found: lung_a\.png, lung_b\.png\)"):
        build_folder_datalist(root / "images", tmp_path / "x.json", mask_dir=root / "lungs")
    assert _cli(["folder", "--image-dir", str(root / "images"), "--lesion-mask-dir", str(root / "lungs"),
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "lungs: no lesion mask pairs with any of the 2 images" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    # without --mask-dir, masks stay optional: no error, and the summary says none paired
    summary = build_folder_datalist(root / "images", tmp_path / "x.json", val_fraction=0, test_fraction=0)
    assert "0 of 2 images have a lung mask" in summary.notes
    with pytest.raises(ValueError, match="lesion masks need a directory of their own"):
        build_folder_datalist(root / "images", tmp_path / "x.json", lesion_mask_dir=root / "images")


def test_folder_lesion_images_go_to_test_unhealthy_by_default(tmp_path):
    root = _lesion_folder(tmp_path / "data", {"a": True, "b": False, "c": False, "d": False, "e": False})
    (root / "boxes.csv").write_text("image,label,x,y,w,h\nc.png,Nodule,10,20,5,6\n")
    out = tmp_path / "list.json"
    summary = build_folder_datalist(root / "images", out, mask_dir=root / "lungs", lesion_mask_dir=root / "lesions",
                                    boxes_csv=root / "boxes.csv", val_fraction=0.25, test_fraction=0.25)
    document = validate_datalist(out)
    assert document["test_unhealthy"] == [
        {"image": "images/a.png", "lung_mask": "lungs/a.png", "lesion_mask": "lesions/a.png", "label": 1},
        {"image": "images/c.png", "lung_mask": "lungs/c.png", "lesion_mask": "lesions/c.png", "label": 1,
         "boxes": [[10.0, 20.0, 15.0, 26.0]], "box_labels": ["Nodule"]}]
    healthy = [entry for key in ("training", "validation", "test") for entry in document[key]]
    assert sorted(entry["image"] for entry in healthy) == ["images/b.png", "images/d.png", "images/e.png"]
    assert all("lesion_mask" in entry and "boxes" not in entry and "label" not in entry for entry in healthy)
    assert "5 of 5 images have a lesion mask (<image>-mask.* or <image>.* in 'lesions'; 5 paired by name), 1 of " \
           "them with lesion pixels" in summary.notes
    assert any(note.startswith("2 images with lesions (mask pixels or boxes) in test_unhealthy; "
                               "--keep-lesion-images keeps them") for note in summary.notes)
    assert summary.boxes == 1 and "boxes in test_unhealthy: 1" in summary.format()


def test_folder_keep_lesion_images_keeps_them_in_the_split(tmp_path):
    lesions = {f"i{n:02d}": n % 2 == 0 for n in range(12)}  # 6 with lesion pixels, 6 healthy
    root = _lesion_folder(tmp_path / "data", lesions)
    (root / "labels.csv").write_text("image,label\n" + "".join(f"{stem}.png,0\n" for stem in lesions)
                                     + "x.png,1\n")  # x: labelled abnormal, no lesion mark
    _png(root / "images" / "x.png", _radiograph())
    out = tmp_path / "keep.json"
    summary = build_folder_datalist(root / "images", out, mask_dir=root / "lungs", lesion_mask_dir=root / "lesions",
                                    labels_csv=root / "labels.csv", keep_lesion_images=True, val_fraction=0.2,
                                    test_fraction=0.3, seed=1)
    document = validate_datalist(out)
    placed = _all_entries(document)
    assert set(placed) == set(lesions) | {"x"}
    assert placed["x"] == ("test_unhealthy", {"image": "images/x.png", "label": 1})  # nothing to exclude: held out
    for stem, has_lesion in lesions.items():
        key, entry = placed[stem]
        assert entry["lesion_mask"] == f"lesions/{stem}.png" and entry["lung_mask"] == f"lungs/{stem}.png"
        assert entry["label"] == int(has_lesion)  # labelled 0 in the CSV, but the mask shows a lesion
        if key in ("test", "test_unhealthy"):
            assert key == ("test_unhealthy" if has_lesion else "test")
    kept = Counter(key for stem, (key, _) in placed.items() if lesions.get(stem))
    assert kept["training"] >= 1 and kept["test_unhealthy"] >= 1 and kept["test"] == 0
    assert sum(kept.values()) == 6 and len(document["test"]) >= 1
    # test: ceil(0.3 * 12) images, validation ceil(0.2 * 12)
    assert (len(document["test"]) + kept["test_unhealthy"], len(document["validation"])) == (4, 3)
    assert any(note.startswith("6 images with lesions kept in the split with their lesion_mask/boxes (training ")
               for note in summary.notes)
    assert "1 images labelled 1 without lesion pixels or boxes in test_unhealthy (nothing marks where their " \
           "lesions are)" in summary.notes
    assert "6 images labelled 0 in labels.csv have lesions (mask pixels or boxes): written with label 1" \
        in summary.notes

    # the same folder without the flag: every lesion image held out
    build_folder_datalist(root / "images", out, mask_dir=root / "lungs", lesion_mask_dir=root / "lesions",
                          labels_csv=root / "labels.csv", val_fraction=0.2, test_fraction=0.3, seed=1)
    assert sorted(Path(image).stem for image in _images(json.loads(out.read_text()), "test_unhealthy")) == \
        sorted([stem for stem, has_lesion in lesions.items() if has_lesion] + ["x"])


def test_folder_boxes_are_converted_and_checked_against_the_stored_image(tmp_path, caplog):
    root = _lesion_folder(tmp_path / "data", {"a": False, "b": False, "c": False, "d": False})  # 64 x 48 px
    boxes = root / "boxes.csv"
    boxes.write_text("image,label,x,y,w,h\n"
                     "a.png,Nodule,10,20,5,6\n"
                     "a.png,Mass,0.5,1.25,63.5,46.75\n"  # a second box of the image, reaching 64 x 48
                     "b.png,Mass,40,30,25,19\n"  # reaches 65 x 49: within a pixel, kept
                     "c.png,Mass,40,30,30,10\n"  # reaches x = 70 > 64 + 1: boxes for another size
                     "gone.png,Mass,1,1,2,2\n")
    out = tmp_path / "boxes.json"
    with caplog.at_level(logging.WARNING, logger="cxr_monai.data.datalist"):
        summary = build_folder_datalist(root / "images", out, boxes_csv=boxes, val_fraction=0, test_fraction=0)
    document = validate_datalist(out)
    unhealthy = {entry["image"]: entry for entry in document["test_unhealthy"]}
    assert unhealthy == {
        "a.png": {"image": "a.png", "label": 1, "boxes": [[10.0, 20.0, 15.0, 26.0], [0.5, 1.25, 64.0, 48.0]],
                  "box_labels": ["Nodule", "Mass"]},
        "b.png": {"image": "b.png", "label": 1, "boxes": [[40.0, 30.0, 65.0, 49.0]], "box_labels": ["Mass"]}}
    assert _images(document, "training") == ["d.png"]
    reasons = {Path(rejected.path).name: rejected.reason for rejected in summary.rejected}
    assert reasons == {
        "c.png": "box [40.0, 30.0, 70.0, 40.0] lies outside the 64x48 px image; are the boxes of boxes.csv (line 5) "
                 "in pixels of another size of the image?",
        "gone.png": f"no such image: line 6 of boxes.csv names a file not found under {root / 'images'}"}
    assert "c.png: box [40.0, 30.0, 70.0, 40.0] lies outside" in caplog.text
    assert "3 boxes from boxes.csv on 2 images" in summary.notes

    boxes.write_text("image,label,x,y,w,h\na.png,Nodule,10,20,five,6\n")
    with pytest.raises(ValueError, match=r"boxes\.csv: line 2: box x, y, w, h must be 4 numbers"):
        build_folder_datalist(root / "images", out, boxes_csv=boxes)
    boxes.write_text("image,label,x,y,w,h\na.png,Nodule,10,20,0,6\n")
    with pytest.raises(ValueError, match=r"boxes\.csv: line 2: box needs x, y >= 0 and w, h > 0"):
        build_folder_datalist(root / "images", out, boxes_csv=boxes)
    boxes.write_text("image,finding,x,y,w,h\na.png,Nodule,10,20,5,6\n")
    with pytest.raises(ValueError, match=r"boxes\.csv: no 'label' column"):
        build_folder_datalist(root / "images", out, boxes_csv=boxes)


def test_folder_rejects_lesion_masks_of_another_size_or_truncated(tmp_path):
    root = _lesion_folder(tmp_path / "data", {"a": True, "b": False, "c": True})
    _png(root / "lesions" / "b.png", np.zeros((24, 32)))
    (root / "lesions" / "c.png").write_bytes((root / "lesions" / "c.png").read_bytes()[:60])
    summary = build_folder_datalist(root / "images", tmp_path / "x.json", lesion_mask_dir=root / "lesions",
                                    val_fraction=0, test_fraction=0)
    assert [(Path(r.path).parent.name, Path(r.path).name, r.reason.split(":")[0]) for r in summary.rejected] == [
        ("images", "b.png", "lesion mask b.png is 32x24 px, the image 64x48 px"),
        ("lesions", "c.png", "truncated PNG"), ("images", "c.png", "lesion mask rejected")]
    assert _images(json.loads((tmp_path / "x.json").read_text()), "test_unhealthy") == ["images/a.png"]


@pytest.mark.parametrize(("header", "rows", "label_column", "expected_column", "expected"), [
    ("image,label,findings", ["a.png,0,", "b.png,1,Nodule|Mass"], None, "label",
     {"a": (0, None), "b": (1, ["Nodule", "Mass"])}),
    ("image,patient_age,has_lesion", ["a.png,40,0", "b.png,50,1"], None, "has_lesion",
     {"a": (0, None), "b": (1, None)}),
    ("image,finding,view", ["a.png,No Finding,PA", "b.png,\"COVID-19, ARDS\",AP", "c.png,,PA"], None, "finding",
     {"a": (0, None), "b": (1, ["COVID-19", "ARDS"]), "c": (0, None)}),
    ("image,finding,has_lesion", ["a.png,COVID-19,0", "b.png,SARS,1"], None, "has_lesion",
     {"a": (0, ["COVID-19"]), "b": (1, ["SARS"])}),  # has_lesion before finding; finding kept as findings
    ("image,label,abnormal", ["a.png,1,0", "b.png,0,1"], "abnormal", "abnormal", {"a": (0, None), "b": (1, None)}),
    ("image,Finding Labels", ["a.png,No Finding", "b.png,Effusion|Mass"], "Finding Labels", "Finding Labels",
     {"a": (0, None), "b": (1, ["Effusion", "Mass"])}),
])
def test_folder_label_column_detection(tmp_path, header, rows, label_column, expected_column, expected):
    root = _lesion_folder(tmp_path / "data", dict.fromkeys(expected, False))
    (root / "labels.csv").write_text("\n".join([header, *rows]) + "\n")
    out = tmp_path / "labels.json"
    build_folder_datalist(root / "images", out, labels_csv=root / "labels.csv", label_column=label_column,
                          val_fraction=0, test_fraction=0)
    document = validate_datalist(out)
    placed = _all_entries(document)
    for stem, (label, findings) in expected.items():
        key, entry = placed[stem]
        assert (entry["label"], entry.get("findings")) == (label, findings), stem
        assert key == ("test_unhealthy" if label else "training")
    assert f"labels from column '{expected_column}'" in document["description"]
    if "view" in header:
        assert placed["b"][1]["view"] == "AP"


def test_folder_label_column_errors(tmp_path):
    root = _lesion_folder(tmp_path / "data", {"a": False})
    labels = root / "labels.csv"
    labels.write_text("image,score\na.png,0.3\n")
    with pytest.raises(ValueError, match=r"labels\.csv: no label column: expected one of label, has_lesion, finding "
                                         r"\(header: image, score\); name another one with --label-column"):
        build_folder_datalist(root / "images", tmp_path / "x.json", labels_csv=labels)
    with pytest.raises(ValueError, match=r"labels\.csv: no 'abnormal' column \(header: image, score\)"):
        build_folder_datalist(root / "images", tmp_path / "x.json", labels_csv=labels, label_column="abnormal")
    labels.write_text("image,has_lesion\na.png,maybe\n")
    with pytest.raises(ValueError, match=r"labels\.csv: line 2: has_lesion must be 0 \(healthy\) or 1 \(abnormal\), "
                                         r"got 'maybe'"):
        build_folder_datalist(root / "images", tmp_path / "x.json", labels_csv=labels)
    with pytest.raises(ValueError, match="needs a labels CSV"):
        build_folder_datalist(root / "images", tmp_path / "x.json", patient_column="patient")


def test_folder_patient_split_keeps_a_patients_images_together(tmp_path, capsys):
    patients = {f"PAT{p:03d}": 1 + p % 3 for p in range(14)}  # 28 images of 14 patients
    stems = {f"img{number:02d}": patient for number, patient in enumerate(
        patient for patient, count in patients.items() for _ in range(count))}
    root = _lesion_folder(tmp_path / "data", dict.fromkeys(stems, False))
    (root / "labels.csv").write_text("image,patient,label\n" + "".join(
        f"{stem}.png,{patient},0\n" for stem, patient in stems.items()))
    out = tmp_path / "patients.json"
    assert _cli(["folder", "--image-dir", str(root / "images"), "--mask-dir", str(root / "lungs"),
                 "--labels", str(root / "labels.csv"), "--out", str(out), "--val-fraction", "0.2",
                 "--test-fraction", "0.25", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    document = validate_datalist(out)
    placed = _all_entries(document)
    split_of_patient: dict[str, set[str]] = {}
    for stem, (key, _) in placed.items():
        split_of_patient.setdefault(stems[stem], set()).add(key)
    assert set(split_of_patient) == set(patients) and all(len(keys) == 1 for keys in split_of_patient.values())
    counted = Counter(next(iter(keys)) for keys in split_of_patient.values())
    for key in ("training", "validation", "test"):
        line = next(line for line in printed.splitlines() if line.startswith(key))
        assert line.split()[1:3] == [str(len(document[key])), str(counted[key])], line
    assert len(document["test"]) >= 7 and len(document["validation"]) >= 6  # ceil(.25 * 28), ceil(.2 * 28)
    assert "PAT0" not in out.read_text()  # no patient ID in the datalist
    assert "split by patient (column 'patient' of labels.csv, not written): 14 patients, each in one split" in printed

    # a patient column with another name, named by a flag; per image when the CSV has none
    (root / "labels.csv").write_text("image,subject,label\n" + "".join(
        f"{stem}.png,{patient},0\n" for stem, patient in stems.items()))
    summary = build_folder_datalist(root / "images", out, labels_csv=root / "labels.csv", patient_column="subject",
                                    val_fraction=0.2, test_fraction=0.25, seed=3)
    assert {key: counts.patients for key, counts in summary.splits.items()} == {**counted, "test_unhealthy": 0}
    summary = build_folder_datalist(root / "images", out, labels_csv=root / "labels.csv", val_fraction=0.2,
                                    test_fraction=0.25, seed=3)
    assert all(counts.patients is None for counts in summary.splits.values())
    assert "split per image" in json.loads(out.read_text())["description"]


def test_folder_patient_split_holds_out_the_patients_of_unhealthy_images(tmp_path):
    stems = {"p1_a": ("P1", True), "p1_b": ("P1", False), "p2_a": ("P2", False), "p3_a": ("P3", False),
             "p4_a": ("P4", False), "p5_a": ("P5", False)}
    root = _lesion_folder(tmp_path / "data", {stem: lesion for stem, (_, lesion) in stems.items()})
    (root / "labels.csv").write_text("image,patient,finding\n" + "".join(
        f"{stem}.png,{patient},No Finding\n" for stem, (patient, _) in stems.items()))
    out = tmp_path / "held.json"
    summary = build_folder_datalist(root / "images", out, lesion_mask_dir=root / "lesions",
                                    labels_csv=root / "labels.csv", val_fraction=0, test_fraction=0)
    document = validate_datalist(out)
    assert _images(document, "test_unhealthy") == ["images/p1_a.png"]
    assert _images(document, "test") == ["images/p1_b.png"]
    assert "test holds the 1 healthy images of the patients with images in test_unhealthy" in summary.notes


REAL_LESIONS = SHARED_DATA / "real-lesions"


def test_folder_builder_on_real_lesions(tmp_path, capsys):
    """The real-lesions set (80 radiographs, 59 patients, 76 with lesions): trained on some patients' images with
    their lesions marked, tested on others'."""
    if not (REAL_LESIONS / "labels.csv").is_file():
        pytest.skip(f"{REAL_LESIONS} not found (../shared/data is not part of a user checkout)")
    out = tmp_path / "real_lesions.json"
    assert _cli(["folder", "--image-dir", str(REAL_LESIONS / "images"),
                 "--mask-dir", str(REAL_LESIONS / "lung_masks"),
                 "--lesion-mask-dir", str(REAL_LESIONS / "lesion_masks"),
                 "--boxes", str(REAL_LESIONS / "boxes.csv"), "--labels", str(REAL_LESIONS / "labels.csv"),
                 "--keep-lesion-images", "--val-fraction", "0.1", "--test-fraction", "0.25",
                 "--base-dir", str(REAL_LESIONS), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    document = validate_datalist(out)
    with open(REAL_LESIONS / "labels.csv", newline="") as stream:
        rows = {row["image"]: row for row in csv.DictReader(stream)}
    with open(REAL_LESIONS / "boxes.csv", newline="") as stream:
        n_boxes = sum(1 for _ in csv.DictReader(stream))
    entries = {Path(entry["image"]).name: (key, entry) for key in SPLIT_KEYS for entry in document[key]}
    assert set(entries) == set(rows) and len(entries) == 80
    assert "rejected: 0" in printed
    assert "80 of 80 images have a lung mask" in printed and "80 of 80 images have a lesion mask" in printed
    assert "76 of them with lesion pixels" in printed and f"{n_boxes} boxes from boxes.csv on 76 images" in printed
    assert "59 patients, each in one split" in printed
    split_of_patient: dict[str, set[str]] = {}
    for image, (key, entry) in entries.items():
        split_of_patient.setdefault(rows[image]["patient"], set()).add("test" if key == "test_unhealthy" else key)
        assert entry["label"] == int(rows[image]["has_lesion"])
        assert entry["lung_mask"] == f"lung_masks/{image}" and entry["lesion_mask"] == f"lesion_masks/{image}"
        assert ("boxes" in entry) == (rows[image]["has_lesion"] == "1")
        assert key != "test" or entry["label"] == 0
    assert all(len(keys) == 1 for keys in split_of_patient.values())  # a patient in one split
    counts = Counter(key for key, _ in entries.values())
    assert counts["training"] >= 40 and counts["validation"] >= 8 and counts["test"] + counts["test_unhealthy"] >= 20
    assert sum(entry["label"] for entry in document["training"]) >= 30  # lesion images kept, to train around
    assert "patient" not in json.dumps([document[key] for key in SPLIT_KEYS])
    files = load_datalist(out, "training", base_dir=REAL_LESIONS)
    assert all(Path(entry["image"]).is_file() and Path(entry["lesion_mask"]).is_file() for entry in files)


# ----------------------------------------------------------------------------------------------------------
# schema and loader


@needs_nih
def test_schema_accepts_built_lists(nih_subset, tmp_path):
    jsonschema.Draft202012Validator.check_schema(datalist_schema())
    out = tmp_path / "subset.json"
    summary = build_nih_datalist(*nih_subset, "/data/nih/images", out, check_images=False)
    document = validate_datalist(out)
    assert all(document[key] for key in SPLIT_KEYS)
    assert [len(document[key]) for key in SPLIT_KEYS] == [summary.splits[key].images for key in SPLIT_KEYS]


GOOD = {"image": "a.png", "label": 1, "findings": ["Mass"], "boxes": [[1, 2, 3, 4]], "box_labels": ["Mass"]}


@pytest.mark.parametrize(("bad_entry", "expected"), [
    ({"label": 0}, r"training\[1\]: 'image' is a required property"),
    ({**GOOD, "boxes": [[1, 2, 3]]}, r"training\[1\]\.boxes\[0\]: \[1, 2, 3\] is too short"),
    ({**GOOD, "boxes": [[5, 2, 3, 4]]}, r"training\[1\]\.boxes\[0\]: box \[5, 2, 3, 4\] needs x_min < x_max"),
    ({**GOOD, "boxes": [[1, 2, 3, 2]]}, r"training\[1\]\.boxes\[0\]: box .* y_min < y_max"),
    ({**GOOD, "box_labels": ["Mass", "Nodule"]}, r"training\[1\]\.box_labels: 2 labels for 1 boxes"),
    ({"image": "a.png", "boxes": [[1, 2, 3, 4]]}, r"training\[1\]: 'box_labels' is a dependency of 'boxes'"),
    ({"image": "a.png", "label": 2}, r"training\[1\]\.label: 2 is not one of \[0, 1\]"),
    ({"image": "a.png", "patient_id": "123"}, r"training\[1\]: Additional properties .*'patient_id' was unexpected"),
    ({"image": "a.png", "lung_boxes": [[0, 0, -1, 5]]}, r"training\[1\]\.lung_boxes\[0\]\[2\]: -1 is less than"),
    ({"image": ""}, r"training\[1\]\.image: '' should be non-empty"),
])
def test_schema_rejects_malformed_entries(tmp_path, bad_entry, expected):
    path = _write_datalist(tmp_path / "bad.json", [GOOD, bad_entry])
    with pytest.raises(DatalistError, match=expected) as error:
        load_datalist(path, "training")
    assert str(error.value).startswith(f"{path}: ")


def test_validate_reports_file_level_problems(tmp_path, capsys):
    broken = tmp_path / "broken.json"
    broken.write_text('{"training": [')
    with pytest.raises(DatalistError, match=r"broken\.json: not valid JSON"):
        validate_datalist(broken)
    empty = tmp_path / "empty.json"
    empty.write_text('{"name": "x"}')
    with pytest.raises(DatalistError, match=r"empty\.json: \(top level\): no datalist key"):
        validate_datalist(empty)
    many = _write_datalist(tmp_path / "many.json", [{"label": 0}] * 30)
    with pytest.raises(DatalistError, match=r"and 10 more problems"):
        validate_datalist(many)
    good = _write_datalist(tmp_path / "good.json", [GOOD])
    assert _cli(["validate", str(good), str(broken)]) == 1
    captured = capsys.readouterr()
    assert "good.json: valid (training 1)" in captured.out and "broken.json: not valid JSON" in captured.err


def test_load_datalist_joins_paths_only(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "PA").touch()  # MONAI alone would turn the view "PA" into this path
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": [{"image": "i/a.png", "lung_mask": "m/a.png", "view": "PA", **{
        key: GOOD[key] for key in ("label", "findings", "boxes", "box_labels")}}], "test": []}))
    files = load_datalist(path, "training", base_dir=tmp_path / "data")
    data = tmp_path / "data"
    assert files == [{"image": str(data / "i" / "a.png"), "lung_mask": str(data / "m" / "a.png"), "view": "PA",
                      "label": 1, "findings": ["Mass"], "boxes": [[1, 2, 3, 4]], "box_labels": ["Mass"]}]
    assert load_datalist(path, "training")[0]["image"] == str(tmp_path / "i" / "a.png")
    assert load_datalist(path, "test") == []
    with pytest.raises(DatalistError, match=r"list\.json: no 'validation' list \(has: training, test\)"):
        load_datalist(path, "validation")
    with pytest.raises(ValueError, match="key must be one of training, validation, test, test_unhealthy"):
        load_datalist(path, "name")


@needs_nih
def test_monai_reads_built_list(full_build, tmp_path):
    out = tmp_path / "full.json"
    out.write_text(json.dumps(full_build[1]))
    for key in SPLIT_KEYS:
        files = load_decathlon_datalist(out, is_segmentation=False, data_list_key=key, base_dir="/data/nih/images")
        assert len(files) == full_build[0].splits[key].images
        assert all(entry["image"].startswith("/data/nih/images/") for entry in files)
        assert files[0]["label"] == (1 if key == "test_unhealthy" else 0)


# ----------------------------------------------------------------------------------------------------------
# command line


@needs_nih
def test_cli_nih_prints_counts(nih_subset, tmp_path, capsys):
    out = tmp_path / "cli.json"
    entry_csv, bbox_csv = (str(path) for path in nih_subset)
    code = _cli(["nih", "--data-entry", entry_csv, "--bbox-list", bbox_csv, "--image-dir",
                 str(tmp_path / "images"), "--out", str(out), "--view", "PA", "--allow-missing-images"])
    printed = capsys.readouterr().out
    document = json.loads(out.read_text())
    assert code == 0
    for key in SPLIT_KEYS:
        assert any(line.split()[:2] == [key, str(len(document[key]))] for line in printed.splitlines()), printed
    n_boxes = sum(len(entry["boxes"]) for entry in document["test_unhealthy"])
    assert n_boxes >= 4 and f"boxes in test_unhealthy: {n_boxes}" in printed and "rejected: 0" in printed

    code = _cli(["nih", "--data-entry", entry_csv, "--bbox-list", bbox_csv, "--image-dir",
                 str(tmp_path / "images"), "--out", str(out)])
    assert code == 2 and "does not exist" in capsys.readouterr().err


@needs_montgomery
def test_cli_folder_prints_counts(tmp_path, capsys):
    out = tmp_path / "folder.json"
    assert _cli(["folder", "--image-dir", str(MONTGOMERY), "--mask-suffix=-mask", "--out", str(out),
                 "--val-fraction", "0.25", "--test-fraction", "0"]) == 0
    printed = capsys.readouterr().out
    assert "training               3" in printed and "validation             1" in printed
    assert "4 of 4 images have a lung mask" in printed


def test_load_datalist_min_entries_names_file_and_split(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": [{"image": "a.png"}], "validation": []}))
    assert load_datalist(path, "validation") == []
    with pytest.raises(DatalistError, match=r"list\.json: the 'validation' list has 0 entries; this run needs at least 1"):
        load_datalist(path, "validation", min_entries=1)
    assert len(load_datalist(path, "training", min_entries=1)) == 1


def test_load_datalist_joins_several_lists_and_leaves_out_entries_without_a_required_key(tmp_path, caplog):
    document = {"test": [{"image": "a.png", "lung_mask": "a_mask.png"}, {"image": "b.png"}],
                "test_unhealthy": [{"image": "c.png", "lung_mask": "c_mask.png", "label": 1}]}
    path = tmp_path / "list.json"
    path.write_text(json.dumps(document))
    entries = load_datalist(path, ["test", "validation", "test_unhealthy"], required_keys=["lung_mask"])
    assert [Path(e["image"]).name for e in entries] == ["a.png", "c.png"]
    assert entries[1]["label"] == 1 and Path(entries[0]["lung_mask"]).parent == tmp_path
    assert "1 of the 'test' entries lack lung_mask" in caplog.text
    assert len(load_datalist(path, ["test", "test_unhealthy"])) == 3
    with pytest.raises(DatalistError, match="none of the lists validation, training"):
        load_datalist(path, ["validation", "training"])
    with pytest.raises(DatalistError, match="needs at least 5"):
        load_datalist(path, ["test", "test_unhealthy"], min_entries=5)


def test_schema_carries_multi_hot_labels_paired_targets_and_lateral_views(tmp_path):
    document = {"label_names": ["Atelectasis", "Cardiomegaly", "Edema"],
                "training": [{"image": "f.png", "lateral": "l.png", "study": "s1", "labels": [1, -1, None],
                              "target": "bone.png", "bone_suppressed": "soft.png"}]}
    path = tmp_path / "list.json"
    path.write_text(json.dumps(document))
    entry = load_datalist(path, "training")[0]
    assert entry["labels"] == [1, -1, None] and Path(entry["lateral"]).parent == tmp_path
    assert Path(entry["target"]).parent == tmp_path and Path(entry["bone_suppressed"]).parent == tmp_path
    document["training"][0]["labels"] = [1, 0]
    path.write_text(json.dumps(document))
    with pytest.raises(DatalistError, match=r"training\[0\]\.labels: 2 values for 3 label_names"):
        load_datalist(path, "training")
    document["training"][0]["labels"] = [1, 2, 0]
    path.write_text(json.dumps(document))
    with pytest.raises(DatalistError, match="labels"):
        load_datalist(path, "training")


def test_validation_is_cached_per_unchanged_file_and_redone_when_it_changes(tmp_path, monkeypatch):
    import os

    from cxr_monai.data import datalist as module

    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": [{"image": "a.png"}]}))
    calls = []
    real = module._document_problems
    monkeypatch.setattr(module, "_document_problems", lambda document: calls.append(1) or real(document))
    first = module.validate_datalist(path)
    first["training"].append({"image": "changed by the caller"})
    assert module.validate_datalist(path) == {"training": [{"image": "a.png"}]} and len(calls) == 1
    path.write_text(json.dumps({"training": [{"image": "b.png"}]}))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    assert module.validate_datalist(path)["training"] == [{"image": "b.png"}] and len(calls) == 2
