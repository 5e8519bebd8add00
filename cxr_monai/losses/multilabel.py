"""Multi-label classification loss with masked labels and class-imbalance weights (issue #12, seed 003 §3.3).

The classification datalists (:mod:`cxr_monai.data.builders.classification`) hold per class 1 (present), 0
(absent), -1 (uncertain, kept by CheXpert's ``ignore`` policy) or ``null`` (not mentioned). Batched, ``null``
becomes NaN (:func:`multilabel_targets`); :class:`MaskedBCEWithLogitsLoss` leaves every -1 and NaN entry out of the
loss, and :func:`class_pos_weights` / :func:`pos_weights_from_datalist` give BCE's ``pos_weight`` (negatives per
positive, per class) from the same labels.

Example::

    loss_fn = MaskedBCEWithLogitsLoss(pos_weight=pos_weights_from_datalist("chexpert.json", "training"))
    loss = loss_fn(logits, multilabel_targets([entry["labels"] for entry in batch]))
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = [
    "DEFAULT_MAX_POS_WEIGHT",
    "MaskedBCEWithLogitsLoss",
    "class_pos_weights",
    "multilabel_targets",
    "pos_weights_from_datalist",
]

#: Cap of :func:`class_pos_weights`: no class weighs its positives more than this (ChestX-ray14's rarest class,
#: Hernia, has 227 positives in 112,120 images: an uncapped weight of 493 would let a handful of images dominate).
DEFAULT_MAX_POS_WEIGHT = 100.0

LabelRows = Sequence[Sequence[float | int | None]] | np.ndarray | torch.Tensor


def multilabel_targets(labels: LabelRows, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Datalist ``labels`` (one row per image; ``None`` for "not mentioned") as a float tensor with NaN for ``None``.

    >>> multilabel_targets([[1, 0, None], [-1, 1, 0]])
    tensor([[ 1.,  0., nan],
            [-1.,  1.,  0.]])
    """
    if isinstance(labels, torch.Tensor):
        return labels.to(dtype)
    if isinstance(labels, np.ndarray):
        return torch.as_tensor(labels.astype(np.float64), dtype=dtype)
    rows = [[math.nan if value is None else float(value) for value in row] for row in labels]
    if len({len(row) for row in rows}) > 1:
        raise ValueError(f"label rows of different lengths: {sorted({len(row) for row in rows})}")
    return torch.tensor(rows, dtype=dtype)


def _kept(target: torch.Tensor, ignore_value: float | None) -> torch.Tensor:
    kept = ~torch.isnan(target)
    if ignore_value is not None:
        kept &= target != ignore_value
    return kept


