"""CXRReader / read_cxr: real radiographs, the DICOM intensity chain, PNG/JPEG scaling, PHI, bad files, MONAI use."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage, LoadImaged
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxr_monai.io import (
    META_KEYS,
    CXRReader,
    CXRReadError,
    LoadCXRImage,
    LoadCXRImaged,
    is_cxr_file,
    read_cxr,
    stored_spacing,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_SAMPLES = SHARED_DATA / "real-samples"
CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"


# ------------------------------------------------------------------------------------------------ helpers


def real_sample(relative: str) -> Path:
    path = REAL_SAMPLES / relative
    if not path.exists():
        pytest.skip(f"real sample data not available at {path} (no ../shared/data in this checkout)")
    return path


def siim_dicom() -> Path:
    folder = real_sample("siim")
    return next(folder.glob("*.dcm"))


def pydicom_test_file(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} not available locally (install pydicom-data; tests never download)")
    return path


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                preamble: bool = True, **elements) -> Path:
    """A minimal CR DICOM with the given stored values; ``elements`` are set as data elements by keyword."""
    rows, columns = pixels.shape[-2:]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = CR_IMAGE_STORAGE, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(np.issubdtype(pixels.dtype, np.signedinteger))
    ds.PixelData = pixels.tobytes()
    for keyword, value in elements.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, implicit_vr=False, little_endian=True)  # bare data set, no 128-byte preamble
    return path


def lung_and_spine_means(image: np.ndarray) -> tuple[float, float, float]:
    """Mean of the right lung, left lung (about 30 % / 70 % of the width at 45 % height) and the spine."""
    height, width = image.shape

    def box_mean(centre_row: float, centre_col: float, half: float) -> float:
        r0, r1 = int((centre_row - half) * height), int((centre_row + half) * height)
        c0, c1 = int((centre_col - half) * width), int((centre_col + half) * width)
        return float(image[r0:r1, c0:c1].mean())

    return box_mean(0.45, 0.30, 0.04), box_mean(0.45, 0.70, 0.04), box_mean(0.45, 0.50, 0.03)


def assert_lungs_dark(image: np.ndarray) -> None:
    right_lung, left_lung, spine = lung_and_spine_means(image)
    assert right_lung < spine - 0.1 and left_lung < spine - 0.1, (right_lung, left_lung, spine)


def assert_unit_float(image: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.dtype == np.float32 and image.shape == shape
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.max() > image.min()


@pytest.fixture(scope="module")
def rg1_uncompressed() -> tuple[np.ndarray, dict]:
    return read_cxr(pydicom_test_file("RG1_UNCR.dcm"))


# ------------------------------------------------------------------------------------------------ real radiographs


def test_siim_jpeg_baseline_dicom():
    image, meta = read_cxr(siim_dicom())
    assert_unit_float(image, (1024, 1024))
    assert meta["format"] == "dicom" and meta["photometric_interpretation"] == "MONOCHROME2"
    assert meta["bits_stored"] == 8 and meta["intensity_mapping"] == "bits_stored"
    np.testing.assert_allclose(meta["pixel_spacing"], [0.168, 0.168])
    assert meta["pixel_spacing_source"] == "PixelSpacing"
    stored = pydicom.dcmread(siim_dicom()).pixel_array
    np.testing.assert_allclose(image, stored / 255.0, atol=1e-6)  # 8 bits stored, no VOI: /255, not min-max
    assert_lungs_dark(image)


@pytest.mark.parametrize("name", ["00000001_000.png", "00027426_000.png"])
def test_nih_png(name):
    path = real_sample(f"nih/{name}")
    image, meta = read_cxr(path)
    assert_unit_float(image, (512, 512))
    assert meta["format"] == "png" and meta["bits_stored"] == 8 and "pixel_spacing" not in meta
    with Image.open(path) as pil:
        np.testing.assert_array_equal(image, np.asarray(pil.convert("L"), dtype=np.float32) / 255.0)
    assert_lungs_dark(image)


def test_montgomery_jpeg():
    image, meta = read_cxr(real_sample("montgomery-like/1.jpg"))
    assert_unit_float(image, (512, 512))
    assert meta["format"] == "jpeg"
    assert_lungs_dark(image)


def test_rg1_monochrome1_is_inverted_so_lungs_are_dark(rg1_uncompressed):
    image, meta = rg1_uncompressed
    assert_unit_float(image, (1955, 1841))
    assert meta["photometric_interpretation"] == "MONOCHROME1" and meta["bits_stored"] == 15
    assert meta["intensity_mapping"] == "window"
    assert "pixel_spacing" not in meta  # the file's PixelSpacing is 0\0: unknown, not zero
    assert_lungs_dark(image)


def test_rg1_jpeg2000_lossy_agrees_with_uncompressed(rg1_uncompressed):
    uncompressed, _ = rg1_uncompressed
    jpeg2000, meta = read_cxr(pydicom_test_file("RG1_J2KI.dcm"))
    assert jpeg2000.shape == uncompressed.shape and meta["photometric_interpretation"] == "MONOCHROME1"
    difference = np.abs(jpeg2000 - uncompressed)
    # J2KI is lossy: measured mean 0.0017, 99th percentile 0.0056 of the [0, 1] range
    assert difference.mean() < 0.005 and np.percentile(difference, 99) < 0.02


@pytest.mark.parametrize(
    "compressed", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
)
def test_lossless_transfer_syntaxes_match_uncompressed(compressed):
    reference, reference_meta = read_cxr(pydicom_test_file("MR_small.dcm"))  # signed 16-bit with a window
    image, meta = read_cxr(pydicom_test_file(compressed))
    np.testing.assert_array_equal(image, reference)
    for key in ("bits_stored", "photometric_interpretation", "intensity_mapping"):
        assert meta[key] == reference_meta[key]


# ------------------------------------------------------------------------------------------------ DICOM intensity chain

STORED_12_BIT = np.array([[0, 400, 999, 1000], [1500, 1600, 2048, 4095]], dtype=np.uint16)


def test_no_voi_maps_the_bits_stored_range(tmp_path):
    image, meta = read_cxr(write_dicom(tmp_path / "a.dcm", STORED_12_BIT))
    np.testing.assert_allclose(image, STORED_12_BIT / 4095.0, atol=1e-7)
    assert meta["intensity_mapping"] == "bits_stored" and meta["bits_stored"] == 12
    ten_bit = np.array([[0, 512], [1000, 1023]], dtype=np.uint16)
    image, _ = read_cxr(write_dicom(tmp_path / "b.dcm", ten_bit, bits_stored=10))
    np.testing.assert_allclose(image, ten_bit / 1023.0, atol=1e-7)


def test_signed_pixels_map_from_the_lowest_stored_value(tmp_path):
    signed = np.array([[-2048, 0], [1, 2047]], dtype=np.int16)
    image, _ = read_cxr(write_dicom(tmp_path / "s.dcm", signed))
    np.testing.assert_allclose(image, (signed + 2048) / 4095.0, atol=1e-7)


def linear_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR) scaled to [0, 1]."""
    return np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_window_centre_width_is_applied(tmp_path):
    image, meta = read_cxr(write_dicom(tmp_path / "w.dcm", STORED_12_BIT, WindowCenter=1000, WindowWidth=1001))
    assert meta["intensity_mapping"] == "window"
    np.testing.assert_allclose(image, linear_window(STORED_12_BIT.astype(float), 1000, 1001), atol=1e-6)
    assert image[0, 1] == 0.0 and image[1, 1] == 1.0  # outside the window: clipped, not stretched
    ignored, meta = read_cxr(tmp_path / "w.dcm", apply_voi=False)
    np.testing.assert_allclose(ignored, STORED_12_BIT / 4095.0, atol=1e-7)
    assert meta["intensity_mapping"] == "bits_stored"


