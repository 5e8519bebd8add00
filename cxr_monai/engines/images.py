"""One image at a time for the runners that write outputs per image (inference, evaluation): preprocessing with
skip logging, unique output stems, stacked patches."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from monai.data import MetaTensor

from cxr_monai.data.robust import SkipLog, SkippedImage, data_error, skipped_image
from cxr_monai.io import SUFFIXES

__all__ = ["PreprocessedImage", "iterate_images", "output_stem", "stack_patches", "unique_output_stem"]

logger = logging.getLogger(__name__)


def _plain(x: Any) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)



def output_stem(path: str | os.PathLike) -> str:
    """Name for output files: the image file name without its image suffix (``.png``, ``.dcm``, ...).

    Only a known image suffix is removed, so a DICOM named by its UID without a suffix keeps every dot.

    >>> output_stem("/data/images/00000003_000.png"), output_stem("/dicom/1.2.840.113619.2.55.3")
    ('00000003_000', '1.2.840.113619.2.55.3')
    """
    name = Path(os.fspath(path)).name
    suffix = Path(name).suffix
    return name[: -len(suffix)] if suffix.lower() in SUFFIXES else name


def unique_output_stem(path: str | os.PathLike, taken: set[str]) -> str:
    """:func:`output_stem`, with ``-2``, ``-3``... appended while it is in ``taken``; the result is added to ``taken``.

    >>> taken = set()
    >>> unique_output_stem("a/x.png", taken), unique_output_stem("b/x.dcm", taken)
    ('x', 'x-2')
    """
    stem, count = output_stem(path), 1
    candidate = stem
    while candidate in taken:
        count += 1
        candidate = f"{stem}-{count}"
    taken.add(candidate)
    return candidate


class PreprocessedImage(NamedTuple):
    """One datalist entry after :func:`iterate_images`."""

    index: int  #: position in the datalist
    stem: str  #: output name (see :func:`iterate_images`)
    data: Mapping[str, Any]  #: the preprocessed sample (``image``, ``lung_boxes``, ...)
    patches: list[Mapping[str, Any]]  #: the patch transform's samples; empty without a patch transform


def iterate_images(
    datalist: Sequence[Mapping[str, Any]],
    preprocessing: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    patch_transform: Callable[[Mapping[str, Any]], Any] | None = None,
    seed: int = 0,
    max_images: int | None = None,
    image_key: str = "image",
    skip_log: SkipLog | None = None,
    stage: str = "images",
) -> Iterator[PreprocessedImage]:
    """Preprocess the first ``max_images`` entries of a datalist one at a time, and cut their patches.

    Each image is decoded once: ``preprocessing(entry)``, then ``patch_transform`` on the result (a multi-sample
    transform's list, or a single dict). A random patch transform (anything with ``set_random_state``, e.g. a
    ``Compose`` holding :class:`~cxr_monai.transforms.RandLungPatchd`) is reseeded with ``seed + index`` before
    each image, so an image's patches do not depend on ``max_images`` or on the images before it.

    With a ``skip_log``, an image whose preprocessing or patches fail on the data (an unreadable file, an image the
    patch sampler cannot use: :func:`~cxr_monai.data.robust.data_error`; or a
    :class:`~cxr_monai.data.robust.SkippedImage` from a :class:`~cxr_monai.data.robust.SkippingCompose`) is skipped
    and recorded there as ``stage`` (logged, written to its CSV; :class:`~cxr_monai.data.robust.TooManySkippedError`
    once more than its fraction of the entries are); without one, such an error propagates.

    Stems come from :func:`output_stem` of the entry's image path; a stem seen before gets ``-2``, ``-3``, ...
    appended (with a warning), so outputs of same-named files in different folders do not overwrite each other.
    """
    entries = list(datalist)[: None if max_images is None else max(int(max_images), 0)]
    seen: Counter[str] = Counter()
    for index, entry in enumerate(entries):
        if image_key not in entry:
            raise KeyError(f"datalist entry {index} has no '{image_key}' (keys: {sorted(entry)}).")
        try:
            data = _usable(preprocessing(dict(entry)))
            patches: list[Mapping[str, Any]] = []
            if patch_transform is not None:
                if hasattr(patch_transform, "set_random_state"):
                    patch_transform.set_random_state(seed=seed + index)
                samples = _usable(patch_transform(data))
                patches = [samples] if isinstance(samples, Mapping) else list(samples)
        except Exception as error:
            if skip_log is None or data_error(error) is None:
                raise
            skip_log.add(stage, error.record if isinstance(error, _Skipped) else skipped_image(entry, error, image_key),
                         len(entries))
            continue
        stem = output_stem(entry[image_key])
        seen[stem] += 1
        if seen[stem] > 1:
            logger.warning("%s: another image has the stem %r; writing its outputs as %r",
                           entry[image_key], stem, f"{stem}-{seen[stem]}")
            stem = f"{stem}-{seen[stem]}"
        yield PreprocessedImage(index, stem, data, patches)


class _Skipped(ValueError):
    """A :class:`~cxr_monai.data.robust.SkippedImage` a transform returned, raised as the data error it stands for."""

    def __init__(self, record: SkippedImage) -> None:
        super().__init__(f"{record.image}: {record.reason}")
        self.record = record


def _usable(result: Any) -> Any:
    if isinstance(result, SkippedImage):
        raise _Skipped(result)
    return result


def stack_patches(samples: Sequence[Mapping[str, Any]], key: str = "image") -> torch.Tensor:
    """``(N, C, P, P)`` float32 CPU tensor of ``sample[key]`` for each of the (one or more) samples, meta dropped."""
    if not samples:
        raise ValueError("no patch samples to stack.")
    return torch.stack([_plain(sample[key]).detach().float().cpu() for sample in samples])
