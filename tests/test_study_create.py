"""Making observer studies: 2AFC pairs from a context-encoder inference folder, real-or-synthetic images from pix2pix
exports and a real datalist (cxr_monai.apps.study.create)."""

from __future__ import annotations

import argparse
import copy
import csv
import json
import logging
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_monai.apps.bone_suppression.outputs import write_png16
from cxr_monai.apps.study.create import (
    add_create_arguments,
    create_2afc_study,
    create_real_or_synthetic_study,
    resize_image,
    run_create,
    validate_manifest,
)
from cxr_monai.visualize import save_png

HOLE = slice(4, 12)  # the 8 px hole of a 16 px fake patch
PHI = ("DOE^JANE", "DOE", "JANE", "PID12345")


# ----------------------------------------------------------------------------------------------------------------
# fake inputs


def fake_inference(folder: Path, stems=("chest_a", "chest_b", "chest_c"), patches: int = 3, seed: int = 0) -> Path:
    """An inference folder as InpaintingInference writes it: a 48x64 (rows x cols) working image per stem, 16 px
    patches cut at patch_box [x0, y0, x1, y1], inpainted copies with the centre 8 px replaced, all via save_png."""
    rng = np.random.default_rng(seed)
    rows = []
    for stem in stems:
        working = rng.random((48, 64)).astype(np.float32)
        image_path = save_png(working, folder / "images" / f"{stem}_image.png")
        for k in range(patches):
            x0, y0 = int(rng.integers(0, 64 - 16)), int(rng.integers(0, 48 - 16))
            original = working[y0:y0 + 16, x0:x0 + 16]
            inpainted = original.copy()
            inpainted[HOLE, HOLE] = rng.random((8, 8))
            note = f"patch_box {[x0, y0, x0 + 16, y0 + 16]}; box_label {'Nodule' if k % 2 else 'Mass'}"
            for kind, pixels in (("original", original), ("inpainted", inpainted),
                                 ("diff", np.abs(original - inpainted))):
                path = save_png(pixels, folder / "patches" / f"{stem}_{k}_{kind}.png")
                rows.append({"image": stem, "kind": kind, "patch": k, "path": path.relative_to(folder).as_posix(),
                             "note": note})
        rows.append({"image": stem, "kind": "image", "patch": "", "path": image_path.relative_to(folder).as_posix(),
                     "note": "64x48 px (working resolution)"})
    write_index(folder, rows)
    return folder


def write_index(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=("image", "kind", "patch", "path", "note"))
        writer.writeheader()
        writer.writerows(rows)


def write_dicom(path: Path, pixels: np.ndarray) -> Path:
    """A minimal 12-bit MONOCHROME2 CR DICOM carrying a patient name and id."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "CR", "DOE^JANE", "PID12345"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture()
def real_and_synthetic(tmp_path) -> dict:
    """Real images (3 Effusion, 2 Mass PNGs at 40x32, one unlabelled DICOM at 48x48 with a patient name and id) in a
    datalist's ``test`` section, and two pix2pix exports (4 and 3 images at 24x24, 16-bit, one box each)."""
    rng = np.random.default_rng(1)
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    entries = []
    for number, label in enumerate(["Effusion"] * 3 + ["Mass"] * 2):
        save_png(rng.random((40, 32)), real_dir / f"r{number}.png")
        entries.append({"image": f"real/r{number}.png", "boxes": [[2, 2, 10, 10]], "box_labels": [label], "label": 1})
    write_dicom(real_dir / "scan_005.dcm", rng.integers(0, 4096, (48, 48)))
    entries.append({"image": "real/scan_005.dcm", "label": 0})
    datalist = tmp_path / "real.json"
    datalist.write_text(json.dumps({"test": entries}))
    exports = {}
    for name, count in (("Pix2Pix", 4), ("Pix2Pix-N", 3)):
        export = tmp_path / name.lower()
        listing = []
        for number in range(count):
            path = write_png16(rng.random((24, 24)), export / "images" / f"{number:05d}_r{number}_box0_000.png")
            listing.append({"image": path.relative_to(export).as_posix(), "boxes": [[2, 2, 8, 8]],
                            "box_labels": ["Effusion" if number % 2 == 0 else "Mass"],
                            "source": str(real_dir / f"r{number}.png"), "synthetic": True})
        (export / "synthetic.json").write_text(json.dumps({"name": "x", "training": listing}))
        exports[name] = export
    return {"datalist": datalist, "exports": exports, "real_dir": real_dir}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_key(study: Path) -> list[dict]:
    return read_csv(study / "key.csv")


