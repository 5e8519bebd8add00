"""Networks, one per file, and the DCGAN blocks they share.

The Faster R-CNN of :mod:`cxr_monai.networks.faster_rcnn` (``faster_rcnn_fpn``, ``GreyRCNNTransform``,
``load_faster_rcnn_pretrained``, ``BACKBONES``) needs the optional torchvision: it is imported on first access, so this package
imports without torchvision, and ``cxr_monai.networks.faster_rcnn_fpn`` raises the ImportError of
:func:`~cxr_monai.utils.require_torchvision` where torchvision is missing or does not fit torch. (Not in
``__all__``: a star import would need torchvision.)
"""

from __future__ import annotations

from cxr_monai.networks.clasegnet import ClaSegNet, load_resnet50_pretrained
from cxr_monai.networks.context_discriminator import ContextDiscriminator
from cxr_monai.networks.context_encoder import ContextEncoder
from cxr_monai.networks.cxr_densenet import CXRDenseNet121
from cxr_monai.networks.dcgan import LEAKY_RELU, dcgan_init, halvings_to_4px
from cxr_monai.networks.dual_branch_densenet import DualBranchDenseNet121
from cxr_monai.networks.multiscale_discriminator import MultiScaleDiscriminator
from cxr_monai.networks.pathology_preserving import PathologyPreservingGenerator, enable_dropout
from cxr_monai.networks.self_attention import SelfAttention2d
from cxr_monai.networks.self_attention_unet import (
    SelfAttentionUNet,
    apply_spectral_norm,
)
from cxr_monai.networks.vgg16_unet import VGG16UNet, load_vgg16_pretrained

__all__ = [
    "LEAKY_RELU",
    "CXRDenseNet121",
    "ClaSegNet",
    "ContextDiscriminator",
    "ContextEncoder",
    "DualBranchDenseNet121",
    "MultiScaleDiscriminator",
    "PathologyPreservingGenerator",
    "SelfAttention2d",
    "SelfAttentionUNet",
    "VGG16UNet",
    "apply_spectral_norm",
    "dcgan_init",
    "enable_dropout",
    "halvings_to_4px",
    "load_resnet50_pretrained",
    "load_vgg16_pretrained",
]

#: names served lazily from the torchvision-dependent modules
_LAZY = {name: "cxr_monai.networks.faster_rcnn"
         for name in ("BACKBONES", "GreyRCNNTransform", "faster_rcnn_fpn", "load_faster_rcnn_pretrained")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
