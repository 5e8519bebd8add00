"""``python -m cxr_monai preview IMAGE --out PNG [--max-size N]``: the image as the reader sees it.

Writes what :class:`~cxr_monai.io.CXRReader` returns as an 8-bit grey PNG (0 -> black, 1 -> white) and
prints shape, spacing and photometric interpretation, so a user can check a new data source by eye before
training on it: lungs dark and bones bright means the intensity chain (VOI, MONOCHROME1 inversion) is right.

Example::

    python -m cxr_monai preview RG1_UNCR.dcm --out rg1.png --max-size 1024
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cxr_monai.io.reader import CXRReadError, read_cxr

__all__ = ["add_arguments", "run", "to_uint8_preview"]

EXIT_BAD_INPUT = 2
_TWELVE_BIT_MAX = 4095 / 65535


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="chest radiograph: DICOM, PNG or JPEG")
    parser.add_argument("--out", type=Path, required=True, help="8-bit grey PNG to write")
    parser.add_argument(
        "--max-size", type=_positive_int, default=None, metavar="N",
        help="downscale (keeping the aspect ratio) so that the longer side is at most N pixels",
    )


def to_uint8_preview(image: np.ndarray, max_size: int | None = None) -> np.ndarray:
    """(H, W) float in [0, 1] -> uint8 (0..255), area-downscaled so that max(H, W) <= ``max_size``.

    >>> to_uint8_preview(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    array([[  0, 128, 255]], dtype=uint8)
    """
    height, width = image.shape
    if max_size is not None and max(height, width) > max_size:
        scale = max_size / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))  # Pillow sizes are (width, height)
        image = np.asarray(Image.fromarray(image.astype(np.float32)).resize(size, Image.Resampling.BOX))
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _describe(path: Path, image: np.ndarray, meta: dict[str, Any]) -> list[str]:
    rows, columns = image.shape
    photometric = meta["photometric_interpretation"]
    if photometric == "MONOCHROME1":
        photometric += " (inverted on read)"
    elif meta["format"] != "dicom" and photometric != "MONOCHROME2":
        photometric += " (converted to grey)"
    spacing = meta.get("pixel_spacing")
    spacing_text = (
        f"{spacing[0]:g} x {spacing[1]:g} mm (row x col, from {meta['pixel_spacing_source']})"
        if spacing is not None
        else "unknown"
    )
    return [
        f"image:        {path}",
        f"format:       {meta['format']}, {meta['bits_stored']} bits stored",
        f"shape:        {rows} x {columns} (rows x columns)",
        f"spacing:      {spacing_text}",
        f"photometric:  {photometric}",
        f"intensity:    {meta['intensity_mapping']} -> [0, 1]",
        f"values:       {image.min():.3f} .. {image.max():.3f} (1st-99th percentile "
        f"{np.percentile(image, 1):.3f} .. {np.percentile(image, 99):.3f})",
    ]


def _warnings(image: np.ndarray, meta: dict[str, Any]) -> list[str]:
    if meta["format"] == "png" and meta["bits_stored"] == 16 and 0 < image.max() <= _TWELVE_BIT_MAX:
        return [f"warning:      this 16-bit PNG never exceeds {round(image.max() * 65535)} of 65535: probably "
                "12-bit values stored unscaled (PNG expects them scaled to 16 bits), which read nearly black; "
                "rescale the files (x 16) before training"]
    return []


def run(args: argparse.Namespace) -> int:
    try:
        image, meta = read_cxr(args.image)
    except CXRReadError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT

    preview = to_uint8_preview(image, args.max_size)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(preview).save(args.out, format="PNG")
    except OSError as e:
        print(f"error: {args.out}: cannot write the preview ({e})", file=sys.stderr)
        return 1

    print("\n".join(_describe(args.image, image, meta) + _warnings(image, meta)))
    print(f"wrote:        {args.out} ({preview.shape[0]} x {preview.shape[1]}, 8-bit grey)")
    print("check:        lungs should look dark and bones bright; if not, the file's intensity metadata is off")
    return 0