def study_png(study: Path, relative: str) -> np.ndarray:
    image = Image.open(study / relative)
    assert image.mode == "I;16", f"{relative} is not a 16-bit grey PNG ({image.mode})"
    return np.asarray(image)


def as_16bit(png_8bit: Path) -> np.ndarray:
    """The 16-bit values the study writes for an 8-bit PNG: v / 255 * 65535 = 257 v."""
    return np.asarray(Image.open(png_8bit)).astype(np.uint16) * 257


# ----------------------------------------------------------------------------------------------------------------
# 2AFC


def test_2afc_pairs_each_original_with_its_inpainted_patch(tmp_path):
    inference = fake_inference(tmp_path / "inference")
    study = create_2afc_study(inference, tmp_path / "study")
    manifest = json.loads((tmp_path / "study" / "study.json").read_text())
    assert study.trials == 9 and len(manifest["trials"]) == 9 and study.skipped == 0
    assert manifest["design"] == "2afc" and manifest["image_size"] is None
    assert manifest["created_from"] == [str(inference.resolve())]
    assert [t["id"] for t in manifest["trials"]] == [f"t{n:04d}" for n in range(1, 10)]
    validate_manifest(manifest, tmp_path / "study" / "study.json")
    key = {(row["trial"], row["role"]): row for row in read_key(tmp_path / "study")}
    for trial in manifest["trials"]:
        original, inpainted = key[trial["id"], "original"], key[trial["id"], "inpainted"]
        assert original["source"].endswith("_original.png")
        assert inpainted["source"] == original["source"].replace("_original.png", "_inpainted.png")
        assert trial["label"] == original["label"] == ("Nodule" if original["patch"] == "1" else "Mass")
        assert trial["group"] == "inpainted" and trial["images"]["original"] == original["image"]
        np.testing.assert_array_equal(study_png(tmp_path / "study", trial["images"]["original"]),
                                      as_16bit(Path(original["source"])))
        np.testing.assert_array_equal(study_png(tmp_path / "study", trial["images"]["inpainted"]),
                                      as_16bit(Path(inpainted["source"])))


def test_2afc_image_view_pastes_the_inpainted_patch_into_the_working_image(tmp_path, caplog):
    inference = fake_inference(tmp_path / "inference")
    with caplog.at_level(logging.WARNING):
        create_2afc_study(inference, tmp_path / "study", view="image", one_per_image=False)
    assert any("several trials" in message for message in caplog.messages)  # 3 patches per image
    manifest = json.loads((tmp_path / "study" / "study.json").read_text())
    key = {(row["trial"], row["role"]): row for row in read_key(tmp_path / "study")}
    for trial in manifest["trials"]:
        original_row = key[trial["id"], "original"]
        x0, y0, x1, y1 = json.loads(original_row["patch_box"])
        original = study_png(tmp_path / "study", trial["images"]["original"])
        inpainted = study_png(tmp_path / "study", trial["images"]["inpainted"])
        assert original.shape == inpainted.shape == (48, 64)
        np.testing.assert_array_equal(original, as_16bit(Path(original_row["source"])))  # the working image
        patch = as_16bit(Path(key[trial["id"], "inpainted"]["source"]))
        np.testing.assert_array_equal(inpainted[y0:y1, x0:x1], patch)
        outside = np.ones(original.shape, bool)
        outside[y0:y1, x0:x1] = False
        np.testing.assert_array_equal(inpainted[outside], original[outside])
        assert not np.array_equal(inpainted[y0:y1, x0:x1][HOLE, HOLE], original[y0:y1, x0:x1][HOLE, HOLE])
    # one working image per stem, shared by that stem's trials: 3 originals + 9 inpainted images
    assert len(list((tmp_path / "study" / "images").glob("*.png"))) == 3 + 9


