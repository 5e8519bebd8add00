"""``python -m cxr_monai preview``: writes the reader's view as an 8-bit PNG, exit code 2 on bad input; several
files or folders in one process, one PNG each, a bad file named with its reason while the others are written."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxr_monai.io import SUFFIXES, preview



def run_preview(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="preview")
    preview.add_arguments(parser)
    return preview.run(parser.parse_args([str(a) for a in argv]))


def test_preview_writes_the_image_as_read(tmp_path, capsys):
    grey16 = np.tile(np.linspace(0, 65535, 40), (30, 1)).astype(np.uint16)  # 30 rows x 40 columns
    Image.fromarray(grey16).save(tmp_path / "in.png")
    out = tmp_path / "nested" / "out.png"
    assert run_preview(tmp_path / "in.png", "--out", out) == 0
    with Image.open(out) as written:
        assert written.mode == "L" and written.size == (40, 30)
        np.testing.assert_array_equal(np.asarray(written), np.rint(grey16 / 65535.0 * 255).astype(np.uint8))
    printed = capsys.readouterr().out
    assert "30 x 40 (rows x columns)" in printed
    assert "spacing:      unknown" in printed
    assert "MONOCHROME2" in printed and "lungs should look dark" in printed


def test_preview_warns_about_unscaled_12_bit_png(tmp_path, capsys):
    twelve_bit = np.tile(np.linspace(0, 4000, 40), (30, 1)).astype(np.uint16)  # raw 12-bit values in a 16-bit PNG
    Image.fromarray(twelve_bit).save(tmp_path / "raw12.png")
    assert run_preview(tmp_path / "raw12.png", "--out", tmp_path / "out.png") == 0
    printed = capsys.readouterr().out
    assert "values:       0.000 .. 0.061" in printed
    assert "warning:      this 16-bit PNG never exceeds 4000 of 65535" in printed
    Image.fromarray((twelve_bit * 16).astype(np.uint16)).save(tmp_path / "scaled.png")  # what PNG expects
    assert run_preview(tmp_path / "scaled.png", "--out", tmp_path / "out.png") == 0
    assert "warning" not in capsys.readouterr().out


def test_preview_downscales_keeping_aspect(tmp_path):
    Image.fromarray(np.full((300, 200), 77, dtype=np.uint8)).save(tmp_path / "in.png")
    assert run_preview(tmp_path / "in.png", "--out", tmp_path / "out.png", "--max-size", "60") == 0
    with Image.open(tmp_path / "out.png") as written:
        assert written.size == (40, 60)  # (width, height)
        np.testing.assert_array_equal(np.asarray(written), 77)


def test_preview_of_real_dicom_reports_spacing(tmp_path, capsys, shared_path):
    siim = shared_path("real-samples", "siim")
    dicoms = sorted(siim.glob("*.dcm"))
    if not dicoms:
        pytest.skip(f"no DICOM in {siim}")
    assert run_preview(dicoms[0], "--out", tmp_path / "siim.png", "--max-size", "256") == 0
    printed = capsys.readouterr().out
    assert "1024 x 1024 (rows x columns)" in printed
    assert "0.168 x 0.168 mm (row x col, from PixelSpacing)" in printed
    with Image.open(tmp_path / "siim.png") as written:
        assert written.size == (256, 256)


def test_preview_returns_2_on_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    out = tmp_path / "out.png"
    assert run_preview(bad, "--out", out) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {bad}: ") and "Traceback" not in captured.err
    assert not out.exists()


def test_max_size_must_be_positive(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run_preview(tmp_path / "in.png", "--out", tmp_path / "o.png", "--max-size", "0")
    assert exit_info.value.code == 2


def test_to_uint8_preview_rounds_and_clips():
    image = np.array([[0.0, 0.5, 1.0, 1.2, -0.1]], dtype=np.float32)
    np.testing.assert_array_equal(preview.to_uint8_preview(image), [[0, 128, 255, 255, 0]])


# ------------------------------------------------------------------------------------ several files or folders


def write_png(path: Path, value: int, shape: tuple[int, int] = (30, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)
    return path


def write_dicom_without_suffix(path: Path, value: int = 2048) -> Path:
    """A 12-bit MONOCHROME2 CR DICOM, named like a SOP Instance UID (no suffix)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "CR", 20, 24, 1
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MONOCHROME2", 16, 12, 11
    ds.PixelRepresentation, ds.PixelSpacing = 0, [0.5, 0.5]
    ds.PixelData = np.full((20, 24), value, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def read_index(out: Path) -> dict[str, dict[str, str]]:
    with open(out / preview.INDEX_NAME, newline="", encoding="utf-8") as f:
        return {Path(row["input"]).name: row for row in csv.DictReader(f)}


def test_folder_and_files_give_one_png_each_and_a_bad_file_is_named(tmp_path, capsys):
    folder = tmp_path / "screen"
    write_png(folder / "a.png", 10)
    write_png(folder / "sub" / "b.png", 200, shape=(50, 20))
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(folder / "sub" / "c.jpg")
    dicom = write_dicom_without_suffix(folder / "1.2.840.99.7")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "notes.txt").write_text("not an image, not a DICOM: skipped by the walk")
    write_png(folder / ".hidden" / "h.png", 1)
    extra = write_png(tmp_path / "elsewhere" / "d.png", 99)
    out = folder / "previews"  # inside the walked folder: not walked (a rerun must not preview the previews)
    write_png(out / "stale.png", 5)

    assert run_preview(folder, extra, "--out", out) == preview.EXIT_BAD_INPUT
    captured = capsys.readouterr()

    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["1.2.840.99.7.png", "a.png", "d.png", "stale.png", "sub/b.png", "sub/c.png"]
    with Image.open(out / "sub" / "b.png") as b:
        assert b.mode == "L" and b.size == (20, 50)
        np.testing.assert_array_equal(np.asarray(b), 200)
    with Image.open(out / "1.2.840.99.7.png") as d:
        np.testing.assert_array_equal(np.asarray(d), round(2048 / 4095 * 255))

    # the bad file: its name and the reason, on stderr and again in the summary, no traceback
    bad_lines = [line for line in captured.err.splitlines() if "broken.png" in line]
    assert bad_lines[0].startswith(f"error: {folder / 'broken.png'}: ") and len(bad_lines) == 2
    assert "Traceback" not in captured.err and "1 input(s) failed" in captured.err
    assert f"-> {out / 'sub' / 'c.png'}: jpeg 8 bits, 16 x 16" in captured.out
    assert "0.5 x 0.5 mm" in captured.out and f"wrote 5 of 6 previews to {out}" in captured.out

    index = read_index(out)
    assert set(index) == {"a.png", "b.png", "c.jpg", "1.2.840.99.7", "broken.png", "d.png"}
    assert index["b.png"]["preview"] == "sub/b.png" and index["b.png"]["rows"] == "50"
    assert index["1.2.840.99.7"]["format"] == "dicom" and index["1.2.840.99.7"]["pixel_spacing_mm"] == "0.5 x 0.5"
    assert index["broken.png"]["status"] == "failed" and index["broken.png"]["preview"] == ""
    assert index["broken.png"]["note"].startswith(f"{folder / 'broken.png'}: ")
    assert {row["status"] for name, row in index.items() if name != "broken.png"} == {"ok"}
    assert str(dicom) == index["1.2.840.99.7"]["input"]


