"""``prepare_batch`` for MONAI's supervised engines when the datalist keys are not ``image`` / ``label``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["KeyedBatch"]


class KeyedBatch:
    """``(batch[image_key], batch[label_key])`` on the device, for ``SupervisedTrainer`` / ``SupervisedEvaluator``
    (``prepare_batch=KeyedBatch(label_key="lung_mask")``), so a datalist keeps its own names (``lung_mask``) instead
    of copying them to ``label``. Without ``label_key`` (inference) the label is ``None``. ``kwarg_keys`` are batch
    keys the network takes as keyword arguments (the dual-branch classifier's ``lateral`` and ``lateral_present``):
    the engines then call ``network(image, **{key: batch[key]})``.

    Example::

        >>> image, label = KeyedBatch(label_key="lung_mask")({"image": torch.zeros(1, 1, 2, 2),
        ...                                                   "lung_mask": torch.ones(1, 1, 2, 2)})
        >>> float(label.sum())
        4.0
        >>> _, _, args, kwargs = KeyedBatch(kwarg_keys=["lateral"])({"image": torch.zeros(1, 1, 2, 2),
        ...     "label": torch.ones(1, 3), "lateral": torch.zeros(1, 1, 2, 2)})
        >>> sorted(kwargs)
        ['lateral']
    """

    def __init__(self, image_key: str = "image", label_key: str | None = "label",
                 kwarg_keys: Sequence[str] = ()) -> None:
        self.image_key = image_key
        self.label_key = label_key
        self.kwarg_keys = tuple(kwarg_keys)

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: torch.device | str | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, tuple, dict[str, Any]]:
        def to_device(key: str) -> torch.Tensor:
            if key not in batchdata:
                raise KeyError(f"batch has no '{key}' (keys: {sorted(batchdata)})")
            return torch.as_tensor(batchdata[key]).to(device=device, non_blocking=non_blocking, **kwargs)

        label = to_device(self.label_key) if self.label_key is not None else None
        if self.kwarg_keys:
            return to_device(self.image_key), label, (), {key: to_device(key) for key in self.kwarg_keys}
        return to_device(self.image_key), label