def test_2afc_image_view_keeps_one_patch_per_image_by_default(tmp_path, caplog):
    inference = fake_inference(tmp_path / "inference")  # 3 images, 3 patches each
    with caplog.at_level(logging.WARNING):
        study = create_2afc_study(inference, tmp_path / "study", view="image", repeats=3)
    assert study.trials == 3 and not any("several trials" in message for message in caplog.messages)
    originals = [row["source"] for row in read_key(tmp_path / "study") if row["role"] == "original"]
    assert len(set(originals)) == 3  # no original shown in two trials
    again = create_2afc_study(inference, tmp_path / "again", view="image", repeats=3)
    patches = [[row["patch"] for row in read_key(made.folder) if row["role"] == "original"] for made in (study, again)]
    assert patches[0] == patches[1]  # the seeded draw picks the same patch of each image
    with pytest.raises(ValueError, match="3 images \\(one patch per image\\)"):
        create_2afc_study(inference, tmp_path / "four", view="image", trials=4)
    assert create_2afc_study(inference, tmp_path / "patches", view="patch").trials == 9  # patches: every one
    assert run_create(parse(["--inpainting", str(inference), "--out", str(tmp_path / "cli"), "--view", "image",
                             "--all-patches"])) == 0
    assert len(json.loads((tmp_path / "cli" / "study.json").read_text())["trials"]) == 9
    assert run_create(parse(["--inpainting", str(inference), "--out", str(tmp_path / "bad"), "--all-patches"])) == 2


def test_2afc_image_size_resizes_both_images_of_a_pair_alike(tmp_path):
    create_2afc_study(fake_inference(tmp_path / "inference"), tmp_path / "study", view="image", image_size=32)
    manifest = json.loads((tmp_path / "study" / "study.json").read_text())
    assert manifest["image_size"] == 32
    for trial in manifest["trials"]:
        shapes = {study_png(tmp_path / "study", path).shape for path in trial["images"].values()}
        assert shapes == {(24, 32)}  # longest side 32, aspect kept


def test_image_names_are_opaque_and_differ_between_studies(tmp_path):
    inference = fake_inference(tmp_path / "inference")
    first = create_2afc_study(inference, tmp_path / "one", seed=3)
    second = create_2afc_study(inference, tmp_path / "two", seed=3)
    names = [sorted(p.name for p in (study.folder / "images").iterdir()) for study in (first, second)]
    for listing in names:
        assert len(listing) == 18 and all(re.fullmatch(r"[0-9a-f]{16}\.png", name) for name in listing)
    assert not set(names[0]) & set(names[1])  # a per-study salt: the same pixels get another name
    study_json = (first.folder / "study.json").read_text()
    assert "chest_" not in study_json and "original" not in json.dumps(
        [list(t["images"].values()) for t in json.loads(study_json)["trials"]])
    sources = [[row["source"] for row in read_key(study.folder)] for study in (first, second)]
    assert sources[0] == sources[1]  # the same seed, the same trials in the same order


def test_trial_order_and_sample_are_seeded(tmp_path):
    inference = fake_inference(tmp_path / "inference")

    def trial_sources(seed: int, name: str, trials: int | None = None) -> list[str]:
        study = create_2afc_study(inference, tmp_path / name, seed=seed, trials=trials)
        return [row["source"] for row in read_key(study.folder) if row["role"] == "original"]

    assert trial_sources(0, "a") == trial_sources(0, "b")
    assert trial_sources(0, "a2") != trial_sources(1, "c")
    assert sorted(trial_sources(0, "d")) == sorted(trial_sources(1, "e"))  # all pairs either way
    sample = trial_sources(5, "f", trials=4)
    assert len(sample) == 4 == len(set(sample)) and sample == trial_sources(5, "g", trials=4)


def test_repeats_and_trials_are_checked(tmp_path):
    inference = fake_inference(tmp_path / "inference", stems=("a",), patches=2)
    assert json.loads((create_2afc_study(inference, tmp_path / "ok", repeats=2).manifest).read_text())["repeats"] == 2
    with pytest.raises(ValueError, match=r"repeats \(3\) cannot exceed the number of trials \(2\)"):
        create_2afc_study(inference, tmp_path / "s1", repeats=3)
    with pytest.raises(ValueError, match="repeats must be an integer >= 0"):
        create_2afc_study(inference, tmp_path / "s2", repeats=-1)
    with pytest.raises(ValueError, match="3 trials asked but index.csv has 2 pairs"):
        create_2afc_study(inference, tmp_path / "s3", trials=3)
    with pytest.raises(ValueError, match="view must be"):
        create_2afc_study(inference, tmp_path / "s4", view="full")
    assert not (tmp_path / "s1").exists()  # checked before anything is written


