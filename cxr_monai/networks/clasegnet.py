"""ClaSegNet: ResNet-50 shared features, per-region MIL classification and a segmentation branch (seed 004).

Zhao et al. (CMIMI 2018) improve a pneumothorax classifier with masks: a backbone gives shared feature maps, the
classification output is a map of per-region probabilities ``p_ij`` trained with the mask-supervised MIL loss
(:class:`cxr_monai.losses.MaskMILLoss`), and a segmentation branch (a decoder) "sharpens the localisation maps".
The same class gives the seed's comparison, the plain ResNet-50 (``mode="baseline"``). The backbone is MONAI's
2D :class:`~monai.networks.nets.ResNet` (bottleneck blocks, ResNet-50 layout); user-supplied torchvision or MONAI
ResNet-50 weights load with :func:`load_resnet50_pretrained` (never downloads).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder
from monai.networks.nets.resnet import ResNet, ResNetBottleneck
from torch import nn

from cxr_monai.losses.mil import noisy_or_logit
from cxr_monai.networks.pretrained import load_matching_tensors, read_state_dict

__all__ = ["CLASEGNET_MODES", "RESNET50_LAYERS", "ClaSegNet", "load_resnet50_pretrained", "to_clasegnet_key"]

logger = logging.getLogger(__name__)

#: ``mode`` values of :class:`ClaSegNet`.
CLASEGNET_MODES: tuple[str, ...] = ("clasegnet", "baseline")
#: Bottleneck blocks per stage of ResNet-50.
RESNET50_LAYERS: tuple[int, int, int, int] = (3, 4, 6, 3)

_RELU = ("relu", {"inplace": True})
_BACKBONE_KEY = re.compile(r"^(conv1|bn1|layer[1-4])\.")


class ResNetBackbone(nn.Module):
    """MONAI ResNet's stem and four stages without pooling or classifier; returns the five stage outputs.

    Built from a MONAI 2D ``ResNet`` (bottleneck blocks, 7x7 stride-2 ``conv1`` as torchvision's, shortcut "B"
    without bias), whose modules it keeps under their MONAI (= torchvision) names: ``conv1``, ``bn1``, ``act``,
    ``maxpool``, ``layer1`` ... ``layer4``. :meth:`forward` returns ``[stem, layer1, layer2, layer3, layer4]`` at
    strides 2, 4, 8, 16 and 32, as MONAI's ``ResNetFeatures`` (the encoder of ``FlexibleUNet``) does.
    """

    def __init__(self, in_channels: int, layers: Sequence[int], width: float) -> None:
        super().__init__()
        resnet = ResNet(
            block=ResNetBottleneck,
            layers=list(layers),
            block_inplanes=[64, 128, 256, 512],
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            shortcut_type="B",
            widen_factor=width,
            feed_forward=False,
            bias_downsample=False,
        )
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.act = resnet.act
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4
        planes = [int(channels * width) for channels in (64, 128, 256, 512)]
        #: channels of the five outputs of :meth:`forward`
        self.out_channels: tuple[int, ...] = (planes[0],) + tuple(p * ResNetBottleneck.expansion for p in planes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.act(self.bn1(self.conv1(x)))
        x1 = self.layer1(self.maxpool(stem))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [stem, x1, x2, x3, x4]


class ClaSegHead(nn.Module):
    """ClaSegNet's outputs from the backbone stages: region logits, noisy-or image logit, segmentation logits."""

    def __init__(
        self, encoder_channels: Sequence[int], in_channels: int, decoder_channels: Sequence[int], norm: str | tuple
    ) -> None:
        super().__init__()
        self.regions = nn.Conv2d(encoder_channels[-1], 1, kernel_size=1)
        # MONAI FlexibleUNet's decoder (segmentation_models.pytorch layout): 4 upsampling blocks with skips from
        # layer3 ... stem, a fifth to full size without skip; its encoder_channels start with the input's
        self.decoder = UNetDecoder(
            spatial_dims=2,
            encoder_channels=(in_channels, *encoder_channels),
            decoder_channels=tuple(decoder_channels),
            act=_RELU,
            norm=norm,
            dropout=0.0,
            bias=False,
            upsample="nontrainable",
            pre_conv="default",
            interp_mode="nearest",
            align_corners=None,
            is_pad=True,
        )
        self.segmentation = SegmentationHead(2, decoder_channels[-1], 1, kernel_size=3, act=None)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        regions = self.regions(features[-1])
        return {
            "image": noisy_or_logit(regions),
            "regions": regions,
            "segmentation": self.segmentation(self.decoder(features, 4)),
        }


