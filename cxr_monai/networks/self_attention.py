"""Self-attention over the positions of a 2D feature map, with a learnable gate γ that starts at 0 (SAGAN)."""

from __future__ import annotations

import torch
from monai.networks.blocks import SABlock
from torch import nn

__all__ = ["SelfAttention2d"]


class SelfAttention2d(nn.Module):
    """``x + γ · attention(x)`` over the ``H·W`` positions of ``x``: Zhang et al.'s SAGAN block on MONAI's ``SABlock``.

    Every position attends to every other one, so a network can relate structures far apart (a rib's course across
    the lung) that its convolutions see only locally. γ is a learnable scalar initialised to 0: the block starts as
    the identity and the network learns how much non-local evidence to mix in (SAGAN §4). Queries and keys have
    ``channels // 8`` dimensions as in SAGAN; MONAI's block gives the values the same size and projects back to
    ``channels`` (SAGAN keeps the values at ``channels``; the projection makes up for it). The cost is quadratic in
    ``H·W``: place it at feature maps of 32 × 32 or smaller (1,024 positions).

    Args:
        channels: feature channels of ``x``.
        num_heads: attention heads (SAGAN: 1).
        spectral_norm: apply spectral normalisation to the block's linear maps (SAGAN does, in G and D).

    Example::

        >>> block = SelfAttention2d(64)
        >>> x = torch.randn(2, 64, 16, 16)
        >>> bool(torch.equal(block(x), x)), float(block.gamma)  # the identity until γ learns
        (True, 0.0)
    """

    def __init__(self, channels: int, num_heads: int = 1, spectral_norm: bool = False) -> None:
        super().__init__()
        if channels < 8 or channels % num_heads:
            raise ValueError(f"channels must be >= 8 and divisible by num_heads, got {channels} and {num_heads}")
        self.attention = SABlock(hidden_size=channels, num_heads=num_heads, dim_head=max(channels // 8 // num_heads, 1))
        if spectral_norm:
            for name, module in list(self.attention.named_modules()):
                if isinstance(module, nn.Linear):
                    nn.utils.parametrizations.spectral_norm(module)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        sequence = x.flatten(2).transpose(1, 2)  # (B, H·W, C)
        attended = self.attention(sequence).transpose(1, 2).reshape(batch, channels, height, width)
        return x + self.gamma.to(attended.dtype) * attended
