"""DCGAN building blocks shared by the project's GANs: the activation, the initialisation, the depth rule."""

from __future__ import annotations

import math

from monai.networks.utils import normal_init
from torch import nn

__all__ = ["LEAKY_RELU", "dcgan_init", "halvings_to_4px"]

#: LeakyReLU(0.2) in MONAI's ``act`` notation, as in DCGAN and the context encoder.
LEAKY_RELU = ("leakyrelu", {"negative_slope": 0.2})


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation for ``module.apply``: convolutions N(0, 0.02), batch norm weights N(1, 0.02), biases 0.

    This is MONAI's :func:`monai.networks.utils.normal_init` with its default ``std=0.02``; the name says which
    recipe it is. Both context-encoder networks call it in their constructors.
    """
    normal_init(module, std=0.02)


def halvings_to_4px(size: int, name: str = "image_size") -> int:
    """Number of stride-2 steps between ``size`` and 4 px; ``size`` must be a power of two of at least 8."""
    steps = math.log2(size / 4) if size > 0 else -1.0
    if steps < 1 or not steps.is_integer():
        raise ValueError(f"{name} must be a power of two and at least 8 (got {size}).")
    return int(steps)
