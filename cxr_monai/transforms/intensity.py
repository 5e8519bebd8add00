"""Intensity maps between the data contract's [0, 1] and a tanh network's [-1, 1]."""

from __future__ import annotations

import torch

__all__ = ["from_network_range", "to_network_range"]


def to_network_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] intensities -> the generator's [-1, 1].

    >>> to_network_range(torch.tensor([0.0, 0.5, 1.0])).tolist()
    [-1.0, 0.0, 1.0]
    """
    return x * 2.0 - 1.0


def from_network_range(y: torch.Tensor) -> torch.Tensor:
    """The generator's [-1, 1] (tanh) -> [0, 1], clipped so rounding under AMP never leaves the range.

    >>> from_network_range(torch.tensor([-1.0, 0.0, 1.0])).tolist()
    [0.0, 0.5, 1.0]
    """
    return ((y + 1.0) / 2.0).clamp(0.0, 1.0)
