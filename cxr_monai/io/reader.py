"""Chest X-ray reader: DICOM, PNG, JPEG and JSRT ``.IMG`` to float32 in [0, 1], lungs dark, no PHI in the meta.

The intensity pipeline, per format:

- **DICOM** (pydicom 3, compressed transfer syntaxes through the pylibjpeg plugins): stored values → Modality
  LUT (Rescale Slope/Intercept or Modality LUT Sequence) → VOI LUT Sequence if present, else the first
  Window Center/Width if present, else no VOI → linear map of the *output range* of that chain onto [0, 1] →
  MONOCHROME1 inverted. The output range is fixed by the header, never by the pixels:

  * VOI LUT Sequence: the smallest..largest entry of the LUT (robust to LUTs whose declared depth, the
    third LUT Descriptor value, is larger than the entries they hold);
  * Window Center/Width: the window maps onto its full output range (below the window → 0, above → 1);
  * neither: the whole BitsStored range (through the Modality LUT), so exposure is kept, as for PNG.

  Presentation LUT Shape is ignored: DX/CR files state ``INVERSE`` together with MONOCHROME1 for the same
  inversion, and applying both would flip the image back.
- **PNG/JPEG** (Pillow): divided by the maximum of the bit depth (255 or 65535), never min–max. Colour images
  become grey by Rec. 601 luma (the weights of JPEG's Y channel and Pillow's ``convert("L")``), alpha dropped.
  Pillow decodes 16-bit *colour* or grey+alpha PNGs at 8 bits per channel; 16-bit grey PNGs keep all 16 bits.
- **JSRT .IMG** (headerless 2048 x 2048, 12-bit values in big-endian 16-bit words, recognised by the ``.img``
  suffix and checked by its exact size, 8,388,608 bytes; :func:`~cxr_monai.io.headers.read_jsrt_raw`): in the
  stored values the lungs are bright, so they map to ``1 - raw / 4095``, clipped to [0, 1] -- the whole 12-bit
  range, inverted, exactly as a MONOCHROME1 DICOM without VOI (``photometric_interpretation`` ``MONOCHROME1``,
  ``intensity_mapping`` ``bits_stored``). The common JSRT preprocessing displays the same inversion,
  ``1 - raw / 4096`` (imlab-uiip/lung-segmentation-2d, ``load_data.py``). Pixel spacing 0.175 mm from the JSRT
  database specification (``pixel_spacing_source`` ``jsrt_specification``). A file of another size, or with a
  value above 4095, raises :class:`CXRReadError`. There is no header, hence no PHI.

In pipelines use :class:`LoadCXRImaged` (or ``LoadImaged(keys, reader=CXRReader())``, which silently falls back
to MONAI's generic readers for a file this reader rejects); :func:`read_cxr` serves callers outside MONAI.

The format is recognised by content (PNG/JPEG signature, DICOM ``DICM`` preamble), so a JPEG saved as
``.png`` or a DICOM named by its SOP Instance UID reads correctly; only the headerless JSRT format goes by its
``.img`` name (after the signatures: a PNG named ``.img`` still reads as PNG). Orientation is the file's: rows are
image rows, no transpose, EXIF orientation ignored (boxes in datalists are in stored pixel coordinates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.config import DtypeLike, KeysCollection, PathLike
from monai.data import ImageReader
from monai.transforms import LoadImage, LoadImaged
from monai.utils import MetaKeys, ensure_tuple
from PIL import Image
from pydicom import pixels as dicom_pixels
from pydicom.dataset import Dataset

from cxr_monai.io.headers import (
    dicom_pixel_spacing,
    _JPEG_SIGNATURE,
    _PNG_SIGNATURE,
    DICOM_SUFFIXES,
    JSRT_MAX_VALUE,
    JSRT_PIXEL_SPACING_MM,
    JSRT_SUFFIXES,
    SUFFIXES,
    CXRReadError,
    _fail,
    _file_head,
    _has_dicom_preamble,
    is_cxr_file,
    read_jsrt_raw,
    stored_size,
)

__all__ = [
    "CXRReadError",
    "CXRImage",
    "CXRReader",
    "LoadCXRImage",
    "LoadCXRImaged",
    "read_cxr",
    "is_cxr_file",
    "stored_size",
    "SUFFIXES",
    "META_KEYS",
]

# The only keys that ever leave the reader; everything is technical, nothing identifies a patient.
# `pixel_spacing` and `pixel_spacing_source` are present only when the file states a usable spacing.
META_KEYS = frozenset(
    {
        "filename_or_obj",
        MetaKeys.SPATIAL_SHAPE,
        MetaKeys.ORIGINAL_CHANNEL_DIM,
        MetaKeys.AFFINE,
        MetaKeys.ORIGINAL_AFFINE,
        "pixel_spacing",
        "pixel_spacing_source",
        "format",
        "bits_stored",
        "photometric_interpretation",
        "intensity_mapping",
    }
)

# Pillow modes read as grey -> bits per sample as decoded; colour modes -> the source's photometric name
_PIL_GREY_BITS = {"L": 8, "LA": 8, "1": 1, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16}
_PIL_COLOUR_PHOTOMETRIC = {
    "RGB": "RGB",
    "RGBA": "RGB",
    "RGBX": "RGB",
    "P": "PALETTE COLOR",
    "PA": "PALETTE COLOR",
    "CMYK": "CMYK",
    "YCbCr": "YBR_FULL",
}
_REC601_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass
class CXRImage:
    """A decoded radiograph, as returned by :meth:`CXRReader.read`: ``array`` (H, W) float32 in [0, 1]."""

    array: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _affine(spacing: tuple[float, float] | None) -> np.ndarray:
    """(row, col) pixel grid -> mm; identity (1 mm per pixel) when the spacing is unknown."""
    row_spacing, col_spacing = spacing if spacing is not None else (1.0, 1.0)
    return np.diag([row_spacing, col_spacing, 1.0])


def _meta(
    path: PathLike,
    shape: tuple[int, int],
    image_format: str,
    bits_stored: int,
    photometric: str,
    intensity_mapping: str,
    spacing: tuple[float, float] | None = None,
    spacing_source: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "filename_or_obj": str(path),
        MetaKeys.SPATIAL_SHAPE: np.asarray(shape, dtype=np.int64),
        MetaKeys.ORIGINAL_CHANNEL_DIM: "no_channel",
        MetaKeys.AFFINE: _affine(spacing),
        MetaKeys.ORIGINAL_AFFINE: _affine(spacing),
        "format": image_format,
        "bits_stored": int(bits_stored),
        "photometric_interpretation": photometric,
        "intensity_mapping": intensity_mapping,
    }
    if spacing is not None:
        meta["pixel_spacing"] = np.asarray(spacing, dtype=np.float64)
        meta["pixel_spacing_source"] = spacing_source
    return meta


# ----------------------------------------------------------------------------------------------- DICOM


def _stored_value_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def _dicom_to_unit_range(stored: np.ndarray, ds: Dataset, apply_voi: bool) -> tuple[np.ndarray, str]:
    """Modality LUT, then VOI LUT / window (if any), then the header-defined output range onto [0, 1]."""
    values = dicom_pixels.apply_modality_lut(stored, ds)
    has_voi_lut = bool(ds.get("VOILUTSequence")) and all(
        ds.VOILUTSequence[0].get(k) is not None for k in ("LUTDescriptor", "LUTData")
    )
    has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None

    if apply_voi and has_voi_lut:
        if not np.issubdtype(values.dtype, np.integer):
            values = np.rint(values).astype(np.int64)  # a VOI LUT is indexed by integer modality values
        values = dicom_pixels.apply_voi(values, ds, index=0)
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        n_entries, first_mapped = int(descriptor[0]) or 2**16, int(descriptor[1])
        lut = dicom_pixels.apply_voi(np.arange(first_mapped, first_mapped + n_entries), ds, index=0)
        low, high, mapping = float(lut.min()), float(lut.max()), "voi_lut"
    elif apply_voi and has_window:
        values = dicom_pixels.apply_voi_lut(values, ds, index=0, prefer_lut=False)
        # below the window -> 0, above it -> 1 (pydicom's output range is reversed for a negative Rescale Slope)
        extremes = dicom_pixels.apply_voi_lut(np.array([-np.inf, np.inf]), ds, index=0, prefer_lut=False)
        low, high = float(extremes[0]), float(extremes[1])
        mapping = "window"
    else:
        lowest_stored, highest_stored = _stored_value_range(ds)
        # the image of the whole stored range: a Modality LUT Sequence need not be monotonic
        domain = dicom_pixels.apply_modality_lut(np.arange(lowest_stored, highest_stored + 1), ds)
        low, high, mapping = float(np.min(domain)), float(np.max(domain)), "bits_stored"

    if high == low:
        raise ValueError(f"the {mapping} intensity mapping has an empty output range [{low}, {high}]")
    unit = (np.asarray(values, dtype=np.float64) - low) / (high - low)
    return np.clip(unit, 0.0, 1.0).astype(np.float32), mapping


def _check_dicom_header(path: PathLike, ds: Dataset, has_preamble: bool) -> None:
    """Refuse what is not one grey integer frame; the reason names the offending element."""
    if "PixelData" not in ds:
        float_data = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        if float_data:
            raise _fail(path, f"DICOM holds {float_data[0]}; only integer Pixel Data is read")
        if not has_preamble:
            raise _fail(path, "not a DICOM image (no DICM preamble and no Pixel Data element)")
        raise _fail(path, "DICOM file has no pixel data (no Pixel Data element)")
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if n_frames != 1:
        raise _fail(path, f"multi-frame DICOM ({n_frames} frames); a chest radiograph has one frame")
    photometric = str(ds.get("PhotometricInterpretation") or "missing").strip().upper()
    n_samples = int(ds.get("SamplesPerPixel") or 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or n_samples != 1:
        raise _fail(
            path,
            f"unsupported photometric interpretation {photometric} with {n_samples} sample(s) per pixel; "
            "only grey MONOCHROME1/MONOCHROME2 radiographs are read",
        )
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows == 0 or columns == 0:
        raise _fail(path, f"zero-size image (Rows x Columns = {rows} x {columns})")
    bits_allocated, bits_stored = int(ds.get("BitsAllocated") or 0), int(ds.get("BitsStored") or 0)
    if bits_allocated not in (8, 16) or not 1 <= bits_stored <= bits_allocated:
        raise _fail(
            path,
            f"unsupported bit depth (BitsAllocated {bits_allocated}, BitsStored {bits_stored}); "
            "8- or 16-bit allocated samples are read",
        )


def _read_dicom(path: PathLike, head: bytes, apply_voi: bool) -> CXRImage:
    has_preamble = _has_dicom_preamble(head)
    try:
        ds = pydicom.dcmread(path, force=not has_preamble)
    except Exception as e:
        raise _fail(path, f"not a readable DICOM file ({type(e).__name__}: {e})") from e
    try:
        _check_dicom_header(path, ds, has_preamble)
    except CXRReadError:
        raise
    except Exception as e:  # a malformed value, e.g. Rows = "abc"
        raise _fail(path, f"invalid DICOM header ({type(e).__name__}: {e})") from e

    try:
        stored = ds.pixel_array
    except Exception as e:
        transfer_syntax = getattr(ds.get("file_meta", Dataset()).get("TransferSyntaxUID"), "name", "unknown")
        raise _fail(path, f"cannot decode the pixel data ({transfer_syntax}): {e}") from e
    if stored.shape != (ds.Rows, ds.Columns):
        raise _fail(path, f"decoded pixel data has shape {stored.shape}, header says {ds.Rows} x {ds.Columns}")
    try:
        image, mapping = _dicom_to_unit_range(stored, ds, apply_voi)
    except Exception as e:
        raise _fail(path, f"cannot apply the DICOM intensity transforms: {e}") from e
    photometric = ds.PhotometricInterpretation.strip().upper()
    if photometric == "MONOCHROME1":
        image = 1.0 - image

    spacing, spacing_source = dicom_pixel_spacing(ds)
    meta = _meta(path, image.shape, "dicom", ds.BitsStored, photometric, mapping, spacing, spacing_source)
    return CXRImage(image, meta)


# ----------------------------------------------------------------------------------------------- PNG / JPEG


def _read_pillow(path: PathLike, image_format: str) -> CXRImage:
    try:
        with Image.open(path) as pil:
            pil.load()  # decode now: a truncated file fails here, not later as zeros
            mode = pil.mode
            if mode in _PIL_GREY_BITS:
                pixels = np.asarray(pil if mode == "L" or mode.startswith("I;16") else pil.convert("L"))
            elif mode in _PIL_COLOUR_PHOTOMETRIC:
                pixels = np.asarray(pil.convert("RGB"))  # palette expanded, alpha dropped, CMYK/YCbCr -> RGB
            else:
                pixels = None
    except Exception as e:
        raise _fail(path, f"cannot decode {image_format.upper()} ({type(e).__name__}: {e})") from e
    if pixels is None:
        raise _fail(path, f"unsupported {image_format.upper()} pixel mode {mode!r}")
    if pixels.size == 0:
        raise _fail(path, f"zero-size image ({pixels.shape[0]} x {pixels.shape[1]} pixels)")

    if mode in _PIL_GREY_BITS:
        bits_stored, photometric = _PIL_GREY_BITS[mode], "MONOCHROME2"
        full_scale = 65535.0 if bits_stored == 16 else 255.0
        image = pixels.astype(np.float32) / full_scale
    else:
        bits_stored, photometric = 8, _PIL_COLOUR_PHOTOMETRIC[mode]
        image = (pixels.astype(np.float32) @ _REC601_LUMA) / 255.0
    image = np.clip(image, 0.0, 1.0, out=image)  # luma weights sum to 1 only up to float rounding
    return CXRImage(image, _meta(path, image.shape, image_format, bits_stored, photometric, "bit_depth"))


# ----------------------------------------------------------------------------------------------- JSRT .IMG


def _read_jsrt(path: PathLike) -> CXRImage:
    """Headerless JSRT radiograph: lungs bright in the stored values, so ``1 - raw / 4095`` (MONOCHROME1)."""
    raw = read_jsrt_raw(path)
    image = np.clip(1.0 - raw.astype(np.float32) / np.float32(JSRT_MAX_VALUE), 0.0, 1.0)
    spacing = (JSRT_PIXEL_SPACING_MM, JSRT_PIXEL_SPACING_MM)
    meta = _meta(path, image.shape, "jsrt", 12, "MONOCHROME1", "bits_stored", spacing, "jsrt_specification")
    return CXRImage(image, meta)


# ----------------------------------------------------------------------------------------------- public API


def _decode(path: PathLike, apply_voi: bool = True) -> CXRImage:
    try:
        head = _file_head(path)
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except IsADirectoryError:
        raise _fail(path, "is a directory, not an image file") from None
    except OSError as e:
        raise _fail(path, f"cannot open file ({e.strerror or e})") from e
    if not head:
        raise _fail(path, "file is empty")
    if head.startswith(_PNG_SIGNATURE):
        return _read_pillow(path, "png")
    if head.startswith(_JPEG_SIGNATURE):
        return _read_pillow(path, "jpeg")
    if _has_dicom_preamble(head) or Path(path).suffix.lower() in DICOM_SUFFIXES:
        return _read_dicom(path, head, apply_voi)  # a .dcm without the 128-byte preamble: try the bare data set
    if Path(path).suffix.lower() in JSRT_SUFFIXES:
        return _read_jsrt(path)  # no signature: the name and the exact size are all there is to check
    raise _fail(path, "not a PNG, JPEG or DICOM file (no PNG/JPEG signature and no DICM preamble)")


def read_cxr(path: PathLike, apply_voi: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one chest radiograph as ``(image, meta)``: (H, W) float32 in [0, 1], lungs dark, no PHI in ``meta``.

    The same code path as :class:`CXRReader`, for callers outside MONAI transforms.

    >>> image, meta = read_cxr("chest.dcm")  # doctest: +SKIP
    >>> image.shape == tuple(meta["spatial_shape"]), meta["format"]  # doctest: +SKIP
    (True, 'dicom')

    Args:
        path: a DICOM, PNG, JPEG or JSRT ``.IMG`` file.
        apply_voi: use the DICOM's VOI LUT or window centre/width when present; with ``False`` the whole
            BitsStored range maps to [0, 1].

    Raises:
        CXRReadError: the file is missing, truncated, not an image, or not a grey single-frame radiograph.
    """
    image = _decode(path, apply_voi)
    return image.array, image.meta


