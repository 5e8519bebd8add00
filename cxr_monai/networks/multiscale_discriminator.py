"""Multi-scale PatchGAN discriminator with spectral normalisation (pix2pixHD's D, SN-GAN's normalisation)."""

from __future__ import annotations

import torch
from monai.networks.nets import PatchDiscriminator
from torch import nn

from cxr_monai.networks.dcgan import LEAKY_RELU
from cxr_monai.networks.self_attention_unet import apply_spectral_norm

__all__ = ["MultiScaleDiscriminator"]


class MultiScaleDiscriminator(nn.Module):
    """``num_scales`` PatchGAN discriminators (MONAI's ``PatchDiscriminator``) on the input at full, ½, ¼ ... size.

    pix2pixHD's multi-scale design (Wang et al. 2018): the discriminator at full size keeps edges and fine texture
    sharp (rib cortices, fracture lines), the ones on average-pooled copies judge the global structure with the
    same receptive field in pixels. It is this project's answer to the seed's "progressive multi-scaling": every
    scale trains from the first iteration at the working size, so there is no growing schedule, fade-in or
    resolution-dependent data loading, and a run resumes at any iteration. Every convolution is spectrally
    normalised (no batch norm, as SN-GAN's discriminator), which bounds D's Lipschitz constant and lets D use the
    larger TTUR learning rate. ``forward`` returns one logit map per scale, the form the project's adversarial
    losses average over.

    Args:
        in_channels: channels of what D sees (2 for a conditional D: the radiograph and a bone image).
        channels: filters of the first layer (doubled per layer, as MONAI's PatchDiscriminator does).
        num_layers: strided layers per discriminator (3 gives pix2pix's 70 × 70 px patches).
        num_scales: discriminators, each on an input half the size of the previous one.
        spectral_norm: spectrally normalise every convolution.

    Example::

        >>> d = MultiScaleDiscriminator(in_channels=2, channels=8, num_layers=2, num_scales=2)
        >>> [tuple(logits.shape) for logits in d(torch.zeros(1, 2, 64, 64))]
        [(1, 1, 14, 14), (1, 1, 6, 6)]
    """

    def __init__(self, in_channels: int = 2, channels: int = 64, num_layers: int = 3, num_scales: int = 2,
                 spectral_norm: bool = True) -> None:
        super().__init__()
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        self.discriminators = nn.ModuleList(
            PatchDiscriminator(spatial_dims=2, channels=channels, in_channels=in_channels, out_channels=1,
                               num_layers_d=num_layers, kernel_size=4, activation=LEAKY_RELU,
                               norm=None if spectral_norm else "INSTANCE", bias=True, padding=1,
                               last_conv_kernel_size=4)
            for _ in range(num_scales))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = []
        for index, discriminator in enumerate(self.discriminators):
            if index:
                x = self.downsample(x)
            logits.append(discriminator(x)[-1])  # PatchDiscriminator returns its intermediate features, then logits
        return logits