def test_an_existing_study_is_not_overwritten_and_its_answers_never(tmp_path):
    inference = fake_inference(tmp_path / "inference", stems=("a",), patches=2)
    study = create_2afc_study(inference, tmp_path / "study")
    first_token = (study.folder / "admin_token").read_text()
    for name in ("admin_token", "secret_key"):
        assert stat.S_IMODE((study.folder / name).stat().st_mode) == 0o600
        assert len((study.folder / name).read_text().strip()) >= 32
    with pytest.raises(FileExistsError, match="not empty.*overwrite"):
        create_2afc_study(inference, study.folder)
    create_2afc_study(inference, study.folder, overwrite=True)
    assert (study.folder / "admin_token").read_text() != first_token
    assert len(list((study.folder / "images").iterdir())) == 4  # the earlier study's images are gone
    (study.folder / "study.db").write_bytes(b"answers")
    with pytest.raises(FileExistsError, match="study.db.*answers are data"):
        create_2afc_study(inference, study.folder, overwrite=True)
    assert (study.folder / "study.db").read_bytes() == b"answers" and (study.folder / "study.json").is_file()


def test_an_inference_folder_without_originals_says_to_rerun_inference(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path / 'nothing'}: no index.csv"):
        create_2afc_study(tmp_path / "nothing", tmp_path / "study")
    old = fake_inference(tmp_path / "old", stems=("a",), patches=1)
    rows = [row for row in read_csv(old / "index.csv") if row["kind"] not in ("original", "image")]
    write_index(old, rows)
    with pytest.raises(ValueError, match=r"index.csv: no 'original' patches.*rerun the context encoder's inference"):
        create_2afc_study(old, tmp_path / "study")


def test_an_unreadable_patch_is_skipped_and_listed(tmp_path, caplog):
    inference = fake_inference(tmp_path / "inference", stems=("a", "b"), patches=2)
    broken = inference / "patches" / "b_1_inpainted.png"
    broken.write_bytes(b"not a png")
    (inference / "patches" / "a_0_original.png").unlink()
    with caplog.at_level(logging.WARNING):
        study = create_2afc_study(inference, tmp_path / "study")
    assert study.trials == 2 and study.skipped == 2
    skipped = read_csv(study.folder / "skipped.csv")
    assert sorted(row["image"] for row in skipped) == sorted(
        str(inference / "patches" / name) for name in ("a_0_original.png", "b_1_original.png"))
    assert all(row["reason"] for row in skipped)
    assert "b_1_inpainted.png" in next(row["reason"] for row in skipped if "b_1" in row["image"])
    assert any("a_0_original.png" in message for message in caplog.messages)
    for name in ("a_0_original.png", "b_1_original.png", "b_0_original.png", "a_1_original.png"):
        (inference / "patches" / name).write_bytes(b"")
    with pytest.raises(ValueError, match="no trial could be made"):
        create_2afc_study(inference, tmp_path / "empty")
    assert not (tmp_path / "empty" / "study.json").exists()


def test_image_view_without_a_working_image_skips_the_pair(tmp_path):
    inference = fake_inference(tmp_path / "inference", stems=("a", "b"), patches=1)
    write_index(inference, [row for row in read_csv(inference / "index.csv")
                            if not (row["kind"] == "image" and row["image"] == "b")])
    study = create_2afc_study(inference, tmp_path / "study", view="image")
    assert study.trials == 1
    reason = read_csv(study.folder / "skipped.csv")[0]["reason"]
    assert "no working image" in reason and "rerun inference" in reason


# ----------------------------------------------------------------------------------------------------------------
# the manifest


