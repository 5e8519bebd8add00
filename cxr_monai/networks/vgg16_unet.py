"""U-Net with a VGG16 encoder for lung segmentation (seed 003, §3.1; Frid-Adar et al. 2018, TernausNet layout).

MONAI's :class:`~monai.networks.nets.FlexibleUNet` is not used because its decoder takes at most five encoder
maps at strides 2 to 32 and ends with an upsampling step that has no skip, so the full-resolution output of
VGG16's first block, the first skip of a VGG16 U-Net, cannot be connected.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import nn

from cxr_monai.networks.pretrained import log_pretrained_summary, read_state_dict, shape_text

__all__ = ["VGG16_BLOCKS", "VGG16UNet", "load_vgg16_pretrained"]

logger = logging.getLogger(__name__)

#: VGG16 ``features``: (number of 3x3 convolutions, output channels) of each of the five blocks.
VGG16_BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))

_RELU = ("relu", {"inplace": True})
_FEATURES_KEY = re.compile(r"^features\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class _UpCat(nn.Module):
    """Upsampling by 2, concatenation with the encoder skip, two 3x3 convolutions (a U-Net decoder block)."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        norm: str | tuple | None,
        dropout: float | None,
        upsample: str,
    ) -> None:
        super().__init__()
        up_channels = max(in_channels // 2, 1)
        self.upsample = UpSample(2, in_channels, up_channels, scale_factor=2, mode=upsample)
        self.convs = nn.Sequential(
            Convolution(2, skip_channels + up_channels, out_channels, act=_RELU, norm=norm, dropout=dropout),
            Convolution(2, out_channels, out_channels, act=_RELU, norm=norm, dropout=dropout),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([skip, self.upsample(x)], dim=1))


class VGG16UNet(nn.Module):
    """U-Net whose encoder is the convolutional part (``features``) of VGG16, for ImageNet initialisation.

    Layout at ``width=1`` for a 1x256x256 input (every convolution 3x3, padding 1, followed by ReLU)::

        encoder  block 1: 2 conv   64 @ 256  --skip-->  max-pool 2x2
                 block 2: 2 conv  128 @ 128  --skip-->  max-pool 2x2
                 block 3: 3 conv  256 @ 64   --skip-->  max-pool 2x2
                 block 4: 3 conv  512 @ 32   --skip-->  max-pool 2x2
                 block 5: 3 conv  512 @ 16   --skip-->  max-pool 2x2
        centre            2 conv  512 @ 8
        decoder  up 512->256, cat block 5 -> 2 conv 512 @ 16     (up: 2x2 transposed conv by default)
                 up 512->256, cat block 4 -> 2 conv 512 @ 32
                 up 512->256, cat block 3 -> 2 conv 256 @ 64
                 up 256->128, cat block 2 -> 2 conv 128 @ 128
                 up 128->64,  cat block 1 -> 2 conv  64 @ 256
        head     1x1 conv -> out_channels logits @ 256 (no activation)

    As in TernausNet and Frid-Adar et al., the encoder is VGG16 with its five max-pools and without the
    classifier, every VGG block's output (before its pool) is a skip, and a centre works at 1/32 of the
    input; the decoder mirrors the encoder's widths (``decoder_channels`` changes them). The encoder
    convolutions are ``encoder[b][i].conv`` (:class:`torch.nn.Conv2d`, with bias as in VGG16), listed in
    order by :meth:`encoder_convs`, so :func:`load_vgg16_pretrained` can copy torchvision ``vgg16`` or
    ``vgg16_bn`` weights into them; ``pretrained_path`` does that from the constructor.

    ImageNet weights map onto every encoder layer only for ``width=1`` with ``norm=None`` (``vgg16``) or
    ``norm="batch"`` (``vgg16_bn``). With ``width != 1`` no encoder shape matches and nothing is loaded; with
    ``norm="batch"`` and plain ``vgg16`` weights the convolutions load and the batch norms keep their
    initialisation, so the pretrained activations are renormalised; other norms are never loaded. The
    centre, decoder and head are always randomly initialised.

    Height and width must be multiples of 32 (five 2x2 max-pools); other sizes raise a ``ValueError``
    naming the size rather than being cropped or padded silently (``monai.transforms.DivisiblePadd(k=32)``
    or a resize in the pipeline handles them). The centre works at H/32 x W/32, so training with batch norm
    needs more than one value per channel there (a 32x32 input needs a batch of at least 2). Only 2D is
    implemented.

    Args:
        spatial_dims: number of spatial dimensions; only 2.
        in_channels: input channels (1 for radiographs; ImageNet weights are adapted, see
            :func:`load_vgg16_pretrained`).
        out_channels: output channels (logits, no activation).
        width: multiplier of every channel count (e.g. 0.25 for a fast CPU setting); ImageNet weights need 1.
        norm: normalisation after every 3x3 convolution (MONAI ``Norm`` name, e.g. ``"batch"``,
            ``("group", {"num_groups": 8})``) or ``None`` as in VGG16.
        dropout: dropout ratio in the centre and decoder convolutions (the encoder has none, as VGG16).
        upsample: decoder upsampling, ``"deconv"`` (2x2 transposed conv), ``"nontrainable"`` (1x1 conv and
            bilinear) or ``"pixelshuffle"`` (see :class:`monai.networks.blocks.UpSample`).
        decoder_channels: widths of the centre and the five decoder blocks (6 values, deepest first);
            ``None`` mirrors the encoder, ``(512, 512, 512, 256, 128, 64)`` scaled by ``width``.
        pretrained_path: file with a torchvision ``vgg16``/``vgg16_bn`` state dict to load into the encoder
            (:func:`load_vgg16_pretrained`); ``None`` or ``""`` for random initialisation. Never downloads.

    Example::

        >>> net = VGG16UNet(in_channels=1, out_channels=1, width=0.125)
        >>> net(torch.zeros(1, 1, 64, 96)).shape
        torch.Size([1, 1, 64, 96])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        width: float = 1.0,
        norm: str | tuple | None = "batch",
        dropout: float = 0.0,
        upsample: str = "deconv",
        decoder_channels: Sequence[int] | None = None,
        pretrained_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(f"VGG16UNet supports spatial_dims=2 only (got {spatial_dims}).")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive (got {in_channels}, {out_channels}).")
        if width <= 0:
            raise ValueError(f"width must be positive (got {width}).")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {dropout}).")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.width = width

        def scaled(channels: int) -> int:
            return max(round(channels * width), 1)

        encoder_channels = [scaled(channels) for _, channels in VGG16_BLOCKS]
        if decoder_channels is None:
            decoder_channels = [encoder_channels[-1]] + encoder_channels[::-1]
        decoder_channels = [int(channels) for channels in decoder_channels]
        if len(decoder_channels) != 6 or min(decoder_channels) < 1:
            raise ValueError(
                f"decoder_channels needs 6 positive widths (centre and 5 decoder blocks), got {decoder_channels}."
            )

        blocks = []
        channels = in_channels
        for (convs, _), block_channels in zip(VGG16_BLOCKS, encoder_channels):
            layers = []
            for _ in range(convs):
                layers.append(Convolution(2, channels, block_channels, act=_RELU, norm=norm, dropout=None))
                channels = block_channels
            blocks.append(nn.Sequential(*layers))
        self.encoder = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

        drop = dropout if dropout > 0 else None
        self.centre = nn.Sequential(
            Convolution(2, channels, decoder_channels[0], act=_RELU, norm=norm, dropout=drop),
            Convolution(2, decoder_channels[0], decoder_channels[0], act=_RELU, norm=norm, dropout=drop),
        )
        ups = []
        channels = decoder_channels[0]
        for skip_channels, block_channels in zip(encoder_channels[::-1], decoder_channels[1:]):
            ups.append(_UpCat(channels, skip_channels, block_channels, norm, drop, upsample))
            channels = block_channels
        self.decoder = nn.ModuleList(ups)
        self.head = nn.Conv2d(channels, out_channels, kernel_size=1)

        if pretrained_path:
            load_vgg16_pretrained(self, pretrained_path)

    def encoder_convs(self) -> list[nn.Conv2d]:
        """The 13 encoder convolutions in VGG16 order (``features.0``, ``features.2``, ..., ``features.28``)."""
        return [layer.conv for block in self.encoder for layer in block]

    def encoder_norms(self) -> list[nn.Module | None]:
        """The normalisation layer after each encoder convolution, ``None`` where there is none."""
        norms: list[nn.Module | None] = []
        for block in self.encoder:
            for layer in block:
                adn = getattr(layer, "adn", None)
                norms.append(getattr(adn, "N", None) if adn is not None else None)
        return norms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, H, W)`` for an input ``(B, in_channels, H, W)``, H and W multiples of 32."""
        if x.dim() != 4:
            raise ValueError(f"VGG16UNet expects a (B, C, H, W) batch, got shape {list(x.shape)}.")
        height, width = x.shape[2], x.shape[3]
        if height % 32 != 0 or width % 32 != 0:
            raise ValueError(
                f"VGG16UNet needs height and width divisible by 32 (five 2x2 max-pools), got {height}x{width}; "
                f"pad or resize the input (e.g. DivisiblePadd(k=32))."
            )
        skips: list[torch.Tensor] = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.centre(x)
        for i, up in enumerate(self.decoder):
            x = up(x, skips[len(skips) - 1 - i])
        return self.head(x)


def _adapt_first_kernel(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    # RGB kernel -> in_channels: sum over colour, divided by k and repeated k times (k=1: the sum)
    if weight.shape[1] == in_channels or weight.shape[1] != 3:
        return weight
    return (weight.sum(dim=1, keepdim=True) / in_channels).repeat(1, in_channels, 1, 1)


def load_vgg16_pretrained(
    network: VGG16UNet, path: str | os.PathLike, *, strict_shapes: bool = False
) -> dict[str, Any]:
    """Copy torchvision ``vgg16``/``vgg16_bn`` weights from a local file into ``network``'s encoder.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)`` (no pickled code runs);
    it holds a state dict, optionally under a ``"state_dict"`` or ``"model"`` key, with torchvision names
    (``features.0.weight`` ... ``features.28.bias``, ``classifier.*``; a ``module.`` prefix is dropped). The
    13 convolutions found under ``features.N`` (4-D weights) are mapped in order onto
    :meth:`VGG16UNet.encoder_convs`; batch norms of a ``vgg16_bn`` file go to the network's batch norms when
    it has them. Nothing is downloaded.

    First convolution: with ``in_channels != 3`` the RGB kernel is summed over the colour axis, divided by
    ``in_channels`` and repeated ``in_channels`` times; for one channel this is the plain sum, and for k
    channels holding the same grey image the response equals that of the RGB kernel on the grey RGB image.
    The pretrained encoder expects inputs scaled like its training data (ImageNet normalisation).

    Tensors whose shapes differ (e.g. ``width != 1``) are skipped and reported, or raise a ``ValueError``
    before anything is copied when ``strict_shapes`` is set. Unused file keys (the classifier) are logged at
    INFO, encoder layers left at their initialisation and shape mismatches at WARNING.

    Args:
        network: the network to initialise (modified in place).
        path: local file with the state dict.
        strict_shapes: raise instead of skipping tensors whose shapes differ.

    Returns:
        ``{"path", "loaded", "unmatched_source", "unmatched_target", "shape_mismatched"}``: network keys
        copied, file keys not used, encoder keys with no counterpart in the file, and
        ``"network_key network_shape <- file_key file_shape"`` strings for the skipped mismatches.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a weights-only state dict, or has no VGG16 (13) ``features`` convolutions.

    Example::

        >>> net = VGG16UNet(in_channels=1, norm=None)  # doctest: +SKIP
        >>> summary = load_vgg16_pretrained(net, "vgg16-397923af.pth")  # doctest: +SKIP
        >>> summary["unmatched_source"][:2]  # doctest: +SKIP
        ['classifier.0.weight', 'classifier.0.bias']
    """
    path = Path(path)
    source = read_state_dict(path, "VGG16 weights")
    features: dict[int, dict[str, str]] = {}
    for key in source:
        match = _FEATURES_KEY.match(key)
        if match:
            features.setdefault(int(match.group(1)), {})[match.group(2)] = key
    conv_ids = sorted(i for i, fields in features.items() if "weight" in fields and source[fields["weight"]].dim() == 4)
    if not conv_ids:
        raise ValueError(
            f"VGG16 weights file {str(path)!r} has no VGG16 convolution keys (features.N.weight with 4-D tensors); "
            f"{len(source)} tensor keys found, e.g. {sorted(source)[:3]}."
        )
    convs, norms = network.encoder_convs(), network.encoder_norms()
    if len(conv_ids) != len(convs):
        raise ValueError(
            f"VGG16 weights file {str(path)!r} has {len(conv_ids)} convolutions under features.N, VGG16 has "
            f"{len(convs)} (is it another VGG depth?)."
        )
    bn_ids = sorted(i for i, fields in features.items() if "running_mean" in fields)

    names = {module: name for name, module in network.named_modules()}
    pairs: list[tuple[str, torch.Tensor, str, torch.Tensor]] = []  # (network key, target, file key, value)
    for layer, conv_id in enumerate(conv_ids):
        fields, conv = features[conv_id], convs[layer]
        for field in ("weight", "bias"):
            target = getattr(conv, field)
            if field in fields and target is not None:
                value = source[fields[field]]
                if field == "weight" and layer == 0:
                    value = _adapt_first_kernel(value, network.in_channels)
                pairs.append((f"{names[conv]}.{field}", target, fields[field], value))
        norm = norms[layer]
        next_conv = conv_ids[layer + 1] if layer + 1 < len(conv_ids) else None
        owned_bn = [i for i in bn_ids if i > conv_id and (next_conv is None or i < next_conv)]
        if owned_bn and isinstance(norm, nn.modules.batchnorm._BatchNorm):
            bn_fields = features[owned_bn[0]]
            for field in _BN_FIELDS:
                target = getattr(norm, field, None)
                if field in bn_fields and isinstance(target, torch.Tensor):
                    pairs.append((f"{names[norm]}.{field}", target, bn_fields[field], source[bn_fields[field]]))

    mismatched = [
        f"{net_key} {shape_text(target)} <- {file_key} {shape_text(value)}"
        for net_key, target, file_key, value in pairs
        if target.shape != value.shape
    ]
    if mismatched and strict_shapes:
        raise ValueError(
            f"VGG16 weights file {str(path)!r}: {len(mismatched)} shapes differ from the network "
            f"(width={network.width}?): {mismatched[:3]}"
        )
    loaded, used = [], set()
    with torch.no_grad():
        for net_key, target, file_key, value in pairs:
            if target.shape == value.shape:
                target.copy_(value.to(dtype=target.dtype, device=target.device))
                loaded.append(net_key)
                used.add(file_key)
    encoder_keys = [f"encoder.{key}" for key in network.encoder.state_dict()]
    summary: dict[str, Any] = {
        "path": str(path),
        "loaded": loaded,
        "unmatched_source": [key for key in source if key not in used],
        "unmatched_target": [key for key in encoder_keys if key not in {p[0] for p in pairs}],
        "shape_mismatched": mismatched,
    }
    logger.info("Loaded %d VGG16 tensors from %s into the encoder.", len(loaded), path)
    log_pretrained_summary(logger, summary, "Encoder tensors")
    return summary