def test_rescale_is_applied_before_the_window(tmp_path):
    path = write_dicom(tmp_path / "r.dcm", STORED_12_BIT, RescaleSlope=2, RescaleIntercept=-1024,
                       WindowCenter=1000, WindowWidth=2001)
    image, _ = read_cxr(path)
    np.testing.assert_allclose(image, linear_window(STORED_12_BIT * 2.0 - 1024, 1000, 2001), atol=1e-6)


def test_voi_lut_sequence_is_applied_and_scaled_by_its_own_range(tmp_path):
    lut = np.round(40000 * (np.arange(4096) / 4095.0) ** 0.5).astype(np.uint16)  # declared 16 bit, max 40000
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor: entries, first mapped value, bits
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data
    path = write_dicom(tmp_path / "v.dcm", STORED_12_BIT, VOILUTSequence=DicomSequence([item]),
                       WindowCenter=100, WindowWidth=10)
    image, meta = read_cxr(path)
    assert meta["intensity_mapping"] == "voi_lut"  # the LUT wins over the window, as in pydicom
    np.testing.assert_allclose(image, lut[STORED_12_BIT] / 40000.0, atol=1e-6)


def test_real_voi_lut_file():
    path = pydicom_test_file("vlut_04.dcm")
    image, meta = read_cxr(path)
    ds = pydicom.dcmread(path)
    expected = pydicom.pixels.apply_voi(ds.pixel_array, ds) / 65535.0  # its 16-bit LUT spans 0..65535
    assert meta["intensity_mapping"] == "voi_lut"
    np.testing.assert_allclose(image, expected, atol=1e-6)


