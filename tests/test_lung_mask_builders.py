"""Lung-mask datalist builders (Montgomery, Shenzhen / Kaggle, JSRT + SCR), the shared mask check and their CLI.

Layouts are built small in tmp_path (PNG/JPEG/GIF with Pillow, JSRT .IMG with numpy: 8 MB each, a few per test);
the real montgomery-like samples come from ../shared/data and are skipped when it is absent. Nothing here imports
torch or MONAI (entry paths are joined by hand; ``load_datalist`` itself is tested in test_datalist.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_monai import cli
from cxr_monai.data.builders.folder import build_folder_datalist
from cxr_monai.data.builders.lung_masks import (
    build_jsrt_datalist,
    build_montgomery_datalist,
    build_shenzhen_datalist,
    lung_mask_problem,
    read_lung_mask,
)
from cxr_monai.data.datalist import SPLIT_KEYS, validate_datalist
from cxr_monai.io import CXRReadError, stored_size

REPO = Path(__file__).resolve().parents[1]
W, H = 64, 80  # non-square: a transposed mask would show


# ----------------------------------------------------------------------------------------------------------
# helpers


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def radiograph(seed: int = 0, size: tuple[int, int] = (W, H)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)


def lung(side: str, size: tuple[int, int] = (W, H), value: int = 255) -> np.ndarray:
    """A rectangle in the image's left or right half (0 / ``value``), ``size`` = (width, height)."""
    width, height = size
    mask = np.zeros((height, width), dtype=np.uint8)
    columns = slice(width // 8, width * 3 // 8) if side == "left" else slice(width * 5 // 8, width * 7 // 8)
    mask[height // 5: height * 4 // 5, columns] = value
    return mask


def entries(document: dict) -> list[dict]:
    return [entry for key in SPLIT_KEYS for entry in document[key]]


def reasons(summary) -> dict[str, str]:
    return {Path(rejected.path).name: rejected.reason for rejected in summary.rejected}


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as pil:
        assert pil.mode == "L"
        return np.asarray(pil)


# ----------------------------------------------------------------------------------------------------------
# lung_mask_problem


def test_lung_mask_problem_accepts_binary_masks_of_any_positive_value(tmp_path):
    for value in (1, 255):
        path = save(tmp_path / f"v{value}.png", lung("left", value=value) | lung("right", value=value))
        assert lung_mask_problem(path, (W, H)) is None
        assert read_lung_mask(path).sum() == np.count_nonzero(lung("left") | lung("right"))
    sixteen_bit = save(tmp_path / "v16.png", lung("left").astype(np.uint16) * 257)
    assert lung_mask_problem(sixteen_bit, (W, H)) is None and lung_mask_problem(sixteen_bit, None) is None
    gif = save(tmp_path / "m.gif", lung("right"))
    assert lung_mask_problem(gif, (W, H)) is None


def test_lung_mask_problem_reasons(tmp_path):
    good = lung("left")
    noisy = good.copy()
    noisy[0, :3] = [7, 8, 9]
    cases = {
        "size.png": (good[:, :60], "mask size mismatch: mask is 60x80 px, the image 64x80 px"),
        "empty.png": (np.zeros_like(good), "empty mask: no foreground pixel"),
        "full.png": (np.full_like(good, 255), "all-foreground mask: every pixel is foreground"),
        "noisy.png": (noisy, "non-binary mask: 5 distinct values (expected 0 and one positive value)"),
        "no_zero.png": (np.where(good > 0, 255, 3).astype(np.uint8), "non-binary mask: values 3 and 255"),
    }
    for name, (array, expected) in cases.items():
        problem = lung_mask_problem(save(tmp_path / name, array), (W, H))
        assert problem is not None and problem.startswith(expected), (name, problem)
    assert lung_mask_problem(tmp_path / "missing.png", (W, H)) == "missing mask: file not found"
    (tmp_path / "text.png").write_text("not a mask")
    assert lung_mask_problem(tmp_path / "text.png", (W, H)).startswith("unreadable mask: not a PNG, GIF")
    with pytest.raises(CXRReadError, match=r"empty\.png: empty mask"):
        read_lung_mask(tmp_path / "empty.png")


def test_jpeg_masks_are_thresholded_at_half_scale_unless_mostly_grey(tmp_path):
    mask = lung("left", size=(128, 128)) | lung("right", size=(128, 128))
    jpeg = save(tmp_path / "mask.jpg", mask, quality=75)
    with Image.open(jpeg) as pil:
        assert len(np.unique(np.asarray(pil))) > 2  # the ringing a lossy 0/255 mask gets
    assert lung_mask_problem(jpeg, (128, 128)) is None
    np.testing.assert_array_equal(read_lung_mask(jpeg), mask > 127)
    photo = save(tmp_path / "photo.jpg", np.random.default_rng(1).integers(64, 192, (128, 128), dtype=np.uint8))
    assert lung_mask_problem(photo, (128, 128)).startswith("non-binary mask: ")
    assert "mid-grey" in lung_mask_problem(photo, (128, 128))


# ----------------------------------------------------------------------------------------------------------
# Montgomery


def montgomery_layout(root: Path) -> Path:
    """Four good cases, one per rejection kind, an orphan mask, a badly named image and a stray file."""
    left_dir, right_dir = root / "ManualMask" / "leftMask", root / "ManualMask" / "rightMask"
    for number, label in enumerate([0, 1, 0, 1, 0, 0, 0, 0, 0], start=1):
        name = f"MCUCXR_{number:04d}_{label}.png"
        save(root / "CXR_png" / name, radiograph(number))
        save(left_dir / name, lung("left", value=1 if number == 3 else 255))  # 0/1 is binary too
        save(right_dir / name, lung("right"))
    (right_dir / "MCUCXR_0005_0.png").unlink()
    save(left_dir / "MCUCXR_0006_0.png", lung("left", size=(60, H)))
    save(left_dir / "MCUCXR_0007_0.png", np.zeros((H, W), dtype=np.uint8))
    save(right_dir / "MCUCXR_0008_0.png", np.full((H, W), 255, dtype=np.uint8))
    grey = lung("left")
    grey[grey > 0] = np.arange(np.count_nonzero(grey)) % 3 + 100
    save(left_dir / "MCUCXR_0009_0.png", grey)
    save(right_dir / "MCUCXR_0010_0.png", lung("right"))  # no image
    save(root / "CXR_png" / "scan.png", radiograph(10))  # no _0/_1 label
    (root / "CXR_png" / "Thumbs.db").write_bytes(b"\0" * 10)
    return root


def test_montgomery_merges_masks_labels_and_lists_every_rejection(tmp_path):
    root = montgomery_layout(tmp_path / "MontgomerySet")
    out = tmp_path / "lists" / "montgomery.json"
    summary = build_montgomery_datalist(root, out, val_fraction=0.25, test_fraction=0.25, seed=1)
    document = validate_datalist(out)
    assert document["name"] == "montgomery"
    listed = {Path(entry["image"]).name: entry for entry in entries(document)}
    assert sorted(listed) == [f"MCUCXR_{n:04d}_{label}.png" for n, label in [(1, 0), (2, 1), (3, 0), (4, 1)]]
    for name, entry in listed.items():
        assert entry["label"] == int(name[-5])
        assert entry.get("findings") == (["Tuberculosis"] if entry["label"] else None)
        assert entry["lung_mask"] == f"lists/montgomery_lung_masks/{name}"
        assert entry["image"] == f"MontgomerySet/CXR_png/{name}"
    merged = read_png(tmp_path / "lists" / "montgomery_lung_masks" / "MCUCXR_0003_0.png")
    assert merged.shape == (H, W) and set(np.unique(merged)) == {0, 255}
    np.testing.assert_array_equal(merged, np.where((lung("left") | lung("right")) > 0, 255, 0))

    why = reasons(summary)
    assert why == {
        "MCUCXR_0005_0.png": "no right lung mask: ManualMask/rightMask/MCUCXR_0005_0.png not found",
        "MCUCXR_0006_0.png": "mask size mismatch: left lung mask ManualMask/leftMask/MCUCXR_0006_0.png: mask is "
                             "60x80 px, the image 64x80 px",
        "MCUCXR_0007_0.png": "empty mask: left lung mask ManualMask/leftMask/MCUCXR_0007_0.png: no foreground pixel",
        "MCUCXR_0008_0.png": "all-foreground mask: right lung mask ManualMask/rightMask/MCUCXR_0008_0.png: every "
                             "pixel is foreground",
        "MCUCXR_0009_0.png": "non-binary mask: left lung mask ManualMask/leftMask/MCUCXR_0009_0.png: 4 distinct "
                             "values (expected 0 and one positive value)",
        "MCUCXR_0010_0.png": f"mask without image: no image named MCUCXR_0010_0.* in {root / 'CXR_png'}",
        "scan.png": "label unknown: the name is not <patient>_0 (normal) or <patient>_1 (tuberculosis)",
    }
    assert not (tmp_path / "lists" / "montgomery_lung_masks" / "MCUCXR_0005_0.png").exists()
    assert any("Thumbs.db" in note for note in summary.notes)
    assert "rejected: 7" in summary.format()

    assert all((tmp_path / entry[key]).is_file() for entry in entries(document) for key in ("image", "lung_mask"))


def test_montgomery_splits_by_patient_with_tuberculosis_test_images_in_test_unhealthy(tmp_path):
    root = tmp_path / "mont"
    for number in range(1, 21):
        name = f"MCUCXR_{number:04d}_{number % 2}.png"
        save(root / "CXR_png" / name, radiograph(number, (16, 16)))
        save(root / "ManualMask" / "leftMask" / name, lung("left", (16, 16)))
        save(root / "ManualMask" / "rightMask" / name, lung("right", (16, 16)))
    out = tmp_path / "a.json"
    summary = build_montgomery_datalist(root, out, mask_out_dir=tmp_path / "masks", val_fraction=0.2,
                                        test_fraction=0.3, seed=3)
    document = json.loads(out.read_text())
    patients = Counter(Path(entry["image"]).stem[:-2] for entry in entries(document))
    assert len(patients) == 20 and set(patients.values()) == {1}
    assert len(document["validation"]) == 4 and len(document["test"]) + len(document["test_unhealthy"]) == 6
    assert all(entry["label"] == 0 for entry in document["test"])
    assert all(entry["label"] == 1 for entry in document["test_unhealthy"])
    assert {entry["label"] for entry in document["training"]} == {0, 1}  # abnormal lungs are trained on too
    assert summary.splits["training"].images == summary.splits["training"].patients == 10
    assert document["training"][0]["lung_mask"].startswith("masks/")
    again = tmp_path / "b.json"
    build_montgomery_datalist(root, again, mask_out_dir=tmp_path / "masks", val_fraction=0.2, test_fraction=0.3,
                              seed=3)
    assert json.loads(again.read_text()) == document


def test_montgomery_refuses_to_write_masks_into_the_dataset(tmp_path):
    root = montgomery_layout(tmp_path / "m")
    with pytest.raises(ValueError, match="apart from the dataset"):
        build_montgomery_datalist(root, tmp_path / "x.json", mask_out_dir=root / "ManualMask" / "leftMask")
    with pytest.raises(FileNotFoundError, match="CXR_png"):
        build_montgomery_datalist(tmp_path, tmp_path / "x.json")


# ----------------------------------------------------------------------------------------------------------
# Shenzhen and Kaggle's Montgomery + Shenzhen folder


def shenzhen_layout(root: Path, image_folder: str = "images") -> Path:
    for number, label in enumerate([0, 1, 0, 1, 0], start=1):
        name = f"CHNCXR_{number:04d}_{label}"
        save(root / image_folder / f"{name}.png", radiograph(number))
        if number != 4:
            save(root / "masks" / f"{name}_mask.png", lung("left") | lung("right"))
    noisy = lung("left") | lung("right")
    noisy[0, 0] = 128
    save(root / "masks" / "CHNCXR_0005_0_mask.png", noisy)
    save(root / "masks" / "CHNCXR_0099_0_mask.png", lung("left"))  # no image
    return root


def test_shenzhen_lists_masks_in_place_and_rejects_images_without_one(tmp_path):
    root = shenzhen_layout(tmp_path / "shenzhen")
    out = tmp_path / "shenzhen.json"
    summary = build_shenzhen_datalist(root, out, val_fraction=0.25, test_fraction=0)
    document = validate_datalist(out)
    assert document["name"] == "shenzhen"
    listed = {entry["image"]: entry for entry in entries(document)}
    assert sorted(listed) == ["images/CHNCXR_0001_0.png", "images/CHNCXR_0002_1.png", "images/CHNCXR_0003_0.png"]
    assert listed["images/CHNCXR_0002_1.png"]["lung_mask"] == "masks/CHNCXR_0002_1_mask.png"
    assert listed["images/CHNCXR_0002_1.png"]["findings"] == ["Tuberculosis"]
    why = reasons(summary)
    assert why["CHNCXR_0004_1.png"].startswith("no lung mask: no CHNCXR_0004_1_mask.* or CHNCXR_0004_1.* in")
    assert why["CHNCXR_0005_0.png"] == ("non-binary mask: lung mask CHNCXR_0005_0_mask.png: 3 distinct values "
                                        "(expected 0 and one positive value)")
    assert why["CHNCXR_0099_0_mask.png"].startswith("mask without image")
    assert len(why) == 3

    lenient = build_shenzhen_datalist(root, tmp_path / "lenient.json", allow_missing_masks=True,
                                      val_fraction=0.25, test_fraction=0)
    document = validate_datalist(tmp_path / "lenient.json")
    without = [entry for entry in entries(document) if "lung_mask" not in entry]
    assert [entry["image"] for entry in without] == ["images/CHNCXR_0004_1.png"]
    assert "CHNCXR_0004_1.png" not in reasons(lenient)
    assert any("1 images listed without lung_mask" in note for note in lenient.notes)


def test_kaggle_folder_mixing_montgomery_and_shenzhen(tmp_path):
    """Kaggle's "Chest Xray Masks and Labels": CXR_png/ with both sets, masks/ with <stem>_mask.png (Shenzhen)
    and <stem>.png (Montgomery); a JPEG mask is thresholded, a mask of another size rejected."""
    root = tmp_path / "Lung Segmentation"
    for name in ("MCUCXR_0001_0", "MCUCXR_0002_1", "CHNCXR_0001_0", "CHNCXR_0002_1"):
        save(root / "CXR_png" / f"{name}.png", radiograph(len(name), (96, 96)))
    both = lung("left", (96, 96)) | lung("right", (96, 96))
    save(root / "masks" / "MCUCXR_0001_0.png", both)
    save(root / "masks" / "MCUCXR_0002_1.jpg", both, quality=80)
    save(root / "masks" / "CHNCXR_0001_0_mask.png", both)
    save(root / "masks" / "CHNCXR_0002_1_mask.png", both[:90])
    save(root / "test" / "CHNCXR_0900_0.png", radiograph(3, (96, 96)))  # Kaggle's unmasked test folder: not read
    out = tmp_path / "kaggle.json"
    summary = build_shenzhen_datalist(root, out, val_fraction=0, test_fraction=0)
    document = validate_datalist(out)
    assert document["name"] == "montgomery-shenzhen"
    assert sorted((entry["image"], entry["lung_mask"]) for entry in document["training"]) == [
        ("CXR_png/CHNCXR_0001_0.png", "masks/CHNCXR_0001_0_mask.png"),
        ("CXR_png/MCUCXR_0001_0.png", "masks/MCUCXR_0001_0.png"),
        ("CXR_png/MCUCXR_0002_1.png", "masks/MCUCXR_0002_1.jpg"),
    ]
    assert reasons(summary) == {"CHNCXR_0002_1.png": "mask size mismatch: lung mask CHNCXR_0002_1_mask.png: mask "
                                                     "is 96x90 px, the image 96x96 px"}
    assert all((root / entry["lung_mask"]).is_file() for entry in document["training"])


def test_shenzhen_needs_one_image_folder(tmp_path):
    root = shenzhen_layout(tmp_path / "s")
    (root / "CXR_png").mkdir()
    with pytest.raises(ValueError, match="both images/ and CXR_png/"):
        build_shenzhen_datalist(root, tmp_path / "x.json")
    summary = build_shenzhen_datalist(root, tmp_path / "x.json", image_dir=root / "images")
    assert sum(counts.images for counts in summary.splits.values()) == 3
    with pytest.raises(FileNotFoundError, match="no images/ or CXR_png/"):
        build_shenzhen_datalist(root / "masks", tmp_path / "y.json")


# ----------------------------------------------------------------------------------------------------------
# JSRT + SCR


def write_jsrt(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = np.random.default_rng(seed).integers(0, 4096, size=(2048, 2048), dtype=np.uint16)
    raw.astype(">u2").tofile(path)
    return path


@pytest.fixture(scope="module")
def jsrt_layout(tmp_path_factory) -> tuple[Path, Path]:
    """Three full-size .IMG files (8 MB each), one short one, and SCR masks in fold1/fold2 (GIF)."""
    base = tmp_path_factory.mktemp("jsrt")
    root, scr = base / "JSRT", base / "SCR"
    for name, seed in (("JPCLN001", 1), ("JPCNN001", 2), ("JPCNN002", 3)):
        write_jsrt(root / "All247images" / f"{name}.IMG", seed)
    (root / "All247images" / "JPCLN002.IMG").write_bytes(b"\0" * 1000)
    (root / "CLNDAT_EN.TXT").write_text("case list\n")
    sizes = {"JPCLN001": 1024, "JPCNN001": 2048, "JPCNN002": 1000, "JPCLN002": 1024, "JPCLN003": 1024}
    for name, side_px in sizes.items():
        fold = "fold1" if name.endswith("1") else "fold2"
        for side in ("left", "right"):
            save(scr / fold / "masks" / f"{side} lung" / f"{name}.gif", lung(side, (side_px, side_px)))
        save(scr / fold / "masks" / "heart" / f"{name}.gif", lung("left", (side_px, side_px)))  # not a lung: unused
    return root, scr


def test_jsrt_merges_upsamples_and_labels(jsrt_layout, tmp_path):
    root, scr = jsrt_layout
    out = tmp_path / "jsrt.json"
    summary = build_jsrt_datalist(root, scr, out, mask_out_dir=root.parent / "jsrt_masks", val_fraction=0,
                                  test_fraction=0)
    document = validate_datalist(out)
    assert document["name"] == "jsrt"
    listed = {Path(entry["image"]).stem: entry for entry in entries(document)}
    assert sorted(listed) == ["JPCLN001", "JPCNN001"]
    assert listed["JPCLN001"] == {"image": "JSRT/All247images/JPCLN001.IMG", "lung_mask": "jsrt_masks/JPCLN001.png",
                                  "label": 1, "findings": ["Nodule"]}
    assert listed["JPCNN001"]["label"] == 0 and "findings" not in listed["JPCNN001"]

    merged = read_png(root.parent / "jsrt_masks" / "JPCLN001.png")
    half = (lung("left", (1024, 1024)) | lung("right", (1024, 1024))) > 0
    assert merged.shape == (2048, 2048) and stored_size(root / "All247images" / "JPCLN001.IMG") == (2048, 2048)
    np.testing.assert_array_equal(merged > 0, np.repeat(np.repeat(half, 2, axis=0), 2, axis=1))
    assert set(np.unique(merged)) == {0, 255}
    full = read_png(root.parent / "jsrt_masks" / "JPCNN001.png")  # SCR mask already at 2048 px: as it is
    np.testing.assert_array_equal(full > 0, (lung("left", (2048, 2048)) | lung("right", (2048, 2048))) > 0)

    why = reasons(summary)
    assert why["JPCNN002.IMG"] == ("mask size mismatch: left lung mask fold2/masks/left lung/JPCNN002.gif: mask is "
                                   "1000x1000 px, the image 2048x2048 px (SCR masks are the image size or half of it)")
    assert why["JPCLN002.IMG"].startswith("not a JSRT .IMG radiograph: the file has 1,000 bytes")
    assert why["JPCLN003.gif"].startswith("mask without image: no JSRT image JPCLN003.IMG")
    assert len(why) == 3  # JPCLN003's left and right: both named JPCLN003.gif
    assert len(summary.rejected) == 4
    assert any("1 of them upsampled x2" in note for note in summary.notes)
    assert any("CLNDAT_EN.TXT" in note for note in summary.notes)


def test_jsrt_rejects_a_missing_side_and_needs_scr_masks(jsrt_layout, tmp_path):
    root, scr = jsrt_layout
    scr_copy = tmp_path / "scr"  # a side folder may be written left_lung; only JPCLN001's left side, JPCNN001's both
    for name, fold, sides in (("JPCLN001", "fold1", ("left",)), ("JPCNN001", "fold1", ("left", "right"))):
        for side in sides:
            with Image.open(scr / fold / "masks" / f"{side} lung" / f"{name}.gif") as pil:
                save(scr_copy / "masks" / f"{side}_lung" / f"{name}.gif", np.asarray(pil.convert("L")))
    summary = build_jsrt_datalist(root, scr_copy, tmp_path / "j.json", val_fraction=0, test_fraction=0)
    listed = entries(validate_datalist(tmp_path / "j.json"))
    assert [entry["image"] for entry in listed] == [f"{root.parent.name}/JSRT/All247images/JPCNN001.IMG"]
    assert listed[0]["lung_mask"] == f"{tmp_path.name}/jsrt_lung_masks/JPCNN001.png"  # default: next to the list
    why = reasons(summary)
    assert why["JPCLN001.IMG"] == f"no right lung mask: no right lung/JPCLN001.gif under {scr_copy}"
    assert why["JPCNN002.IMG"].startswith("no left lung mask")
    assert why["JPCLN002.IMG"].startswith("not a JSRT .IMG radiograph")  # the image is checked first
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no SCR lung masks"):
        build_jsrt_datalist(root, tmp_path / "empty", tmp_path / "k.json")


# ----------------------------------------------------------------------------------------------------------
# command line


def test_cli_montgomery_shenzhen_and_jsrt(tmp_path, capsys, caplog, jsrt_layout):
    root = montgomery_layout(tmp_path / "MontgomerySet")
    out = tmp_path / "m.json"
    assert cli.main(["datalist", "montgomery", "--root", str(root), "--out", str(out), "--mask-out-dir",
                     str(tmp_path / "merged"), "--val-fraction", "0.25", "--test-fraction", "0", "--name", "mc"]) == 0
    printed = capsys.readouterr()
    assert "rejected: 7" in printed.out and "merged lung masks" in printed.out
    assert "MCUCXR_0005_0.png: no right lung mask" in caplog.text  # logged as each file is rejected
    assert validate_datalist(out)["name"] == "mc" and (tmp_path / "merged" / "MCUCXR_0001_0.png").is_file()

    shenzhen = shenzhen_layout(tmp_path / "shenzhen", image_folder="CXR_png")
    assert cli.main(["datalist", "shenzhen", "--root", str(shenzhen), "--out", str(tmp_path / "s.json"),
                     "--allow-missing-masks", "--base-dir", str(tmp_path)]) == 0
    document = validate_datalist(tmp_path / "s.json")
    assert all(entry["image"].startswith("shenzhen/CXR_png/") for entry in entries(document))
    assert "3 of 4 images have a lung mask" in capsys.readouterr().out  # 0005's mask is non-binary: rejected
    jsrt_root, scr = jsrt_layout
    assert cli.main(["datalist", "jsrt", "--root", str(jsrt_root), "--scr-root", str(scr), "--out",
                     str(tmp_path / "j.json"), "--mask-out-dir", str(tmp_path / "jm")]) == 0
    assert len(entries(validate_datalist(tmp_path / "j.json"))) == 2
    assert cli.main(["datalist", "jsrt", "--root", str(jsrt_root), "--scr-root", str(tmp_path / "none"),
                     "--out", str(tmp_path / "x.json")]) == 2
    assert "SCR root does not exist" in capsys.readouterr().err


def test_builders_and_their_help_do_not_import_torch():
    code = ("import sys, json\nimport cxr_monai.data.builders.lung_masks\nfrom cxr_monai.cli import main\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try: main(['datalist', 'montgomery', '--help'])\n"
            "    except SystemExit: pass\n"
            "print(json.dumps(sorted(m for m in ('torch', 'monai') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


# ----------------------------------------------------------------------------------------------------------
# real files


def test_real_montgomery_like_masks_pass_the_check_and_the_folder_builder(tmp_path, shared_path):
    montgomery_like = shared_path("real-samples", "montgomery-like")
    out = tmp_path / "real.json"
    summary = build_folder_datalist(montgomery_like, out, mask_dir=montgomery_like, mask_suffix="-mask")
    assert summary.rejected == []
    listed = entries(validate_datalist(out))
    assert sorted(entry["image"] for entry in listed) == ["1.jpg", "2.jpg", "3.jpg", "4.jpg"]
    for entry in listed:
        image, mask = montgomery_like / entry["image"], montgomery_like / entry["lung_mask"]
        assert lung_mask_problem(mask, stored_size(image)) is None
        foreground = read_lung_mask(mask)
        assert foreground.shape == (512, 512) and 0.1 < foreground.mean() < 0.6
