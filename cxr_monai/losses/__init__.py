"""Losses any network of the project uses (the context encoder's own are in :mod:`cxr_monai.apps.inpainting`)."""

from __future__ import annotations

from cxr_monai.losses.adversarial import AdversarialBCELoss, AdversarialHingeLoss, gan_diagnostics
from cxr_monai.losses.mil import (
    ClaSegNetLoss,
    MaskMILLoss,
    image_label_from_mask,
    image_probability,
    mask_log_likelihood,
    mask_to_regions,
    noisy_or_log_probabilities,
    noisy_or_logit,
)
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
    "ClaSegNetLoss",
    "MaskMILLoss",
    "MaskedBCEWithLogitsLoss",
    "PairedImageLoss",
    "PairedImageLossOutput",
    "class_pos_weights",
    "gan_diagnostics",
    "image_label_from_mask",
    "image_probability",
    "mask_log_likelihood",
    "mask_to_regions",
    "multilabel_targets",
    "noisy_or_log_probabilities",
    "noisy_or_logit",
    "pos_weights_from_datalist",
]
