"""Multiple-instance (MIL) losses of ClaSegNet from per-region logits, in log space (issue #13, seed 004).

A network that outputs a grid of region logits ``z_ij`` (``p_ij = sigmoid(z_ij)``, region ``j`` of image ``i``)
gives two probabilities, both computed here from ``logsigmoid`` sums so that neither underflows on a 16x16 grid
(256 factors) nor saturates:

- the **image probability** (Li et al. 2018, "Thoracic Disease Identification and Localization with Limited
  Supervision"; noisy-or): ``P_i = 1 - prod_j (1 - p_ij)``, the probability that at least one region is positive
  (:func:`noisy_or_log_probabilities`, :func:`noisy_or_logit`, :func:`image_probability`). ``ClaSegNet`` uses
  :func:`noisy_or_logit` for its ``"image"`` output, so the network and the evaluation share this one formula;
- the **probability of the mask** (the seed's ``p(y | x_i, mask_i) = prod_{j in N} p_ij * prod_{j in M \\ N}
  (1 - p_ij)``, ``N`` the regions the mask covers, ``M`` every region) and its negative log, the seed's
  ``Loss_mask`` (:func:`mask_log_likelihood`, :class:`MaskMILLoss`). For an image without a mask it is
  ``prod_M (1 - p_ij) = 1 - P_i``, the noisy-or probability of a negative image.

:class:`ClaSegNetLoss` adds the segmentation branch's Dice (+ BCE) loss, and trains the plain ResNet-50 baseline
(``"image"`` only) with BCE against the image label derived from the mask.

Example::

    loss_fn = ClaSegNetLoss(mil_weight=1.0, segmentation_weight=1.0)
    loss = loss_fn(network(images), masks)  # what monai.engines.SupervisedTrainer calls with the mask as label
    loss_fn.last_terms  # {"mil": ..., "dice": ..., "segmentation_bce": ..., "segmentation": ..., "loss": ...}
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.losses import DiceLoss
from torch.nn.modules.loss import _Loss

__all__ = [
    "ClaSegNetLoss",
    "MaskMILLoss",
    "image_label_from_mask",
    "image_probability",
    "mask_log_likelihood",
    "mask_to_regions",
    "noisy_or_log_probabilities",
    "noisy_or_logit",
]

_REDUCTIONS = ("mean", "sum", "none")


def _float32_at_least(tensor: torch.Tensor) -> torch.Tensor:
    # half-precision logits (autocast) are summed over 256 regions: do it in float32; float64 stays float64
    if tensor.dtype == torch.float16 or tensor.dtype == torch.bfloat16:
        return tensor.float()
    return tensor


def noisy_or_log_probabilities(region_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log P, log(1 - P))`` of the noisy-or image probability ``P = 1 - prod_j (1 - p_j)``, per image and channel.

    ``region_logits`` is ``(B, C, h, w)`` (any number of spatial dimensions after ``(B, C)``); ``p_j =
    sigmoid(z_j)`` over the ``h * w`` regions. Both results are ``(B, C)`` and computed in log space:

    - ``log(1 - P) = s = sum_j logsigmoid(-z_j)``;
    - ``log P = log(-expm1(s))`` would cancel when every ``p_j`` is tiny (``s`` rounds to 0: ``log P`` becomes
      ``-inf``), so it is written with the telescoping identity ``P = sum_j p_j prod_{k<j} (1 - p_k)`` (the
      first positive region is ``j``), whose terms are all positive:
      ``log P = logsumexp_j(logsigmoid(z_j) + sum_{k<j} logsigmoid(-z_k))``.

    Every value and gradient is finite for finite logits, including logits of +-1e4 on a 16x16 grid. Half
    precision is computed in float32.

    Example::

        >>> log_p, log_q = noisy_or_log_probabilities(torch.zeros(1, 1, 2, 2))  # four regions at 0.5
        >>> round(log_p.exp().item(), 4), round(log_q.exp().item(), 4)  # 1 - 0.5**4, 0.5**4
        (0.9375, 0.0625)
    """
    if region_logits.dim() < 3:
        raise ValueError(f"region logits must be (B, C, *spatial), got shape {list(region_logits.shape)}.")
    z = _float32_at_least(region_logits).flatten(2)
    log_not = F.logsigmoid(-z)  # log(1 - p_j)
    log_q = log_not.sum(dim=2)
    before = F.pad(torch.cumsum(log_not, dim=2)[:, :, :-1], (1, 0))  # sum_{k<j} log(1 - p_k), exactly 0 for j = 0
    log_p = torch.logsumexp(F.logsigmoid(z) + before, dim=2)
    return log_p, log_q