def good_manifest(design: str = "real_or_synthetic") -> dict:
    trial = ({"id": "t0001", "images": {"image": "images/0123456789abcdef.png"}, "truth": "real", "group": "real",
              "label": "Effusion"} if design == "real_or_synthetic" else
             {"id": "t0001", "images": {"original": "images/aa.png", "inpainted": "images/bb.png"},
              "group": "inpainted", "label": ""})
    return {"format": 1, "design": design, "title": "T", "instructions": "I", "seed": 0, "repeats": 1,
            "created": "2026-01-01T00:00:00+00:00", "created_from": ["/x"], "image_size": 256, "trials": [trial]}


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("design"), "'design' is missing"),
    (lambda m: m.update(format=2), "'format' is 2"),
    (lambda m: m.update(design="abx"), "'design' must be one of"),
    (lambda m: m.update(seed="0"), "'seed' must be an integer"),
    (lambda m: m.update(repeats=2), r"'repeats' must be an integer from 0 to the 1 trials"),
    (lambda m: m.update(trials=[]), "'trials' must be a non-empty list"),
    (lambda m: m.update(image_size=0), "'image_size' must be a positive integer"),
    (lambda m: m["trials"].append(dict(m["trials"][0])), "trial t0001: the id is used twice"),
    (lambda m: m["trials"][0].update(id="t 1"), "'id' must be letters"),
    (lambda m: m["trials"][0].update(images={"image": "../secret.png"}), "must be 'images/<name>.png'"),
    (lambda m: m["trials"][0].update(images={"original": "images/a.png"}), "'images' must name exactly image"),
    (lambda m: m["trials"][0].update(truth="fake"), "'truth' must be 'real' or 'synthetic'"),
    (lambda m: m["trials"][0].update(group="Pix2Pix"), "truth 'real' in group 'Pix2Pix'"),
    (lambda m: m["trials"][0].pop("label"), "'label' must be a string"),
])
def test_manifest_validation_names_the_file_and_the_problem(change, message):
    manifest = copy.deepcopy(good_manifest())
    assert validate_manifest(manifest, "s/study.json", check_files=False) == manifest
    change(manifest)
    with pytest.raises(ValueError, match=rf"^s/study.json: .*{message}"):
        validate_manifest(manifest, "s/study.json", check_files=False)


def test_manifest_validation_checks_the_images_exist(tmp_path):
    manifest = good_manifest("2afc")
    with pytest.raises(ValueError, match=r"image 'original' \(images/aa.png\) is missing"):
        validate_manifest(manifest, tmp_path / "study.json")
    (tmp_path / "images").mkdir()
    for name in ("aa", "bb"):
        (tmp_path / "images" / f"{name}.png").write_bytes(b"")
    validate_manifest(manifest, tmp_path / "study.json")


# ----------------------------------------------------------------------------------------------------------------
# real or synthetic


def test_real_or_synthetic_study_groups_labels_and_sizes(real_and_synthetic, tmp_path):
    study = create_real_or_synthetic_study(tmp_path / "study", real_and_synthetic["exports"],
                                           real_and_synthetic["datalist"], image_size=20)
    manifest = validate_manifest(json.loads(study.manifest.read_text()), study.manifest)
    assert manifest["design"] == "real_or_synthetic" and manifest["image_size"] == 20 and study.trials == 6 + 4 + 3
    groups = {}
    for trial in manifest["trials"]:
        groups.setdefault(trial["group"], []).append(trial)
        assert trial["truth"] == ("real" if trial["group"] == "real" else "synthetic")
        assert study_png(study.folder, trial["images"]["image"]).shape == (20, 20)
    assert {name: len(trials) for name, trials in groups.items()} == {"real": 6, "Pix2Pix": 4, "Pix2Pix-N": 3}
    assert sorted(t["label"] for t in groups["real"]) == ["", "Effusion", "Effusion", "Effusion", "Mass", "Mass"]
    assert sorted(t["label"] for t in groups["Pix2Pix-N"]) == ["Effusion", "Effusion", "Mass"]
    key = read_key(study.folder)
    made_from = {row["source"]: row["made_from"] for row in key if row["group"] == "Pix2Pix"}
    synthetic_png = real_and_synthetic["exports"]["Pix2Pix"] / "images" / "00001_r1_box0_000.png"
    assert made_from[str(synthetic_png)] == str(real_and_synthetic["real_dir"] / "r1.png")
    assert len({trial["group"] for trial in manifest["trials"][:6]}) > 1  # shuffled, not grouped


