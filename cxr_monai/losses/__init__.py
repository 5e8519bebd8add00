"""Losses."""

from __future__ import annotations

from cxr_monai.losses.inpainting import (
    AdversarialBCELoss,
    BorderWeightedL2Loss,
    ContextEncoderLoss,
    ContextEncoderLossOutput,
    gan_diagnostics,
)

__all__ = [
    "AdversarialBCELoss",
    "BorderWeightedL2Loss",
    "ContextEncoderLoss",
    "ContextEncoderLossOutput",
    "gan_diagnostics",
]
