"""SIIM-ACR pneumothorax run-length encoding: masks to and from the ``EncodedPixels`` of ``train-rle.csv``.

The SIIM-ACR Pneumothorax Segmentation challenge (Kaggle, 2019) stores each region as ``"start length start
length ..."`` where

- pixels are numbered **column-major** on the 1024 x 1024 image (down the first column, then the next: the flat
  index of row ``y``, column ``x`` is ``x * height + y``), from 0;
- the first start is that index; every later start is **relative**: pixels skipped after the end of the
  previous run (SIIM's "relative form" of RLE);
- ``-1`` (or an empty field) means no pneumothorax. An image with several regions has one CSV row per region;
  its mask is their union (:func:`merge_rle`), and a submission gives one row per image with the union encoded.

Python::

    from cxr_monai.io.rle import rle_decode, rle_encode

    mask = rle_decode("557374 2 1015 8", shape=(1024, 1024))   # bool (H, W)
    text = rle_encode(mask)                                    # "557374 2 1015 8"
    rle_encode(np.zeros((1024, 1024), bool))                   # "-1"
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "NO_PNEUMOTHORAX",
    "SIIM_IMAGE_SIZE",
    "RLEError",
    "merge_rle",
    "read_rle_csv",
    "rle_decode",
    "rle_encode",
]

#: Side in pixels of the images SIIM's run-length codes refer to.
SIIM_IMAGE_SIZE = 1024
#: ``EncodedPixels`` of an image without pneumothorax.
NO_PNEUMOTHORAX = "-1"


class RLEError(ValueError):
    """A run-length code that cannot be decoded; the message is ``"<source>: <reason>"``."""


def _check_shape(shape: Sequence[int], source: str) -> tuple[int, int]:
    if len(shape) != 2 or any(int(side) != side or side < 1 for side in shape):
        raise RLEError(f"{source}: shape must be (height, width) with positive integers, got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def _is_empty_code(text: str | None) -> bool:
    return text is None or (isinstance(text, float) and np.isnan(text)) or str(text).strip() in ("", NO_PNEUMOTHORAX)


def _runs(text: str, n_pixels: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Absolute ``(starts, ends)`` (column-major flat indices, end exclusive) of a relative-offset code."""
    tokens = str(text).split()
    try:
        values = np.array([int(token) for token in tokens], dtype=np.int64)
    except ValueError:
        bad = next(token for token in tokens if not token.lstrip("+-").isdigit())
        raise RLEError(f"{source}: not an integer in the run-length code: {bad!r}") from None
    if values.size % 2:
        raise RLEError(f"{source}: odd number of values ({values.size}) in the run-length code; expected "
                       "'start length' pairs")
    if (values < 0).any():
        position = int(np.flatnonzero(values < 0)[0])
        what = "start" if position % 2 == 0 else "length"
        raise RLEError(f"{source}: negative {what} {int(values[position])} (value {position + 1}) in the run-length "
                       "code; '-1' alone means no pneumothorax")
    offsets, lengths = values[0::2], values[1::2]
    # each start counts the pixels skipped after the previous run's end
    starts = np.cumsum(offsets + np.concatenate(([0], lengths[:-1])))
    ends = starts + lengths
    if ends.size and ends[-1] > n_pixels:
        run = int(np.flatnonzero(ends > n_pixels)[0])
        raise RLEError(f"{source}: run {run + 1} ends at pixel {int(ends[run])}, past the end of the image "
                       f"({n_pixels} pixels): is the code for a larger image?")
    return starts, ends