def test_no_dicom_field_reaches_the_study(real_and_synthetic, tmp_path):
    study = create_real_or_synthetic_study(tmp_path / "study", real_and_synthetic["exports"],
                                           real_and_synthetic["datalist"], image_size=16)
    dicom_trial = next(row for row in read_key(study.folder) if row["source"].endswith("scan_005.dcm"))
    assert study_png(study.folder, dicom_trial["image"]).shape == (16, 16)
    files = [path for path in study.folder.rglob("*") if path.is_file()]
    assert len(files) > 10
    for path in files:
        content = path.read_bytes()
        for text in PHI:
            assert text.encode() not in content, f"{text} found in {path}"
    for path in (study.folder / "images").iterdir():  # no text chunks (tEXt, zTXt, iTXt) in the PNGs
        assert not Image.open(path).info


def test_per_label_and_per_group_draw_seeded_samples(real_and_synthetic, tmp_path):
    def groups(name: str, **kwargs) -> dict:
        study = create_real_or_synthetic_study(tmp_path / name, real_and_synthetic["exports"],
                                               real_and_synthetic["datalist"], image_size=16, **kwargs)
        found: dict = {}
        for row in read_key(study.folder):
            found.setdefault(row["group"], []).append((row["label"], row["source"]))
        return found

    per_label = groups("a", per_label=1)
    assert sorted(label for label, _ in per_label["real"]) == ["", "Effusion", "Mass"]
    assert sorted(label for label, _ in per_label["Pix2Pix"]) == ["Effusion", "Mass"]
    per_group = groups("b", per_group=2, seed=4)
    assert {name: len(items) for name, items in per_group.items()} == {"real": 2, "Pix2Pix": 2, "Pix2Pix-N": 2}
    assert per_group == groups("c", per_group=2, seed=4)
    both = groups("d", per_group=2, per_label=1)
    assert all(len(items) == 2 and len({label for label, _ in items}) == 2 for items in both.values())


def test_an_unreadable_real_image_is_skipped_and_replaced(real_and_synthetic, tmp_path, caplog):
    (real_and_synthetic["real_dir"] / "r0.png").write_bytes(b"\x89PNG broken")
    with caplog.at_level(logging.WARNING):
        study = create_real_or_synthetic_study(tmp_path / "study", real_and_synthetic["exports"],
                                               real_and_synthetic["datalist"], per_group=3, image_size=16, seed=1)
    # seed 1 draws r4, r0, r2, r1: r0 is skipped, listed, and the next one drawn in its place
    skipped = read_csv(study.folder / "skipped.csv")
    assert [row["image"] for row in skipped] == [str(real_and_synthetic["real_dir"] / "r0.png")]
    assert any("r0.png" in message for message in caplog.messages)
    real = sorted(Path(row["source"]).name for row in read_key(study.folder) if row["group"] == "real")
    assert real == ["r1.png", "r2.png", "r4.png"]
    everything = create_real_or_synthetic_study(tmp_path / "all", real_and_synthetic["exports"],
                                                real_and_synthetic["datalist"], image_size=16)
    assert everything.skipped == 1 and everything.trials == 5 + 4 + 3


def test_real_or_synthetic_arguments_are_checked(real_and_synthetic, tmp_path):
    exports, datalist = real_and_synthetic["exports"], real_and_synthetic["datalist"]
    with pytest.raises(ValueError, match="not 'real'"):
        create_real_or_synthetic_study(tmp_path / "s", {"Real": exports["Pix2Pix"]}, datalist)
    with pytest.raises(FileNotFoundError, match="no synthetic.json"):
        create_real_or_synthetic_study(tmp_path / "s", {"Pix2Pix": tmp_path}, datalist)
    with pytest.raises(ValueError, match="image_size is required"):
        create_real_or_synthetic_study(tmp_path / "s", exports, datalist, image_size=None)
    with pytest.raises(ValueError, match=r"repeats \(7\) cannot exceed"):
        create_real_or_synthetic_study(tmp_path / "s", exports, datalist, per_group=2, repeats=7)