def noisy_or_logit(region_logits: torch.Tensor) -> torch.Tensor:
    """The image logit ``log P - log(1 - P)`` (``B, C``) of the noisy-or of region logits ``(B, C, *spatial)``.

    ``sigmoid`` of it is :func:`image_probability`; see :func:`noisy_or_log_probabilities` for the stable
    formula. TorchScript-compatible (``ClaSegNet.forward`` calls it).

    Example::

        >>> noisy_or_logit(torch.zeros(1, 1, 2, 2))  # P = 15/16: log 15
        tensor([[2.7081]])
    """
    log_p, log_q = noisy_or_log_probabilities(region_logits)
    return log_p - log_q


def image_probability(region_logits: torch.Tensor) -> torch.Tensor:
    """The noisy-or image probability ``1 - prod_j (1 - sigmoid(z_j))`` (``B, C``) from region logits, in log space.

    Example::

        >>> p = image_probability(torch.full((1, 1, 16, 16), -30.0))  # 256 regions of 9.36e-14: 1 - prod rounds to 0
        >>> f"{p.item():.3e}", (1 - (1 - torch.sigmoid(torch.full((256,), -30.0))).prod()).item()
        ('2.396e-11', 0.0)
    """
    return noisy_or_log_probabilities(region_logits)[0].exp()


def mask_to_regions(
    mask: torch.Tensor, grid_size: tuple[int, int] | torch.Size, min_coverage: float = 0.0, threshold: float = 0.5
) -> torch.Tensor:
    """The region targets (the seed's ``N``): 1 where the mask covers a region of the grid, 0 elsewhere.

    The mask ``(B, C, H, W)`` is binarised at ``> threshold`` (interpolated mask edges below it do not count) and
    reduced to ``grid_size = (h, w)`` by adaptive pooling, each region being the block of pixels that adaptive
    pooling assigns to it (``H / h`` x ``W / w`` pixels when they divide; 32 x 32 for ClaSegNet's grid). A region is
    in ``N`` when the covered fraction of its pixels is ``> 0`` (``min_coverage=0``, the default: any pixel, i.e.
    an adaptive max-pool) or ``>= min_coverage`` otherwise.

    Example::

        >>> mask = torch.zeros(1, 1, 8, 8)
        >>> mask[0, 0, 0, 0] = mask[0, 0, 4:8, 4:7] = 1  # one pixel of the top-left quarter, 12/16 of the last
        >>> mask_to_regions(mask, (2, 2)).flatten().tolist(), mask_to_regions(mask, (2, 2), 0.5).flatten().tolist()
        ([1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0])
    """
    if mask.dim() != 4:
        raise ValueError(f"the mask must be (B, C, H, W), got shape {list(mask.shape)}.")
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be in [0, 1] (got {min_coverage}).")
    binary = (mask > threshold).to(torch.float32)
    size = (int(grid_size[0]), int(grid_size[1]))
    if min_coverage == 0.0:
        return F.adaptive_max_pool2d(binary, size)
    return (F.adaptive_avg_pool2d(binary, size) >= min_coverage).to(torch.float32)


