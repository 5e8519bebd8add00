"""``python -m cxr_monai preview``: writes the reader's view as an 8-bit PNG, exit code 2 on bad input."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_monai.io import preview

SIIM_FOLDER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-samples" / "siim"


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


def test_preview_of_real_dicom_reports_spacing(tmp_path, capsys):
    dicoms = sorted(SIIM_FOLDER.glob("*.dcm"))
    if not dicoms:
        pytest.skip(f"real sample data not available at {SIIM_FOLDER} (no ../shared/data in this checkout)")
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
