"""Phantom generator: determinism, file formats, NIH layouts, ground truth, anatomy and the CLI."""

from __future__ import annotations

import csv
import gzip
import json
from collections import defaultdict
from pathlib import Path

import jsonschema
import numpy as np
import pydicom
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image
from scipy import ndimage

from cxr_monai.cli import main as cli_main
from cxr_monai.data.datalist import load_datalist, validate_datalist
from cxr_monai.data.phantom import (
    CLASSIFICATION_FINDINGS,
    CLASSIFICATION_PROBABILITIES,
    FINDINGS,
    NIH_BBOX_HEADER,
    NIH_DATA_ENTRY_HEADER,
    generate_phantoms,
    make_phantom,
)
from cxr_monai.io import read_cxr

SCHEMA = Path(__file__).resolve().parents[1] / "cxr_monai" / "schemas" / "datalist.schema.json"
SIZE = 128


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory) -> Path:
    """A small mixed set: every format and finding path exercised, shared by the read-only tests."""
    out = tmp_path_factory.mktemp("phantom")
    generate_phantoms(out, num_images=16, size=SIZE, seed=3, abnormal_fraction=0.5, dicom_fraction=0.5,
                      monochrome1_fraction=0.5)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _datalist(root: Path) -> dict:
    return json.loads((root / "datalist.json").read_text())


def _entries(root: Path) -> list[dict]:
    return [entry for key in ("training", "validation", "test", "test_unhealthy") for entry in _datalist(root)[key]]


def _mask(path: Path) -> np.ndarray:
    pixels = np.asarray(Image.open(path))
    assert pixels.dtype == np.uint8 and set(np.unique(pixels)) <= {0, 255}, path
    return pixels == 255


def _raw_unit_image(path: Path) -> np.ndarray:
    """Lungs-dark [0, 1] image decoded without the project's reader (Pillow / pydicom + inversion)."""
    if path.suffix == ".png":
        pixels = np.asarray(Image.open(path))
        assert pixels.dtype == np.uint16
        return pixels / 65535.0
    ds = pydicom.dcmread(path)
    unit = ds.pixel_array / float(2**ds.BitsStored - 1)
    return 1.0 - unit if ds.PhotometricInterpretation == "MONOCHROME1" else unit


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    kwargs = dict(num_images=5, size=96, abnormal_fraction=0.4, dicom_fraction=0.4)
    generate_phantoms(tmp_path / "a", seed=7, **kwargs)
    generate_phantoms(tmp_path / "b", seed=7, **kwargs)
    generate_phantoms(tmp_path / "c", seed=8, **kwargs)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert any(name.endswith(".dcm") for name in a)
    assert a == b
    shared_images = [name for name in a if name.startswith("images/") and name in c]
    assert shared_images and all(a[name] != c[name] for name in shared_images)
    assert a["Data_Entry_2017.csv"] != c["Data_Entry_2017.csv"]


