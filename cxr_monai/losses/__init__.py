"""Losses any network of the project uses (the context encoder's own are in :mod:`cxr_monai.apps.inpainting`)."""

from __future__ import annotations

from cxr_monai.losses.adversarial import AdversarialBCELoss, AdversarialHingeLoss, gan_diagnostics
from cxr_monai.losses.multilabel import (
    MaskedBCEWithLogitsLoss,
    class_pos_weights,
    multilabel_targets,
    pos_weights_from_datalist,
)
from cxr_monai.losses.paired import PairedImageLoss, PairedImageLossOutput

__all__ = [
    "AdversarialBCELoss",
    "AdversarialHingeLoss",
    "MaskedBCEWithLogitsLoss",
    "PairedImageLoss",
    "PairedImageLossOutput",
    "class_pos_weights",
    "gan_diagnostics",
    "multilabel_targets",
    "pos_weights_from_datalist",
]