def test_resize_image_averages_when_shrinking():
    image = np.zeros((8, 8), np.float32)
    image[:4, :4] = 1.0
    np.testing.assert_allclose(resize_image(image, (2, 2)), [[1, 0], [0, 0]])
    assert resize_image(image, (16, 12)).shape == (16, 12)
    assert resize_image(image, (8, 8)) is image


# ----------------------------------------------------------------------------------------------------------------
# command line


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_create_arguments(parser)
    return parser.parse_args(argv)


def test_command_line_creates_both_designs(real_and_synthetic, tmp_path, capsys):
    inference = fake_inference(tmp_path / "inference", stems=("a",), patches=2)
    assert run_create(parse(["--out", str(tmp_path / "afc"), "--inpainting", str(inference), "--view", "image",
                             "--all-patches", "--repeats", "1", "--seed", "2"])) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "afc") in printed and "trials: 2" in printed and "admin_token" in printed
    exports = real_and_synthetic["exports"]
    argv = ["--out", str(tmp_path / "rs"), "--synthetic", f"Pix2Pix={exports['Pix2Pix']}", "--synthetic",
            f"Pix2Pix-N={exports['Pix2Pix-N']}", "--real", str(real_and_synthetic["datalist"]), "--per-group", "2",
            "--image-size", "16", "--title", "Real?"]
    assert run_create(parse(argv)) == 0
    manifest = json.loads((tmp_path / "rs" / "study.json").read_text())
    assert manifest["title"] == "Real?" and len(manifest["trials"]) == 6 and manifest["image_size"] == 16
    assert run_create(parse(argv)) == 2 and "not empty" in capsys.readouterr().err
    assert run_create(parse(argv[:6] + ["--out", str(tmp_path / "x")])) == 2
    assert "needs --real" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --inpainting and --synthetic exclude each other
        parse(["--out", "x", "--inpainting", "a", "--synthetic", "b=c"])


# ----------------------------------------------------------------------------------------------------------------
# end to end


@pytest.mark.slow
def test_2afc_study_from_a_real_inference_run(phantom_datalist, tmp_path):
    """InpaintingInference (untrained small generator, box-centred patches of the abnormal phantoms) -> both views."""
    import torch
    from monai.transforms import Compose

    from cxr_monai.apps.inpainting.inference import InpaintingInference
    from cxr_monai.data import load_datalist
    from cxr_monai.io import LoadCXRImaged
    from cxr_monai.networks import ContextEncoder
    from cxr_monai.transforms import BoxCenteredPatchd, LungBoxesd, ResizeToWorkingResolutiond

    torch.manual_seed(0)
    datalist = load_datalist(phantom_datalist, "test_unhealthy")
    preprocessing = Compose([
        LoadCXRImaged(keys=["image", "lung_mask"], ensure_channel_first=True, allow_missing_keys=True),
        ResizeToWorkingResolutiond(keys=["image", "lung_mask"], mode=["bilinear", "nearest-exact"],
                                   box_keys=["boxes", "lung_boxes"], longest_side=256, allow_missing_keys=True),
        LungBoxesd(),
    ])
    runner = InpaintingInference(ContextEncoder(base_channels=8, bottleneck_channels=16), datalist, preprocessing,
                                 tmp_path / "inference", BoxCenteredPatchd("image", box_key="boxes"),
                                 device="cpu", heatmaps=False)
    runner.run()
    boxes = sum(len(entry["boxes"]) for entry in datalist)
    patches = create_2afc_study(tmp_path / "inference", tmp_path / "patches", repeats=1)
    assert patches.trials == boxes and patches.skipped == 0
    images = create_2afc_study(tmp_path / "inference", tmp_path / "images", view="image", trials=2)
    manifest = json.loads(images.manifest.read_text())
    labels = {label for entry in datalist for label in entry["box_labels"]}
    for trial in manifest["trials"]:
        assert trial["label"] in labels
        original, inpainted = (study_png(images.folder, trial["images"][role]) for role in ("original", "inpainted"))
        assert original.shape == inpainted.shape == (256, 256)
        differs = np.argwhere(original != inpainted)
        assert len(differs) and (differs.max(0) - differs.min(0) < 64).all()  # only inside one 64 px hole
