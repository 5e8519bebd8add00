"""``prepare_batch`` for MONAI's supervised engines when the datalist keys are not ``image`` / ``label``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["KeyedBatch"]


class KeyedBatch:
    """``(batch[image_key], batch[label_key])`` on the device, for ``SupervisedTrainer`` / ``SupervisedEvaluator``
    (``prepare_batch=KeyedBatch(label_key="lung_mask")``), so a datalist keeps its own names (``lung_mask``) instead
    of copying them to ``label``. Without ``label_key`` (inference) the label is ``None``.

    Example::

        >>> image, label = KeyedBatch(label_key="lung_mask")({"image": torch.zeros(1, 1, 2, 2),
        ...                                                   "lung_mask": torch.ones(1, 1, 2, 2)})
        >>> float(label.sum())
        4.0
    """

    def __init__(self, image_key: str = "image", label_key: str | None = "label") -> None:
        self.image_key = image_key
        self.label_key = label_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: torch.device | str | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        def to_device(key: str) -> torch.Tensor:
            if key not in batchdata:
                raise KeyError(f"batch has no '{key}' (keys: {sorted(batchdata)})")
            return torch.as_tensor(batchdata[key]).to(device=device, non_blocking=non_blocking, **kwargs)

        label = to_device(self.label_key) if self.label_key is not None else None
        return to_device(self.image_key), label