class MaskedBCEWithLogitsLoss(_Loss):
    """Binary cross-entropy with logits over the classes, leaving out labels that are -1 (uncertain) or NaN (null).

    ``input`` holds logits and ``target`` labels of the same shape, ``(B, C)`` (``C`` last). An entry whose label is
    NaN or ``ignore_value`` (-1; ``None``: only NaN) is masked: it adds nothing to the loss and gets a zero
    gradient. ``reduction``: ``"mean"`` averages over the kept entries only (0, with a zero gradient, when none is
    kept), ``"sum"`` sums them, ``"none"`` returns the per-entry losses with 0 at the masked entries. Labels
    between 0 and 1 (smoothed) are taken as they are.

    ``pos_weight`` (``C`` values, e.g. :func:`class_pos_weights`) multiplies the loss of the positive labels of
    each class, as in ``torch.nn.BCEWithLogitsLoss``; it is a buffer, so it follows ``.to(device)``.

    >>> loss_fn = MaskedBCEWithLogitsLoss()
    >>> logits = torch.zeros(2, 3)
    >>> loss_fn(logits, torch.tensor([[1.0, 0.0, -1.0], [float("nan"), 1.0, 0.0]]))  # 4 kept, each log 2
    tensor(0.6931)
    >>> weighted = MaskedBCEWithLogitsLoss(pos_weight=[3.0, 1.0, 1.0])  # positives of class 0 weigh 3
    >>> weighted(logits[:1], torch.tensor([[1.0, -1.0, -1.0]]))  # one entry kept: 3 log 2
    tensor(2.0794)
    """

    pos_weight: torch.Tensor | None

    def __init__(self, pos_weight: Sequence[float] | np.ndarray | torch.Tensor | None = None,
                 ignore_value: float | None = -1, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none' (got {reduction!r}).")
        super().__init__(reduction=reduction)
        if pos_weight is not None:
            pos_weight = torch.as_tensor(pos_weight, dtype=torch.float32).detach().clone()
            if pos_weight.ndim != 1 or not torch.isfinite(pos_weight).all() or (pos_weight < 0).any():
                raise ValueError(f"pos_weight must be one finite non-negative value per class, got {pos_weight}")
        self.register_buffer("pos_weight", pos_weight)
        self.ignore_value = ignore_value

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.shape != target.shape:
            raise ValueError(f"logits {tuple(input.shape)} and labels {tuple(target.shape)} must have the same shape")
        if self.pos_weight is not None and input.shape[-1] != self.pos_weight.numel():
            raise ValueError(f"pos_weight has {self.pos_weight.numel()} classes, the logits {input.shape[-1]}")
        target = target.to(input.dtype)
        kept = _kept(target, self.ignore_value)
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(input.dtype)
        # masked labels are set to 0 so that no NaN reaches the loss or its gradient, then multiplied out
        losses = F.binary_cross_entropy_with_logits(input, torch.where(kept, target, torch.zeros_like(target)),
                                                    pos_weight=pos_weight, reduction="none")
        losses = torch.where(kept, losses, torch.zeros_like(losses))
        if self.reduction == "none":
            return losses
        if self.reduction == "sum":
            return losses.sum()
        return losses.sum() / kept.sum().clamp(min=1)


def class_pos_weights(labels: LabelRows, *, ignore_value: float | None = -1,
                      max_weight: float | None = DEFAULT_MAX_POS_WEIGHT) -> torch.Tensor:
    """``pos_weight`` per class: negatives per positive, ``n_negative / n_positive``, counted over the labels.

    ``labels``: one row per image (datalist ``labels``: 1, 0, -1, ``None``; or an array / tensor with NaN). Only 1
    (positive) and 0 (negative) count; -1 (``ignore_value``) and ``None``/NaN are ignored, as the loss ignores them.
    Labels from U-ones / U-zeros lists are already 0/1. A class without positives gets ``max_weight``
    (:data:`DEFAULT_MAX_POS_WEIGHT`, 100) -- or, with ``max_weight=None``, ``n_negative``, the weight one positive
    would give it -- and a class without negatives gets 1 (nothing to balance). Every weight is capped at
    ``max_weight``. Returns a float32 tensor of one weight per class, for :class:`MaskedBCEWithLogitsLoss`.

    >>> class_pos_weights([[1, 0, None], [0, 0, 1], [0, -1, 1], [0, 0, None]])
    tensor([  3., 100.,   1.])
    >>> class_pos_weights([[1, 0], [0, 0], [0, 0]], max_weight=None)
    tensor([2., 3.])
    """
    target = multilabel_targets(labels, torch.float64)
    if target.ndim != 2:
        raise ValueError(f"labels must be one row per image, got shape {tuple(target.shape)}")
    kept = _kept(target, ignore_value)
    positives = ((target == 1) & kept).sum(0).double()
    negatives = ((target == 0) & kept).sum(0).double()
    cap = math.inf if max_weight is None else float(max_weight)
    if cap <= 0:
        raise ValueError(f"max_weight must be positive, got {max_weight}")
    weights = negatives / positives.clamp(min=1)
    weights = torch.where(positives == 0, torch.full_like(weights, cap) if max_weight is not None else negatives,
                          weights)
    weights = torch.where(negatives == 0, torch.ones_like(weights), weights)
    return weights.clamp(max=cap).float()


def pos_weights_from_datalist(path: str | os.PathLike, split: str = "training", *, key: str = "labels",
                              ignore_value: float | None = -1, max_weight: float | None = DEFAULT_MAX_POS_WEIGHT,
                              validate: bool = False) -> torch.Tensor:
    """:func:`class_pos_weights` of the ``labels`` of one split (default ``training``) of a datalist file, in the
    order of its ``label_names``; with ``key="label"``, of the binary normal/abnormal ``label`` (one class).

    The split's every entry must carry ``labels`` with one value per name (or ``label``, 0 or 1). ``validate`` checks the whole file
    against the schema first (:func:`~cxr_monai.data.validate_datalist`; minutes for CheXpert's 190k entries).

    >>> import json
    >>> _ = open("list.json", "w").write(json.dumps({"label_names": ["A", "B"], "training": [
    ...     {"image": "1.png", "labels": [1, 0]}, {"image": "2.png", "labels": [0, None]},
    ...     {"image": "3.png", "labels": [0, 1]}]}))
    >>> pos_weights_from_datalist("list.json")
    tensor([2., 1.])
    """
    path = Path(path)
    if validate:
        from cxr_monai.data.datalist import validate_datalist

        document = validate_datalist(path)
    else:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such datalist file")
        document = json.loads(path.read_text(encoding="utf-8"))
    entries = document.get(split)
    if not entries:
        raise ValueError(f"{path}: no entries in '{split}'")
    rows = []
    if key == "label":
        for number, entry in enumerate(entries):
            if entry.get("label") not in (0, 1):
                raise ValueError(f"{path}: {split}[{number}]: 'label' must be 0 or 1, got {entry.get('label')!r}")
            rows.append([entry["label"]])
        return class_pos_weights(rows, ignore_value=ignore_value, max_weight=max_weight)
    names = document.get("label_names")
    if not isinstance(names, list) or not names:
        raise ValueError(f"{path}: no 'label_names': not a multi-label datalist")
    for number, entry in enumerate(entries):
        labels = entry.get(key)
        if not isinstance(labels, list) or len(labels) != len(names):
            raise ValueError(f"{path}: {split}[{number}]: '{key}' must hold one value per label name "
                             f"({len(names)}), got {labels!r}")
        rows.append(labels)
    return class_pos_weights(rows, ignore_value=ignore_value, max_weight=max_weight)
