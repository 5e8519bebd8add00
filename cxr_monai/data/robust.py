"""Robust runs: an image that cannot be used is skipped and named with its reason; a run fails only when more than a
set fraction of its images is skipped.

- :class:`SkippingCompose` is a MONAI ``Compose`` that returns a :class:`SkippedImage` (the file and a one-line
  reason) instead of raising when a transform fails on the data: an unreadable file
  (:class:`~cxr_monai.io.CXRReadError`), an image the patch sampler cannot use (a ``ValueError`` naming the file),
  a missing file (``OSError``). Any other exception is a bug and propagates. It works in ``Dataset``,
  ``CacheDataset`` (the record is cached like an image) and DataLoader worker processes alike.
- :class:`SkippingDataset` turns those records into skipped images: for training (``replace=True``) the next usable
  entry takes a bad one's place, so batches keep their size and are never empty, and the record travels with that
  sample through :class:`SkippingCollate` into the batch (``batch["skipped_images"]``), out of the worker process
  to the trainer, where :class:`~cxr_monai.handlers.SkippedImagesHandler` hands it to the run's :class:`SkipLog`;
  for a list built in the process that holds the log (``replace=False``, e.g. the validation patches), a bad entry
  gives no samples and is recorded at once.
- :class:`SkipLog` logs each skipped image once (a warning naming the file and the reason), writes it to
  ``skipped.csv`` (``stage, image, reason``) as it comes, and raises :class:`TooManySkippedError`, listing the counts
  and the first reasons, when more than ``max_fraction`` of a stage's images are skipped.

Example::

    log = SkipLog("runs/ce/skipped.csv", max_fraction=0.05)
    dataset = SkippingDataset(CacheDataset(datalist, SkippingCompose(transforms)), log, "training")
    loader = DataLoader(dataset, batch_size=3, collate_fn=SkippingCollate(CenterHoleCollate("image")))
    SkippedImagesHandler(dataset).attach(trainer)
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monai.data import list_data_collate
from monai.transforms import Compose
from torch.utils.data import Dataset

from cxr_monai.transforms.patches import NoLesionFreeLungError
from cxr_monai.transforms.utils import source_name
from cxr_monai.utils import is_rank0

__all__ = [
    "SKIPPED_KEY",
    "SkipLog",
    "SkippedImage",
    "SkippingCollate",
    "SkippingCompose",
    "SkippingDataset",
    "TooManySkippedError",
    "data_error",
    "root_cause",
    "skipped_image",
]

logger = logging.getLogger(__name__)

#: the batch key under which :class:`SkippingCollate` passes the records of skipped images to the trainer
SKIPPED_KEY = "skipped_images"

#: root causes that mean "this image cannot be used", not "the code is wrong"
DATA_ERRORS = (ValueError, OSError)


class TooManySkippedError(RuntimeError):
    """More of a run's images were skipped than its ``max_skipped_fraction`` allows; the message gives the counts,
    the first files with their reasons and the ``skipped.csv`` listing all of them."""


@dataclass(frozen=True)
class SkippedImage:
    """An image left out of a run: the file (as the datalist names it), a one-line reason, and whether it was left out
    only because lesions cover all of its lung (:class:`~cxr_monai.transforms.NoLesionFreeLungError`)."""

    image: str
    reason: str
    lesion_covered: bool = False


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of ``error``'s ``raise ... from`` chain (MONAI's ``RuntimeError('applying transform
    ...')`` and ``RuntimeError('Failed to evaluate ...')`` wrap the real error this way).

    >>> try:
    ...     try:
    ...         raise ValueError("x.png: no lung")
    ...     except ValueError as e:
    ...         raise RuntimeError("applying transform") from e
    ... except RuntimeError as wrapped:
    ...     print(repr(root_cause(wrapped)))
    ValueError('x.png: no lung')
    """
    seen = {id(error)}
    while error.__cause__ is not None and id(error.__cause__) not in seen:
        error = error.__cause__
        seen.add(id(error))
    return error


def data_error(error: BaseException) -> BaseException | None:
    """The root cause of ``error`` when it is a data problem of one image (``ValueError``, including
    :class:`~cxr_monai.io.CXRReadError`, or ``OSError``), else ``None`` (a bug, which must not be skipped)."""
    root = root_cause(error)
    return root if isinstance(root, DATA_ERRORS) else None


