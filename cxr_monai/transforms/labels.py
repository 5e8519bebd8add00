"""Datalist ``labels`` (multi-hot with -1 uncertain and ``null`` not mentioned) as a tensor a batch can collate.

MONAI's collate turns a per-item list into a list of per-class tensors and cannot collate ``None``; a classifier
needs one ``(C,)`` float tensor per item, ``NaN`` where the datalist says ``null``, which
:class:`~cxr_monai.losses.MaskedBCEWithLogitsLoss` and :func:`~cxr_monai.metrics.multilabel_auroc` leave out.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from cxr_monai.losses.multilabel import multilabel_targets

__all__ = ["MultiHot", "MultiHotD", "MultiHotDict", "MultiHotd"]


class MultiHot(Transform):
    """``[1, 0, -1, None]`` → ``tensor([1., 0., -1., nan])`` (float32), checking the length when ``num_classes`` is set;
    a single number (the binary normal/abnormal ``label``) is one class.

    >>> MultiHot(num_classes=3)([1, None, -1])
    tensor([ 1., nan, -1.])
    >>> MultiHot(num_classes=1)(1)
    tensor([1.])
    """

    def __init__(self, num_classes: int | None = None) -> None:
        self.num_classes = num_classes

    def __call__(self, labels: Sequence[float | None] | torch.Tensor) -> torch.Tensor:
        if isinstance(labels, torch.Tensor):
            values = labels.float().reshape(-1)
        else:
            values = multilabel_targets([[labels] if labels is None or isinstance(labels, (int, float)) else list(labels)])[0]
        if self.num_classes is not None and values.numel() != self.num_classes:
            raise ValueError(f"{values.numel()} labels where the datalist's label_names give {self.num_classes}")
        return values


class MultiHotd(MapTransform):
    """Dictionary version of :class:`MultiHot` (default key ``labels``).

    >>> MultiHotd()({"labels": [0, 1]})["labels"]
    tensor([0., 1.])
    """

    def __init__(self, keys: KeysCollection = "labels", num_classes: int | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = MultiHot(num_classes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


MultiHotD = MultiHotDict = MultiHotd
