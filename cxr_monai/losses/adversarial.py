"""Adversarial losses and diagnostics for GAN discriminators that output logits.

A discriminator may output one logit tensor or a list of them (a multi-scale discriminator: one per scale); the
losses then average the per-scale losses, and the diagnostics pool every logit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["AdversarialBCELoss", "AdversarialHingeLoss", "gan_diagnostics"]

Logits = torch.Tensor | Sequence[torch.Tensor]


def _per_scale(logits: Logits) -> list[torch.Tensor]:
    scales = [logits] if isinstance(logits, torch.Tensor) else list(logits)
    if not scales:
        raise ValueError("the discriminator returned no logits")
    return scales


def _mean_over_scales(loss, logits: Logits, *args) -> torch.Tensor:
    losses = [loss(scale, *args) for scale in _per_scale(logits)]
    return losses[0] if len(losses) == 1 else torch.stack(losses).mean(0)


class AdversarialBCELoss(_Loss):
    """Binary cross-entropy of discriminator logits against "real" (1) or "inpainted" (0) for every sample.

    Works on logits (``F.binary_cross_entropy_with_logits``), which is stable and autocast-safe. MONAI's
    ``PatchAdversarialLoss(criterion="bce")`` applies a sigmoid and ``BCELoss`` instead, which autocast
    rejects, hence this class.

    The generator term is the non-saturating ``BCE(D(G(z)), real)`` that Pathak's code (and DCGAN) use in
    place of minimising ``log(1 - D(G(z)))`` from eq. 2-3; the discriminator term is
    ``BCE(D(x), real) + BCE(D(G(z)), inpainted)``, summed as in Pathak's ``errD = errD_real + errD_fake``.

    Example::

        >>> adv = AdversarialBCELoss()
        >>> adv.discriminator_loss(torch.zeros(4, 1), torch.zeros(4, 1))  # D says 0.5 to everything: 2 log 2
        tensor(1.3863)
    """

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none' (got {reduction!r}).")
        super().__init__(reduction=reduction)

    def forward(self, input: Logits, target_is_real: bool) -> torch.Tensor:
        return _mean_over_scales(self._bce, input, target_is_real)

    def _bce(self, logits: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.full_like(logits, 1.0 if target_is_real else 0.0)
        return F.binary_cross_entropy_with_logits(logits, target, reduction=self.reduction)

    def generator_loss(self, fake_logits: Logits) -> torch.Tensor:
        """Generator term: inpainted centres should be scored real."""
        return self(fake_logits, target_is_real=True)

    def discriminator_loss(self, real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
        """Discriminator term; pass ``fake_logits`` from a detached generator output."""
        return self(real_logits, target_is_real=True) + self(fake_logits, target_is_real=False)


class AdversarialHingeLoss(_Loss):
    """Hinge loss of SAGAN / spectral-normalisation GANs (Miyato et al. 2018; Zhang et al. 2019) on logits.

    Discriminator: ``mean(relu(1 - D(x)))`` for real, ``mean(relu(1 + D(G(z))))`` for generated images (``forward``
    with ``target_is_real``); generator: ``-mean(D(G(z)))`` (:meth:`generator_loss`). The same interface as
    :class:`AdversarialBCELoss`, so trainers and generator losses take either.

    Example::

        >>> hinge = AdversarialHingeLoss()
        >>> hinge(torch.tensor([[2.0], [0.0]]), True), hinge.generator_loss(torch.tensor([[2.0], [0.0]]))
        (tensor(0.5000), tensor(-1.))
    """

    def __init__(self) -> None:
        super().__init__(reduction="mean")

    def forward(self, input: Logits, target_is_real: bool) -> torch.Tensor:
        sign = -1.0 if target_is_real else 1.0
        return _mean_over_scales(lambda logits: F.relu(1.0 + sign * logits).mean(), input)

    def generator_loss(self, fake_logits: Logits) -> torch.Tensor:
        """Generator term: ``-mean(D(G(z)))``, averaged over scales."""
        return _mean_over_scales(lambda logits: -logits.mean(), fake_logits)

    def discriminator_loss(self, real_logits: Logits, fake_logits: Logits) -> torch.Tensor:
        """Discriminator term; pass ``fake_logits`` from a detached generator output."""
        return self(real_logits, target_is_real=True) + self(fake_logits, target_is_real=False)


@torch.no_grad()
def gan_diagnostics(real_logits: Logits, fake_logits: Logits) -> dict[str, torch.Tensor]:
    """Training diagnostics of §3.2.3 from discriminator logits, as detached scalars.

    - ``minimax_value``: ``V(G, D) = mean log D(x) + mean log(1 - D(G(z)))`` (eq. 2), computed with
      ``logsigmoid`` (``log(1 - sigmoid(l)) = logsigmoid(-l)``) so saturated logits give large negative
      values, not ``-inf``. It is ``-log 4`` when D answers 0.5 everywhere; lower means D is winning.
    - ``d_real``: mean ``D(x)``, the probability given to real centres.
    - ``d_fake``: mean ``D(G(z))``, the probability given to inpainted centres.

    Example::

        >>> gan_diagnostics(torch.zeros(4, 1), torch.zeros(4, 1))["minimax_value"]  # -log 4
        tensor(-1.3863)
    """
    real_logits = torch.cat([scale.float().flatten() for scale in _per_scale(real_logits)])
    fake_logits = torch.cat([scale.float().flatten() for scale in _per_scale(fake_logits)])
    return {
        "minimax_value": F.logsigmoid(real_logits).mean() + F.logsigmoid(-fake_logits).mean(),
        "d_real": torch.sigmoid(real_logits).mean(),
        "d_fake": torch.sigmoid(fake_logits).mean(),
    }