@pytest.mark.parametrize("window", [{}, {"WindowCenter": 1000, "WindowWidth": 1001}])
def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path, window):
    mono2, _ = read_cxr(write_dicom(tmp_path / "m2.dcm", STORED_12_BIT, "MONOCHROME2", **window))
    mono1, meta = read_cxr(write_dicom(tmp_path / "m1.dcm", STORED_12_BIT, "MONOCHROME1", **window))
    assert meta["photometric_interpretation"] == "MONOCHROME1"
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-7)
    assert mono1[1, 3] == 0.0  # the highest stored value is black in MONOCHROME1


def test_pixel_spacing_sources(tmp_path):
    pixels = np.zeros((4, 6), dtype=np.uint16)
    _, meta = read_cxr(write_dicom(tmp_path / "p.dcm", pixels, PixelSpacing=[0.2, 0.1], ImagerPixelSpacing=[9, 9]))
    np.testing.assert_allclose(meta["pixel_spacing"], [0.2, 0.1])
    assert meta["pixel_spacing_source"] == "PixelSpacing"
    np.testing.assert_allclose(meta["affine"], np.diag([0.2, 0.1, 1.0]))
    _, meta = read_cxr(write_dicom(tmp_path / "i.dcm", pixels, PixelSpacing=[0, 0], ImagerPixelSpacing=[0.15, 0.14]))
    np.testing.assert_allclose(meta["pixel_spacing"], [0.15, 0.14])
    assert meta["pixel_spacing_source"] == "ImagerPixelSpacing"
    _, meta = read_cxr(write_dicom(tmp_path / "n.dcm", pixels))
    assert "pixel_spacing" not in meta and "pixel_spacing_source" not in meta
    np.testing.assert_array_equal(meta["affine"], np.eye(3))
    # the header-only reading agrees with the reader's meta
    assert stored_spacing(tmp_path / "p.dcm") == ((0.2, 0.1), "PixelSpacing")
    assert stored_spacing(tmp_path / "i.dcm") == ((0.15, 0.14), "ImagerPixelSpacing")
    assert stored_spacing(tmp_path / "n.dcm") == (None, None)
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "p.png")
    assert stored_spacing(tmp_path / "p.png") == (None, None) and "pixel_spacing" not in read_cxr(tmp_path / "p.png")[1]
    (tmp_path / "x.txt").write_text("text")
    with pytest.raises(CXRReadError, match=r"x\.txt: not a PNG, JPEG or DICOM file"):
        stored_spacing(tmp_path / "x.txt")


def test_dicom_without_preamble_or_suffix(tmp_path):
    bare = write_dicom(tmp_path / "bare.dcm", STORED_12_BIT, preamble=False)
    assert bare.read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(read_cxr(bare)[0], STORED_12_BIT / 4095.0, atol=1e-7)
    uid_named = write_dicom(tmp_path / "1.2.826.0.1.3680043.8.498.1", STORED_12_BIT)  # suffix ".1"
    np.testing.assert_allclose(read_cxr(uid_named)[0], STORED_12_BIT / 4095.0, atol=1e-7)


# ------------------------------------------------------------------------------------------------ PHI

PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-4711-0815",
    "PatientBirthDate": "19610203",
    "PatientSex": "F",
    "PatientAddress": "12 Example Street",
    "AccessionNumber": "ACC-99812",
    "InstitutionName": "St Example Hospital",
    "InstitutionAddress": "1 Hospital Road",
    "ReferringPhysicianName": "House^Gregory",
    "OperatorsName": "Tech^Tina",
    "StudyDate": "20240105",
    "StudyTime": "101112",
    "StudyID": "STUDY-777",
    "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.4711",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.4712",
    "DeviceSerialNumber": "SN-123456",
}


