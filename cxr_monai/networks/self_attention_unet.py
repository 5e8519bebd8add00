"""U-Net generator with self-attention (optionally spectrally normalised): the bone-suppression GAN's generator (seed 003 §3.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

from cxr_monai.networks.dcgan import LEAKY_RELU
from cxr_monai.networks.self_attention import SelfAttention2d

__all__ = ["SelfAttentionUNet", "apply_spectral_norm"]


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (``torch.nn.utils.parametrizations``) on every convolution and linear map of ``module``.

    Each weight ``W`` is used as ``W / σ(W)``, ``σ`` its largest singular value estimated by one power iteration per
    training step, so every layer is 1-Lipschitz (Miyato et al. 2018). Returns ``module``.
    """
    for child in list(module.modules()):
        if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and not nn.utils.parametrize.is_parametrized(
                child, "weight"):
            # ConvTranspose2d keeps its output channels in dim 1 of the weight
            nn.utils.parametrizations.spectral_norm(child, dim=1 if isinstance(child, nn.ConvTranspose2d) else 0)
    return module


class SelfAttentionUNet(nn.Module):
    """Encoder-decoder with skips (pix2pix's U-Net), SAGAN self-attention at small feature maps.

    Encoder level ``i``: 4 × 4 convolution, stride 2, to ``channels[i]``, instance norm (not on the first level),
    LeakyReLU(0.2); decoder: 4 × 4 transposed convolution, stride 2, norm, ReLU, concatenated with the encoder
    feature of the same size; the last layer maps to ``out_channels`` with ``tanh`` (the network range [-1, 1]).
    A :class:`SelfAttention2d` block (γ starting at 0) follows every encoder and decoder block whose output is
    ``attention_sizes`` pixels wide, for a network built for ``image_size`` inputs (the default puts it at 32 × 32
    as SAGAN does; the quadratic cost keeps it off larger maps). With ``spectral_norm`` every convolution and
    linear map is spectrally normalised, as SAGAN does in G as well as D. It is off by default: the discriminator
    is what spectral norm stabilises (the bundle always normalises D), and PyTorch's spectral-norm parametrisation
    cannot be compiled by TorchScript, so a normalised G would not export with ``monai.bundle ckpt_export``.

    Args:
        in_channels / out_channels: image channels in and out (a radiograph in, its bone image out).
        channels: feature channels per level; their number is the depth (``image_size / 2**len(channels)`` ≥ 2).
        image_size: the working size the network is built for (it places the attention; any multiple of
            ``2**len(channels)`` runs).
        attention_sizes: feature-map widths that get a self-attention block (each must be ≤ 32).
        num_heads: attention heads.
        spectral_norm: spectrally normalise every layer (training only: the result does not script).
        norm: MONAI norm of the inner layers (``"INSTANCE"``: batches of one or two images at 512 px).
        dropout: dropout after the norm of the three innermost decoder blocks (pix2pix: 0.5; 0 keeps inference
            deterministic).

    Example::

        >>> net = SelfAttentionUNet(channels=(16, 32, 64, 64), image_size=64, attention_sizes=(8,))
        >>> net(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: Sequence[int] = (64, 128, 256, 512, 512, 512, 512),
        image_size: int = 512,
        attention_sizes: Sequence[int] = (32,),
        num_heads: int = 1,
        spectral_norm: bool = False,
        norm: str | tuple | None = "INSTANCE",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        depth = len(channels)
        if depth < 2 or image_size % 2**depth or image_size // 2**depth < 2:
            raise ValueError(f"image_size {image_size} must be a multiple of 2**{depth} with a bottleneck of at "
                             f"least 2 px (channels {channels})")
        sizes = [image_size // 2 ** (level + 1) for level in range(depth)]  # encoder output widths
        for size in attention_sizes:
            if size > 32 or size not in sizes[:-1] + [image_size // 2**depth]:
                raise ValueError(f"attention_sizes {tuple(attention_sizes)}: each must be a feature width of this "
                                 f"network ({sizes}) and at most 32")
        attend = set(attention_sizes)

        def attention(width: int, features: int) -> nn.Module:
            return SelfAttention2d(features, num_heads) if width in attend else nn.Identity()

        self.down = nn.ModuleList()
        self.down_attention = nn.ModuleList()
        for level, features in enumerate(channels):
            self.down.append(Convolution(2, in_channels if level == 0 else channels[level - 1], features, strides=2,
                                         kernel_size=4, padding=1, act=LEAKY_RELU, norm=None if level == 0 else norm,
                                         bias=level == 0 or norm is None))
            self.down_attention.append(attention(sizes[level], features))
        self.up = nn.ModuleList()
        self.up_attention = nn.ModuleList()
        for level in range(depth - 1, 0, -1):  # up to the width of encoder level `level - 1`
            in_features = channels[level] if level == depth - 1 else 2 * channels[level]
            innermost = depth - 1 - level < 3
            self.up.append(Convolution(2, in_features, channels[level - 1], strides=2, kernel_size=4, padding=1,
                                       act="RELU", norm=norm, dropout=dropout if innermost and dropout else None,
                                       is_transposed=True, output_padding=0, bias=norm is None))
            self.up_attention.append(attention(sizes[level - 1], channels[level - 1]))
        self.out = nn.Sequential(
            nn.ConvTranspose2d(2 * channels[0], out_channels, kernel_size=4, stride=2, padding=1), nn.Tanh())
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down, attend in zip(self.down, self.down_attention):
            x = attend(down(x))
            skips.append(x)
        x = skips.pop()
        for up, attend in zip(self.up, self.up_attention):
            x = torch.cat([attend(up(x)), skips.pop()], dim=1)
        return self.out(x)
