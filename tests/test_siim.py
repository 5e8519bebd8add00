"""SIIM-ACR pneumothorax datalist (``datalist siim``): DICOMs found by ImageId, merged RLE masks written per image,
rejections with reasons, the split by patient and the balanced draw."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from cxr_monai.cli import main as cli_main
from cxr_monai.data import generate_phantoms, validate_datalist
from cxr_monai.data.builders.siim import build_siim_datalist
from cxr_monai.io import merge_rle, read_rle_csv, rle_encode

SPLITS = ("training", "validation", "test", "test_unhealthy")
SIZE = 64  # synthetic DICOMs, built with rle_size=SIZE unless a test checks the 1024 default


def write_dicom(path: Path, size: int = SIZE, patient: str | None = "P1", view: str | None = "PA") -> Path:
    """A small 8-bit MONOCHROME2 DICOM as SIIM's (Secondary Capture, CR), optionally without PatientID/ViewPosition."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "CR", size, size, 1
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MONOCHROME2", 8, 8, 7
    ds.PixelRepresentation = 0
    if patient is not None:
        ds.PatientID = patient
    if view is not None:
        ds.ViewPosition = view
    ds.PixelData = np.full((size, size), 100, np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def nested(dicom_dir: Path, image_id: str) -> Path:
    """SIIM's layout: ``<study>/<series>/<ImageId>.dcm``."""
    return dicom_dir / f"study.{image_id}" / f"series.{image_id}" / f"{image_id}.dcm"


def blob(y0: int, y1: int, x0: int, x1: int, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("ImageId, EncodedPixels\n" + "".join(f"{image_id}, {code}\n" for image_id, code in rows))
    return path


def entries_by_image(out: Path) -> dict[str, tuple[str, dict]]:
    document = json.loads(out.read_text())
    return {Path(entry["image"]).stem: (key, entry) for key in SPLITS for entry in document[key]}


@pytest.fixture
def small_set(tmp_path):
    """Six usable images (two positive, one of them with two regions) and one of each problem."""
    dicom_dir = tmp_path / "dicom-images-train"
    regions = {"pos.a": [blob(5, 20, 3, 9)], "pos.b": [blob(40, 50, 50, 60), blob(45, 55, 30, 40)]}
    for image_id, patient in (("pos.a", "P1"), ("pos.b", "P2"), ("neg.a", "P1"), ("neg.b", "P3"), ("neg.c", "P4"),
                              ("neg.d", "P5"), ("no-row", "P6"), ("bad-code", "P7"), ("twice", "P8")):
        write_dicom(nested(dicom_dir, image_id), patient=patient, view="AP" if image_id == "neg.b" else "PA")
    write_dicom(dicom_dir / "flat" / "no-patient.dcm", patient=None, view=None)
    write_dicom(nested(dicom_dir, "big"), size=2 * SIZE, patient="P9")
    write_dicom(dicom_dir / "other" / "twice.dcm", patient="P8")
    (dicom_dir / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00garbage")
    (dicom_dir / "readme.txt").write_text("not a DICOM")
    rows = [("pos.a", rle_encode(regions["pos.a"][0])), ("pos.b", rle_encode(regions["pos.b"][0])),
            ("pos.b", rle_encode(regions["pos.b"][1]))]
    rows += [(image_id, "-1") for image_id in ("neg.a", "neg.b", "neg.c", "neg.d", "no-patient", "big", "broken",
                                               "twice", "no-dicom")]
    rows.append(("bad-code", "3 4 5"))
    csv_path = write_csv(tmp_path / "train-rle.csv", rows)
    return tmp_path, dicom_dir, csv_path, regions


def test_entries_masks_and_rejections(small_set):
    root, dicom_dir, csv_path, regions = small_set
    out, mask_dir = root / "lists" / "siim.json", root / "masks"
    summary = build_siim_datalist(csv_path, dicom_dir, out, mask_dir, rle_size=SIZE, val_fraction=0.2,
                                  test_fraction=0.2)
    validate_datalist(out)
    entries = entries_by_image(out)
    assert sorted(entries) == ["neg.a", "neg.b", "neg.c", "neg.d", "no-patient", "pos.a", "pos.b"]
    for image_id, (key, entry) in entries.items():
        assert entry["image"] == nested(dicom_dir, image_id).relative_to(root).as_posix() or image_id == "no-patient"
        assert entry["lesion_mask"] == f"masks/{image_id}.png"
        mask_file = root / entry["lesion_mask"]
        assert Image.open(mask_file).mode == "L"
        stored = np.asarray(Image.open(mask_file))
        assert stored.shape == (SIZE, SIZE) and set(np.unique(stored)) <= {0, 255}
        positive = image_id.startswith("pos")
        assert entry["label"] == int(positive) and key != ("test" if positive else "test_unhealthy")
        if positive:
            assert entry["findings"] == ["Pneumothorax"]
            assert np.array_equal(stored > 0, np.logical_or.reduce(regions[image_id]))  # regions merged
        else:
            assert "findings" not in entry and not stored.any()  # a blank mask for every negative
    assert entries["neg.b"][1]["view"] == "AP" and entries["pos.a"][1]["view"] == "PA"
    assert "view" not in entries["no-patient"][1]
    assert entries["pos.a"][0] in ("training", "validation", "test_unhealthy")
    # one patient, one split: P1 holds pos.a and neg.a
    assert entries["pos.a"][0].replace("test_unhealthy", "test") == entries["neg.a"][0]

    reasons = {Path(rejected.path).name: rejected.reason for rejected in summary.rejected}
    assert reasons["no-dicom"].startswith("missing: no no-dicom.dcm under")
    assert reasons["no-row.dcm"] == "no RLE row: no-row is not in train-rle.csv"
    assert reasons["broken.dcm"].startswith("unreadable DICOM: ")
    assert reasons["big.dcm"].startswith(f"size mismatch: the image is {2 * SIZE}x{2 * SIZE} px")
    assert reasons["bad-code.dcm"].startswith("RLE decode error: train-rle.csv: bad-code (region 1): odd number")
    assert reasons["twice.dcm"].startswith("ambiguous: 2 DICOMs named twice")
    assert len(summary.rejected) == 7  # twice.dcm counted twice
    text = summary.format()
    assert "rejected: 7" in text and "no RLE row 1" in text and "1 DICOMs have no PatientID" in text
    assert "ignored 1 files" in text


def test_split_by_patient_keeps_the_positive_share(tmp_path):
    dicom_dir = tmp_path / "dicoms"
    rows, patient_of = [], {}
    region = rle_encode(blob(10, 30, 5, 15))
    for number in range(200):
        image_id = f"img{number:03d}"
        patient_of[image_id] = f"P{number // 2}"  # two images a patient
        write_dicom(dicom_dir / f"{image_id}.dcm", patient=patient_of[image_id])
        rows.append((image_id, region if number % 4 == 0 else "-1"))  # a quarter positive
    summary = build_siim_datalist(write_csv(tmp_path / "rle.csv", rows), dicom_dir, tmp_path / "siim.json",
                                  tmp_path / "masks", rle_size=SIZE, seed=3)
    entries = entries_by_image(tmp_path / "siim.json")
    split_of_patient = defaultdict(set)
    for image_id, (key, _) in entries.items():
        split_of_patient[patient_of[image_id]].add(key.replace("test_unhealthy", "test"))
    assert all(len(splits) == 1 for splits in split_of_patient.values())
    counts = Counter(key.replace("test_unhealthy", "test") for key, _ in entries.values())
    assert counts["training"] == 160 and counts["validation"] == 20 and counts["test"] == 20  # 80/10/10
    positives = Counter(key.replace("test_unhealthy", "test") for key, entry in entries.values() if entry["label"])
    assert positives["validation"] == 5 and positives["test"] == 5  # each split a quarter positive
    assert summary.splits["test_unhealthy"].images == 5 and summary.splits["training"].patients == 80


def test_balance_draws_as_many_negatives_with_the_seed(tmp_path):
    dicom_dir = tmp_path / "dicoms"
    rows = []
    for number in range(40):
        image_id = f"img{number:02d}"
        write_dicom(dicom_dir / f"{image_id}.dcm", patient=f"P{number}")
        rows.append((image_id, rle_encode(blob(2, 9, 2, 9)) if number < 8 else "-1"))
    csv_path = write_csv(tmp_path / "rle.csv", rows)

    def drawn(seed: int, name: str) -> set[str]:
        summary = build_siim_datalist(csv_path, dicom_dir, tmp_path / f"{name}.json", tmp_path / "masks",
                                      balance=True, rle_size=SIZE, seed=seed)
        entries = entries_by_image(tmp_path / f"{name}.json")
        assert sum(entry["label"] for _, entry in entries.values()) == 8 and len(entries) == 16
        assert any("8 of the 32 negative images drawn" in note for note in summary.notes)
        assert not summary.rejected
        return {image_id for image_id, (_, entry) in entries.items() if not entry["label"]}

    first = drawn(0, "a")
    assert drawn(0, "b") == first and drawn(1, "c") != first
    assert json.loads((tmp_path / "a.json").read_text())["name"] == "siim-acr-pneumothorax-balanced"


def test_default_rle_size_is_siims_1024(small_set):
    root, dicom_dir, csv_path, _ = small_set
    with pytest.raises(ValueError, match="not written, no usable image"):
        build_siim_datalist(csv_path, dicom_dir, root / "siim.json", root / "masks")
    summary = build_siim_datalist(csv_path, dicom_dir, root / "siim.json", root / "masks", rle_size=2 * SIZE)
    assert [Path(entry["image"]).stem for key in SPLITS for entry in json.loads((root / "siim.json").read_text())[key]
            ] == ["big"]
    # the 64 px images (bad-code too: the size is checked before the code)
    assert sum(rejected.reason.startswith("size mismatch") for rejected in summary.rejected) == 8


def test_mask_dir_inside_the_dicom_dir_is_an_error(small_set):
    root, dicom_dir, csv_path, _ = small_set
    with pytest.raises(ValueError, match="outside the DICOM directory"):
        build_siim_datalist(csv_path, dicom_dir, root / "siim.json", dicom_dir / "masks", rle_size=SIZE)


def test_command_line(small_set, capsys):
    root, dicom_dir, csv_path, _ = small_set
    out = root / "siim.json"
    assert cli_main(["datalist", "siim", "--rle-csv", str(csv_path), "--dicom-dir", str(dicom_dir), "--out", str(out),
                     "--rle-size", str(SIZE), "--balance", "--seed", "2"]) == 0
    printed = capsys.readouterr()
    assert "rejected: 7 (" in printed.out and "no RLE row 1" in printed.out
    assert (root / "siim_pneumothorax_masks" / "pos.a.png").is_file()  # default mask dir, next to --out
    entries = entries_by_image(out)
    assert sum(entry["label"] for _, entry in entries.values()) == 2 and len(entries) == 4
    assert cli_main(["datalist", "siim", "--rle-csv", str(root / "absent.csv"), "--dicom-dir", str(dicom_dir),
                     "--out", str(out)]) == 2


def test_reads_pneumothorax_phantoms(tmp_path):
    """The phantoms' train-rle.csv and DICOMs read back as the generator listed them."""
    phantoms = tmp_path / "phantoms"
    generate_phantoms(phantoms, num_images=10, size=96, seed=1, dicom_fraction=1.0, pneumothorax=True)
    summary = build_siim_datalist(phantoms / "train-rle.csv", phantoms / "images", tmp_path / "siim.json",
                                  tmp_path / "masks", rle_size=96)
    assert not summary.rejected
    listed = entries_by_image(tmp_path / "siim.json")
    generated = json.loads((phantoms / "datalist.json").read_text())
    for entry in (entry for key in SPLITS for entry in generated[key]):
        _, read_back = listed[Path(entry["image"]).stem]
        assert read_back["label"] == entry["label"] and read_back["view"] == "PA"
        assert np.array_equal(np.asarray(Image.open(tmp_path / read_back["lesion_mask"])),
                              np.asarray(Image.open(phantoms / entry["lesion_mask"])))


def test_real_sample_with_the_real_csv(shared_path, tmp_path):
    csv_path = shared_path("metadata", "siim-pneumothorax-train-rle.csv.gz")
    sample_dir = shared_path("real-samples", "siim")
    sample = next(sample_dir.glob("*.dcm"))
    codes = read_rle_csv(csv_path)
    summary = build_siim_datalist(csv_path, sample_dir, tmp_path / "siim.json", tmp_path / "masks")
    entries = entries_by_image(tmp_path / "siim.json")
    key, entry = entries[sample.stem]
    assert len(entries) == 1 and key == "training"  # a single patient goes to training
    assert entry["label"] == int(codes[sample.stem] != ["-1"]) and entry["view"] in ("PA", "AP")
    mask = np.asarray(Image.open(tmp_path / "masks" / f"{sample.stem}.png"))
    assert mask.shape == (1024, 1024)
    assert np.array_equal(mask > 0, merge_rle(codes[sample.stem]))
    assert len(summary.rejected) == len(codes) - 1
    assert all(rejected.reason.startswith("missing: ") for rejected in summary.rejected)
    validate_datalist(tmp_path / "siim.json")
