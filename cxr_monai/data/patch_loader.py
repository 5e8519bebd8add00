"""A DataLoader whose batches mix the patches of several images (issue #9: BatchNorm in evaluation).

Seed 001 trains on 1.19 M patches cut beforehand, so a batch holds patches of many images. Sampling patches on the
fly (one decode for ``patches_per_image`` patches, :class:`~cxr_monai.transforms.RandLungPatchd`) and batching one
or a few images at a time gives batches whose BatchNorm statistics are those of one image: the network then
learns to rely on per-image normalisation that evaluation mode (running statistics) does not give, and inpaints
too dark or too bright at test time. :class:`PatchPoolDataLoader` keeps one decode per image and restores the
mixed batches: it loads ``batch_size`` images at a time, shuffles their pooled patches and cuts them into
``batches_per_load`` batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from monai.data import DataLoader, list_data_collate

__all__ = ["PatchPoolDataLoader", "ShuffledCollate", "split_batch"]


def _batch_length(batch: Mapping[str, Any]) -> int:
    lengths = {len(value) for value in batch.values() if isinstance(value, (torch.Tensor, list)) and value is not None}
    tensor_lengths = {value.shape[0] for value in batch.values() if isinstance(value, torch.Tensor) and value.ndim}
    if len(tensor_lengths) == 1:
        return tensor_lengths.pop()
    if len(tensor_lengths) > 1:
        raise ValueError(f"collated batch tensors disagree on the batch size: {sorted(tensor_lengths)}")
    return max(lengths, default=0)


def _per_sample(value: Any, length: int) -> bool:
    if isinstance(value, torch.Tensor):
        return value.ndim > 0 and value.shape[0] == length
    return isinstance(value, list) and len(value) == length


class ShuffledCollate:
    """``collate_fn`` wrapper: collate, then put the samples of the batch in a random order (torch's RNG, so the
    DataLoader's worker seeding and ``set_determinism`` make it repeatable).

    Every tensor whose first dimension is the batch size and every list of that length is permuted the same way;
    anything else (e.g. a per-batch scalar) is kept as it is.

    Example::

        DataLoader(dataset, batch_size=8, collate_fn=ShuffledCollate(CenterHoleCollate("image")))
    """

    def __init__(self, collate_fn: Callable[[Sequence], Any] = list_data_collate) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples: Sequence) -> Any:
        batch = self.collate_fn(samples)
        if not isinstance(batch, Mapping):
            raise TypeError(f"ShuffledCollate needs a collate_fn that returns a dict, got {type(batch).__name__}.")
        length = _batch_length(batch)
        order = torch.randperm(length)
        out = {}
        for key, value in batch.items():
            if _per_sample(value, length):
                value = value[order] if isinstance(value, torch.Tensor) else [value[i] for i in order.tolist()]
            out[key] = value
        return out


def split_batch(batch: Mapping[str, Any], parts: int) -> list[dict[str, Any]]:
    """Cut a collated batch into ``parts`` batches of nearly equal size (sizes differ by at most one).

    Tensors are split into views (``torch.tensor_split``), so pinned memory stays pinned; lists are sliced; other
    values are shared by every part.

    >>> [part["x"].tolist() for part in split_batch({"x": torch.arange(5)}, 2)]
    [[0, 1], [2, 3, 4]]
    """
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}.")
    length = _batch_length(batch)
    bounds = [round(length * k / parts) for k in range(parts + 1)]
    out = []
    for k in range(parts):
        lo, hi = bounds[k], bounds[k + 1]
        out.append({key: value[lo:hi] if _per_sample(value, length) else value for key, value in batch.items()})
    return out


class PatchPoolDataLoader(DataLoader):
    """MONAI ``DataLoader`` that pools the patches of ``batch_size`` images and yields them, shuffled, as
    ``batches_per_load`` batches: each image is decoded once, yet every batch mixes the patches of many images.

    With a dataset whose items are lists of ``patches_per_image`` patches (``RandLungPatchd``), a load holds
    ``batch_size * patches_per_image`` patches and each batch about ``batch_size * patches_per_image /
    batches_per_load`` of them, from up to ``batch_size`` images. ``len()`` counts the batches, so Ignite's epoch
    length, ``DistributedSampler`` (MONAI's workflows set its epoch) and ``drop_last`` (of images) work as with a
    plain loader; without ``drop_last`` the last, partial load of an epoch is cut into proportionally fewer
    batches (:meth:`batches_in_load`). ``batches_per_load=1`` is a plain loader whose batches are shuffled.

    Args:
        dataset: the dataset of images (each item a list of patch dicts, or one dict).
        batches_per_load: batches cut from each load of ``batch_size`` images.
        collate_fn: collates one load (e.g. :class:`~cxr_monai.apps.inpainting.CenterHoleCollate`); it must return a dict.
        kwargs: the rest of :class:`monai.data.DataLoader`'s arguments (``batch_size`` = images per load).

    Example::

        loader = PatchPoolDataLoader(dataset, batch_size=15, batches_per_load=5, shuffle=True,
                                     collate_fn=CenterHoleCollate("image", keep_patches=False))
        # 15 images x 20 patches -> 5 batches of 60 patches from ~15 images each
    """

    def __init__(self, dataset: Any, batches_per_load: int = 1, collate_fn: Callable | None = None, **kwargs: Any):
        if int(batches_per_load) < 1:
            raise ValueError(f"batches_per_load must be >= 1, got {batches_per_load}.")
        super().__init__(dataset, collate_fn=ShuffledCollate(collate_fn or list_data_collate), **kwargs)
        self.batches_per_load = int(batches_per_load)

    def batches_in_load(self, images: int) -> int:
        """Batches cut from a load of ``images`` images: ``batches_per_load`` for a full load, proportionally fewer
        (at least one) for the last, partial load of an epoch, so its batches keep about the same size."""
        if self.batch_size is None or images >= self.batch_size:
            return self.batches_per_load
        return max(1, round(self.batches_per_load * images / self.batch_size))

    def _load_sizes(self) -> list[int]:
        """Images in each load of an epoch (the loads' count when a custom ``batch_sampler`` sets them)."""
        if self.batch_size is None:
            return [0] * super().__len__()
        full, rest = divmod(len(self.sampler), self.batch_size)
        return [self.batch_size] * full + ([rest] if rest and not self.drop_last else [])

    def __len__(self) -> int:
        return sum(self.batches_in_load(images) if images else self.batches_per_load for images in self._load_sizes())

    def __iter__(self) -> Iterator[dict[str, Any]]:
        sizes = self._load_sizes()
        for pooled, images in zip(super().__iter__(), sizes):
            yield from split_batch(pooled, self.batches_in_load(images) if images else self.batches_per_load)