class BaselineHead(nn.Module):
    """The plain ResNet-50 head: global average pool and a linear layer to one image logit."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, 1)
        nn.init.constant_(self.fc.bias, 0.0)

    def forward(self, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"image": self.fc(torch.flatten(self.pool(features[-1]), 1))}


class ClaSegNet(nn.Module):
    """ClaSegNet on MONAI's 2D ResNet-50, or the plain ResNet-50 baseline (``mode="baseline"``); dict of logits.

    Layout for a ``(B, 1, 512, 512)`` input in [0, 1] (the default configuration)::

        backbone  conv1 7x7/2 (64), bn1, act                        256 px   --skip-->
                  maxpool 3x3/2, layer1 (3 bottlenecks, 256 ch)     128 px   --skip-->
                  layer2 (4 bottlenecks, 512 ch)                     64 px   --skip-->
                  layer3 (6 bottlenecks, 1024 ch)                    32 px   --skip-->
                  layer4 (3 bottlenecks, 2048 ch)                    16 px   shared feature maps
        mode="clasegnet":
          head.regions       1x1 conv 2048 -> 1                      16 px   "regions": region logits z_ij
          (noisy-or)         log-odds of 1 - prod_j (1 - p_ij)               "image": image logit (B, 1)
          head.decoder       up x2, cat layer3 -> 2 conv 256         32 px   (MONAI FlexibleUNet's UNetDecoder:
                             up x2, cat layer2 -> 2 conv 128         64 px    1x1 conv, nearest upsampling,
                             up x2, cat layer1 -> 2 conv 64         128 px    concatenation, two 3x3 conv +
                             up x2, cat stem   -> 2 conv 32         256 px    batch norm + ReLU)
                             up x2             -> 2 conv 16         512 px
          head.segmentation  3x3 conv 16 -> 1                       512 px   "segmentation": mask logits
        mode="baseline":
          head.pool, head.fc global average pool, linear 2048 -> 1           "image": image logit (B, 1)

    **Outputs** (a ``dict[str, Tensor]`` of logits, no activation; TorchScript-scriptable in both modes):

    - ``"regions"`` ``(B, 1, H/32, W/32)``: the seed's per-region logits, ``p_ij = sigmoid``; every region of
      the grid is in ``M``, each region is the 32x32 pixel block it sits on. Train with
      :class:`cxr_monai.losses.MaskMILLoss` (through :class:`~cxr_monai.losses.ClaSegNetLoss`);
    - ``"image"`` ``(B, 1)``: the image logit, for ClaSegNet the log-odds of the noisy-or ``1 - prod_j (1 - p_ij)``
      (Li et al. 2018; :func:`cxr_monai.losses.mil.noisy_or_logit`, computed in log space: finite for any finite
      region logits), for the baseline the linear layer's output;
    - ``"segmentation"`` ``(B, 1, H, W)``: the segmentation branch's mask logits at the input size.

    The baseline has ``"image"`` only. Its backbone is the same module, so a baseline and a ClaSegNet state dict
    share every ``backbone.*`` key.

    **Inputs.** ``(B, in_channels, H, W)`` with H and W multiples of 32 (the region grid covers the image
    exactly); other sizes raise a ``ValueError``. Training with batch norm needs more than one value per channel
    in ``layer4`` (a 32 px input needs a batch of 2). Pre-trained ImageNet weights were trained on
    ImageNet-normalised inputs; the seed feeds [0, 1] and fine-tunes.

    **Pre-trained weights.** ``pretrained_path`` loads a local torchvision ``resnet50`` or MONAI ``ResNet``
    state dict into the backbone (or a ClaSegNet checkpoint), the RGB ``conv1`` summed to one channel
    (:func:`load_resnet50_pretrained`); the heads stay at their initialisation. Nothing is downloaded.

    Args:
        mode: ``"clasegnet"`` (regions, image, segmentation) or ``"baseline"`` (plain ResNet-50: image only).
        in_channels: input channels (1: the radiograph).
        layers: bottleneck blocks per stage; ResNet-50 is ``(3, 4, 6, 3)``, ``(1, 1, 1, 1)`` a small CPU setting.
        width: multiplier of the backbone's channels (MONAI's ``widen_factor``); pre-trained weights need 1.
        decoder_channels: widths of the five decoder blocks (deepest first), FlexibleUNet's by default.
        norm: normalisation of the decoder blocks (the backbone uses batch norm, as MONAI's ResNet).
        pretrained_path: local file with ResNet-50 weights (:func:`load_resnet50_pretrained`); ``None`` or
            ``""``: random initialisation.

    Example::

        >>> net = ClaSegNet(layers=(1, 1, 1, 1), width=0.125, decoder_channels=(16, 8, 8, 8, 8)).eval()
        >>> out = net(torch.rand(2, 1, 128, 128))
        >>> {name: tuple(value.shape) for name, value in sorted(out.items())}
        {'image': (2, 1), 'regions': (2, 1, 4, 4), 'segmentation': (2, 1, 128, 128)}
        >>> baseline = ClaSegNet(mode="baseline", layers=(1, 1, 1, 1), width=0.125).eval()
        >>> {name: tuple(value.shape) for name, value in baseline(torch.rand(2, 1, 128, 128)).items()}
        {'image': (2, 1)}
    """

    #: stride of the region grid (and size in pixels of a region)
    region_stride: int = 32

    def __init__(
        self,
        mode: str = "clasegnet",
        in_channels: int = 1,
        layers: Sequence[int] = RESNET50_LAYERS,
        width: float = 1.0,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        norm: str | tuple = "batch",
        pretrained_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if mode not in CLASEGNET_MODES:
            raise ValueError(f"mode must be one of {CLASEGNET_MODES} (got {mode!r}).")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive (got {in_channels}).")
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers needs 4 positive block counts (got {tuple(layers)}).")
        if width <= 0 or int(64 * width) < 1:
            raise ValueError(f"width must leave at least one stem channel (got {width}).")
        if len(decoder_channels) != 5 or min(decoder_channels) < 1:
            raise ValueError(f"decoder_channels needs 5 positive widths (got {tuple(decoder_channels)}).")
        self.mode = mode
        self.in_channels = in_channels
        self.backbone = ResNetBackbone(in_channels, layers, width)
        #: channels of the shared feature maps (2048 for ResNet-50)
        self.feature_channels = self.backbone.out_channels[-1]
        self.head: nn.Module = (
            BaselineHead(self.feature_channels) if mode == "baseline"
            else ClaSegHead(self.backbone.out_channels, in_channels, decoder_channels, norm)
        )
        if pretrained_path:
            load_resnet50_pretrained(self, pretrained_path)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The output dict (see the class) for a batch ``(B, in_channels, H, W)``, H and W multiples of 32."""
        if x.dim() != 4:
            raise ValueError(f"ClaSegNet expects a (B, C, H, W) batch, got shape {list(x.shape)}.")
        if x.shape[2] % 32 != 0 or x.shape[3] % 32 != 0:
            raise ValueError(
                f"ClaSegNet needs height and width divisible by 32 (the region grid), got {x.shape[2]}x{x.shape[3]}; "
                f"pad or resize the input."
            )
        return self.head(self.backbone(x))


def to_clasegnet_key(key: str) -> str:
    """The :class:`ClaSegNet` name of a ResNet state-dict key; other keys are returned unchanged.

    torchvision ``resnet50`` and MONAI ``ResNet`` name the stem and the stages alike (``conv1``, ``bn1``,
    ``layerN.M.convK``, ``layerN.M.downsample.0``...): they go under ``backbone.``. MONAI
    ``FlexibleUNet(backbone="resnet50", spatial_dims=2)`` has the same encoder (``encoder.`` becomes
    ``backbone.``), decoder (``decoder.`` becomes ``head.decoder.``) and head (``segmentation_head.`` becomes
    ``head.segmentation.``) with the default ``decoder_channels``, so a FlexibleUNet segmentation model
    initialises all of ClaSegNet but its region head. A ``module.`` prefix (DataParallel) is dropped; ``fc.*``
    (the 1000-class ImageNet classifier) is left unmatched.

    Example::

        >>> to_clasegnet_key("layer1.0.downsample.0.weight"), to_clasegnet_key("module.fc.bias")
        ('backbone.layer1.0.downsample.0.weight', 'fc.bias')
        >>> to_clasegnet_key("encoder.layer4.2.bn3.bias"), to_clasegnet_key("segmentation_head.0.weight")
        ('backbone.layer4.2.bn3.bias', 'head.segmentation.0.weight')
    """
    key = key.removeprefix("module.")
    if key.startswith("decoder."):
        return f"head.{key}"
    if key.startswith("segmentation_head."):
        return f"head.segmentation.{key.removeprefix('segmentation_head.')}"
    key = key.removeprefix("encoder.")
    if _BACKBONE_KEY.match(key):
        return f"backbone.{key}"
    return key


def load_resnet50_pretrained(network: ClaSegNet, path: str | os.PathLike, *, strict_shapes: bool = False) -> dict[str, Any]:
    """Copy ResNet-50 weights from a local file into a :class:`ClaSegNet` (either mode); never downloads.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)`` (no pickled code runs); it
    holds a state dict, optionally under ``"state_dict"``, ``"model"`` or ``"network"`` (this project's
    checkpoints). Key layouts understood (:func:`to_clasegnet_key`): torchvision ``resnet50`` and MONAI
    ``ResNet`` (``conv1``, ``bn1``, ``layer1`` ... ``layer4`` go to ``backbone.``; ``fc`` is not used), MONAI
    ``FlexibleUNet`` with the ResNet-50 backbone (encoder, decoder and segmentation head), and ClaSegNet's own (a baseline checkpoint initialises a ClaSegNet's
    backbone and vice versa).

    **Input convolution.** ``backbone.conv1.weight`` whose kernel differs only in its input channels (the RGB
    ImageNet ``conv1``, ``64x3x7x7``, for a grey radiograph) is adapted by
    :func:`~cxr_monai.networks.pretrained.adapt_input_kernel` (for one channel: summed over R, G, B). Any other
    tensor whose shape differs (``width != 1``) is skipped and logged at WARNING, or raises a ``ValueError``
    before anything is copied with ``strict_shapes``. Network tensors the file lacks (the heads, for ImageNet
    weights) are logged at WARNING as left at their initialisation, unused file keys at INFO
    (:func:`~cxr_monai.networks.pretrained.log_pretrained_summary`).

    Args:
        network: the network to initialise (modified in place).
        path: local file with the state dict.
        strict_shapes: raise instead of skipping tensors whose shapes differ.

    Returns:
        ``{"path", "loaded", "adapted", "unmatched_source", "unmatched_target", "shape_mismatched"}``, as
        :func:`~cxr_monai.networks.cxr_densenet.load_densenet_pretrained`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a weights-only state dict, or shapes differ with ``strict_shapes``.

    Example::

        >>> net = ClaSegNet()  # doctest: +SKIP
        >>> summary = load_resnet50_pretrained(net, "resnet50-11ad3fa6.pth")  # doctest: +SKIP
        >>> summary["adapted"], summary["unmatched_source"]  # doctest: +SKIP
        (['backbone.conv1.weight'], ['fc.weight', 'fc.bias'])
    """
    path = Path(path)
    source = {to_clasegnet_key(key): (key, value) for key, value in read_state_dict(path, "ResNet-50 weights").items()}
    return load_matching_tensors(network, path, source, source, ("backbone.conv1.weight",), "ResNet-50",
                                 strict_shapes, logger)