def test_counts_fractions_and_layout(phantom_dir):
    images = sorted((phantom_dir / "images").iterdir())
    assert [p.name for p in images] == sorted(
        f"phantom_{i:05d}{'.dcm' if p.suffix == '.dcm' else '.png'}" for i, p in enumerate(images))
    assert len(images) == 16 and sum(p.suffix == ".dcm" for p in images) == 8
    monochrome1 = [pydicom.dcmread(p, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
                   for p in images if p.suffix == ".dcm"]
    assert sum(monochrome1) == 4
    document = _datalist(phantom_dir)
    assert len(document["test_unhealthy"]) == 8
    assert len(list((phantom_dir / "masks" / "lungs").iterdir())) == 16
    assert len(list((phantom_dir / "masks" / "lesions").iterdir())) == 8
    rows = list(csv.reader((phantom_dir / "Data_Entry_2017.csv").read_text().splitlines()[1:]))
    assert [row[0] for row in rows] == [p.name for p in images]
    abnormal = {row[0] for row in rows if row[1] != "No Finding"}
    assert abnormal == {Path(entry["image"]).name for entry in document["test_unhealthy"]}
    assert all(set(row[1].split("|")) <= set(FINDINGS) for row in rows if row[0] in abnormal)
    follow_ups = defaultdict(list)
    for row in rows:
        follow_ups[row[3]].append(int(row[2]))
    assert all(sorted(f) == list(range(len(f))) for f in follow_ups.values())
    assert max(len(f) for f in follow_ups.values()) > 1  # some patients have follow-ups


def test_summary_matches_files(tmp_path):
    summary = generate_phantoms(tmp_path, num_images=10, size=96, seed=1, abnormal_fraction=0.3,
                                dicom_fraction=0.3, monochrome1_fraction=1.0)
    assert summary.num_images == 10 and summary.num_abnormal == 3
    assert summary.num_dicom == summary.num_monochrome1 == 3
    assert all((tmp_path / image).is_file() for image in summary.images)
    assert sum(summary.splits.values()) == 10 and summary.splits["test_unhealthy"] == 3
    assert summary.datalist.is_file() and summary.data_entry_csv.is_file() and summary.bbox_csv.is_file()
    assert "10 phantoms of 96 px" in summary.format()


def test_csv_headers_and_rows_follow_the_nih_files(phantom_dir, shared_path):
    data_entry = (phantom_dir / "Data_Entry_2017.csv").read_text().splitlines()
    bbox = (phantom_dir / "BBox_List_2017.csv").read_text().splitlines()
    assert data_entry[0] == NIH_DATA_ENTRY_HEADER and bbox[0] == NIH_BBOX_HEADER
    assert all(len(line.split(",")) == 11 for line in data_entry[1:])
    assert len(bbox) > 1 and all(len(line.split(",")) == 6 for line in bbox[1:])
    metadata = shared_path("metadata")  # the real NIH label files; skipped here where ../shared/data is absent
    with gzip.open(metadata / "Data_Entry_2017_v2020.csv.gz", "rt") as f:
        real_entry = [next(f).rstrip("\n"), next(f).rstrip("\n")]
    with gzip.open(metadata / "BBox_List_2017.csv.gz", "rt") as f:
        real_bbox = [next(f).rstrip("\n"), next(f).rstrip("\n")]
    assert data_entry[0] == real_entry[0] and bbox[0] == real_bbox[0]
    assert len(data_entry[1].split(",")) == len(real_entry[1].split(","))
    assert len(bbox[1].split(",")) == len(real_bbox[1].split(","))


def test_datalist_schema_patient_split_and_paths(phantom_dir):
    document = _datalist(phantom_dir)
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    for key in ("training", "validation", "test", "test_unhealthy"):
        for entry in load_decathlon_datalist(phantom_dir / "datalist.json", data_list_key=key,
                                             base_dir=phantom_dir):
            for path_key in ("image", "lung_mask", "lesion_mask"):
                assert path_key not in entry or Path(entry[path_key]).is_file()
    patient_of = {row[0]: row[3] for row in csv.reader((phantom_dir / "Data_Entry_2017.csv").read_text()
                                                      .splitlines()[1:])}
    patients = {key: {patient_of[Path(e["image"]).name] for e in document[key]}
                for key in ("training", "validation", "test", "test_unhealthy")}
    assert not patients["training"] & patients["validation"]
    assert not (patients["training"] | patients["validation"]) & (patients["test"] | patients["test_unhealthy"])
    assert patients["training"]
    assert all(e["label"] == 0 and "boxes" not in e for key in ("training", "validation", "test")
               for e in document[key])
    assert "PHANTOM" not in (phantom_dir / "datalist.json").read_text()  # no patient identifiers


def test_lesions_lie_in_the_lungs_inside_their_boxes(phantom_dir):
    for entry in _datalist(phantom_dir)["test_unhealthy"]:
        lungs = _mask(phantom_dir / entry["lung_mask"])
        lesions = _mask(phantom_dir / entry["lesion_mask"])
        assert lesions.any() and not (lesions & ~lungs).any()
        assert len(entry["boxes"]) == len(entry["box_labels"]) >= 1
        assert sorted(set(entry["box_labels"])) == entry["findings"]
        in_boxes = np.zeros_like(lesions)
        for x0, y0, x1, y1 in entry["boxes"]:
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            box = lesions[y0:y1, x0:x1]
            # tight: lesion pixels on every edge of its box
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
            assert lungs[y0:y1, x0:x1].mean() > 0.5, (entry["image"], [x0, y0, x1, y1])
            in_boxes[y0:y1, x0:x1] = True
        assert not (lesions & ~in_boxes).any()
        for x0, y0, x1, y1 in entry["lung_boxes"]:
            assert lungs[y0:y1, x0:x1].any()


@pytest.mark.parametrize("finding", FINDINGS)
def test_each_finding_changes_the_image_mostly_inside_its_mask(finding):
    healthy = make_phantom(256, seed=11)
    sick = make_phantom(256, seed=11, findings=(finding,))
    assert sick.findings == [finding]
    (lesion,) = sick.lesions
    assert lesion.mask.sum() >= 12 and not (lesion.mask & ~sick.lung_mask).any()
    # noise differs between the two renders; the lesion is a local change well above it
    change = ndimage.uniform_filter(np.abs(sick.image - healthy.image), 5)
    assert change[lesion.mask].mean() > 3 * change[~ndimage.binary_dilation(lesion.mask, iterations=12)].mean()


def test_nodule_and_mass_sizes_at_1024():
    radiograph = make_phantom(1024, seed=2, findings=("Nodule", "Mass"))
    diameters = {lesion.finding: 2 * np.sqrt(lesion.mask.sum() / np.pi) for lesion in radiograph.lesions}
    assert 13 <= diameters["Nodule"] <= 66
    assert 60 <= diameters["Mass"] <= 170


def test_dicom_headers(phantom_dir):
    dicoms = sorted((phantom_dir / "images").glob("*.dcm"))
    for path in dicoms:
        ds = pydicom.dcmread(path)
        assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.Modality == "CR" and ds.BitsAllocated == 16 and ds.BitsStored in (12, 14)
        assert ds.HighBit == ds.BitsStored - 1 and ds.PixelRepresentation == 0
        assert ds.Rows == ds.Columns == SIZE and len(ds.PixelSpacing) == 2
        assert float(ds.RescaleSlope) == 1 and float(ds.RescaleIntercept) == 0
        assert "WindowCenter" in ds and "WindowWidth" in ds
        assert str(ds.PatientName).startswith("PHANTOM^") and ds.PatientID.startswith("PHANTOM")
        assert ds.pixel_array.max() < 2**ds.BitsStored
    assert len({pydicom.dcmread(p).SOPInstanceUID for p in dicoms}) == len(dicoms)


def test_lungs_darker_than_spine_and_mediastinum(phantom_dir):
    for entry in _entries(phantom_dir):
        for image in (_raw_unit_image(phantom_dir / entry["image"]), read_cxr(phantom_dir / entry["image"])[0]):
            lungs = _mask(phantom_dir / entry["lung_mask"])
            (left_x0, y0, left_x1, y1), (right_x0, _, right_x1, _) = entry["lung_boxes"]
            assert left_x1 < right_x0
            rows = slice(y0 + (y1 - y0) // 4, y0 + (y1 - y0) // 2)  # upper-mid chest, above the heart
            middle = image[rows, left_x1 + 1:right_x0 - 1]  # mediastinum with the spine in it
            assert image[lungs].mean() + 0.15 < middle.mean(), entry["image"]
            assert np.median(image[lungs]) + 0.15 < np.percentile(middle, 90), entry["image"]


def test_every_format_reads_as_the_same_picture(tmp_path):
    kwargs = dict(num_images=4, size=SIZE, seed=5, abnormal_fraction=0.5)
    generate_phantoms(tmp_path / "png", dicom_fraction=0.0, **kwargs)
    generate_phantoms(tmp_path / "dcm", dicom_fraction=1.0, monochrome1_fraction=0.5, **kwargs)
    photometric = set()
    for index in range(4):
        png, _ = read_cxr(tmp_path / "png" / "images" / f"phantom_{index:05d}.png")
        dicom, meta = read_cxr(tmp_path / "dcm" / "images" / f"phantom_{index:05d}.dcm")
        photometric.add(meta["photometric_interpretation"])
        assert "PHANTOM" not in json.dumps({k: str(v) for k, v in meta.items()})
        np.testing.assert_allclose(dicom, png, atol=1.0 / 4095 + 1e-6)
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}


def test_small_images_still_get_lesions(tmp_path):
    summary = generate_phantoms(tmp_path, num_images=4, size=64, seed=0, abnormal_fraction=1.0)
    assert summary.num_abnormal == 4
    for entry in _datalist(tmp_path)["test_unhealthy"]:
        assert _mask(tmp_path / entry["lesion_mask"]).any() and entry["boxes"]


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="size"):
        generate_phantoms(tmp_path / "a", num_images=2, size=32)
    with pytest.raises(ValueError, match="dicom_fraction"):
        generate_phantoms(tmp_path / "a", num_images=2, size=64, dicom_fraction=1.5)
    with pytest.raises(ValueError, match="unknown findings"):
        make_phantom(64, findings=("Atelectasis",))
    generate_phantoms(tmp_path / "b", num_images=1, size=64)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_phantoms(tmp_path / "b", num_images=1, size=64)
    (tmp_path / "b" / "notes.txt").write_text("keep me")
    generate_phantoms(tmp_path / "b", num_images=1, size=64, dicom_fraction=1.0, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "b" / "images").iterdir()) == ["phantom_00000.dcm"]
    assert (tmp_path / "b" / "notes.txt").read_text() == "keep me"