def assert_no_phi(meta: dict) -> None:
    assert set(map(str, meta)) <= set(map(str, META_KEYS)), set(map(str, meta)) - set(map(str, META_KEYS))
    text = repr({str(key): value for key, value in meta.items()})
    for keyword, value in PHI.items():
        if len(value) > 1:  # PatientSex "F" would match any repr
            assert value.split("^")[0] not in text, f"{keyword} leaked into the meta"


def test_no_phi_in_meta(tmp_path):
    path = write_dicom(tmp_path / "chest.dcm", STORED_12_BIT, PixelSpacing=[0.2, 0.2], **PHI)
    assert pydicom.dcmread(path).PatientName == "Doe^Jane"  # the PHI is really in the file
    _, meta = read_cxr(path)
    assert_no_phi(meta)
    image = LoadImage(reader=CXRReader())(path)
    assert isinstance(image, MetaTensor)
    assert_no_phi(image.meta)
    sample = LoadImaged(keys="image", reader=CXRReader(), image_only=False)({"image": str(path)})
    assert_no_phi(sample["image_meta_dict"])
    assert_no_phi(sample["image"].meta)


# ------------------------------------------------------------------------------------------------ PNG / JPEG


def test_png_8_and_16_bit_scale_by_bit_depth_not_min_max(tmp_path):
    grey8 = np.array([[50, 60], [70, 100]], dtype=np.uint8)
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    image, meta = read_cxr(tmp_path / "g8.png")
    np.testing.assert_allclose(image, grey8 / 255.0, atol=1e-7)
    assert meta["bits_stored"] == 8 and meta["photometric_interpretation"] == "MONOCHROME2"

    grey16 = np.array([[0, 1, 300, 1000], [30000, 40000, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as pil:
        assert pil.mode == "I;16"  # really a 16-bit grey PNG
    image, meta = read_cxr(tmp_path / "g16.png")
    np.testing.assert_allclose(image, grey16 / 65535.0, rtol=0, atol=1e-7)
    assert meta["bits_stored"] == 16 and image.dtype == np.float32


def test_rgb_and_rgba_png_become_luma_and_drop_alpha(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, size=(5, 7, 1), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.concatenate([rgb, alpha], axis=-1)).save(tmp_path / "rgba.png")
    expected = (rgb @ np.array([0.299, 0.587, 0.114])) / 255.0
    from_rgb, meta = read_cxr(tmp_path / "rgb.png")
    from_rgba, _ = read_cxr(tmp_path / "rgba.png")
    np.testing.assert_allclose(from_rgb, expected, atol=1e-6)
    np.testing.assert_array_equal(from_rgba, from_rgb)
    assert from_rgb.shape == (5, 7) and meta["photometric_interpretation"] == "RGB"


def write_png_16_bit(path: Path, samples: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour): colour type 2 = RGB, 6 = RGBA."""
    height, width = samples.shape[:2]
    rows = samples.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize("colour_type, n_channels", [(2, 3), (6, 4)])
def test_16_bit_colour_png_keeps_its_scale(tmp_path, colour_type, n_channels):
    grey = np.array([[0, 1000, 30000], [40000, 60000, 65535]], dtype=np.uint16)
    write_png_16_bit(tmp_path / "c16.png", np.repeat(grey[..., None], n_channels, axis=-1), colour_type)
    image, _ = read_cxr(tmp_path / "c16.png")
    np.testing.assert_allclose(image, grey / 65535.0, atol=1 / 255)  # Pillow keeps 8 of the 16 bits


def test_grey_rgb_png_equals_grey_png(tmp_path):
    grey = np.arange(0, 256, 4, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(np.repeat(grey[..., None], 3, axis=-1)).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(read_cxr(tmp_path / "rgb.png")[0], grey / 255.0, atol=1e-6)


def test_jpeg_round_trip_and_content_sniffing(tmp_path):
    gradient = np.tile(np.linspace(20, 230, 64), (48, 1)).astype(np.uint8)
    Image.fromarray(gradient).save(tmp_path / "g.jpg", quality=95)
    Image.fromarray(gradient).save(tmp_path / "really_a_jpeg.png", format="JPEG", quality=95)
    image, meta = read_cxr(tmp_path / "g.jpg")
    assert image.shape == (48, 64) and meta["format"] == "jpeg"
    np.testing.assert_allclose(image, gradient / 255.0, atol=3 / 255)
    assert read_cxr(tmp_path / "really_a_jpeg.png")[1]["format"] == "jpeg"


# ------------------------------------------------------------------------------------------------ bad files


def png_with_zero_width() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:20] = struct.pack(">I", 0)  # IHDR width; keep the chunk CRC valid so only the size is wrong
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def truncated(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


def make_bad_file(kind: str, folder: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8)
    pixels = STORED_12_BIT
    if kind == "truncated_png":
        Image.fromarray(noise).save(folder / "full.png")
        (folder / "scan.png").write_bytes(truncated(folder / "full.png"))
        return folder / "scan.png"
    if kind == "truncated_jpeg":
        Image.fromarray(noise).save(folder / "full.jpg")
        (folder / "scan.jpg").write_bytes(truncated(folder / "full.jpg"))
        return folder / "scan.jpg"
    if kind == "zero_size_png":
        (folder / "scan.png").write_bytes(png_with_zero_width())
        return folder / "scan.png"
    if kind == "not_an_image":
        (folder / "scan.png").write_text("patient list, not an image\n")
        return folder / "scan.png"
    if kind == "empty":
        (folder / "scan.jpg").write_bytes(b"")
        return folder / "scan.jpg"
    if kind == "missing":
        return folder / "scan.dcm"
    if kind == "text_named_dcm":
        (folder / "scan.dcm").write_text("not dicom\n" * 30)
        return folder / "scan.dcm"
    if kind == "no_pixel_data":
        return write_dicom(folder / "scan.dcm", pixels, PixelData=None)
    if kind == "truncated_pixel_data":
        return write_dicom(folder / "scan.dcm", pixels, PixelData=pixels.tobytes()[:-6])
    if kind == "zero_size_dicom":
        return write_dicom(folder / "scan.dcm", np.zeros((0, 4), dtype=np.uint16))
    if kind == "palette_color":
        return write_dicom(folder / "scan.dcm", pixels, "PALETTE COLOR")
    if kind == "ybr_three_samples":
        rgb = np.zeros((2, 4, 3), dtype=np.uint8)
        return write_dicom(folder / "scan.dcm", rgb.reshape(2, 12), "YBR_FULL", bits_stored=8, Columns=4,
                           SamplesPerPixel=3, PlanarConfiguration=0)
    if kind == "multi_frame":
        return write_dicom(folder / "scan.dcm", np.stack([pixels, pixels]), NumberOfFrames=2)
    if kind == "32_bit":
        return write_dicom(folder / "scan.dcm", pixels.astype(np.uint32), bits_stored=32)
    raise ValueError(kind)


BAD_FILES = {
    "truncated_png": "cannot decode PNG",
    "truncated_jpeg": "cannot decode JPEG",
    "zero_size_png": "cannot decode PNG",
    "not_an_image": "not a PNG, JPEG or DICOM file",
    "empty": "file is empty",
    "missing": "file not found",
    "text_named_dcm": "not a DICOM image",
    "no_pixel_data": "no pixel data",
    "truncated_pixel_data": "cannot decode the pixel data",
    "zero_size_dicom": "zero-size image",
    "palette_color": "PALETTE COLOR",
    "ybr_three_samples": "YBR_FULL with 3 sample(s)",
    "multi_frame": "multi-frame DICOM (2 frames)",
    "32_bit": "unsupported bit depth",
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_raises_cxr_read_error_naming_the_file(tmp_path, kind):
    path = make_bad_file(kind, tmp_path)
    with pytest.raises(CXRReadError) as error:
        read_cxr(path)
    message = str(error.value)
    assert message.startswith(f"{path}: "), message
    assert BAD_FILES[kind] in message, message
    assert isinstance(error.value, ValueError)


def test_bad_file_is_not_rescued_by_monai_fallback_readers(tmp_path):
    path = make_bad_file("palette_color", tmp_path)
    with pytest.raises(CXRReadError, match="PALETTE COLOR"):
        LoadCXRImage()(path)
    with pytest.raises(CXRReadError, match="PALETTE COLOR"):
        LoadCXRImaged(keys="image")({"image": path})


# ------------------------------------------------------------------------------------------------ MONAI integration


def test_verify_suffix(tmp_path):
    reader = CXRReader()
    for name in ["a.dcm", "a.DICOM", "a.png", "a.jpg", "A.JPEG"]:
        assert reader.verify_suffix(tmp_path / name), name  # by suffix, before the file exists
    uid_named = write_dicom(tmp_path / "1.2.840.113619.2.55", STORED_12_BIT)
    no_suffix = write_dicom(tmp_path / "IM0001", STORED_12_BIT)
    assert reader.verify_suffix(uid_named) and reader.verify_suffix(no_suffix)
    assert reader.verify_suffix([str(no_suffix), tmp_path / "b.png"])
    (tmp_path / "IM0002").write_bytes(b"\0" * 200)
    assert not reader.verify_suffix(tmp_path / "IM0002")
    assert not reader.verify_suffix(tmp_path / "a.nii.gz")
    assert not reader.verify_suffix([no_suffix, tmp_path / "notes.txt"])
    assert is_cxr_file(no_suffix) and not is_cxr_file(tmp_path / "missing")


def test_load_imaged_channel_first_keeps_rows_as_height(tmp_path):
    image = np.zeros((30, 50), dtype=np.uint8)  # non-square: a transpose would show
    image[3, 40] = 255
    Image.fromarray(image).save(tmp_path / "wide.png")
    stored = np.zeros((20, 36), dtype=np.uint16)
    stored[2, 30] = 4095
    dicom = write_dicom(tmp_path / "wide.dcm", stored, PixelSpacing=[0.2, 0.1])

    for loader in (LoadImaged(keys=["image", "dicom"], reader=CXRReader(), ensure_channel_first=True),
                   LoadCXRImaged(keys=["image", "dicom"], ensure_channel_first=True)):
        sample = loader({"image": str(tmp_path / "wide.png"), "dicom": dicom})
        assert sample["image"].shape == (1, 30, 50) and sample["dicom"].shape == (1, 20, 36)
        assert sample["image"].dtype == sample["dicom"].dtype == torch.float32
        np.testing.assert_array_equal(np.argwhere(sample["image"][0].numpy() == 1.0), [[3, 40]])
        np.testing.assert_array_equal(np.argwhere(sample["dicom"][0].numpy() == 1.0), [[2, 30]])
        np.testing.assert_allclose(sample["dicom"].pixdim, [0.2, 0.1])
        np.testing.assert_array_equal(sample["image"].meta["spatial_shape"], [30, 50])


def test_load_image_by_dotted_name_and_plain_shape(tmp_path):
    Image.fromarray(np.full((6, 9), 128, dtype=np.uint8)).save(tmp_path / "a.png")
    image = LoadImage(reader="cxr_monai.io.CXRReader")(tmp_path / "a.png")
    assert image.shape == (6, 9) and image.meta["original_channel_dim"] == "no_channel"


def test_list_of_files_stacks_as_channels(tmp_path):
    for name, value in [("a.png", 10), ("b.png", 200)]:
        Image.fromarray(np.full((6, 9), value, dtype=np.uint8)).save(tmp_path / name)
    Image.fromarray(np.zeros((5, 9), dtype=np.uint8)).save(tmp_path / "c.png")
    stacked = LoadCXRImage(ensure_channel_first=True)([tmp_path / "a.png", tmp_path / "b.png"])
    assert stacked.shape == (2, 6, 9)
    np.testing.assert_allclose(stacked[:, 0, 0].numpy(), [10 / 255, 200 / 255], atol=1e-7)
    with pytest.raises(ValueError, match="different shapes"):
        LoadCXRImage()([tmp_path / "a.png", tmp_path / "c.png"])


# ------------------------------------------------------------------------------------------------ JSRT .IMG


def write_jsrt(path: Path, raw: np.ndarray | None = None) -> tuple[Path, np.ndarray]:
    """A synthetic JSRT file: 2048 x 2048 values (default: a 12-bit ramp) as big-endian 16-bit words, no header."""
    if raw is None:
        raw = (np.arange(2048 * 2048, dtype=np.uint32) % 4096).astype(np.uint16).reshape(2048, 2048)
    raw.astype(">u2").tofile(path)
    return path, raw


def test_jsrt_img_reads_as_one_minus_raw_over_4095_with_its_spacing(tmp_path):
    raw = np.full((2048, 2048), 1000, dtype=np.uint16)
    raw[100:400, 200:900] = 4095  # lungs: bright in the stored values, dark once read
    raw[5, 7] = 0
    path, _ = write_jsrt(tmp_path / "JPCLN001.IMG", raw)
    assert path.stat().st_size == 8_388_608
    image, meta = read_cxr(path)
    assert image.dtype == np.float32 and image.shape == (2048, 2048)
    np.testing.assert_allclose(image, 1.0 - raw / 4095.0, atol=1e-6)
    assert image[150, 300] == 0.0 and image[5, 7] == 1.0 and 0.0 <= image.min() and image.max() <= 1.0
    assert set(meta) <= META_KEYS
    assert meta["format"] == "jsrt" and meta["bits_stored"] == 12
    assert meta["photometric_interpretation"] == "MONOCHROME1" and meta["intensity_mapping"] == "bits_stored"
    np.testing.assert_allclose(meta["pixel_spacing"], [0.175, 0.175])
    assert meta["pixel_spacing_source"] == "jsrt_specification"
    assert stored_spacing(path) == ((0.175, 0.175), "jsrt_specification")

    sample = LoadCXRImaged(keys="image", ensure_channel_first=True)({"image": str(path)})
    assert sample["image"].shape == (1, 2048, 2048)
    np.testing.assert_allclose(sample["image"].pixdim, [0.175, 0.175])
    np.testing.assert_allclose(sample["image"][0, 150, 300].item(), 0.0)


def test_jsrt_img_is_recognised_by_name_and_sized_without_decoding(tmp_path, monkeypatch):
    from cxr_monai.io import SUFFIXES, stored_size

    path, _ = write_jsrt(tmp_path / "JPCNN001.IMG")
    assert ".img" in SUFFIXES and is_cxr_file(path) and is_cxr_file(tmp_path / "jpcnn002.img")
    assert CXRReader().verify_suffix([path, tmp_path / "a.png"])

    def no_decode(*args, **kwargs):
        raise AssertionError("stored_size decoded the pixels")

    monkeypatch.setattr(np, "fromfile", no_decode)
    assert stored_size(path) == (2048, 2048)


def test_jsrt_img_of_the_wrong_size_or_values_is_refused_naming_file_and_reason(tmp_path):
    from cxr_monai.io import stored_size

    short = tmp_path / "JPCLN002.IMG"
    short.write_bytes(b"\0\1" * 1000)
    for call in (read_cxr, stored_size):
        with pytest.raises(CXRReadError) as error:
            call(short)
        assert str(error.value).startswith(f"{short}: ") and "2,000 bytes" in str(error.value)
        assert "8,388,608" in str(error.value)

    raw = np.zeros((2048, 2048), dtype=np.uint16)
    raw[0, :3] = [4096, 5000, 4095]
    path, _ = write_jsrt(tmp_path / "JPCLN003.IMG", raw)
    with pytest.raises(CXRReadError, match=r"JPCLN003\.IMG: not JSRT 12-bit data: 2 values above 4095 \(highest 5000"):
        read_cxr(path)

    little_endian = tmp_path / "JPCLN004.IMG"
    np.full((2048, 2048), 1000, dtype="<u2").tofile(little_endian)  # 1000 byte-swapped is 59395
    with pytest.raises(CXRReadError, match="byte-swapped"):
        read_cxr(little_endian)

    (tmp_path / "empty.img").write_bytes(b"")
    with pytest.raises(CXRReadError, match="file is empty"):
        read_cxr(tmp_path / "empty.img")
    (tmp_path / "brain.hdr").write_bytes(b"\0" * 348)
    (tmp_path / "brain.img").write_bytes(b"\0" * 4096)
    with pytest.raises(CXRReadError, match="Analyze"):
        read_cxr(tmp_path / "brain.img")


def test_png_named_img_still_reads_as_png(tmp_path):
    Image.fromarray(np.full((6, 9), 255, dtype=np.uint8)).save(tmp_path / "scan.img", format="PNG")
    image, meta = read_cxr(tmp_path / "scan.img")
    assert meta["format"] == "png" and image.shape == (6, 9) and image.max() == 1.0
