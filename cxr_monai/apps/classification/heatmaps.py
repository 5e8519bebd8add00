"""Class heatmaps of the chest X-ray classifiers, the one place the triage screen and the localisation evaluation get
them from: CAM or Grad-CAM (:mod:`monai.visualize`) of chosen classes for one network input, each map in [0, 1] with
its most class-relevant pixel at 1 (:func:`~cxr_monai.networks.cxr_densenet.normalize_cam`; MONAI's default
normaliser inverts), at the input's working size, and :func:`resize_heatmap` to bring a map to a radiograph's stored
size.

Methods (``method``):

- ``"cam"`` (Zhou et al.): :class:`monai.visualize.CAM` on ``cam_target_layer`` (the rectified last feature map, 1/128
  of a 512 px input with the extra stem: 4x4) weighted by the linear head ``cam_fc_layer``. The seed's maps.
- ``"gradcam"`` (Selvaraju et al.): :class:`monai.visualize.GradCAM` on ``gradcam_target_layer`` (the rectified
  output of dense block 3, before the last transition's pooling: twice CAM's resolution, 8x8 at 512 px). On the last
  feature map Grad-CAM would equal CAM up to scale (global average pooling + linear head), so it is taken one block
  earlier, where it says something CAM cannot.
- :class:`~cxr_monai.networks.DualBranchDenseNet121`: one Grad-CAM map per view on each branch's output
  (:meth:`~cxr_monai.networks.DualBranchDenseNet121.branch_cams`, the seed's "CAM visualization for both the
  images"); ``method="cam"`` is refused there, as the fused grid's CAM is a map of neither image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.networks import eval_mode

__all__ = ["HEATMAP_METHODS", "ClassHeatmaps", "resize_heatmap"]

#: The heatmap methods of :class:`ClassHeatmaps`.
HEATMAP_METHODS = ("cam", "gradcam")


def _tensor(image: Any) -> torch.Tensor:
    return image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)


def resize_heatmap(heatmap: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
    """A working-size map ``(H, W)`` resized bilinearly to ``shape`` (a radiograph's stored size), in [0, 1].

    The working-size input must be the whole radiograph resized (no crop or padding), as the classifier bundle's
    ``Resized`` makes it.

    >>> resize_heatmap(torch.tensor([[0.0, 1.0], [0.0, 1.0]]), (2, 4)).round(2).tolist()
    [[0.0, 0.25, 0.75, 1.0], [0.0, 0.25, 0.75, 1.0]]
    """
    resized = torch.nn.functional.interpolate(heatmap[None, None].float(), size=tuple(shape), mode="bilinear",
                                              align_corners=False)
    return resized[0, 0].clamp(0.0, 1.0).cpu().numpy()


class ClassHeatmaps:
    """The heatmaps of chosen classes for one network input (module docstring for the methods).

    Args:
        network: :class:`~cxr_monai.networks.CXRDenseNet121` or :class:`~cxr_monai.networks.DualBranchDenseNet121`
            (or DDP around one). It runs in eval mode for the call and is restored after; CAM needs no gradients,
            Grad-CAM takes them with respect to the mapped features only (no parameter gradient is kept).
        method: ``"cam"`` or ``"gradcam"``.

    Calling it with the network input ``image`` ``(C_in, H, W)`` (and, for the dual branch, ``lateral``
    ``(C_l, H, W)`` or ``None`` and ``lateral_present``) and class indices returns ``{"frontal": [map per class],
    "lateral": [map per class]}``, each map ``(H, W)`` on the CPU; ``"lateral"`` only for a dual-branch network given
    a present lateral.

    Example::

        >>> from cxr_monai.networks import CXRDenseNet121
        >>> net = CXRDenseNet121(in_channels=1, num_classes=3, block_config=(1, 1, 1, 1))
        >>> maps = ClassHeatmaps(net, "gradcam")(torch.rand(1, 128, 128), classes=[2, 0])
        >>> len(maps["frontal"]), tuple(maps["frontal"][0].shape)
        (2, (128, 128))
    """

    def __init__(self, network: torch.nn.Module, method: str = "cam") -> None:
        if method not in HEATMAP_METHODS:
            raise ValueError(f"heatmap method must be one of {HEATMAP_METHODS}, got {method!r}")
        self.network = getattr(network, "module", network)
        self.method = method
        self.dual_branch = hasattr(self.network, "branch_cams")
        if self.dual_branch:
            if method == "cam":
                raise ValueError(f"{type(self.network).__name__}: method 'cam' maps the fused grid, a map of neither "
                                 "view; use 'gradcam' (one map per branch)")
        else:
            layers = ("cam_target_layer", "cam_fc_layer") if method == "cam" else ("gradcam_target_layer",)
            missing = [name for name in layers if not hasattr(self.network, name)]
            if missing:
                raise ValueError(f"{type(self.network).__name__} names no {' / '.join(missing)} for {method} "
                                 "(use cxr_monai.networks.CXRDenseNet121)")
        self._visualizer: Any = None

    def _device(self) -> torch.device:
        return next(self.network.parameters()).device

    def _batch(self, image: Any, what: str) -> torch.Tensor:
        x = _tensor(image)
        if x.dim() != 3:
            raise ValueError(f"ClassHeatmaps: expected the {what} network input (C, H, W), got shape {tuple(x.shape)}")
        return x[None].float().to(self._device())

    def _single_branch(self, x: torch.Tensor, classes: Sequence[int]) -> list[torch.Tensor]:
        from monai.visualize import CAM, GradCAM

        from cxr_monai.networks.cxr_densenet import normalize_cam

        if self._visualizer is None:  # MONAI registers its hooks once and keeps no handle: build it once
            if self.method == "cam":
                self._visualizer = CAM(nn_module=self.network, target_layers=self.network.cam_target_layer,
                                       fc_layers=self.network.cam_fc_layer, postprocessing=normalize_cam)
            else:
                self._visualizer = GradCAM(nn_module=self.network, target_layers=self.network.gradcam_target_layer,
                                           postprocessing=normalize_cam)
        if self.method == "cam":
            with eval_mode(self.network):  # also no_grad
                return [self._visualizer(x, class_idx=[int(c)])[0, 0].float().cpu() for c in classes]
        training = self.network.training
        self.network.eval()
        try:
            with torch.enable_grad():  # an evaluator's iteration may run under no_grad
                return [self._visualizer(x, class_idx=int(c))[0, 0].detach().float().cpu() for c in classes]
        finally:
            self.network.train(training)
            self.network.zero_grad(set_to_none=True)  # GradCAM's backward fills the parameters' .grad

    def __call__(self, image: Any, classes: Sequence[int], lateral: Any = None,
                 lateral_present: Any = None) -> dict[str, list[torch.Tensor]]:
        x = self._batch(image, "frontal")
        if not self.dual_branch:
            return {"frontal": self._single_branch(x, classes)}
        present = lateral is not None and (lateral_present is None or bool(_tensor(lateral_present).reshape(-1)[0]))
        lateral_x = self._batch(lateral, "lateral") if present else None
        maps: dict[str, list[torch.Tensor]] = {"frontal": []}
        if present:
            maps["lateral"] = []
        for c in classes:
            views = self.network.branch_cams(x, lateral_x, class_idx=int(c))
            maps["frontal"].append(views["frontal"][0, 0].float().cpu())
            if present:
                maps["lateral"].append(views["lateral"][0, 0].float().cpu())
        return maps