def test_cli_writes_the_phantom_set(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["phantom", "--out", str(out), "--num-images", "3", "--size", "64", "--seed", "2",
                     "--abnormal-fraction", "0.34", "--dicom-fraction", "0.34", "--monochrome1-fraction", "1"]) == 0
    assert "3 phantoms of 64 px" in capsys.readouterr().out
    assert len(list((out / "images").glob("*.dcm"))) == 1 and len(_datalist(out)["test_unhealthy"]) == 1
    assert cli_main(["phantom", "--out", str(out), "--num-images", "3", "--size", "64"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["phantom", "--out", str(out), "--abnormal-fraction", "2"])


def test_nih_datalist_builder_reads_the_phantom_csvs(phantom_dir, tmp_path):
    from cxr_monai.data.builders.nih import build_nih_datalist

    out = tmp_path / "nih.json"
    build_nih_datalist(phantom_dir / "Data_Entry_2017.csv", phantom_dir / "BBox_List_2017.csv",
                       phantom_dir / "images", out, base_dir=phantom_dir, box_image_size=SIZE)
    ours, theirs = _datalist(phantom_dir)["test_unhealthy"], json.loads(out.read_text())["test_unhealthy"]
    assert {e["image"]: e["boxes"] for e in theirs} == {e["image"]: e["boxes"] for e in ours}


# ------------------------------------------------------------------------------------------------------------
# bone-suppression pairs (--bone-pairs)

PAIR_KEYS = ("bone_suppressed", "bone", "rib_mask")
PAIR_DIRS = ("bone_suppressed", "bones", "rib_masks")
PAIR_KWARGS = {"num_images": 6, "size": SIZE, "seed": 4, "abnormal_fraction": 0.34, "dicom_fraction": 0.5,
               "monochrome1_fraction": 0.5}


@pytest.fixture(scope="module")
def bone_pair_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """The same small set written with and without the bone pairs."""
    root = tmp_path_factory.mktemp("bone_pairs")
    generate_phantoms(root / "pairs", bone_pairs=True, **PAIR_KWARGS)
    generate_phantoms(root / "plain", **PAIR_KWARGS)
    return root / "pairs", root / "plain"


def _quantum(meta: dict) -> float:
    """One grey level of a file as the reader maps it to [0, 1]."""
    return 1.0 / (2 ** int(meta["bits_stored"]) - 1)


def _rib_contrast(image: np.ndarray, rib: np.ndarray, between: np.ndarray) -> float:
    return float(image[rib].mean() - image[between].mean())


def _local_rib_contrast(image: np.ndarray, rib: np.ndarray, between: np.ndarray, window: int) -> float:
    """Rib pixels against the mean of the between-rib pixels around them (removes the apex-to-base trend)."""
    weight = between.astype(np.float64)
    total, count = ndimage.uniform_filter(image * weight, window), ndimage.uniform_filter(weight, window)
    near = rib & (count > 0.15)
    return float((image - total / np.maximum(count, 1e-6))[near].mean())


def test_bone_pairs_files_keys_and_schema(bone_pair_dirs):
    pairs, _ = bone_pair_dirs
    document = validate_datalist(pairs / "datalist.json")
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    entries = _entries(pairs)
    assert len(entries) == 6
    for entry in entries:
        image = Path(entry["image"])
        assert entry["bone_suppressed"] == f"bone_suppressed/{image.name}"  # the radiograph's format
        assert entry["bone"] == f"bones/{image.name}"
        assert entry["rib_mask"] == f"rib_masks/{image.stem}.png"
        assert all((pairs / entry[key]).is_file() for key in PAIR_KEYS)
    for directory in PAIR_DIRS:
        assert len(list((pairs / directory).iterdir())) == 6
    for key in ("training", "test", "test_unhealthy"):
        for entry in load_datalist(pairs / "datalist.json", key):  # paths joined with the datalist's folder
            assert all(Path(entry[name]).is_absolute() and Path(entry[name]).is_file() for name in PAIR_KEYS)
    # derived DICOMs: the radiograph's study, bit depth and photometric; a series and instance of their own
    dicoms = sorted((pairs / "images").glob("*.dcm"))
    assert dicoms
    uids = set()
    for path in dicoms:
        radiograph = pydicom.dcmread(path, stop_before_pixels=True)
        uids.add(radiograph.SOPInstanceUID)
        for directory, kind in (("bone_suppressed", "SOFT_TISSUE"), ("bones", "BONE")):
            derived = pydicom.dcmread(pairs / directory / path.name, stop_before_pixels=True)
            assert list(derived.ImageType) == ["DERIVED", "SECONDARY", kind]
            assert derived.StudyInstanceUID == radiograph.StudyInstanceUID
            assert derived.SeriesInstanceUID != radiograph.SeriesInstanceUID
            for name in ("BitsStored", "PhotometricInterpretation", "Rows", "PixelSpacing", "WindowWidth"):
                assert derived.get(name) == radiograph.get(name), name
            uids.add(derived.SOPInstanceUID)
    assert len(uids) == 3 * len(dicoms)


def test_bone_pairs_add_up_and_the_bone_image_holds_the_ribs(bone_pair_dirs):
    pairs, _ = bone_pair_dirs
    for entry in _entries(pairs):
        image, meta = read_cxr(pairs / entry["image"])
        soft, soft_meta = read_cxr(pairs / entry["bone_suppressed"])
        bone, bone_meta = read_cxr(pairs / entry["bone"])
        assert meta["photometric_interpretation"] == soft_meta["photometric_interpretation"]
        quantum = _quantum(meta)
        assert _quantum(soft_meta) == _quantum(bone_meta) == quantum
        # each of the three files is rounded to the nearest grey level: at most 1.5 levels apart
        np.testing.assert_allclose(soft + bone, image, rtol=0, atol=1.5 * quantum + 1e-6)
        assert bone.min() >= 0.0 and bone.max() > 0.1  # bones bright on black
        lungs, rib = _mask(pairs / entry["lung_mask"]), _mask(pairs / entry["rib_mask"])
        between = lungs & ~rib
        assert not (rib & ~lungs).any() and 0.2 < rib.sum() / lungs.sum() < 0.8
        # the bone image is ~0 off the ribs and clavicles
        assert np.abs(bone[between]).mean() < 0.02 * np.abs(bone[rib]).mean(), entry["image"]
        assert bone[rib].mean() > 0.05
        assert np.median(bone[~lungs & (ndimage.distance_transform_edt(~lungs) > 3)]) == 0.0
        # rib contrast: clear in the radiograph, gone from the soft-tissue image. Whole-lung means keep a
        # little of it even there (ribs crowd the brighter apices), a local background removes that
        contrast = _rib_contrast(image, rib, between)
        assert contrast > 0.05, entry["image"]
        assert abs(_rib_contrast(soft, rib, between)) < 0.25 * contrast, entry["image"]
        window = SIZE // 16
        local = _local_rib_contrast(image, rib, between, window)
        assert local > 0.05 and abs(_local_rib_contrast(soft, rib, between, window)) < 0.1 * local, entry["image"]


def test_bone_pairs_leave_every_other_output_unchanged(bone_pair_dirs):
    pairs, plain = bone_pair_dirs
    with_pairs, without = _files(pairs), _files(plain)
    assert not any(name.startswith(PAIR_DIRS) for name in without)
    assert not any((plain / directory).exists() for directory in PAIR_DIRS)
    assert all(with_pairs[name] == data for name, data in without.items() if name != "datalist.json")
    assert sorted(set(with_pairs) - set(without)) == sorted(
        f"{directory}/{name}" for directory in PAIR_DIRS for name in
        (p.name if directory != "rib_masks" else f"{p.stem}.png" for p in (plain / "images").iterdir()))
    plain_document, pair_document = _datalist(plain), _datalist(pairs)
    assert not any(key in entry for entry in _entries(plain) for key in PAIR_KEYS)
    for key in ("training", "validation", "test", "test_unhealthy"):
        assert [{k: v for k, v in entry.items() if k not in PAIR_KEYS} for entry in pair_document[key]] == \
            plain_document[key]


@pytest.mark.parametrize("size", [96, 256])
def test_make_phantom_bone_pair_leaves_the_radiograph_bit_identical(size):
    findings = ("Nodule", "Effusion")
    plain = make_phantom(size, seed=6, findings=findings)
    paired = make_phantom(size, seed=6, findings=findings, bone_pairs=True)
    assert plain.soft_tissue is None and plain.bone is None and plain.rib_mask is None
    assert plain.between_rib_mask is None
    assert paired.image.tobytes() == plain.image.tobytes()
    assert np.array_equal(paired.lung_mask, plain.lung_mask) and paired.lung_boxes == plain.lung_boxes
    assert [(lesion.finding, lesion.box) for lesion in paired.lesions] == \
        [(lesion.finding, lesion.box) for lesion in plain.lesions]
    assert paired.soft_tissue.dtype == paired.bone.dtype == np.float32
    assert paired.soft_tissue.min() >= 0.0 and paired.soft_tissue.max() <= 1.0
    np.testing.assert_allclose(paired.soft_tissue + paired.bone, paired.image, rtol=0, atol=1e-6)
    assert paired.bone.min() >= 0.0
    # the lesions stay in the soft-tissue image: the pair differs by the ribs and clavicles only
    assert np.array_equal(paired.between_rib_mask, paired.lung_mask & ~paired.rib_mask)
    assert paired.bone[paired.between_rib_mask].mean() < 0.02 * paired.bone[paired.rib_mask].mean()


def test_cli_bone_pairs_and_overwrite_without_them(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["phantom", "--out", str(out), "--num-images", "2", "--size", "64", "--bone-pairs"]) == 0
    assert "bone pairs" in capsys.readouterr().out
    assert all(len(list((out / directory).iterdir())) == 2 for directory in PAIR_DIRS)
    assert all(key in entry for entry in _entries(out) for key in PAIR_KEYS)
    assert cli_main(["phantom", "--out", str(out), "--num-images", "2", "--size", "64", "--overwrite"]) == 0
    assert not any(any((out / directory).iterdir()) for directory in PAIR_DIRS)  # stale pairs removed
    assert not any(key in entry for entry in _entries(out) for key in PAIR_KEYS)


# ------------------------------------------------------------------------------------------------------------
# classification sets (--classification): Cardiomegaly, Fracture, multi-hot labels, lateral views

CLASS_KWARGS = {"num_images": 8, "size": SIZE, "seed": 5, "abnormal_fraction": 0.5, "dicom_fraction": 0.5,
                "monochrome1_fraction": 0.5}
CLASS_KEYS = ("labels", "lateral", "study")
SPLITS = ("training", "validation", "test", "test_unhealthy")


@pytest.fixture(scope="module")
def classification_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """The same small set written with and without ``classification``."""
    root = tmp_path_factory.mktemp("classification")
    generate_phantoms(root / "classification", classification=True, **CLASS_KWARGS)
    generate_phantoms(root / "plain", **CLASS_KWARGS)
    return root / "classification", root / "plain"


def _data_entry_rows(root: Path) -> dict[str, list[str]]:
    return {row[0]: row for row in csv.reader((root / "Data_Entry_2017.csv").read_text().splitlines()[1:])}


def test_classification_names_and_probabilities():
    assert CLASSIFICATION_FINDINGS == (*FINDINGS, "Cardiomegaly", "Fracture")
    assert list(CLASSIFICATION_PROBABILITIES) == list(CLASSIFICATION_FINDINGS)
    assert all(0 < p < 1 for p in CLASSIFICATION_PROBABILITIES.values())


def test_without_classification_nothing_new_and_healthy_images_are_shared(classification_dirs):
    classified, plain = classification_dirs
    plain_files, classified_files = _files(plain), _files(classified)
    assert not (plain / "laterals").exists() and not any(name.startswith("laterals/") for name in plain_files)
    document = _datalist(plain)
    assert "label_names" not in document
    assert not any(key in entry for entry in _entries(plain) for key in CLASS_KEYS)
    # the option draws from streams of its own: patients, formats and the healthy images stay, byte for byte
    healthy = [entry for entry in _entries(classified) if not entry["label"]]
    assert healthy
    for entry in healthy:
        for key in ("image", "lung_mask"):
            assert classified_files[entry[key]] == plain_files[entry[key]], entry[key]
    plain_rows, classified_rows = _data_entry_rows(plain), _data_entry_rows(classified)
    assert list(plain_rows) == list(classified_rows)  # the same file names: the same formats
    for name, row in classified_rows.items():
        assert row[2:] == plain_rows[name][2:]  # follow-up, patient, age, sex, view, size, spacing
        if row[1] == "No Finding":
            assert plain_rows[name][1] == "No Finding"
    assert {row[0] for row in plain_rows.values() if row[1] != "No Finding"} == \
        {row[0] for row in classified_rows.values() if row[1] != "No Finding"}


def test_classification_labels_follow_the_findings_drawn(classification_dirs):
    classified, _ = classification_dirs
    document = validate_datalist(classified / "datalist.json")
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    assert document["label_names"] == list(CLASSIFICATION_FINDINGS)
    rows = _data_entry_rows(classified)
    boxes = defaultdict(list)
    for row in (classified / "BBox_List_2017.csv").read_text().splitlines()[1:]:
        name, finding, *_ = row.split(",")
        boxes[name].append(finding)
    drawn = set()
    for entry in _entries(classified):
        name = Path(entry["image"]).name
        findings = entry.get("findings", [])
        assert entry["labels"] == [int(label in findings) for label in CLASSIFICATION_FINDINGS]
        assert entry["label"] == int(any(entry["labels"]))
        assert rows[name][1] == ("|".join(findings) or "No Finding")
        assert sorted(set(boxes[name])) == findings == sorted(set(entry.get("box_labels", [])))
        drawn.update(findings)
        if findings:  # every box marks its finding in the lesion mask
            lesions = _mask(classified / entry["lesion_mask"])
            for x0, y0, x1, y1 in entry["boxes"]:
                assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE and lesions[y0:y1, x0:x1].any()
    assert {"Cardiomegaly", "Fracture"} <= drawn


def test_classification_splits_every_image_by_patient(classification_dirs):
    classified, _ = classification_dirs
    document = _datalist(classified)
    patient_of = {name: row[3] for name, row in _data_entry_rows(classified).items()}
    patients = {key: {patient_of[Path(e["image"]).name] for e in document[key]} for key in SPLITS}
    assert not patients["training"] & patients["validation"]
    assert not (patients["training"] | patients["validation"]) & (patients["test"] | patients["test_unhealthy"])
    assert any(entry["label"] for entry in document["training"])  # abnormal images to train on
    assert all(entry["label"] == 0 for entry in document["test"])
    assert all(entry["label"] == 1 for entry in document["test_unhealthy"])
    assert sum(len(document[key]) for key in SPLITS) == CLASS_KWARGS["num_images"]


def test_classification_laterals_pair_with_their_frontal_view(classification_dirs):
    classified, _ = classification_dirs
    entries = _entries(classified)
    assert len(list((classified / "laterals").iterdir())) == len(entries)
    assert len({entry["study"] for entry in entries}) == len(entries)
    for entry in entries:
        image = Path(entry["image"])
        assert entry["lateral"] == f"laterals/{image.name}"  # the frontal's format
        assert entry["study"] == f"study_{int(image.stem.split('_')[1]):05d}"
        frontal, frontal_meta = read_cxr(classified / entry["image"])
        lateral, lateral_meta = read_cxr(classified / entry["lateral"])
        assert lateral.shape == frontal.shape == (SIZE, SIZE)
        assert 0.0 <= lateral.min() and lateral.max() <= 1.0 and lateral.std() > 0.1
        assert lateral_meta["photometric_interpretation"] == frontal_meta["photometric_interpretation"]
        if image.suffix == ".dcm":
            front_ds = pydicom.dcmread(classified / entry["image"], stop_before_pixels=True)
            side_ds = pydicom.dcmread(classified / entry["lateral"], stop_before_pixels=True)
            assert front_ds.ViewPosition == "PA" and side_ds.ViewPosition == "LL"
            assert side_ds.StudyInstanceUID == front_ds.StudyInstanceUID
            assert side_ds.SeriesInstanceUID != front_ds.SeriesInstanceUID
            assert side_ds.SOPInstanceUID != front_ds.SOPInstanceUID
            assert side_ds.BitsStored == front_ds.BitsStored
    assert "PHANTOM" not in (classified / "datalist.json").read_text()  # no patient identifiers


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cardiomegaly_raises_the_cardiothoracic_ratio(seed):
    normal = make_phantom(SIZE, seed, lateral=True)
    enlarged = make_phantom(SIZE, seed, findings=("Cardiomegaly",), lateral=True)
    assert 0.33 < normal.cardiothoracic_ratio < 0.47
    assert 0.53 < enlarged.cardiothoracic_ratio < 0.68
    assert enlarged.cardiothoracic_ratio > normal.cardiothoracic_ratio + 0.1
    (lesion,) = enlarged.lesions
    assert lesion.finding == "Cardiomegaly" and np.array_equal(lesion.mask, enlarged.heart_mask)
    assert not (enlarged.heart_mask & enlarged.lung_mask).any()
    assert enlarged.lung_mask.sum() < normal.lung_mask.sum()  # the heart takes lung away
    # the lateral heart shadow grows too
    assert enlarged.lateral.heart_mask.sum() > 1.3 * normal.lateral.heart_mask.sum()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fractures_break_the_bone_image(seed):
    healthy = make_phantom(256, seed, bone_pairs=True)
    broken = make_phantom(256, seed, findings=("Fracture",), bone_pairs=True)
    assert broken.findings == ["Fracture"] and 1 <= len(broken.lesions) <= 2
    near = np.zeros_like(broken.lung_mask)
    for lesion in broken.lesions:
        x0, y0, x1, y1 = lesion.box
        assert 4 <= x1 - x0 <= 40 and 4 <= y1 - y0 <= 40
        before, after = healthy.bone[y0:y1, x0:x1], broken.bone[y0:y1, x0:x1]
        # a gap: the rib is gone there (what is left is another bone crossing it, if any)
        gap = before - after > 0.05
        assert gap.sum() >= 4, (seed, lesion.box)
        # and the displaced fragment: bone where there was none
        assert (after - before > 0.05).sum() >= 4, (seed, lesion.box)
        near[max(y0 - 3, 0):y1 + 3, max(x0 - 3, 0):x1 + 3] = True
    # the rest of the bone image is the healthy one (noise cancels in the bone image, up to the exposure curve)
    far = ~ndimage.binary_dilation(near, iterations=int(0.06 * 128) + 2)  # the displaced lateral fragment
    changed = np.abs(broken.bone - healthy.bone) > 0.02
    assert changed[far].mean() < 0.02
    assert np.median(broken.bone[broken.rib_mask]) > 0.03  # still a full rib cage


def test_lateral_view_anatomy_and_effusion():
    healthy = make_phantom(SIZE, 4, lateral=True)
    plain = make_phantom(SIZE, 4)
    assert plain.lateral is None and healthy.image.tobytes() == plain.image.tobytes()
    lateral = healthy.lateral
    assert lateral.image.shape == (SIZE, SIZE) and lateral.image.dtype == np.float32
    assert lateral.lung_mask.sum() > 0.1 * SIZE * SIZE and lateral.heart_mask.any()
    assert not (lateral.lung_mask & lateral.heart_mask).any()
    assert lateral.image[lateral.lung_mask].mean() + 0.1 < lateral.image[lateral.heart_mask].mean()
    # heart in front (image left) of the lung field's centre, spine behind it
    heart_x = np.nonzero(lateral.heart_mask)[1].mean()
    lung_x = np.nonzero(lateral.lung_mask)[1]
    assert heart_x < lung_x.mean()
    # an effusion fills the posterior costophrenic sulcus of the lateral view (nothing else changes: the
    # lateral stream draws nothing for it)
    sick = make_phantom(SIZE, 4, findings=("Effusion",), lateral=True)
    change = sick.lateral.image - lateral.image
    assert np.abs(change).max() > 0.1
    rows, cols = np.nonzero(np.abs(change) > 0.05)
    assert rows.mean() > 0.55 * SIZE and cols.mean() > lung_x.mean()  # low and at the back


def test_cli_classification_and_overwrite_without_it(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["phantom", "--out", str(out), "--num-images", "3", "--size", "64", "--seed", "1",
                     "--abnormal-fraction", "0.67", "--classification"]) == 0
    assert "lateral views" in capsys.readouterr().out
    assert len(list((out / "laterals").iterdir())) == 3
    assert _datalist(out)["label_names"] == list(CLASSIFICATION_FINDINGS)
    assert all(key in entry for entry in _entries(out) for key in CLASS_KEYS)
    validate_datalist(out / "datalist.json")
    assert cli_main(["phantom", "--out", str(out), "--num-images", "3", "--size", "64", "--overwrite"]) == 0
    assert not any((out / "laterals").iterdir())  # stale laterals removed
    assert not any(key in entry for entry in _entries(out) for key in CLASS_KEYS)