def image_label_from_mask(mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """The image label ``(B, C)``: 1 when any pixel of the mask ``(B, C, *spatial)`` is ``> threshold``, else 0.

    Example::

        >>> image_label_from_mask(torch.stack([torch.zeros(1, 4, 4), torch.eye(4)[None]]))
        tensor([[0.],
                [1.]])
    """
    return (mask > threshold).flatten(2).any(dim=2).to(torch.float32)


def mask_log_likelihood(region_logits: torch.Tensor, region_targets: torch.Tensor) -> torch.Tensor:
    """``log p(y | x, mask) = sum_{j in N} log p_j + sum_{j in M \\ N} log(1 - p_j)`` per image ``(B,)``.

    ``region_targets`` (same shape as ``region_logits``, ``B, C, *spatial``) is 1 on ``N`` and 0 on ``M \\ N``
    (:func:`mask_to_regions`); ``log p_j = logsigmoid(z_j)``, ``log(1 - p_j) = logsigmoid(-z_j)``, summed over
    channels and regions, so nothing is multiplied in probability space. It equals minus the per-region binary
    cross-entropy summed over the regions (soft targets in [0, 1] give that BCE too). Half precision is computed
    in float32.

    Example::

        >>> mask_log_likelihood(torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]))  # 4 log 0.5
        tensor([-2.7726])
    """
    if region_logits.shape != region_targets.shape:
        raise ValueError(
            f"region targets {list(region_targets.shape)} must have the shape of the logits {list(region_logits.shape)}."
        )
    z = _float32_at_least(region_logits)
    t = region_targets.to(z.dtype)
    return (t * F.logsigmoid(z) + (1.0 - t) * F.logsigmoid(-z)).flatten(1).sum(dim=1)


def _plain(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image


class MaskMILLoss(_Loss):
    """The seed's ``Loss_mask = -sum_i log p(y | x_i, mask_i)`` from region logits and full-size masks, in log space.

    ``p(y | x_i, mask_i) = prod_{j in N} p_ij * prod_{j in M \\ N} (1 - p_ij)`` (:func:`mask_log_likelihood`), with
    ``N`` the regions the mask covers once reduced to the logits' grid (:func:`mask_to_regions`: by default a
    region is in ``N`` when any of its pixels is in the mask; ``min_coverage`` asks for a fraction of it). An
    empty mask (negative image) gives ``prod_M (1 - p_ij)``, one minus the noisy-or image probability.

    **Batch reduction.** ``reduction="mean"`` (default) averages ``-log p(y | x_i, mask_i)`` over the images of the
    batch: the seed's ``sum_i`` divided by the batch size, which only rescales the learning rate and keeps the loss
    independent of the batch size; ``"sum"`` is the seed's sum, ``"none"`` the per-image values ``(B,)``. Over the
    regions the seed sums (``M`` = 256 terms on ClaSegNet's 16x16 grid at 512 px, about 177 at initialisation);
    ``normalize_regions=True`` divides by the number of regions (the mean per-region BCE), which makes the term
    independent of the grid size and comparable to a Dice loss in [0, 1].

    Args:
        min_coverage: fraction of a region's pixels the mask must cover for the region to be in ``N``; 0 (default):
            any pixel (adaptive max-pool).
        mask_threshold: mask pixels ``> mask_threshold`` are in the mask.
        reduction: ``"mean"`` (over images), ``"sum"`` or ``"none"``.
        normalize_regions: divide each image's term by its number of regions (and channels).

    Example::

        >>> loss = MaskMILLoss()
        >>> mask = torch.zeros(2, 1, 64, 64)
        >>> mask[1, :, :10, :10] = 1  # image 1: the top-left region of a 2x2 grid
        >>> loss(torch.zeros(2, 1, 2, 2), mask)  # every p_ij = 0.5: -log(0.5**4) for each image
        tensor(2.7726)
    """

    def __init__(
        self,
        min_coverage: float = 0.0,
        mask_threshold: float = 0.5,
        reduction: str = "mean",
        normalize_regions: bool = False,
    ) -> None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS} (got {reduction!r}).")
        if not 0.0 <= min_coverage <= 1.0:
            raise ValueError(f"min_coverage must be in [0, 1] (got {min_coverage}).")
        super().__init__(reduction=reduction)
        self.min_coverage = float(min_coverage)
        self.mask_threshold = float(mask_threshold)
        self.normalize_regions = bool(normalize_regions)

    def region_targets(self, region_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The seed's ``N`` on the grid of ``region_logits`` (``B, C, h, w``) from ``mask`` (``B, C or 1, H, W``)."""
        mask = _plain(mask)
        if region_logits.dim() != 4 or mask.dim() != 4:
            raise ValueError(
                f"region logits and mask must be (B, C, h, w) and (B, C, H, W), got {list(region_logits.shape)} "
                f"and {list(mask.shape)}."
            )
        if mask.shape[0] != region_logits.shape[0] or mask.shape[1] not in (1, region_logits.shape[1]):
            raise ValueError(
                f"the mask {list(mask.shape)} does not match the region logits {list(region_logits.shape)} "
                f"(same batch; 1 or the same channels)."
            )
        if mask.shape[2] < region_logits.shape[2] or mask.shape[3] < region_logits.shape[3]:
            raise ValueError(
                f"the mask ({mask.shape[2]}x{mask.shape[3]}) is smaller than the region grid "
                f"({region_logits.shape[2]}x{region_logits.shape[3]})."
            )
        targets = mask_to_regions(mask, region_logits.shape[2:], self.min_coverage, self.mask_threshold)
        return targets.expand(-1, region_logits.shape[1], -1, -1).to(region_logits.device)

    def forward(self, region_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``-log p(y | x_i, mask_i)`` reduced over the batch; ``region_logits`` ``(B, C, h, w)``, ``mask`` ``(B, 1|C, H, W)``."""
        region_logits = _plain(region_logits)
        per_image = -mask_log_likelihood(region_logits, self.region_targets(region_logits, mask))
        if self.normalize_regions:
            per_image = per_image / region_logits[0].numel()
        return _reduce(per_image, self.reduction)


class ClaSegNetLoss(_Loss):
    """ClaSegNet's training loss on the network's output dict and the mask, for ``SupervisedTrainer``.

    Called as ``loss(network(image), mask)``: MONAI's ``SupervisedTrainer`` computes
    ``loss_function(network(inputs), targets)`` with the mask as the batch label, and the image label is derived
    from it (positive iff any mask pixel ``> mask_threshold``, :func:`image_label_from_mask`). Depending on the
    outputs present:

    - ``"regions"`` (ClaSegNet): ``mil = MaskMILLoss(regions, mask)``, the seed's mask-supervised MIL loss;
    - ``"segmentation"`` (ClaSegNet): ``segmentation = Dice + segmentation_bce_weight * BCE`` of the full-size mask
      logits against the binarised mask. The Dice is MONAI's ``DiceLoss(sigmoid=True)`` with ``batch=True`` by
      default (``dice_batch``): one Dice over the whole batch, so negative images (empty masks, half of the
      seed's balanced set) do not each contribute a Dice of about 1 whatever the prediction; the pixel BCE
      (``binary_cross_entropy_with_logits``, mean over pixels) also gives every pixel of a negative image a
      gradient towards 0 and steadies the start of training;
    - neither (the plain ResNet-50 baseline, ``"image"`` only): ``image_bce = BCE(image, image label)``.

    The total is ``mil_weight * mil + segmentation_weight * segmentation`` for ClaSegNet and
    ``image_weight * image_bce`` for the baseline. With the seed's unnormalised MIL sum (256 regions) the MIL term
    is about 100x the segmentation term at initialisation; ``normalize_regions=True`` (mean per region) or a
    smaller ``mil_weight`` balances them.

    :attr:`last_terms` holds the terms of the last call (detached tensors; no device synchronisation), e.g. for
    an Ignite handler that logs ``loss_function.last_terms``; :meth:`terms` returns them with their graph.

    Args:
        mil_weight: weight of the MIL term.
        segmentation_weight: weight of the segmentation term (Dice + BCE).
        segmentation_bce_weight: weight of the pixel BCE inside the segmentation term (0: Dice only).
        image_weight: weight of the baseline's image BCE.
        min_coverage, mask_threshold, normalize_regions: as :class:`MaskMILLoss` (``mask_threshold`` also
            binarises the segmentation target and defines the image label).
        dice_batch: ``DiceLoss(batch=...)``: one Dice over the batch (``True``) or a mean of per-image Dice.

    Example::

        >>> loss_fn = ClaSegNetLoss()
        >>> mask = torch.zeros(2, 1, 64, 64)
        >>> mask[1, :, :10, :10] = 1
        >>> outputs = {"regions": torch.zeros(2, 1, 2, 2), "image": torch.zeros(2, 1),
        ...            "segmentation": torch.zeros(2, 1, 64, 64)}
        >>> round(loss_fn(outputs, mask).item(), 4), sorted(loss_fn.last_terms)
        (4.4419, ['dice', 'loss', 'mil', 'segmentation', 'segmentation_bce'])
        >>> round(loss_fn({"image": torch.zeros(2, 1)}, mask).item(), 4)  # the baseline: BCE at 0.5 = log 2
        0.6931
    """

    def __init__(
        self,
        mil_weight: float = 1.0,
        segmentation_weight: float = 1.0,
        segmentation_bce_weight: float = 1.0,
        image_weight: float = 1.0,
        min_coverage: float = 0.0,
        mask_threshold: float = 0.5,
        normalize_regions: bool = False,
        dice_batch: bool = True,
    ) -> None:
        super().__init__(reduction="mean")
        for name, value in (("mil_weight", mil_weight), ("segmentation_weight", segmentation_weight),
                            ("segmentation_bce_weight", segmentation_bce_weight), ("image_weight", image_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (got {value}).")
        self.mil_weight = float(mil_weight)
        self.segmentation_weight = float(segmentation_weight)
        self.segmentation_bce_weight = float(segmentation_bce_weight)
        self.image_weight = float(image_weight)
        self.mask_threshold = float(mask_threshold)
        self.mil = MaskMILLoss(min_coverage=min_coverage, mask_threshold=mask_threshold, reduction="mean",
                               normalize_regions=normalize_regions)
        self.dice = DiceLoss(sigmoid=True, batch=dice_batch)
        self.last_terms: dict[str, torch.Tensor] = {}

    def terms(self, outputs: Mapping[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term (with its graph) and their weighted sum under ``"loss"``."""
        if not isinstance(outputs, Mapping):
            raise TypeError(
                f"ClaSegNetLoss expects the network's output dict ({{'image', 'regions', 'segmentation'}}), "
                f"got {type(outputs).__name__}."
            )
        mask = _plain(mask)
        terms: dict[str, torch.Tensor] = {}
        if "regions" in outputs:
            terms["mil"] = self.mil(outputs["regions"], mask)
            total = self.mil_weight * terms["mil"]
            if "segmentation" in outputs:
                logits = _float32_at_least(_plain(outputs["segmentation"]))
                if logits.shape[0] != mask.shape[0] or logits.shape[2:] != mask.shape[2:]:
                    raise ValueError(
                        f"the segmentation {list(logits.shape)} and the mask {list(mask.shape)} differ in size."
                    )
                target = (mask > self.mask_threshold).to(logits.dtype).expand_as(logits)
                terms["dice"] = self.dice(logits, target)
                terms["segmentation_bce"] = F.binary_cross_entropy_with_logits(logits, target)
                terms["segmentation"] = terms["dice"] + self.segmentation_bce_weight * terms["segmentation_bce"]
                total = total + self.segmentation_weight * terms["segmentation"]
        elif "image" in outputs:
            logits = _float32_at_least(_plain(outputs["image"]))
            label = image_label_from_mask(mask, self.mask_threshold).to(logits.device, logits.dtype)
            if label.shape[1] != logits.shape[1]:
                label = label.expand_as(logits)
            terms["image_bce"] = F.binary_cross_entropy_with_logits(logits, label)
            total = self.image_weight * terms["image_bce"]
        else:
            raise KeyError(f"ClaSegNetLoss needs 'regions' or 'image' in the outputs, got {sorted(outputs)}.")
        terms["loss"] = total
        return terms

    def forward(self, outputs: Mapping[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """The weighted total (a scalar); the terms go to :attr:`last_terms`."""
        terms = self.terms(outputs, mask)
        self.last_terms = {name: value.detach() for name, value in terms.items()}
        return terms["loss"]
