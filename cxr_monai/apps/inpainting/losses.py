"""Context-encoder losses (seed 001, §3.2 and §3.4): the border-weighted L2 and the joint L2 + adversarial loss."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.nn.modules.loss import _Loss

from cxr_monai.apps.inpainting.holes import border_weight_map
from cxr_monai.losses.adversarial import AdversarialBCELoss

__all__ = [
    "BorderWeightedL2Loss",
    "ContextEncoderLoss",
    "ContextEncoderLossOutput",
]


class BorderWeightedL2Loss(_Loss):
    """Masked L2 of eq. 1 with the §3.4 border weighting: squared errors x10 in the 4 px band of the hole.

    ``input`` and ``target`` are the inpainted and the true hole, ``(B, C, H, W)``; the mask ``M`` of eq. 1 is
    implicit because only the hole is compared. ``weight`` (any shape broadcastable to ``input``, e.g. the
    patch transforms' ``weight`` key, ``(B, 1, 64, 64)``) overrides the default map. A full-patch weight map
    that is 0 outside the hole also works, with full patches as ``input`` and ``target``: that is eq. 1's ``M``
    written out. Weights must be non-negative.

    Reductions:

    - ``"weighted_mean"`` (default): ``sum(w * (x - y)^2) / sum(w)``. With all weights 1 this is
      ``F.mse_loss``, so the value reads as a mean squared error and does not change with the band settings.
    - ``"mean"``: ``mean(w * (x - y)^2)``, what Pathak's code (and BoyuanJiang's port) optimises: its weight
      matrix is ``wtl2 * 10`` on the overlap band and ``wtl2`` inside, then ``.mean()``. For a 64 px hole with
      a 4 px band this is ``sum(w) / N = 12736 / 4096 = 3.11`` times the weighted mean, which scales the L2 term
      against the adversarial term of the joint loss; choose this to reproduce that balance exactly.
    - ``"sum"``: ``sum(w * (x - y)^2)``, the squared norm as eq. 1 writes it.
    - ``"none"``: the weighted squared errors, shape of ``input``.

    The loss is computed in float32 so that it is safe under autocast.

    Args:
        band: width in pixels of the border band of the hole (seed: 4).
        band_weight: weight of the band relative to the interior (seed: 10).
        reduction: one of ``"weighted_mean"``, ``"mean"``, ``"sum"``, ``"none"``.

    Example::

        >>> loss = BorderWeightedL2Loss()
        >>> loss(torch.zeros(2, 1, 64, 64), torch.ones(2, 1, 64, 64))
        tensor(1.)
    """

    reductions = ("weighted_mean", "mean", "sum", "none")

    def __init__(self, band: int = 4, band_weight: float = 10.0, reduction: str = "weighted_mean") -> None:
        if reduction not in self.reductions:
            raise ValueError(f"reduction must be one of {self.reductions} (got {reduction!r}).")
        if band_weight < 0:
            raise ValueError(f"band_weight must be non-negative (got {band_weight}).")
        super().__init__(reduction=reduction)
        self.band = band
        self.band_weight = band_weight
        self._default_weights: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def default_weight(self, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The ``(1, 1, H, W)`` float32 map used when ``forward`` gets no ``weight`` (cached per size and device)."""
        key = (height, width, torch.device(device))
        if key not in self._default_weights:
            if height != width:
                raise ValueError(f"the default border weights need a square hole, got {height}x{width}; pass weight=")
            weight = border_weight_map(height, self.band, self.band_weight)[None, None]
            self._default_weights[key] = weight.to(device)
        return self._default_weights[key]

    def forward(self, input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if input.shape != target.shape:
            raise ValueError(f"input and target must have the same shape, got {tuple(input.shape)} and "
                             f"{tuple(target.shape)}.")
        if input.ndim != 4:
            raise ValueError(f"input must be (B, C, H, W), got shape {tuple(input.shape)}.")
        if weight is None:
            weight = self.default_weight(input.shape[-2], input.shape[-1], input.device)
        weight = weight.to(device=input.device, dtype=torch.float32)
        try:
            weight = weight.expand_as(input)
        except RuntimeError as error:
            raise ValueError(f"weight of shape {tuple(weight.shape)} does not broadcast to input of shape "
                             f"{tuple(input.shape)}.") from error
        weighted = weight * (input.float() - target.float()).pow(2)
        if self.reduction == "weighted_mean":
            return weighted.sum() / weight.sum()
        if self.reduction == "mean":
            return weighted.mean()
        if self.reduction == "sum":
            return weighted.sum()
        return weighted


class ContextEncoderLossOutput(NamedTuple):
    """Joint generator loss and its unweighted parts."""

    total: torch.Tensor
    l2: torch.Tensor
    adversarial: torch.Tensor


class ContextEncoderLoss(torch.nn.Module):
    """Joint generator loss of eq. 4: ``lambda_l2 * L2 + lambda_adv * L_adv`` (seed §3.2.3: 0.998 and 0.002).

    ``fake_logits`` is the discriminator's output on the inpainted centres (not detached). Without it (the
    L2-only warm-up epochs of §4.2) the adversarial part is 0 and ``total`` is ``lambda_l2 * L2``, so the
    logged total stays comparable across the schedule.

    Args:
        lambda_l2: weight of the border-weighted L2 term.
        lambda_adv: weight of the adversarial term.
        l2_loss: the reconstruction loss; defaults to :class:`BorderWeightedL2Loss` with the seed's settings.
        adversarial_loss: defaults to :class:`AdversarialBCELoss`.

    Example::

        >>> out = ContextEncoderLoss()(torch.zeros(2, 1, 64, 64), torch.zeros(2, 1, 64, 64), torch.zeros(2, 1))
        >>> out.total, out.l2, out.adversarial  # 0.002 * log 2
        (tensor(0.0014), tensor(0.), tensor(0.6931))
    """

    def __init__(
        self,
        lambda_l2: float = 0.998,
        lambda_adv: float = 0.002,
        l2_loss: torch.nn.Module | None = None,
        adversarial_loss: AdversarialBCELoss | None = None,
    ) -> None:
        super().__init__()
        if lambda_l2 < 0 or lambda_adv < 0:
            raise ValueError(f"loss weights must be non-negative (got {lambda_l2}, {lambda_adv}).")
        self.lambda_l2 = lambda_l2
        self.lambda_adv = lambda_adv
        self.l2_loss = BorderWeightedL2Loss() if l2_loss is None else l2_loss
        self.adversarial_loss = AdversarialBCELoss() if adversarial_loss is None else adversarial_loss

    def forward(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        fake_logits: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> ContextEncoderLossOutput:
        l2 = self.l2_loss(prediction, target, weight)
        if fake_logits is None:
            adversarial = torch.zeros((), device=l2.device, dtype=l2.dtype)
        else:
            adversarial = self.adversarial_loss.generator_loss(fake_logits)
        return ContextEncoderLossOutput(self.lambda_l2 * l2 + self.lambda_adv * adversarial, l2, adversarial)
