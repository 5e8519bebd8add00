"""DenseNet-121 for multi-label chest X-ray classification at 512 px (seed 003, §2 and §3.3).

MONAI's :class:`~monai.networks.nets.DenseNet121` preceded by the seed's extra input layers, "a stride 2
convolution and a stride 2 max pooling layer ... to quickly reduce the dimensionality of our inputs from 512x512 to
128x128", with a loader for user-supplied weights (:func:`load_densenet_pretrained`: the project's binary
normal/abnormal model, a MONAI or torchvision ImageNet DenseNet-121; never downloads) and a non-inverting
normaliser for class activation maps (:func:`normalize_cam`).
"""

from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets import DenseNet121
from torch import nn

from cxr_monai.networks.pretrained import adapt_input_kernel, load_matching_tensors, read_state_dict

__all__ = [
    "CXRDenseNet121",
    "adapt_input_kernel",
    "densenet_input_size_limit",
    "load_densenet_pretrained",
    "normalize_cam",
    "to_monai_densenet_key",
]

logger = logging.getLogger(__name__)

_RELU = ("relu", {"inplace": True})
# torchvision names inside a dense layer: "norm1" (state_dict() of torchvision >= 0.3) or "norm.1" (the published
# densenet121-a639ec97.pth); MONAI puts the same tensors under "layers.norm1"
_TORCHVISION_DENSELAYER = re.compile(
    r"^(.*\.denselayer\d+)\.(norm|relu|conv)\.?([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
)
_TORCHVISION_CLASSIFIER = re.compile(r"^classifier\.(weight|bias)$")


def to_monai_densenet_key(key: str) -> str:
    """The MONAI DenseNet name of a torchvision DenseNet state-dict key; other keys are returned unchanged.

    ``features.denseblockN.denselayerM.norm1.*`` (or the older ``norm.1.*``, as in the published torchvision
    file) becomes ``features.denseblockN.denselayerM.layers.norm1.*``, as MONAI's own ``_load_state_dict`` does,
    and torchvision's ``classifier.*`` becomes ``class_layers.out.*``; a ``module.`` prefix (DataParallel) is
    dropped.

    Example::

        >>> to_monai_densenet_key("features.denseblock1.denselayer1.norm.1.weight")
        'features.denseblock1.denselayer1.layers.norm1.weight'
        >>> to_monai_densenet_key("classifier.bias")
        'class_layers.out.bias'
    """
    key = key.removeprefix("module.")
    match = _TORCHVISION_DENSELAYER.match(key)
    if match:
        return f"{match.group(1)}.layers.{match.group(2)}{match.group(3)}.{match.group(4)}"
    match = _TORCHVISION_CLASSIFIER.match(key)
    if match:
        return f"class_layers.out.{match.group(1)}"
    return key


def densenet_input_size_limit(downsample_input: bool, num_blocks: int) -> int:
    """The smallest height/width that leaves at least one pixel for the last dense block.

    Convolutions and max-pools with padding give ``ceil(s / 2)`` (the extra stem's 3x3 stride-2 convolution and
    3x3 stride-2 max-pool, DenseNet's 7x7 ``conv0`` and ``pool0``), the transitions' 2x2 average pools
    ``floor(s / 2)``. With the extra stem and 4 dense blocks the final map is ``s / 128`` (4x4 at 512 px) and the
    limit is 113 px; without it, 29 px.

    Example::

        >>> densenet_input_size_limit(True, 4), densenet_input_size_limit(False, 4)
        (113, 29)
    """
    halvings = (2 if downsample_input else 0) + 2

    def final(size: int) -> int:
        for _ in range(halvings):
            size = (size + 1) // 2
        for _ in range(num_blocks - 1):
            size //= 2
        return size

    size = 1
    while final(size) < 1:
        size += 1
    return size


