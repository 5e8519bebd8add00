"""Pneumothorax phantoms (``generate_phantoms(pneumothorax=True)``, ``phantom --pneumothorax``): a balanced set with one
pneumothorax per abnormal image, a lesion mask for every image and SIIM's ``train-rle.csv``."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_monai.cli import main as cli_main
from cxr_monai.data import generate_phantoms, validate_datalist
from cxr_monai.io import read_rle_csv, rle_decode

SPLITS = ("training", "validation", "test", "test_unhealthy")


def _entries(root: Path) -> list[tuple[str, dict]]:
    document = json.loads((root / "datalist.json").read_text())
    return [(key, entry) for key in SPLITS for entry in document[key]]


def _mask(root: Path, entry: dict) -> np.ndarray:
    return np.asarray(Image.open(root / entry["lesion_mask"])) > 0


def test_fixture_is_balanced_with_a_mask_for_every_image(pneumothorax_phantoms):
    root = pneumothorax_phantoms
    validate_datalist(root / "datalist.json")
    entries = _entries(root)
    assert len(entries) == 24 and sum(entry["label"] for _, entry in entries) == 12
    labels_by_split = defaultdict(set)
    for key, entry in entries:
        labels_by_split["test" if key == "test_unhealthy" else key].add(entry["label"])
        mask = _mask(root, entry)
        lungs = np.asarray(Image.open(root / entry["lung_mask"])) > 0
        assert mask.shape == (256, 256)
        if entry["label"]:
            assert entry["findings"] == ["Pneumothorax"] and entry["box_labels"] == ["Pneumothorax"]
            assert mask.any() and not (mask & ~lungs).any(), entry["image"]  # in the lung, at its edge
            ys, xs = np.nonzero(mask)
            assert entry["boxes"] == [[int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]]
            assert key != "test"
        else:
            assert not mask.any() and "findings" not in entry and "boxes" not in entry
            assert key != "test_unhealthy"
    assert all(labels == {0, 1} for labels in labels_by_split.values()), labels_by_split


def test_rle_csv_holds_the_same_masks(pneumothorax_phantoms):
    root = pneumothorax_phantoms
    assert (root / "train-rle.csv").read_text().startswith("ImageId, EncodedPixels\n")
    codes = read_rle_csv(root / "train-rle.csv")
    entries = _entries(root)
    assert len(codes) == len(entries)
    for _, entry in entries:
        texts = codes[Path(entry["image"]).stem]
        assert len(texts) == 1 and (texts == ["-1"]) == (entry["label"] == 0)
        assert np.array_equal(rle_decode(texts[0], (256, 256)), _mask(root, entry))


def test_split_by_patient(pneumothorax_phantoms):
    root = pneumothorax_phantoms
    with open(root / "Data_Entry_2017.csv", newline="") as stream:
        rows = list(csv.reader(stream))[1:]
    patient_of = {row[0]: row[3] for row in rows}
    splits_of_patient = defaultdict(set)
    for key, entry in _entries(root):
        splits_of_patient[patient_of[Path(entry["image"]).name]].add("test" if key == "test_unhealthy" else key)
    assert all(len(splits) == 1 for splits in splits_of_patient.values())


def test_option_off_keeps_the_default_set(tmp_path):
    kwargs = {"num_images": 6, "size": 64, "seed": 2, "dicom_fraction": 0.5}
    generate_phantoms(tmp_path / "default", **kwargs)
    generate_phantoms(tmp_path / "explicit", abnormal_fraction=0.3, pneumothorax=False, **kwargs)
    files = sorted(path.relative_to(tmp_path / "default") for path in (tmp_path / "default").rglob("*")
                   if path.is_file())
    assert not any(path.name == "train-rle.csv" for path in files)
    for path in files:
        assert (tmp_path / "default" / path).read_bytes() == (tmp_path / "explicit" / path).read_bytes(), path
    # with no abnormal image the pneumothorax option draws the same radiographs
    generate_phantoms(tmp_path / "healthy", abnormal_fraction=0.0, **kwargs)
    generate_phantoms(tmp_path / "healthy_ptx", abnormal_fraction=0.0, pneumothorax=True, **kwargs)
    for path in sorted((tmp_path / "healthy" / "images").iterdir()):
        assert path.read_bytes() == (tmp_path / "healthy_ptx" / "images" / path.name).read_bytes()


def test_abnormal_fraction_and_dicom_images(tmp_path):
    summary = generate_phantoms(tmp_path, num_images=8, size=96, seed=4, abnormal_fraction=0.25, dicom_fraction=1.0,
                                pneumothorax=True)
    assert summary.num_abnormal == 2 and summary.finding_counts == {"Pneumothorax": 2} and summary.pneumothorax
    assert "train-rle.csv" in summary.format()
    entries = _entries(tmp_path)
    assert all(entry["image"].endswith(".dcm") and "lesion_mask" in entry for _, entry in entries)


def test_pneumothorax_and_classification_do_not_mix(tmp_path):
    with pytest.raises(ValueError, match="pneumothorax and classification"):
        generate_phantoms(tmp_path, num_images=2, size=64, pneumothorax=True, classification=True)


def test_command_line(tmp_path, capsys):
    assert cli_main(["phantom", "--out", str(tmp_path), "--num-images", "6", "--size", "64", "--pneumothorax"]) == 0
    assert "3 abnormal (Pneumothorax 3)" in capsys.readouterr().out
    assert all("lesion_mask" in entry for _, entry in _entries(tmp_path))
    assert (tmp_path / "train-rle.csv").is_file()
