"""Networks, one per file."""

from __future__ import annotations

from cxr_monai.networks.context_discriminator import ContextDiscriminator
from cxr_monai.networks.context_encoder import ContextEncoder, dcgan_init

__all__ = ["ContextDiscriminator", "ContextEncoder", "dcgan_init"]