def normalize_cam(cam: torch.Tensor) -> torch.Tensor:
    """Scale each map of a batch ``(B, C, *spatial)`` to [0, 1] with its maximum at 1 (no inversion).

    Use as ``postprocessing`` of :class:`monai.visualize.CAM` / :class:`~monai.visualize.GradCAM`, whose default,
    ``monai.visualize.class_activation_maps.default_normalizer``, maps each map's *minimum to 1 and maximum to 0*
    (``ScaleIntensity(minv=1.0, maxv=0.0)``), so a "hot = high" colour map drawn over it highlights the regions
    that speak *least* for the class (and it returns a constant map unchanged, not in [0, 1]). Here a constant
    map becomes 0 (no localisation), and the result stays a tensor on the input's device.

    Example::

        >>> normalize_cam(torch.tensor([[[[1.0, 3.0], [2.0, 5.0]]]]))
        tensor([[[[0.0000, 0.5000],
                  [0.2500, 1.0000]]]])
    """
    flat = cam.reshape(cam.shape[0], -1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return scaled.reshape(cam.shape)


class CXRDenseNet121(DenseNet121):
    """MONAI ``DenseNet121`` (2D) after an extra stride-2 convolution and stride-2 max-pool: 512 px -> 128 px.

    Layout for a ``(B, in_channels, 512, 512)`` input (the default configuration)::

        downsample  conv 3x3 stride 2, in_channels -> stem_channels (3)   256 px
                    batch norm, ReLU, max-pool 3x3 stride 2 (padding 1)   128 px
        features    conv0 7x7/2 (64), norm0, relu0, pool0 3x3/2           64 -> 32 px
                    denseblock1 (6 layers, 256 ch), transition1          32 -> 16 px
                    denseblock2 (12 layers, 512 ch), transition2         16 -> 8 px
                    denseblock3 (24 layers, 1024 ch), transition3         8 -> 4 px
                    denseblock4 (16 layers, 1024 ch), norm5               4 px
        class_layers  relu, global average pool, flatten, out (Linear 1024 -> num_classes): logits

    ``features`` and ``class_layers`` are MONAI's own modules, so their state-dict names are MONAI's and a MONAI
    ``DenseNet121`` state dict loads into them; the extra layers are ``downsample.conv``, ``downsample.norm``,
    ``downsample.relu`` and ``downsample.pool`` (``downsample`` is an identity when ``downsample_input=False``,
    which gives the plain DenseNet-121 of the seed's smaller-input baselines).

    **Stem channels.** The stride-2 convolution maps ``in_channels`` to ``stem_channels=3`` channels, whatever
    ``in_channels`` is (1 grey radiograph; 2 with the lung-segmented image; 3 with the bone-suppressed image too,
    Table 1's rows). So DenseNet's ``conv0`` always has the 3-input-channel layout of the seed's RGB baseline and
    of ImageNet DenseNet-121 weights, which load into it unchanged, and models with 1, 2 or 3 input channels
    share every tensor but the 3x3 stem kernel (``3 x in_channels x 3 x 3``), so one binary normal/abnormal
    model initialises all of them. Three channels rather than ``in_channels``: a grey input would otherwise pass
    the 4x reduction as a single channel.

    **Outputs are logits.** The head has no activation: the sigmoid of the multi-label (13 CheXpert classes)
    problem belongs to the loss (``torch.nn.BCEWithLogitsLoss`` or a MONAI loss with ``sigmoid=True``) and to
    post-processing (``monai.transforms.Activations(sigmoid=True)``), which keeps training numerically stable.

    **Class activation maps.** :attr:`cam_target_layer` (``"class_layers.relu"``: the rectified last feature
    map that is pooled) and :attr:`cam_fc_layer` (``"class_layers.out"``) are the names that
    :class:`monai.visualize.CAM` needs; :class:`monai.visualize.GradCAM` takes the same target layer. The map's
    spatial mean is the class logit (the head is average pool + linear), at 1/128 of the input (4x4 at 512 px),
    upsampled bilinearly by MONAI. Pass ``postprocessing=normalize_cam`` (or your own) for a map whose maximum is
    the most class-relevant region: MONAI's default normaliser inverts it (see :func:`normalize_cam`). For the
    multi-label head give ``class_idx`` explicitly; the default, the arg-max class, is a single-label notion.
    In MONAI 1.6, ``CAM`` wants one index per sample (``class_idx=[c] * B``; a plain int raises a ``TypeError``)
    and ``GradCAM`` one int for the whole batch (a list indexes the logits with all its entries at once, as does
    its ``class_idx=None`` with several images, which mixes the samples' scores).

    Inputs must be at least :attr:`min_input_size` pixels high and wide (113 with the extra stem: the final map
    is ``size / 128``); smaller inputs raise a ``ValueError``.

    Args:
        in_channels: input channels (1: radiograph; 2: + lung-segmented image; 3: + bone-suppressed image).
        num_classes: number of classes (logits).
        downsample_input: put the extra stride-2 convolution and max-pool before DenseNet's stem.
        pretrained_path: local file with a state dict to start from (:func:`load_densenet_pretrained`): the
            binary normal/abnormal model of this project, a MONAI or torchvision ImageNet DenseNet-121. ``None`` or
            ``""``: random initialisation. Never downloads.
        stem_channels: output channels of the extra stride-2 convolution (the channels ``conv0`` sees).
        init_features, growth_rate, block_config, bn_size, act, norm, dropout_prob: as
            :class:`monai.networks.nets.DenseNet` (DenseNet-121 by default); ``act`` and ``norm`` also apply to the
            extra stem.

    Example::

        >>> from monai.visualize import CAM, GradCAM
        >>> net = CXRDenseNet121(in_channels=3, num_classes=13).eval()
        >>> x = torch.rand(2, 3, 128, 128)
        >>> net(x).shape
        torch.Size([2, 13])
        >>> cam = CAM(net, net.cam_target_layer, net.cam_fc_layer, postprocessing=normalize_cam)
        >>> cam(x, class_idx=[4, 4]).shape
        torch.Size([2, 1, 128, 128])
        >>> GradCAM(net, net.cam_target_layer, postprocessing=normalize_cam)(x, class_idx=4).shape
        torch.Size([2, 1, 128, 128])
    """

    #: the layer whose output :class:`monai.visualize.CAM` / ``GradCAM`` maps (``target_layers``)
    cam_target_layer: str = "class_layers.relu"
    #: the linear classifier applied at every position by :class:`monai.visualize.CAM` (``fc_layers``)
    cam_fc_layer: str = "class_layers.out"
    __jit_unused_properties__ = ["input_conv_keys"]  # noqa: RUF012 - TorchScript reads this class attribute

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 13,
        downsample_input: bool = True,
        pretrained_path: str | os.PathLike | None = None,
        stem_channels: int = 3,
        init_features: int = 64,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        bn_size: int = 4,
        act: str | tuple = _RELU,
        norm: str | tuple = "batch",
        dropout_prob: float = 0.0,
    ) -> None:
        if in_channels < 1 or num_classes < 1 or stem_channels < 1:
            raise ValueError(
                f"in_channels, num_classes and stem_channels must be positive "
                f"(got {in_channels}, {num_classes}, {stem_channels})."
            )
        if len(block_config) < 1:
            raise ValueError("block_config needs at least one dense block.")
        super().__init__(
            spatial_dims=2,
            in_channels=stem_channels if downsample_input else in_channels,
            out_channels=num_classes,
            init_features=init_features,
            growth_rate=growth_rate,
            block_config=tuple(block_config),
            pretrained=False,
            bn_size=bn_size,
            act=act,
            norm=norm,
            dropout_prob=dropout_prob,
        )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.downsample_input = downsample_input
        self.stem_channels = stem_channels if downsample_input else in_channels
        self.min_input_size = densenet_input_size_limit(downsample_input, len(block_config))
        #: Grad-CAM's layer (:mod:`cxr_monai.apps.classification.heatmaps`): the rectified output of the last dense
        #: block but one, before its transition pools it (twice the resolution of ``cam_target_layer``); with one
        #: dense block there is no transition and it is ``cam_target_layer``.
        self.gradcam_target_layer = (f"features.transition{len(block_config) - 1}.relu" if len(block_config) > 1
                                     else self.cam_target_layer)
        self.downsample: nn.Module = (
            make_input_downsample(in_channels, stem_channels, act, norm) if downsample_input else nn.Identity()
        )
        if pretrained_path:
            load_densenet_pretrained(self, pretrained_path)

    @property
    def input_conv_keys(self) -> tuple[str, ...]:
        """State-dict keys of the convolutions whose input width depends on the configuration (adapted on load)."""
        return ("downsample.conv.weight", "features.conv0.weight") if self.downsample_input else ("features.conv0.weight",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for a batch ``(B, in_channels, H, W)``, H and W >= :attr:`min_input_size`."""
        if x.dim() != 4:
            raise ValueError(f"CXRDenseNet121 expects a (B, C, H, W) batch, got {x.dim()} dimensions.")
        if x.shape[2] < self.min_input_size or x.shape[3] < self.min_input_size:
            raise ValueError(
                f"CXRDenseNet121 needs inputs of at least {self.min_input_size} px (smaller ones leave no pixel for "
                f"the last dense block), got {x.shape[2]}x{x.shape[3]}."
            )
        x = self.downsample(x)
        x = self.features(x)
        return self.class_layers(x)


def make_input_downsample(in_channels: int, out_channels: int, act: str | tuple, norm: str | tuple) -> nn.Sequential:
    """The seed's extra input layers: 3x3 stride-2 convolution, norm, activation, 3x3 stride-2 max-pool (1/4 size).

    Initialised as MONAI's DenseNet initialises its layers (Kaiming-normal convolution, norm weight 1, bias 0).

    Example::

        >>> make_input_downsample(1, 3, "relu", "batch")(torch.zeros(1, 1, 512, 512)).shape
        torch.Size([1, 3, 128, 128])
    """
    layers = nn.Sequential(
        OrderedDict(
            [
                ("conv", nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False)),
                ("norm", get_norm_layer(name=norm, spatial_dims=2, channels=out_channels)),
                ("relu", get_act_layer(name=act)),
                ("pool", nn.MaxPool2d(kernel_size=3, stride=2, padding=1)),
            ]
        )
    )
    nn.init.kaiming_normal_(layers.conv.weight)
    if isinstance(layers.norm, nn.modules.batchnorm._BatchNorm):
        nn.init.constant_(layers.norm.weight, 1)
        nn.init.constant_(layers.norm.bias, 0)
    return layers


def load_densenet_pretrained(network: nn.Module, path: str | os.PathLike, *, strict_shapes: bool = False) -> dict[str, Any]:
    """Copy a DenseNet state dict from a local file into a :class:`CXRDenseNet121` or ``DualBranchDenseNet121``.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)`` (no pickled code runs); it
    holds a state dict, optionally under ``"state_dict"``, ``"model"`` or ``"network"`` (this project's
    checkpoints). Key layouts understood: this project's models; MONAI ``DenseNet121`` (``features.*``,
    ``class_layers.out.*``); torchvision ``densenet121`` (dense-layer names and ``classifier.*`` mapped by
    :func:`to_monai_densenet_key`, as MONAI's ``_load_state_dict`` maps them). Nothing is downloaded.

    Typical sources: the binary normal/abnormal model (a ``CXRDenseNet121`` with 1 class: all but the head load,
    the head is skipped as its shape differs), ImageNet DenseNet-121 weights (``conv0`` to ``norm5`` load into
    ``features``; the extra stem and the head stay at their initialisation). The network decides where each
    file key goes (``DualBranchDenseNet121`` sends single-branch keys into both branches); anything else is
    copied only where name and shape match.

    **Shape mismatches.** The input convolutions (``downsample.conv`` and ``conv0``) whose kernel differs only in
    its input channels (RGB ImageNet ``conv0`` without the extra stem; the stem of a model with other
    ``in_channels``) are adapted by :func:`adapt_input_kernel`. Any other tensor whose shape differs (e.g. the
    classifier of another class count) is skipped and logged at WARNING, or raises a ``ValueError`` before
    anything is copied when ``strict_shapes`` is set. Network tensors the file lacks are logged at WARNING as
    left at their initialisation; file keys not used at INFO.

    Args:
        network: the network to initialise (modified in place).
        path: local file with the state dict.
        strict_shapes: raise instead of skipping tensors whose shapes differ.

    Returns:
        ``{"path", "loaded", "adapted", "unmatched_source", "unmatched_target", "shape_mismatched"}``: network
        keys copied (adapted ones included), network keys whose kernel was adapted, file keys not used (their
        names in the file), network keys with no counterpart in the file (``num_batches_tracked`` counters
        aside), and ``"network_key network_shape <- file_key file_shape"`` strings for the skipped mismatches.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a weights-only state dict, or shapes differ with ``strict_shapes``.

    Example::

        >>> net = CXRDenseNet121(in_channels=3, num_classes=13)  # doctest: +SKIP
        >>> summary = load_densenet_pretrained(net, "binary_normal_abnormal.pt")  # doctest: +SKIP
        >>> summary["shape_mismatched"]  # doctest: +SKIP
        ['class_layers.out.weight 13x1024 <- class_layers.out.weight 1x1024', 'class_layers.out.bias 13 <- ...']
    """
    path = Path(path)
    source = {to_monai_densenet_key(key): (key, value) for key, value in read_state_dict(path, "DenseNet weights").items()}
    mapper = getattr(network, "map_pretrained", None)
    candidates: dict[str, tuple[str, torch.Tensor]] = mapper(source) if callable(mapper) else dict(source)
    return load_matching_tensors(network, path, source, candidates, getattr(network, "input_conv_keys", ()),
                                 "DenseNet", strict_shapes, logger)
