"""Context-encoder discriminator: one real/inpainted logit per centre patch (seed 001, §3.2.2)."""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import nn

from cxr_monai.networks.dcgan import LEAKY_RELU, dcgan_init, halvings_to_4px

__all__ = ["ContextDiscriminator"]


class ContextDiscriminator(nn.Module):
    """Scores a 64 px centre as real or inpainted; returns one **logit** per sample, shape ``(B, 1)``.

    Layer list for 64 px input and ``base_channels=128``::

        1x64x64 -conv4/s2-> 128x32x32 -> 256x16x16 -> 512x8x8 -> 1024x4x4 -conv4/s1/p0-> 1x1x1 -> (B, 1)

    That is §3.2.2's "4 convolutional + batch normalization + Leaky-ReLU layers" and "a final convolution
    layer [giving] a scalar", and Pathak's ``netlocalD`` (whose first layer, as in DCGAN, has no batch norm;
    followed here). Pathak's widths start at 64; §4.1 of the seed found doubling every width (starting at 128)
    trains the adversarial part better, so 128 is the default and ``base_channels=64`` gives the original.

    The network ends without the sigmoid: ``D(x) = torch.sigmoid(logit)`` is the probability that the centre
    is real. Losses take the logit (``BCEWithLogitsLoss``), which is numerically stable and allowed under
    autocast, unlike ``sigmoid`` followed by ``BCELoss``. The ``(B, 1)`` shape matches Pathak's
    ``output.view(-1, 1)`` and broadcasts against per-sample labels of the same shape.

    MONAI's :class:`~monai.networks.nets.PatchDiscriminator` is not used: its last inner layer has stride 1
    and its final convolution is "same"-padded, so it returns a map of patch scores (and the list of
    intermediate features) rather than one probability from four stride-2 layers and a valid 4x4 convolution.

    Args:
        in_channels: channels of the centre patch.
        image_size: side of the square centre patch (power of two, at least 8; paper: 64).
        base_channels: width of the first convolution, doubled at each following layer (paper: 128).
        max_channels: optional cap on the widths; ``None`` for none.

    Example::

        >>> net = ContextDiscriminator(base_channels=16)
        >>> torch.sigmoid(net(torch.zeros(2, 1, 64, 64))).shape  # D(x) probabilities
        torch.Size([2, 1])
    """

    def __init__(
        self, in_channels: int = 1, image_size: int = 64, base_channels: int = 128, max_channels: int | None = None
    ) -> None:
        super().__init__()
        steps = halvings_to_4px(image_size)
        if in_channels < 1 or base_channels < 1:
            raise ValueError(f"in_channels and base_channels must be positive (got {in_channels}, {base_channels}).")
        self.in_channels = in_channels
        self.image_size = image_size

        layers: list[nn.Module] = []
        channels = in_channels
        for step in range(steps):
            width = base_channels * 2**step
            width = width if max_channels is None else min(width, max_channels)
            layers.append(
                Convolution(2, channels, width, strides=2, kernel_size=4, padding=1, act=LEAKY_RELU,
                            norm=None if step == 0 else "batch", bias=step == 0)
            )
            channels = width
        layers.append(Convolution(2, channels, 1, strides=1, kernel_size=4, padding=0, conv_only=True, bias=True))
        self.layers = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real-vs-inpainted logits, shape ``(B, 1)``."""
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"ContextDiscriminator expects a batch of shape (B, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}."
            )
        return self.layers(x).view(x.shape[0], 1)
