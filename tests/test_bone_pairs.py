"""Bone-suppression pairs (issue #11): the ``datalist bone-pairs`` builder and the ``BoneFromSoftTissue`` transforms.

Layouts are built small in tmp_path (PNG/JPEG with Pillow; one JSRT .IMG of 8 MB with numpy, in one test).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from cxr_monai import cli
from cxr_monai.data import build_bone_pair_datalist, load_datalist
from cxr_monai.data.datalist import SPLIT_KEYS, validate_datalist
from cxr_monai.transforms import (
    BoneFromSoftTissue,
    BoneFromSoftTissueD,
    BoneFromSoftTissued,
)

W, H = 48, 40  # non-square: a transposed counterpart would show


# ----------------------------------------------------------------------------------------------------------
# helpers


def save(path: Path, size: tuple[int, int] = (W, H), seed: int = 0, **kwargs) -> Path:
    """A random 8-bit grey image of ``size`` = (width, height) at ``path`` (format by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    Image.fromarray(values).save(path, **kwargs)
    return path


def layout(root: Path, stems, bone: bool = True, image_suffix: str = ".png") -> Path:
    """``root/images/<stem>.png`` with ``root/soft_tissue/<stem>.png`` and (``bone``) ``root/bones/<stem>.png``."""
    for number, stem in enumerate(stems):
        save(root / "images" / f"{stem}{image_suffix}", seed=number)
        save(root / "soft_tissue" / f"{stem}.png", seed=100 + number)
        if bone:
            save(root / "bones" / f"{stem}.png", seed=200 + number)
    return root


def entries(document: dict) -> list[dict]:
    return [entry for key in SPLIT_KEYS for entry in document[key]]


def split_of(document: dict) -> dict[str, str]:
    return {Path(entry["image"]).stem: key for key in SPLIT_KEYS for entry in document[key]}


def reasons(summary) -> dict[str, str]:
    return {Path(rejected.path).name: rejected.reason for rejected in summary.rejected}


# ----------------------------------------------------------------------------------------------------------
# pairing


def test_pairs_by_stem_across_folders_and_suffixes(tmp_path):
    root = layout(tmp_path / "set", ["p1", "p2", "p3"])
    save(root / "images" / "sub" / "P4.jpg", quality=95)  # nested, JPEG, another case than its counterparts
    save(root / "soft_tissue" / "p4.png")
    save(root / "bones" / "p4.PNG")
    (root / "images" / "notes.txt").write_text("not an image\n")
    out = tmp_path / "pairs.json"
    summary = build_bone_pair_datalist(root / "images", out, soft_tissue_dir=root / "soft_tissue",
                                       bone_dir=root / "bones", val_fraction=0, test_fraction=0)
    document = validate_datalist(out)
    assert summary.rejected == []
    assert document["name"] == "set"
    listed = {Path(entry["image"]).stem: entry for entry in entries(document)}
    assert listed["p1"] == {"image": "images/p1.png", "bone_suppressed": "soft_tissue/p1.png", "bone": "bones/p1.png"}
    assert listed["P4"] == {"image": "images/sub/P4.jpg", "bone_suppressed": "soft_tissue/p4.png",
                            "bone": "bones/p4.PNG"}
    assert len(document["training"]) == 4 and document["test_unhealthy"] == []
    assert any("ignored 1 files" in note and "notes.txt" in note for note in summary.notes)
    assert "4 of 4 images paired with their bone_suppressed and bone" in summary.notes

    loaded = load_datalist(out, "training", base_dir=root)  # the path keys are joined with base_dir
    first = next(entry for entry in loaded if entry["image"].endswith("p1.png"))
    assert first["bone"] == str(root / "bones" / "p1.png")
    assert first["bone_suppressed"] == str(root / "soft_tissue" / "p1.png")


def test_one_counterpart_folder_is_enough(tmp_path):
    root = layout(tmp_path / "set", ["a", "b"], bone=False)
    out = tmp_path / "soft.json"
    build_bone_pair_datalist(root / "images", out, soft_tissue_dir=root / "soft_tissue", test_fraction=0.4)
    assert all(set(entry) == {"image", "bone_suppressed"} for entry in entries(validate_datalist(out)))
    root = layout(tmp_path / "bones_only", ["a", "b"])
    build_bone_pair_datalist(root / "images", out, bone_dir=root / "bones", base_dir=tmp_path, name="b")
    document = validate_datalist(out)
    assert document["name"] == "b"
    assert {entry["bone"] for entry in entries(document)} == {"bones_only/bones/a.png", "bones_only/bones/b.png"}


def test_rejections_are_listed_with_their_reason_and_the_run_goes_on(tmp_path):
    root = layout(tmp_path / "set", ["ok1", "ok2", "no_soft", "no_bone", "small", "broken", "bad_soft"])
    (root / "soft_tissue" / "no_soft.png").unlink()
    (root / "bones" / "no_bone.png").unlink()
    save(root / "soft_tissue" / "orphan.png")  # no image of that stem
    save(root / "bones" / "small.png", size=(W // 2, H // 2))  # the same picture at half size
    save(root / "soft_tissue" / "small.png", size=(H, W))  # transposed
    raw = (root / "images" / "broken.png").read_bytes()
    (root / "images" / "broken.png").write_bytes(raw[: len(raw) // 2])  # a download cut short
    (root / "soft_tissue" / "bad_soft.png").write_bytes(b"")
    save(root / "images" / "twice.png")
    save(root / "images" / "sub" / "twice.jpg")
    save(root / "soft_tissue" / "twice.png")
    save(root / "bones" / "twice.png")

    out = tmp_path / "pairs.json"
    summary = build_bone_pair_datalist(root / "images", out, soft_tissue_dir=root / "soft_tissue",
                                       bone_dir=root / "bones", val_fraction=0, test_fraction=0)
    document = validate_datalist(out)
    assert sorted(split_of(document)) == ["ok1", "ok2"]
    why = reasons(summary)
    assert why["no_soft.png"].startswith("no soft-tissue image: no no_soft.* under ")
    assert why["no_bone.png"].startswith("no bone image: no no_bone.* under ")
    assert why["orphan.png"].startswith("soft-tissue image without radiograph: no image named orphan.* under ")
    assert why["small.png"] == (f"size mismatch: soft-tissue image small.png is {H}x{W} px, the image {W}x{H} px")
    assert why["broken.png"] == "unreadable image: truncated PNG: does not end with the IEND chunk"
    assert why["bad_soft.png"] == "unreadable soft-tissue image: bad_soft.png: empty file"
    assert why["twice.png"].startswith("ambiguous: 2 images named twice.*")
    assert why["twice.jpg"].startswith("ambiguous: 2 images named twice.*")
    assert len(summary.rejected) == 8
    assert "rejected: 8" in summary.format()
    assert "Rejected files left out: 8" in document["description"]

    # the bone image at half size: named with both sizes and the hint
    (root / "soft_tissue" / "small.png").unlink()
    save(root / "soft_tissue" / "small.png")
    summary = build_bone_pair_datalist(root / "images", out, soft_tissue_dir=root / "soft_tissue",
                                       bone_dir=root / "bones", val_fraction=0, test_fraction=0)
    assert reasons(summary)["small.png"] == (
        f"size mismatch: bone image small.png is {W // 2}x{H // 2} px, the image {W}x{H} px (one aspect ratio, 2x: "
        "bring both folders to one size first)")


def test_jsrt_img_pairs_with_a_png_of_its_size(tmp_path):
    root = tmp_path / "jsrt"
    images = root / "All247images"
    images.mkdir(parents=True)
    ramp = (np.arange(2048 * 2048, dtype=np.uint32) % 4096).astype(">u2")
    ramp.tofile(images / "JPCLN001.IMG")  # the headerless 8 MB format, as tests/test_reader.py writes it
    (images / "JPCNN001.IMG").write_bytes(b"\0" * 1000)  # not a JSRT file: a wrong byte size
    save(root / "BSE_JSRT" / "JPCLN001.png", size=(2048, 2048))
    save(root / "BSE_JSRT" / "JPCNN001.png", size=(2048, 2048))
    out = tmp_path / "jsrt.json"
    summary = build_bone_pair_datalist(images, out, soft_tissue_dir=root / "BSE_JSRT", val_fraction=0,
                                       test_fraction=0)
    assert entries(validate_datalist(out)) == [{"image": "All247images/JPCLN001.IMG",
                                                "bone_suppressed": "BSE_JSRT/JPCLN001.png"}]
    assert reasons(summary)["JPCNN001.IMG"].startswith("unreadable image: not a JSRT .IMG radiograph: the file has "
                                                       "1,000 bytes")

    (root / "BSE_JSRT" / "JPCLN001.png").unlink()
    save(root / "BSE_JSRT" / "jpcln001.png", size=(1024, 1024))  # a 1024 px BSE set: half the .IMG's size
    with pytest.raises(ValueError, match=r"not written, no usable image: 2 rejected \(first: .*JPCLN001.IMG: size "
                                         r"mismatch: soft-tissue image jpcln001.png is 1024x1024 px, the image "
                                         r"2048x2048 px \(one aspect ratio, 2x"):
        build_bone_pair_datalist(images, tmp_path / "none.json", soft_tissue_dir=root / "BSE_JSRT")
    assert not (tmp_path / "none.json").exists()


def test_folders_that_pair_nothing_or_are_not_apart_are_errors(tmp_path):
    root = layout(tmp_path / "set", ["a", "b"])
    save(root / "other" / "x1.png")
    out = tmp_path / "pairs.json"
    with pytest.raises(ValueError, match="soft_tissue_dir / bone_dir"):
        build_bone_pair_datalist(root / "images", out)
    with pytest.raises(ValueError) as error:
        build_bone_pair_datalist(root / "images", out, soft_tissue_dir=root / "soft_tissue", bone_dir=root / "other")
    message = str(error.value)
    assert str(root / "images") in message and str(root / "other") in message and "x1.png" in message
    assert str(root / "soft_tissue") not in message  # that one pairs
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match="no pair: none of the 0 images"):
        build_bone_pair_datalist(root / "empty", out, bone_dir=root / "bones")
    with pytest.raises(ValueError, match="need a folder each"):
        build_bone_pair_datalist(root / "images", out, soft_tissue_dir=root / "images")
    with pytest.raises(FileNotFoundError, match="bone image directory does not exist"):
        build_bone_pair_datalist(root / "images", out, bone_dir=root / "missing")
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------------
# split


def test_split_by_patient_keeps_each_patient_in_one_split(tmp_path):
    stems = [f"img{n:03d}" for n in range(60)]
    root = layout(tmp_path / "set", stems, bone=False)
    labels = root / "labels.csv"
    rows = [f"{stem}.png,0,pat{n // 3:02d}" for n, stem in enumerate(stems[:-1])]  # 3 images per patient
    rows.append("sub/gone.png,0,pat99")  # names no file
    labels.write_text("image,label,patient\n" + "\n".join(rows) + "\n")
    out = tmp_path / "pairs.json"
    summary = build_bone_pair_datalist(root / "images", out, soft_tissue_dir=root / "soft_tissue", labels=labels,
                                       seed=3)
    document = validate_datalist(out)
    assert "pat0" not in out.read_text()  # no patient ID written
    assert all(set(entry) == {"image", "bone_suppressed"} for entry in entries(document))  # nor the label column
    patient_of = {stem: f"pat{n // 3:02d}" for n, stem in enumerate(stems[:-1])}
    splits_of_patient: dict[str, set[str]] = {}
    for stem, split in split_of(document).items():
        splits_of_patient.setdefault(patient_of[stem], set()).add(split)
    assert all(len(splits) == 1 for splits in splits_of_patient.values())
    counts = Counter(split_of(document).values())
    assert counts["test"] >= 12 and counts["validation"] >= 6 and counts["training"] > 0
    assert sum(counts.values()) == 59
    assert summary.splits["test"].patients == counts["test"] // 3
    why = reasons(summary)
    assert why[f"{stems[-1]}.png"] == "no row in labels.csv"
    assert why["gone.png"].startswith("no such image: line 61 of labels.csv")
    assert any("split by patient (column 'patient' of labels.csv" in note for note in summary.notes)

    with pytest.raises(ValueError, match="no 'subject' column"):
        build_bone_pair_datalist(root / "images", out, soft_tissue_dir=root / "soft_tissue", labels=labels,
                                 patient_column="subject")


def test_split_is_per_image_without_labels_and_stable_under_rejections(tmp_path):
    root = layout(tmp_path / "set", [f"i{n:02d}" for n in range(30)], bone=False)
    out = tmp_path / "pairs.json"
    summary = build_bone_pair_datalist(root / "images", out, soft_tissue_dir=root / "soft_tissue")
    before = split_of(validate_datalist(out))
    assert Counter(before.values()) == {"training": 21, "test": 6, "validation": 3}
    assert summary.splits["training"].patients is None  # no patients known: one per image
    (root / "soft_tissue" / "i07.png").write_bytes(b"broken")
    build_bone_pair_datalist(root / "images", out, soft_tissue_dir=root / "soft_tissue")
    after = split_of(validate_datalist(out))
    assert "i07" not in after and after == {stem: split for stem, split in before.items() if stem != "i07"}


# ----------------------------------------------------------------------------------------------------------
# command line


def test_cli_bone_pairs(tmp_path, capsys, caplog):
    root = layout(tmp_path / "set", [f"c{n}" for n in range(10)])
    (root / "bones" / "c3.png").unlink()
    labels = root / "labels.csv"
    labels.write_text("image,patient\n" + "".join(f"c{n}.png,p{n // 2}\n" for n in range(10)))
    out = tmp_path / "cli.json"
    assert cli.main(["datalist", "bone-pairs", "--image-dir", str(root / "images"), "--soft-tissue-dir",
                     str(root / "soft_tissue"), "--bone-dir", str(root / "bones"), "--labels", str(labels),
                     "--out", str(out), "--val-fraction", "0.2", "--test-fraction", "0.2", "--seed", "1"]) == 0
    printed = capsys.readouterr()
    assert f"wrote {out}" in printed.out and "rejected: 1 (no bone image 1)" in printed.out
    assert "c3.png: no bone image: no c3.* under" in caplog.text  # logged as each file is rejected
    document = validate_datalist(out)
    assert len(entries(document)) == 9 and document["name"] == "set"

    assert cli.main(["datalist", "bone-pairs", "--image-dir", str(root / "images"), "--out", str(out)]) == 2
    assert "--soft-tissue-dir / --bone-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["datalist", "bone-pairs", "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "--soft-tissue-dir" in usage and "(default 0.1)" in usage and "(default 0.2)" in usage
    assert json.loads(out.read_text()) == document  # the failed run left the file as it was


def test_phantom_bone_pairs_build_as_the_phantom_lists_them(tmp_path):
    from cxr_monai.data import generate_phantoms

    phantom = tmp_path / "phantom"
    generate_phantoms(phantom, num_images=5, size=64, seed=0, bone_pairs=True)
    out = tmp_path / "pairs.json"
    summary = build_bone_pair_datalist(phantom / "images", out, soft_tissue_dir=phantom / "bone_suppressed",
                                       bone_dir=phantom / "bones")
    assert summary.rejected == []
    built = {entry["image"]: entry for entry in entries(validate_datalist(out))}
    listed = entries(json.loads((phantom / "datalist.json").read_text()))
    assert len(built) == len(listed) == 5
    for entry in listed:
        assert built[entry["image"]] == {key: entry[key] for key in ("image", "bone_suppressed", "bone")}


# ----------------------------------------------------------------------------------------------------------
# transforms


def test_bone_from_soft_tissue_values_types_and_shape_error():
    image = np.array([[[0.9, 0.5, 0.2, 1.0]]], dtype=np.float32)
    soft = np.array([[[0.6, 0.5, 0.3, 0.0]]], dtype=np.float32)
    bone = BoneFromSoftTissue()(image, soft)
    assert isinstance(bone, np.ndarray) and bone.dtype == np.float32
    np.testing.assert_allclose(bone, [[[0.3, 0.0, 0.0, 1.0]]], atol=1e-6)  # clipped at 0: never negative

    meta_image = MetaTensor(torch.from_numpy(image), meta={"filename_or_obj": "p1.png"})
    bone = BoneFromSoftTissue()(meta_image, torch.from_numpy(soft))
    assert isinstance(bone, MetaTensor) and bone.meta["filename_or_obj"] == "p1.png"
    np.testing.assert_allclose(bone.numpy(), [[[0.3, 0.0, 0.0, 1.0]]], atol=1e-6)
    assert BoneFromSoftTissue()(torch.tensor([[2.0]]), np.array([[0.5]])).item() == 1.0  # clipped at 1

    with pytest.raises(ValueError, match=r"shape \(1, 1, 4\)\) and its soft-tissue image \(shape \(1, 2, 2\)\)"):
        BoneFromSoftTissue()(image, np.zeros((1, 2, 2), dtype=np.float32))


def test_bone_from_soft_tissue_d_sets_bone_only_when_missing():
    image, soft = torch.tensor([[[0.8, 0.3]]]), torch.tensor([[[0.5, 0.4]]])
    item = {"image": image, "bone_suppressed": soft, "label": 0}
    out = BoneFromSoftTissued()(item)
    assert "bone" not in item  # the input item is not changed
    np.testing.assert_allclose(out["bone"].numpy(), [[[0.3, 0.0]]], atol=1e-6)
    assert out["image"] is image and out["bone_suppressed"] is soft

    stored = torch.tensor([[[0.1, 0.1]]])
    kept = BoneFromSoftTissued()({"image": image, "bone_suppressed": soft, "bone": stored})
    assert kept["bone"] is stored  # a bone image from a file is left alone
    assert BoneFromSoftTissued()({"image": image, "bone": stored})["bone"] is stored

    custom = BoneFromSoftTissueD(image_key="cxr", soft_tissue_key="soft", bone_key="target")(
        {"cxr": image, "soft": soft})
    np.testing.assert_allclose(custom["target"].numpy(), [[[0.3, 0.0]]], atol=1e-6)

    with pytest.raises(ValueError, match=r"neither 'bone' nor 'bone_suppressed'.*\(keys: image, label\)"):
        BoneFromSoftTissued()({"image": image, "label": 1})
    with pytest.raises(ValueError, match=r"'bone_suppressed' but no 'image'.*\(keys: bone_suppressed\)"):
        BoneFromSoftTissued()({"bone_suppressed": soft})
    with pytest.raises(ValueError, match="p2.png: the image"):
        BoneFromSoftTissued()({"image": MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "p2.png"}),
                               "bone_suppressed": torch.zeros(1, 2, 3)})