class CXRReader(ImageReader):
    """MONAI reader for chest radiographs (DICOM, PNG, JPEG, JSRT .IMG): float32 in [0, 1], lungs dark, rows = rows.

    Use it as ``LoadImage(reader=CXRReader())`` or by dotted name, ``LoadImage(reader="cxr_monai.io.CXRReader")``;
    it is deliberately not added to MONAI's default readers, so a plain ``LoadImage()`` elsewhere is unchanged.
    ``LoadImage`` falls back to MONAI's other readers when this one raises; :class:`LoadCXRImage` /
    :class:`LoadCXRImaged` do not, and are the loaders to use when a rejected file must stay rejected.
    The array is (H, W) with ``original_channel_dim="no_channel"``; ``ensure_channel_first=True`` makes it
    (1, H, W). The meta holds only :data:`META_KEYS`; the affine is ``diag(row_mm, col_mm, 1)`` (identity when
    the spacing is unknown), so ``MetaTensor.pixdim`` is the (row, col) pixel spacing.

    Example::

        loader = LoadImaged(keys=["image", "lung_mask"], reader=CXRReader(), ensure_channel_first=True)
        sample = loader({"image": "p0001.dcm", "lung_mask": "p0001_lungs.png"})
        sample["image"].shape  # torch.Size([1, H, W])

    Args:
        apply_voi: use the DICOM's VOI LUT or window centre/width when present (see :func:`read_cxr`).
    """

    def __init__(self, apply_voi: bool = True) -> None:
        super().__init__()
        self.apply_voi = apply_voi

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True when every file has a .dcm/.dicom/.png/.jpg/.jpeg/.img suffix or a DICOM preamble."""
        return all(is_cxr_file(name) for name in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> CXRImage | list[CXRImage]:
        """Decode one file, or a list of files (stacked as channels by :meth:`get_data`).

        Args:
            data: file name or list of file names.
            kwargs: ``apply_voi`` overrides the reader's setting for this call.
        """
        apply_voi = kwargs.pop("apply_voi", self.apply_voi)
        if kwargs:
            raise TypeError(f"{type(self).__name__}.read() got unexpected options {sorted(kwargs)}")
        images = [_decode(name, apply_voi) for name in ensure_tuple(data)]
        return images if len(images) > 1 else images[0]

    def get_data(self, img: CXRImage | Sequence[CXRImage]) -> tuple[np.ndarray, dict[str, Any]]:
        """``(array, meta)``: (H, W) for one image; (N, H, W) with ``original_channel_dim=0`` for N images."""
        images = list(ensure_tuple(img))
        meta = dict(images[0].meta)
        if len(images) == 1:
            return images[0].array, meta
        shapes = {image.array.shape for image in images}
        if len(shapes) > 1:
            names = [image.meta["filename_or_obj"] for image in images]
            raise ValueError(f"cannot stack images of different shapes {sorted(shapes)} as channels: {names}")
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack([image.array for image in images], axis=0), meta


class LoadCXRImage(LoadImage):
    """``LoadImage`` that reads with :class:`CXRReader` only: a file it rejects raises :class:`CXRReadError`.

    ``LoadImage(reader=CXRReader())`` keeps MONAI's default readers behind ours and, when ours raises, silently
    tries them; a PALETTE COLOR or RGB DICOM then loads through ITK as a transposed, unscaled colour array.
    This loader passes the reader at call time, which MONAI uses without any fallback.

    >>> LoadCXRImage(ensure_channel_first=True)("chest.dcm").shape  # doctest: +SKIP
    torch.Size([1, 2048, 1660])

    Args:
        image_only, dtype, ensure_channel_first, simple_keys, prune_meta_pattern, prune_meta_sep, expanduser:
            as for ``monai.transforms.LoadImage``.
        apply_voi: see :class:`CXRReader`.
    """

    def __init__(
        self,
        image_only: bool = True,
        dtype: DtypeLike | None = np.float32,
        ensure_channel_first: bool = False,
        simple_keys: bool = False,
        prune_meta_pattern: str | None = None,
        prune_meta_sep: str = ".",
        expanduser: bool = True,
        apply_voi: bool = True,
    ) -> None:
        self.cxr_reader = CXRReader(apply_voi=apply_voi)
        super().__init__(
            reader=self.cxr_reader,
            image_only=image_only,
            dtype=dtype,
            ensure_channel_first=ensure_channel_first,
            simple_keys=simple_keys,
            prune_meta_pattern=prune_meta_pattern,
            prune_meta_sep=prune_meta_sep,
            expanduser=expanduser,
        )

    def __call__(self, filename: Sequence[PathLike] | PathLike, reader: ImageReader | None = None):
        return super().__call__(filename, reader=reader or self.cxr_reader)


class LoadCXRImaged(LoadImaged):
    """Dictionary version of :class:`LoadCXRImage`: ``LoadImaged`` with :class:`CXRReader` only, no fallback.

    >>> load = LoadCXRImaged(keys=["image", "lung_mask"], ensure_channel_first=True)  # doctest: +SKIP
    >>> load({"image": "p0001.dcm", "lung_mask": "p0001_lungs.png"})["image"].shape  # doctest: +SKIP
    torch.Size([1, 2048, 1660])

    Args:
        keys, dtype, meta_keys, meta_key_postfix, overwriting, image_only, ensure_channel_first, simple_keys,
            prune_meta_pattern, prune_meta_sep, allow_missing_keys, expanduser: as for
            ``monai.transforms.LoadImaged``.
        apply_voi: see :class:`CXRReader`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        dtype: DtypeLike | None = np.float32,
        meta_keys: KeysCollection | None = None,
        meta_key_postfix: str = "meta_dict",
        overwriting: bool = False,
        image_only: bool = True,
        ensure_channel_first: bool = False,
        simple_keys: bool = False,
        prune_meta_pattern: str | None = None,
        prune_meta_sep: str = ".",
        allow_missing_keys: bool = False,
        expanduser: bool = True,
        apply_voi: bool = True,
    ) -> None:
        self.cxr_reader = CXRReader(apply_voi=apply_voi)
        super().__init__(
            keys,
            reader=self.cxr_reader,
            dtype=dtype,
            meta_keys=meta_keys,
            meta_key_postfix=meta_key_postfix,
            overwriting=overwriting,
            image_only=image_only,
            ensure_channel_first=ensure_channel_first,
            simple_keys=simple_keys,
            prune_meta_pattern=prune_meta_pattern,
            prune_meta_sep=prune_meta_sep,
            allow_missing_keys=allow_missing_keys,
            expanduser=expanduser,
        )

    def __call__(self, data, reader: ImageReader | None = None):
        return super().__call__(data, reader=reader or self.cxr_reader)
