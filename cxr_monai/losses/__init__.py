"""Losses any network of the project uses (the context encoder's own are in :mod:`cxr_monai.apps.inpainting`)."""

from __future__ import annotations

from cxr_monai.losses.adversarial import AdversarialBCELoss, AdversarialHingeLoss, gan_diagnostics
from cxr_monai.losses.paired import PairedImageLoss, PairedImageLossOutput

__all__ = ["AdversarialBCELoss", "AdversarialHingeLoss", "PairedImageLoss", "PairedImageLossOutput", "gan_diagnostics"]
