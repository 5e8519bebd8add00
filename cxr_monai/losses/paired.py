"""Generator loss of paired image-to-image GANs (bone suppression, pix2pix): L1 + SSIM to the target + adversarial."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from monai.losses import SSIMLoss

from cxr_monai.losses.adversarial import AdversarialBCELoss, AdversarialHingeLoss

__all__ = ["PairedImageLoss", "PairedImageLossOutput"]


class PairedImageLossOutput(NamedTuple):
    """The total and its unweighted parts (``ssim`` is the loss ``1 - SSIM``)."""

    total: torch.Tensor
    l1: torch.Tensor
    ssim: torch.Tensor
    adversarial: torch.Tensor


class PairedImageLoss(torch.nn.Module):
    """``lambda_adv · adversarial + lambda_l1 · L1 + lambda_ssim · (1 - SSIM)`` of a generated image and its target.

    pix2pix's objective (GAN + λ·L1, λ = 100) with an optional SSIM term (MONAI's ``SSIMLoss``) that rewards the
    local structure of bone edges beyond per-pixel error. ``fake_logits`` is the discriminator's output on the
    generated image (one tensor or one per scale); without it (a reconstruction-only warm-up, or an iteration where
    G does not step) the adversarial part is 0. ``data_range``: the span of the images' values (2 for the networks'
    [-1, 1]).

    Example::

        >>> loss = PairedImageLoss(lambda_l1=100.0, lambda_ssim=0.0)
        >>> out = loss(torch.zeros(1, 1, 16, 16), torch.full((1, 1, 16, 16), 0.5), torch.zeros(1, 1, 2, 2))
        >>> round(float(out.l1), 3), round(float(out.total), 3)  # 100 * 0.5 + BCE(0, real) = 50 + log 2
        (0.5, 50.693)
    """

    def __init__(
        self,
        lambda_adv: float = 1.0,
        lambda_l1: float = 100.0,
        lambda_ssim: float = 0.0,
        adversarial_loss: AdversarialBCELoss | AdversarialHingeLoss | None = None,
        data_range: float = 2.0,
        ssim_window: int = 11,
    ) -> None:
        super().__init__()
        if min(lambda_adv, lambda_l1, lambda_ssim) < 0:
            raise ValueError(f"loss weights must be non-negative, got {lambda_adv}, {lambda_l1}, {lambda_ssim}")
        self.lambda_adv, self.lambda_l1, self.lambda_ssim = lambda_adv, lambda_l1, lambda_ssim
        self.adversarial_loss = adversarial_loss or AdversarialBCELoss()
        self.ssim_loss = SSIMLoss(spatial_dims=2, data_range=data_range, win_size=ssim_window)

    def forward(self, prediction: torch.Tensor, target: torch.Tensor,
                fake_logits: torch.Tensor | Sequence[torch.Tensor] | None = None) -> PairedImageLossOutput:
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        prediction, target = prediction.float(), target.float()
        l1 = (prediction - target).abs().mean()
        zero = torch.zeros((), device=l1.device, dtype=l1.dtype)
        ssim = self.ssim_loss(prediction, target) if self.lambda_ssim else zero
        adversarial = zero if fake_logits is None else self.adversarial_loss.generator_loss(fake_logits)
        total = self.lambda_adv * adversarial + self.lambda_l1 * l1 + self.lambda_ssim * ssim
        return PairedImageLossOutput(total, l1, ssim, adversarial)
