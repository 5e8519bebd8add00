"""Context-encoder generator (Pathak et al. 2016) as configured for chest X-rays by Belli et al. 2018."""

from __future__ import annotations

import math

import torch
from monai.networks.blocks import Convolution
from torch import nn

from cxr_monai.networks.dcgan import LEAKY_RELU, dcgan_init, halvings_to_4px

__all__ = ["ContextEncoder"]

class ContextEncoder(nn.Module):
    """Encoder-decoder that inpaints the centre of a masked patch (seed 001, §3.1; Pathak's ``netG``).

    Layer list for the paper setting (``image_size=128``, ``out_size=64``, ``base_channels=128``,
    ``bottleneck_channels=4096``)::

        encoder  1x128x128 -conv4/s2-> 128x64x64 -> 256x32x32 -> 512x16x16 -> 1024x8x8 -> 2048x4x4
                 -conv4/s1/p0-> 4096x1x1                                    (6 convolutions, LeakyReLU 0.2)
        decoder  4096x1x1 -deconv4/s1/p0-> 2048x4x4 -deconv4/s2-> 1024x8x8 -> 512x16x16 -> 256x32x32
                 -> 1x64x64, tanh                                           (5 transposed convolutions, ReLU)

    How the text is read: §3.1.1 asks for 6 stride-2 convolutions *and* a 1x1x4096 output from 128 px with the
    depth doubling from 128. Six halvings of 128 px end at 2x2, and doubling from 128 five times gives 4096, so
    the text only closes the way Pathak's ``netG`` (BoyuanJiang/context_encoder_pytorch, the code the seed
    modifies) does: five stride-2 4x4 convolutions to 4x4, then a 4x4 convolution without padding to 1x1 (the
    sixth layer, ``nBottleneck`` there, 4096 here). The decoder mirrors the encoder by resolution (the same
    widths at 4, 8, 16 and 32 px), which is also how Pathak's decoder relates to his encoder; this gives the
    "5 deconvolutional layers" of §3.1.2. Pathak's second conv keeps ``nef`` channels; the seed doubles at
    every layer, which is followed here. The paper setting has about 357 M parameters (1.4 GB in float32),
    in line with the seed's remark that training needs at least 10 GB of GPU memory.

    Normalisation: as in DCGAN and Pathak's code, the first convolution has no batch norm and the last
    transposed convolution has none either (it feeds tanh); every other layer is conv + BatchNorm + activation.
    Convolutions followed by batch norm have no bias (it would be cancelled); the two without batch norm do.
    Because the bottleneck is 1x1, its batch norm needs at least 2 samples per batch in training mode.

    The whole-image experiment (§4.1: the 1024 px radiograph resized to 128 px, 64 px hole in the centre) uses
    the same network with the same arguments; only the data pipeline differs. Other sizes follow from
    ``image_size`` and ``out_size`` (powers of two).

    The output is in [-1, 1] (tanh); the patch transforms give [0, 1], so bundles map ``x * 2 - 1`` before
    the network and ``(y + 1) / 2`` after it.

    Args:
        in_channels: channels of the masked input patch (1 for radiographs).
        out_channels: channels of the inpainted centre; defaults to ``in_channels``.
        image_size: side of the square input patch (paper: 128).
        out_size: side of the square inpainted centre (paper: 64).
        base_channels: width of the first convolution, doubled at each following layer (paper: 128).
        bottleneck_channels: length of the 1x1 latent vector (paper: 4096; Pathak: 4000).
        max_channels: optional cap on every encoder/decoder width (not the bottleneck); ``None`` for none.

    Example::

        >>> net = ContextEncoder(base_channels=16, bottleneck_channels=256)  # the "small" setting
        >>> net(torch.zeros(2, 1, 128, 128)).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        image_size: int = 128,
        out_size: int = 64,
        base_channels: int = 128,
        bottleneck_channels: int = 4096,
        max_channels: int | None = None,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("base_channels", base_channels), ("bottleneck_channels", bottleneck_channels)):
            if value < 1:
                raise ValueError(f"{name} must be positive (got {value}).")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.image_size = image_size
        self.out_size = out_size
        down_steps = halvings_to_4px(image_size, "image_size")
        up_steps = halvings_to_4px(out_size, "out_size")

        def width(resolution: int) -> int:
            # encoder width of the feature map of side `resolution`; the decoder reuses it (mirror by resolution)
            doublings = max(int(math.log2(max(image_size // resolution, 1))) - 1, 0)
            channels = base_channels * 2**doublings
            return channels if max_channels is None else min(channels, max_channels)

        encoder: list[nn.Module] = []
        channels = in_channels
        for step in range(down_steps):
            resolution = image_size // 2 ** (step + 1)
            encoder.append(
                Convolution(2, channels, width(resolution), strides=2, kernel_size=4, padding=1,
                            act=LEAKY_RELU, norm=None if step == 0 else "batch", bias=step == 0)
            )
            channels = width(resolution)
        encoder.append(
            Convolution(2, channels, bottleneck_channels, strides=1, kernel_size=4, padding=0,
                        act=LEAKY_RELU, norm="batch", bias=False)
        )
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = []
        channels = bottleneck_channels
        for step in range(up_steps):
            resolution = 4 * 2**step
            decoder.append(
                Convolution(2, channels, width(resolution), strides=1 if step == 0 else 2, kernel_size=4,
                            padding=0 if step == 0 else 1, output_padding=0, is_transposed=True,
                            act="relu", norm="batch", bias=False)
            )
            channels = width(resolution)
        decoder.append(
            Convolution(2, channels, self.out_channels, strides=2, kernel_size=4, padding=1, output_padding=0,
                        is_transposed=True, act="tanh", norm=None, bias=True)
        )
        self.decoder = nn.Sequential(*decoder)
        self.apply(dcgan_init)

    def _check_input(self, x: torch.Tensor) -> None:
        # written so TorchScript (bundle ckpt_export) can compile it
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] != self.image_size or x.shape[3] != self.image_size:
            raise ValueError(
                f"ContextEncoder expects a batch of shape (B, {self.in_channels}, {self.image_size}, "
                f"{self.image_size}), got {list(x.shape)}."
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent context representation, shape ``(B, bottleneck_channels, 1, 1)``."""
        self._check_input(x)
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inpainted centre in [-1, 1], shape ``(B, out_channels, out_size, out_size)``."""
        return self.decoder(self.encode(x))