def _image_name(data: Any, image_key: str) -> str:
    if isinstance(data, Mapping):
        value = data.get(image_key)
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        if value is not None:
            return source_name(value, data, image_key)
    return "<unknown image>"


def skipped_image(data: Any, error: BaseException, image_key: str = "image") -> SkippedImage:
    """The record of ``data`` (a datalist entry or a sample) failing with the data error ``error``.

    The reason is the root cause's message without the leading ``"<image>: "`` that the project's errors start
    with; a message that does not name the image (e.g. it names the lung mask) keeps its exception type.

    >>> skipped_image({"image": "a.png"}, ValueError("a.png: no lesion-free lung pixel"))
    SkippedImage(image='a.png', reason='no lesion-free lung pixel', lesion_covered=False)
    """
    root = root_cause(error)
    image = _image_name(data, image_key)
    message = " ".join(str(root).split()) or type(root).__name__
    prefix = f"{image}: "
    reason = message[len(prefix):] if message.startswith(prefix) else f"{type(root).__name__}: {message}"
    return SkippedImage(image, reason, isinstance(root, NoLesionFreeLungError))


class SkippingCompose(Compose):
    """MONAI ``Compose`` that returns a :class:`SkippedImage` instead of raising when a transform fails on the data.

    A data error (:func:`data_error`: the root cause is a ``ValueError``, e.g. a
    :class:`~cxr_monai.io.CXRReadError` or the patch sampler's "no lesion-free lung pixel", or an ``OSError``)
    becomes the record of the input's ``image_key`` file and its reason; any other exception propagates. A record
    given as input is returned unchanged, so ``CacheDataset``, which runs the transforms before the first random one
    once and the rest on each access, caches a bad image's record and skips it on every access without decoding it
    again. The traceback of each skipped image is logged at DEBUG level.

    Example::

        preprocessing = SkippingCompose([LoadCXRImaged(["image", "lung_mask"]), LungBoxesd(), RandLungPatchd("image")])
        preprocessing({"image": "broken.png"})  # SkippedImage(image='broken.png', reason='not a PNG ...')
    """

    def __init__(self, transforms: Any = None, image_key: str = "image", **kwargs: Any) -> None:
        super().__init__(transforms, **kwargs)
        self.image_key = image_key

    def __call__(self, input_: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(input_, SkippedImage):
            return input_
        try:
            return super().__call__(input_, *args, **kwargs)
        except Exception as error:
            if data_error(error) is None:
                raise
            record = skipped_image(input_, error, self.image_key)
            logger.debug("%s: %s", record.image, record.reason, exc_info=error)
            return record


class SkipLog:
    """The skipped images of one run: each is logged once (a warning naming the file and the reason) and appended
    to ``path`` (a CSV with the columns ``stage, image, reason``, created with its header at construction, rank 0 only
    under torch.distributed), and a stage whose skipped images are more than ``max_fraction`` of its ``total``
    images stops the run with :class:`TooManySkippedError`.

    Images skipped only because lesions cover all of their lung (``SkippedImage.lesion_covered``) are expected in a
    dataset of diffuse disease, so they count against their own, looser limit, ``max_lesion_covered_fraction``: more
    than that many usually means lesion masks that mark the healthy lung instead (inverted) or cover the image.

    Args:
        path: the CSV, e.g. ``<output_dir>/skipped.csv``; ``None`` for no file.
        max_fraction: the fraction of a stage's images that may be skipped (0 stops at the first; 1 never stops).
        max_lesion_covered_fraction: the fraction of a stage's images that may have no lesion-free lung.

    Example::

        log = SkipLog("runs/ce/inference/skipped.csv", max_fraction=0.05)
        log.add("inference", SkippedImage("a.png", "not a PNG"), total=40)  # logs, writes; raises at the 3rd of 40
    """

    fields = ("stage", "image", "reason")

    def __init__(
        self, path: str | os.PathLike | None = None, max_fraction: float = 0.05, max_lesion_covered_fraction: float = 0.5
    ) -> None:
        for name, value in (("max_skipped_fraction", max_fraction),
                            ("max_lesion_covered_fraction", max_lesion_covered_fraction)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}.")
        self.path = Path(path) if path is not None else None
        self.max_fraction = float(max_fraction)
        self.max_lesion_covered_fraction = float(max_lesion_covered_fraction)
        self.records: dict[tuple[str, str], str] = {}
        self.lesion_covered: set[tuple[str, str]] = set()
        self.totals: dict[str, int] = {}
        if self.path is not None and is_rank0():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(self.fields)

    def add(self, stage: str, record: SkippedImage, total: int, check: bool = True) -> bool:
        """Record ``record`` for ``stage`` (of ``total`` images); ``False`` if it was recorded before. With ``check``,
        raise :class:`TooManySkippedError` when the stage now has too many."""
        self.totals[stage] = int(total)
        key = (stage, record.image)
        if key in self.records:
            return False
        self.records[key] = record.reason
        if record.lesion_covered:
            self.lesion_covered.add(key)
        logger.warning("skipping %s (%s): %s", record.image, stage, record.reason)
        if self.path is not None and is_rank0():
            with open(self.path, "a", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow((stage, record.image, record.reason))
        if check:
            self.check(stage)
        return True

    def skipped(self, stage: str | None = None) -> list[SkippedImage]:
        """The records of ``stage`` (all stages when ``None``), in the order they came."""
        return [SkippedImage(image, reason, (name, image) in self.lesion_covered)
                for (name, image), reason in self.records.items() if stage is None or name == stage]

    def count(self, stage: str | None = None, lesion_covered: bool | None = None) -> int:
        """How many images of ``stage`` (all stages when ``None``) were skipped; only those whose lung lesions cover
        (``lesion_covered=True``), only the others (``False``), or all (``None``)."""
        return sum(1 for key in self.records if (stage is None or key[0] == stage)
                   and (lesion_covered is None or (key in self.lesion_covered) == lesion_covered))

    def allowed(self, stage: str, lesion_covered: bool = False) -> int:
        """How many images of ``stage`` may be skipped: ``floor(max_fraction * total)``, or with ``lesion_covered``
        how many may have no lesion-free lung: ``floor(max_lesion_covered_fraction * total)``."""
        fraction = self.max_lesion_covered_fraction if lesion_covered else self.max_fraction
        return math.floor(fraction * self.totals.get(stage, 0) + 1e-9)

    def check(self, stage: str | None = None) -> None:
        """Raise :class:`TooManySkippedError` if ``stage`` (any stage when ``None``) has more skipped images of
        either kind than :meth:`allowed`."""
        for name in [stage] if stage is not None else list(self.totals):
            for lesion_covered in (False, True):
                if self.count(name, lesion_covered) > self.allowed(name, lesion_covered):
                    raise TooManySkippedError(self.summary(name, lesion_covered=lesion_covered))

    def summary(self, stage: str, first: int = 3, lesion_covered: bool = False) -> str:
        """One line: the counts of one kind, the first ``first`` files with their reasons, and where the rest are."""
        skipped = [(image, reason) for (name, image), reason in self.records.items()
                   if name == stage and ((name, image) in self.lesion_covered) == lesion_covered]
        total = self.totals.get(stage, 0)
        listed = "; ".join(f"{image}: {reason}" for image, reason in skipped[:first])
        more = f"; and {len(skipped) - first} more" if len(skipped) > first else ""
        where = f" (all listed in {self.path})" if self.path is not None else ""
        if lesion_covered:
            return (f"{stage}: {len(skipped)} of {total} images have no lesion-free lung, more than "
                    f"max_lesion_covered_fraction {self.max_lesion_covered_fraction:g} allows "
                    f"({self.allowed(stage, True)}; are the lesion masks inverted?): {listed}{more}{where}")
        return (f"{stage}: {len(skipped)} of {total} images could not be used, more than max_skipped_fraction "
                f"{self.max_fraction:g} allows ({self.allowed(stage)}): {listed}{more}{where}")


@dataclass
class _WithSkipped:
    """A usable sample (or ``None`` when there was none to take a bad one's place) and the records it carries."""

    item: Any
    records: list[SkippedImage]


class SkippingDataset(Dataset):
    """A dataset whose transform is a :class:`SkippingCompose`, with its skipped images taken care of.

    - ``replace=True`` (training, through a DataLoader with :class:`SkippingCollate`): a bad entry is replaced by the
      next usable one (``index + 1``, ``index + 2``, ... wrapping around), so a batch keeps its size and is never
      empty; the records of the entries passed over travel with the sample, so they reach the trainer whether the
      loader has worker processes or not (:class:`~cxr_monai.handlers.SkippedImagesHandler` records them in
      ``skip_log``). An entry known to be bad is passed over without being loaded again. When more entries have
      failed than ``skip_log`` allows, the sample is ``None`` and the handler stops the run.
    - ``replace=False`` (a list built in the process that holds ``skip_log``, e.g. the validation patches): a bad
      entry gives an empty list of samples and is recorded in ``skip_log`` at once, without the fraction check;
      call ``skip_log.check()`` when done (the bundle's handler does so when training starts).

    Example::

        patches = [p for item in SkippingDataset(Dataset(datalist, SkippingCompose(transforms)), log, "validation",
                                                 replace=False) for p in item]
    """

    def __init__(
        self, dataset: Sequence, skip_log: SkipLog | None = None, stage: str = "training", replace: bool = True
    ) -> None:
        if not replace and skip_log is None:
            raise ValueError("SkippingDataset(replace=False) records the skipped images in skip_log; give one.")
        self.dataset = dataset
        self.skip_log = skip_log
        self.stage = stage
        self.replace = replace
        self._bad: set[int] = set()
        self._lesion_covered: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)

    def _too_many(self) -> bool:
        if self.skip_log is None:
            return len(self._bad) >= len(self)
        limits = {False: self.skip_log.max_fraction, True: self.skip_log.max_lesion_covered_fraction}
        counts = {False: len(self._bad - self._lesion_covered), True: len(self._lesion_covered)}
        return any(counts[kind] > math.floor(limits[kind] * len(self) + 1e-9) for kind in limits)

    def __getitem__(self, index: int) -> Any:
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of range for {size} entries")
        index %= size
        records: list[SkippedImage] = []
        for step in range(size):
            position = (index + step) % size
            if position in self._bad:
                continue
            item = self.dataset[position]
            if not isinstance(item, SkippedImage):
                return _WithSkipped(item, records) if records else item
            self._bad.add(position)
            if item.lesion_covered:
                self._lesion_covered.add(position)
            if not self.replace:
                self.skip_log.add(self.stage, item, size, check=False)  # type: ignore[union-attr]
                return []
            records.append(item)
            if self._too_many():
                break
        return _WithSkipped(None, records)


class SkippingCollate:
    """``collate_fn`` wrapper for a :class:`SkippingDataset`: the records its samples carry go into
    ``batch["skipped_images"]`` (a tuple of :class:`SkippedImage`), the samples themselves through ``collate_fn``.

    Bare :class:`SkippedImage` samples (a dataset of a :class:`SkippingCompose` not wrapped in a
    :class:`SkippingDataset`) and empty sample lists are left out of the batch and recorded the same way. A batch
    with no sample left holds the records only.

    Example::

        DataLoader(dataset, batch_size=3, collate_fn=SkippingCollate(CenterHoleCollate("image")))
    """

    def __init__(self, collate_fn: Callable[[Sequence], Any] = list_data_collate, key: str = SKIPPED_KEY) -> None:
        self.collate_fn = collate_fn
        self.key = key

    def __call__(self, samples: Sequence) -> Any:
        records: list[SkippedImage] = []
        kept = []
        for sample in samples:
            if isinstance(sample, _WithSkipped):
                records += sample.records
                sample = sample.item
            if isinstance(sample, SkippedImage):
                records.append(sample)
            elif sample is not None and not (isinstance(sample, list) and not sample):
                kept.append(sample)
        batch = self.collate_fn(kept) if kept else {}
        if records:
            if not isinstance(batch, MutableMapping):
                raise TypeError(f"SkippingCollate needs a collate_fn that returns a dict, got {type(batch).__name__}.")
            batch[self.key] = tuple(records)  # a tuple: never taken for a per-sample list and split with the batch
        return batch
