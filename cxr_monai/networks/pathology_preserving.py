"""The pathology-preserving generator of seed 002 (Xing et al. 2019): a pix2pix generator whose output keeps the input's
pixels inside the pathology boxes exactly."""

from __future__ import annotations

import torch
from torch import nn

from cxr_monai.transforms.boxes import paste_pathology

__all__ = ["PathologyPreservingGenerator", "enable_dropout"]


class PathologyPreservingGenerator(nn.Module):
    """``x̃ = x + G(·) ⊙ (1 − m)``: the wrapped generator paints the image around the boxes, the boxes stay the input's.

    ``forward(condition)`` takes ``condition = cat(x, m)`` on channels: ``x = y ⊙ m`` (the image inside the boxes, zero
    elsewhere; :class:`~cxr_monai.transforms.KeepBoxesd`) in its first ``C`` channels and the box mask ``m`` (1 inside)
    in the last. ``G`` sees ``(x, m)`` (``mask_input=True``, ``G`` then has ``C + 1`` input channels) or ``x`` alone
    (``mask_input=False``, the seed's ``G(x)``; ``C`` input channels), and the result is composed with
    :func:`~cxr_monai.transforms.paste_pathology` (seed 002 Algorithm 1, line 7), so the box pixels of the output are
    exactly the input's and only the pixels outside them get gradients.

    The mask channel is the default because ``x`` alone is ambiguous: a box pixel whose value is 0 (mid-grey in the
    network range [-1, 1], or black in [0, 1]) looks exactly like the zero fill outside the box, so ``G`` cannot tell
    where the box ends, which the composition then enforces abruptly at its edge; with ``m`` it knows the region it
    must continue from.

    Args:
        generator: any image-to-image network (the bundle's: :class:`~cxr_monai.networks.SelfAttentionUNet` without
            attention, pix2pix's U-Net with tanh and decoder dropout).
        mask_input: whether ``G`` sees the mask as an extra channel.

    Example::

        >>> from cxr_monai.networks import SelfAttentionUNet
        >>> g = PathologyPreservingGenerator(SelfAttentionUNet(2, 1, (8, 16, 16), 32, attention_sizes=()))
        >>> x, m = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32); m[..., 8:16, 8:16] = 1
        >>> g(torch.cat([x, m], dim=1)).shape
        torch.Size([1, 1, 32, 32])
    """

    def __init__(self, generator: nn.Module, mask_input: bool = True) -> None:
        super().__init__()
        self.generator = generator
        self.mask_input = bool(mask_input)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        if condition.dim() != 4 or condition.shape[1] < 2:
            raise ValueError("PathologyPreservingGenerator expects (N, C + 1, H, W): the masked image and the box mask "
                             "concatenated on channels")
        inputs, mask = condition[:, :-1], condition[:, -1:]
        generated = self.generator(condition if self.mask_input else inputs)
        return paste_pathology(inputs, generated, mask)


def enable_dropout(network: nn.Module) -> nn.Module:
    """Put every dropout layer of ``network`` in training mode (the rest as it is): pix2pix's source of variation at
    test time, "noise in the form of dropout, applied ... at both training and test time" (Isola et al. 2017 §3.1)."""
    for module in network.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.train()
    return network