def test_all_good_inputs_exit_0_and_clashing_names_get_numbered(tmp_path, capsys):
    write_png(tmp_path / "one" / "x.png", 1)
    Image.fromarray(np.full((8, 8), 2, dtype=np.uint8)).save(tmp_path / "one" / "x.jpg")
    write_png(tmp_path / "two" / "x.png", 3)
    out = tmp_path / "out"
    # the same file twice (by name and inside its folder) is previewed once
    assert run_preview(tmp_path / "one", tmp_path / "two" / "x.png", tmp_path / "one" / "x.png", "--out", out) == 0
    assert capsys.readouterr().err == ""
    with open(out / preview.INDEX_NAME, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(Path(row["input"]).parent.name, row["preview"], row["status"]) for row in rows] == [
        ("one", "x.png", "ok"), ("one", "x-2.png", "ok"), ("two", "x-3.png", "ok")]
    with Image.open(out / "x-3.png") as third:  # two/x.png, given last
        np.testing.assert_array_equal(np.asarray(third), 3)


def test_missing_input_and_empty_folder_are_reported_and_the_rest_is_written(tmp_path, capsys):
    good = write_png(tmp_path / "good.png", 50)
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    assert run_preview(tmp_path / "missing.dcm", tmp_path / "empty", good, "--out", out) == preview.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'missing.dcm'}: no such file or folder" in err
    assert f"error: {tmp_path / 'empty'}: no PNG, JPEG or DICOM files in this folder" in err
    assert (out / "good.png").exists()


def test_one_file_into_an_existing_folder(tmp_path, capsys):
    good = write_png(tmp_path / "good.png", 50)
    (tmp_path / "out").mkdir()
    assert run_preview(good, "--out", tmp_path / "out") == 0
    assert (tmp_path / "out" / "good.png").exists() and (tmp_path / "out" / preview.INDEX_NAME).exists()
    assert "wrote 1 of 1 previews" in capsys.readouterr().out


def test_one_file_into_a_new_folder_named_with_a_slash(tmp_path):
    good = write_png(tmp_path / "good.png", 50)
    assert run_preview(good, "--out", f"{tmp_path / 'new'}/") == 0
    assert (tmp_path / "new" / "good.png").is_file()


def test_several_inputs_refuse_a_png_as_out(tmp_path, capsys):
    a, b = write_png(tmp_path / "a.png", 1), write_png(tmp_path / "b.png", 2)
    assert run_preview(a, b, "--out", tmp_path / "both.png") == preview.EXIT_BAD_INPUT
    assert "need an output folder, not a .png file" in capsys.readouterr().err
    assert not (tmp_path / "both.png").exists()


def test_unwritable_preview_exits_1_after_the_others(tmp_path, capsys):
    write_png(tmp_path / "in" / "a.png", 1)
    write_png(tmp_path / "in" / "b.png", 2)
    out = tmp_path / "out"
    (out / "a.png").mkdir(parents=True)  # a folder where a.png must go: that write fails, b.png is still written
    assert run_preview(tmp_path / "in", "--out", out) == preview.EXIT_WRITE_FAILED
    assert f"error: {out / 'a.png'}: cannot write the preview" in capsys.readouterr().err
    assert (out / "b.png").is_file()


def test_find_images_sees_what_the_reader_reads(tmp_path):
    for suffix in SUFFIXES:
        (tmp_path / f"img{suffix.upper()}").write_bytes(b"")
    (tmp_path / "readme.md").write_text("no")
    assert sorted(p.suffix.lower() for p in preview.find_images(tmp_path)) == sorted(SUFFIXES)
