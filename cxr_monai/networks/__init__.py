"""Networks, one per file, and the DCGAN blocks they share."""

from __future__ import annotations

from cxr_monai.networks.clasegnet import ClaSegNet, load_resnet50_pretrained
from cxr_monai.networks.context_discriminator import ContextDiscriminator
from cxr_monai.networks.context_encoder import ContextEncoder
from cxr_monai.networks.cxr_densenet import CXRDenseNet121
from cxr_monai.networks.dcgan import LEAKY_RELU, dcgan_init, halvings_to_4px
from cxr_monai.networks.dual_branch_densenet import DualBranchDenseNet121
from cxr_monai.networks.multiscale_discriminator import MultiScaleDiscriminator
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
    "SelfAttention2d",
    "SelfAttentionUNet",
    "VGG16UNet",
    "apply_spectral_norm",
    "dcgan_init",
    "halvings_to_4px",
    "load_resnet50_pretrained",
    "load_vgg16_pretrained",
]