def rle_decode(text: str | None, shape: Sequence[int] = (SIIM_IMAGE_SIZE, SIIM_IMAGE_SIZE), *,
               source: str = "RLE") -> np.ndarray:
    """Decode one SIIM ``EncodedPixels`` value to a bool mask of ``shape`` ``(height, width)``.

    ``-1``, an empty string or ``None`` decode to an all-False mask. Raises :class:`RLEError` naming ``source``
    (e.g. the image id) for a value that is not an integer, an odd number of values, a negative value or a run
    past the end of the image.

    >>> mask = rle_decode("1 2 3 1", shape=(4, 3))  # pixels 1-2, then 3 past the end of that run (3): pixel 6
    >>> mask.astype(int).tolist()  # column-major: pixel 6 is row 2 of column 1
    [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0]]
    >>> bool(rle_decode("-1", shape=(4, 3)).any())
    False
    """
    height, width = _check_shape(shape, source)
    columns = np.zeros((width, height), dtype=bool)  # column-major pixels are the rows of the transpose
    if not _is_empty_code(text):
        flat = columns.reshape(-1)
        for start, end in zip(*(values.tolist() for values in _runs(str(text), height * width, source))):
            flat[start:end] = True
    return np.ascontiguousarray(columns.T)


def merge_rle(texts: Iterable[str | None], shape: Sequence[int] = (SIIM_IMAGE_SIZE, SIIM_IMAGE_SIZE), *,
              source: str = "RLE") -> np.ndarray:
    """Union of several ``EncodedPixels`` values of one image (one CSV row per region) as a bool mask.

    >>> merge_rle(["0 1", "2 1", "-1"], shape=(3, 1)).ravel().tolist()
    [True, False, True]
    """
    height, width = _check_shape(shape, source)
    mask = np.zeros((height, width), dtype=bool)
    for number, text in enumerate(texts, start=1):
        mask |= rle_decode(text, (height, width), source=f"{source} (region {number})")
    return mask


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D mask (non-zero = pneumothorax) as a SIIM ``EncodedPixels`` value; ``"-1"`` when empty.

    The inverse of :func:`rle_decode` for a mask of the image's shape: ``rle_decode(rle_encode(m), m.shape)``
    equals ``m != 0``.

    >>> rle_encode(np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0]]))
    '1 2 3 1'
    >>> rle_encode(np.zeros((4, 3)))
    '-1'
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a 2-D (height, width) mask, got shape {mask.shape}")
    pixels = np.concatenate(([False], mask.ravel(order="F") != 0, [False]))
    changes = np.flatnonzero(pixels[1:] != pixels[:-1])
    if changes.size == 0:
        return NO_PNEUMOTHORAX
    starts, ends = changes[0::2], changes[1::2]
    offsets = starts - np.concatenate(([0], ends[:-1]))
    pairs = np.empty(2 * starts.size, dtype=np.int64)
    pairs[0::2], pairs[1::2] = offsets, ends - starts
    return " ".join(map(str, pairs.tolist()))


def read_rle_csv(path: str | os.PathLike) -> dict[str, list[str]]:
    """``ImageId`` -> its ``EncodedPixels`` values in file order, from SIIM's ``train-rle.csv`` (plain or gzip).

    The column names are matched without their spaces (SIIM writes ``" EncodedPixels"`` with a leading one);
    values are stripped. Raises ``ValueError`` naming the file and line for a missing column or an empty image id.

    >>> codes = read_rle_csv("siim-pneumothorax-train-rle.csv.gz")  # doctest: +SKIP
    >>> codes["1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"]  # doctest: +SKIP
    ['-1']
    """
    with open(path, "rb") as stream:
        compressed = stream.read(2) == b"\x1f\x8b"
    opener = gzip.open if compressed else open
    codes: dict[str, list[str]] = {}
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            header = [name.strip() for name in next(reader, [])]
            for name in ("ImageId", "EncodedPixels"):
                if name not in header:
                    raise ValueError(f"{path}: no '{name}' column (header: {', '.join(header) or 'empty'}); "
                                     "expected SIIM's ImageId, EncodedPixels")
            id_column, code_column = header.index("ImageId"), header.index("EncodedPixels")
            for fields in reader:
                if not any(field.strip() for field in fields):
                    continue
                image_id = fields[id_column].strip() if id_column < len(fields) else ""
                if not image_id:
                    raise ValueError(f"{path}: line {reader.line_num}: empty ImageId")
                code = fields[code_column].strip() if code_column < len(fields) else ""
                codes.setdefault(image_id, []).append(code)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: cannot read as CSV ({error})") from error
    return codes
