"""Dual-branch DenseNet-121 for a frontal and an optional lateral radiograph of one study (seed 003, §3.3, Fig. 2).

"The lateral and frontal branches are constructed from 3 of the 5 Dense blocks normally used in DenseNet. Their
outputs are firstly used to generate CAM visualization for both the images and are concatenated and fed into the
last 2 Dense blocks." DenseNet-121 has four dense blocks (the seed's "5" counts the stem as one, as its "last 2"
then count the last dense block and the classifier), so each branch here is the extra input stem, DenseNet's stem
and dense blocks 1-3, and the shared trunk is dense block 4 and the classifier, as in the task's issue #12.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch
from monai.visualize.visualizer import default_upsampler
from torch import nn

from cxr_monai.networks.cxr_densenet import (
    CXRDenseNet121,
    load_densenet_pretrained,
    normalize_cam,
)

__all__ = ["DualBranchDenseNet121"]

_RELU = ("relu", {"inplace": True})


class _DenseNetBranch(nn.Module):
    """One view's branch: the extra input stem (``downsample``) and DenseNet's layers up to the merge (``features``)."""

    def __init__(self, downsample: nn.Module, features: nn.Sequential) -> None:
        super().__init__()
        self.downsample = downsample
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.downsample(x))


class DualBranchDenseNet121(nn.Module):
    """Frontal and lateral DenseNet-121 branches (dense blocks 1-3) merged before a shared dense block 4 and head.

    Layout for a 512 px frontal ``(B, in_channels, 512, 512)`` and lateral ``(B, lateral_channels, 512, 512)``::

        frontal   downsample (3x3/2 conv -> 3 ch, norm, ReLU, max-pool/2)      128 px
                  conv0, norm0, relu0, pool0, denseblock1, transition1,
                  denseblock2, transition2, denseblock3 (1024 ch), norm3, relu3  8 px
        lateral   the same layers with their own weights                       8 px
        fusion    concatenation (2048 ch), conv 1x1 -> 512 ch, avg-pool 2x2     4 px
        features  denseblock4 (1024 ch), norm5                                 4 px
        class_layers  relu, global average pool, flatten, out (Linear): logits (no sigmoid, see CXRDenseNet121)

    Each branch is built from a :class:`~cxr_monai.networks.CXRDenseNet121` (MONAI ``DenseNet121`` modules and
    names). **Merge:** ``norm3``/``relu3`` of a branch are the norm and activation of DenseNet's ``transition3``,
    kept per branch, and ``fusion`` is the rest of that transition (1x1 convolution and 2x2 average pool) taking
    both branches' channels: a DenseNet transition applied to the concatenation, which brings the channels back
    to the 512 that dense block 4 expects. Batch norm is per channel, so normalising each branch apart is the same
    as normalising the concatenation; keeping it in the branches lets a missing lateral be zeroed *after* it.

    **Missing lateral** (studies without one; the seed uses the lateral "if one is available"): the lateral
    features of such a study are zeros (rectified features, so zero means "nothing detected"), and the fusion
    convolution then sees the frontal features alone, so the frontal path decides; the model learns the frontal-only
    case from the many studies without a lateral. ``forward(frontal)`` or ``forward(frontal, None)``: no study has
    one and the lateral branch does not run. ``forward(frontal, lateral, lateral_present)`` with a ``(B,)`` flag
    (bool, or numbers where non-zero means present) for batches that mix the two, where the data pipeline puts
    any same-sized image (e.g. zeros) in place of a missing lateral: the lateral branch runs only on the studies
    flagged present, so what an absent study's lateral tensor holds (even NaN) changes neither its output nor,
    in training, the batch-norm statistics of the others. ``lateral_present=None`` with a lateral: all present.
    A batch without any lateral leaves the lateral branch without gradients (``DistributedDataParallel`` then
    needs ``find_unused_parameters=True``).

    **Class activation maps.** :meth:`branch_cams` gives one map per view (the seed's "CAM visualization for
    both the images"), by Grad-CAM on each branch's output (``frontal.features.relu3``, ``lateral.features.relu3``),
    see there. :class:`monai.visualize.CAM` with :attr:`cam_target_layer` / :attr:`cam_fc_layer` (as for
    ``CXRDenseNet121``, ``class_idx`` one per sample; pass ``lateral=...`` and ``lateral_present=...`` as keyword
    arguments of its call) runs too, but that map lives on the fused grid, where a frontal and a lateral
    position are mixed, so it is not a map of either image.

    Both views must have the same height and width (their branch outputs are concatenated), at least
    :attr:`min_input_size` (113 px).

    Args:
        in_channels: frontal input channels (1: radiograph; 2: + lung-segmented; 3: + bone-suppressed; Table 1).
        lateral_channels: lateral input channels (1: the grey lateral radiograph).
        num_classes: number of classes (logits).
        downsample_input: the seed's extra stride-2 convolution and max-pool at each branch's input.
        pretrained_path: local file with a state dict (:func:`~cxr_monai.networks.cxr_densenet.load_densenet_pretrained`):
            a dual-branch model's, or a single-branch one's (the binary normal/abnormal ``CXRDenseNet121``,
            ImageNet DenseNet-121) whose stem and dense blocks 1-3 go into both branches, its ``transition3`` norm
            into both ``norm3``, its ``transition3`` convolution into the frontal half of ``fusion.conv`` (the
            lateral half zero), so the start equals the single-branch model on the frontal view (the lateral
            branch then gets its first gradients after the first update of that half); lateral kernels of another
            input width are adapted (:func:`~cxr_monai.networks.cxr_densenet.adapt_input_kernel`). Never
            downloads.
        stem_channels, init_features, growth_rate, block_config, bn_size, act, norm, dropout_prob: as
            :class:`~cxr_monai.networks.CXRDenseNet121`; the branches hold all dense blocks but the last.

    Example::

        >>> net = DualBranchDenseNet121(in_channels=3, lateral_channels=1, num_classes=13).eval()
        >>> frontal, lateral = torch.rand(2, 3, 128, 128), torch.rand(2, 1, 128, 128)
        >>> net(frontal, lateral, lateral_present=torch.tensor([True, False])).shape
        torch.Size([2, 13])
        >>> net(frontal).shape  # no lateral in the batch
        torch.Size([2, 13])
    """

    cam_target_layer: str = "class_layers.relu"
    cam_fc_layer: str = "class_layers.out"
    __jit_unused_properties__ = ["input_conv_keys", "branch_cam_layers"]  # noqa: RUF012 - read by TorchScript

    def __init__(
        self,
        in_channels: int = 1,
        lateral_channels: int = 1,
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
        super().__init__()
        if len(block_config) < 2:
            raise ValueError(f"DualBranchDenseNet121 needs at least 2 dense blocks (got block_config={block_config}).")
        common = {
            "num_classes": num_classes,
            "downsample_input": downsample_input,
            "stem_channels": stem_channels,
            "init_features": init_features,
            "growth_rate": growth_rate,
            "block_config": block_config,
            "bn_size": bn_size,
            "act": act,
            "norm": norm,
            "dropout_prob": dropout_prob,
        }
        frontal_net = CXRDenseNet121(in_channels=in_channels, **common)
        lateral_net = CXRDenseNet121(in_channels=lateral_channels, **common)
        self.in_channels = in_channels
        self.lateral_channels = lateral_channels
        self.num_classes = num_classes
        self.downsample_input = downsample_input
        self.min_input_size = frontal_net.min_input_size
        merge = len(block_config) - 1  # the transition after the branches' last dense block
        self.merge_transition = f"transition{merge}"
        names = [name for name, _ in frontal_net.features.named_children()]
        cut = names.index(self.merge_transition)
        self.branch_layers = names[:cut]  # conv0 ... denseblock3: the single-branch names of the branches
        self.branch_norm = f"norm{merge}"
        self.branch_act = f"relu{merge}"

        def branch(net: CXRDenseNet121) -> _DenseNetBranch:
            transition = net.features[cut]
            layers = [(name, net.features[i]) for i, name in enumerate(names[:cut])]
            layers += [(self.branch_norm, transition.norm), (self.branch_act, transition.relu)]
            return _DenseNetBranch(net.downsample, nn.Sequential(OrderedDict(layers)))

        self.frontal = branch(frontal_net)
        self.lateral = branch(lateral_net)
        transition = frontal_net.features[cut]
        branch_channels, fused_channels = transition.conv.in_channels, transition.conv.out_channels
        self.branch_channels = branch_channels
        conv = nn.Conv2d(2 * branch_channels, fused_channels, kernel_size=1, bias=False)
        nn.init.kaiming_normal_(conv.weight)
        self.fusion = nn.Sequential(OrderedDict([("conv", conv), ("pool", transition.pool)]))
        self.features = nn.Sequential(OrderedDict((name, frontal_net.features[i]) for i, name in enumerate(names) if i > cut))
        self.class_layers = frontal_net.class_layers
        if pretrained_path:
            load_densenet_pretrained(self, pretrained_path)

    @property
    def branch_cam_layers(self) -> dict[str, str]:
        """The layer of each branch whose output :meth:`branch_cams` maps (a ``target_layers`` of MONAI's GradCAM)."""
        return {view: f"{view}.features.{self.branch_act}" for view in ("frontal", "lateral")}

    @property
    def input_conv_keys(self) -> tuple[str, ...]:
        """State-dict keys of the convolutions whose input width depends on the configuration (adapted on load)."""
        keys = ("downsample.conv.weight", "features.conv0.weight") if self.downsample_input else ("features.conv0.weight",)
        return tuple(f"{view}.{key}" for view in ("frontal", "lateral") for key in keys)

    def map_pretrained(self, source: Mapping[str, tuple[str, torch.Tensor]]) -> dict[str, tuple[str, torch.Tensor]]:
        """Network key -> (file key, tensor) for :func:`~cxr_monai.networks.cxr_densenet.load_densenet_pretrained`.

        Dual-branch keys (``frontal.``, ``lateral.``, ``fusion.``) and the shared trunk's keys map to themselves;
        a single-branch model's stem and dense blocks go to both branches, its merge transition's norm to both
        ``norm3`` and its 1x1 convolution ``W`` to ``fusion.conv`` as ``[W, 0]`` (frontal channels first).
        """
        branch_prefixes = ("downsample.",) + tuple(f"features.{name}." for name in self.branch_layers)
        norm_prefix = f"features.{self.merge_transition}.norm."
        conv_key = f"features.{self.merge_transition}.conv.weight"
        mapped: dict[str, tuple[str, torch.Tensor]] = {}
        for key, (file_key, value) in source.items():
            if key.startswith(("frontal.", "lateral.", "fusion.")):
                mapped[key] = (file_key, value)
            elif key.startswith(norm_prefix):
                for view in ("frontal", "lateral"):
                    mapped[f"{view}.features.{self.branch_norm}.{key[len(norm_prefix):]}"] = (file_key, value)
            elif key == conv_key and value.dim() == 4:
                mapped["fusion.conv.weight"] = (file_key, torch.cat([value, torch.zeros_like(value)], dim=1))
            elif key.startswith(branch_prefixes):
                for view in ("frontal", "lateral"):
                    mapped[f"{view}.{key}"] = (file_key, value)
            else:
                mapped[key] = (file_key, value)
        return mapped

    def _check_view(self, x: torch.Tensor, view: str) -> None:
        if x.dim() != 4:
            raise ValueError(f"DualBranchDenseNet121 expects a (B, C, H, W) {view} batch, got {x.dim()} dimensions.")
        if x.shape[2] < self.min_input_size or x.shape[3] < self.min_input_size:
            raise ValueError(
                f"DualBranchDenseNet121 needs {view} inputs of at least {self.min_input_size} px, "
                f"got {x.shape[2]}x{x.shape[3]}."
            )

    def _lateral_features(
        self, frontal_features: torch.Tensor, lateral: torch.Tensor | None, lateral_present: torch.Tensor | None
    ) -> torch.Tensor:
        """The lateral branch's output, zeros for the studies without a lateral (the branch runs on the others)."""
        absent = torch.zeros_like(frontal_features)
        if lateral is None:
            return absent
        self._check_view(lateral, "lateral")
        batch = frontal_features.shape[0]
        if lateral.shape[0] != batch:
            raise ValueError(f"frontal and lateral batches differ in size: {batch} and {lateral.shape[0]}.")
        if lateral_present is None:
            features = self.lateral(lateral)
        else:
            present = lateral_present.reshape(-1) != 0
            if present.shape[0] != batch:
                raise ValueError(f"lateral_present needs one flag per study ({batch}), got {present.shape[0]}.")
            if not bool(present.any()):
                return absent
            if bool(present.all()):
                features = self.lateral(lateral)
            else:
                index = present.nonzero().squeeze(1)
                subset = self.lateral(lateral.index_select(0, index))
                if subset.shape[1:] != absent.shape[1:]:
                    raise ValueError(
                        f"the lateral branch gives {list(subset.shape[1:])} features and the frontal one "
                        f"{list(absent.shape[1:])}: frontal and lateral images need the same height and width."
                    )
                return absent.index_copy(0, index, subset)
        if features.shape != absent.shape:
            raise ValueError(
                f"the lateral branch gives {list(features.shape[1:])} features and the frontal one "
                f"{list(absent.shape[1:])}: frontal and lateral images need the same height and width."
            )
        return features

    def _head(self, frontal_features: torch.Tensor, lateral_features: torch.Tensor) -> torch.Tensor:
        x = self.fusion(torch.cat([frontal_features, lateral_features], dim=1))
        x = self.features(x)
        return self.class_layers(x)

    def forward(
        self,
        frontal: torch.Tensor,
        lateral: torch.Tensor | None = None,
        lateral_present: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, num_classes)``; ``lateral`` ``None`` or flagged absent in ``lateral_present``: frontal only."""
        self._check_view(frontal, "frontal")
        frontal_features = self.frontal(frontal)
        return self._head(frontal_features, self._lateral_features(frontal_features, lateral, lateral_present))

    def branch_cams(
        self,
        frontal: torch.Tensor,
        lateral: torch.Tensor | None = None,
        lateral_present: torch.Tensor | None = None,
        *,
        class_idx: int,
        postprocessing: Callable[[torch.Tensor], torch.Tensor] | None = normalize_cam,
        upsampler: Callable[..., Callable[[torch.Tensor], torch.Tensor]] = default_upsampler,
    ) -> dict[str, torch.Tensor | None]:
        """Grad-CAM of class ``class_idx`` on each branch's output, one map per view, at the input sizes.

        With ``A`` a branch's output (``frontal.features.relu3`` / ``lateral.features.relu3``: rectified dense
        block 3 features, 1/64 of the input, 8x8 at 512 px) and ``y`` the class logit, the map is
        ``relu(sum_c w_c A_c)`` with ``w_c`` the spatial mean of ``dy/dA_c`` (Selvaraju et al.), computed as
        :class:`monai.visualize.GradCAM` computes it and upsampled with MONAI's ``default_upsampler`` (bilinear).
        Why Grad-CAM: Zhou et al.'s CAM weights each channel by the classifier's weight, which presumes global
        average pooling and a linear layer right after the mapped features; after a branch come the fusion
        convolution, dense block 4 and the head, so no such weight exists. ``w_c`` is its first-order counterpart
        (for a pooled linear head it *is* the classifier weight divided by the number of positions, so Grad-CAM
        reduces to CAM up to scale and the ReLU), and since ``dy/dA`` is taken with respect to one branch's tensor,
        each map weighs only that branch's channels. The gradient is taken at the branch outputs (the branches run
        without a graph), which gives the same map as MONAI's GradCAM with that target layer. The model is put in
        eval mode for the call and restored after.

        Args:
            frontal, lateral, lateral_present: as :meth:`forward`.
            class_idx: the class to map (a multi-label head has no single "predicted" class, so it is required).
            postprocessing: applied to each upsampled ``(B, 1, H, W)`` map; the default :func:`normalize_cam`
                scales each map to [0, 1] with its most class-relevant pixel at 1 (MONAI's default normaliser would
                invert it); ``None`` for the raw maps.
            upsampler: MONAI-style ``upsampler(spatial_size)(map)``.

        Returns:
            ``{"frontal": (B, 1, H, W), "lateral": (B, 1, H_l, W_l) or None, "logits": (B, num_classes)}``;
            ``"lateral"`` is ``None`` when ``lateral`` is, and all zeros for the studies flagged absent (their
            branch output is zero, so is the gradient).

        Example::

            >>> net = DualBranchDenseNet121(num_classes=13)
            >>> maps = net.branch_cams(torch.rand(1, 1, 128, 128), torch.rand(1, 1, 128, 128), class_idx=4)
            >>> maps["frontal"].shape, maps["lateral"].shape, maps["logits"].shape
            (torch.Size([1, 1, 128, 128]), torch.Size([1, 1, 128, 128]), torch.Size([1, 13]))
        """
        if not -self.num_classes <= class_idx < self.num_classes:
            raise ValueError(f"class_idx {class_idx} is out of range for {self.num_classes} classes.")
        training = self.training
        self.eval()
        try:
            with torch.no_grad():
                self._check_view(frontal, "frontal")
                frontal_features = self.frontal(frontal)
                lateral_features = self._lateral_features(frontal_features, lateral, lateral_present)
            frontal_features = frontal_features.detach().requires_grad_(True)
            lateral_features = lateral_features.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = self._head(frontal_features, lateral_features)
                grads = torch.autograd.grad(logits[:, class_idx].sum(), (frontal_features, lateral_features))
        finally:
            self.train(training)

        def grad_cam(features: torch.Tensor, grad: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cam = upsampler(size)(torch.relu((weights * features).sum(dim=1, keepdim=True)))
            return postprocessing(cam) if postprocessing is not None else cam

        with torch.no_grad():
            maps: dict[str, torch.Tensor | None] = {
                "frontal": grad_cam(frontal_features, grads[0], frontal.shape[2:]),
                "lateral": None if lateral is None else grad_cam(lateral_features, grads[1], lateral.shape[2:]),
                "logits": logits.detach(),
            }
        return maps
