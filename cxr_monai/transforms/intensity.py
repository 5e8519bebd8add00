"""Intensity maps between the data contract's [0, 1] and a tanh network's [-1, 1], and the radiologist's window
(level) adjustment as a random augmentation (seed 003 §2)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform

__all__ = ["RandWindow", "RandWindowd", "from_network_range", "to_network_range"]


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


class RandWindow(RandomizableTransform):
    """Random window (level) adjustment: ``clip((x - (level - width / 2)) / width, 0, 1)`` with the level and width
    drawn uniformly from ``level_range`` and ``width_range``, with probability ``prob``.

    Radiologists read a radiograph at several windows; seed 003 adds this "level adjustment" to the classifier's
    augmentation. Intensities are the data contract's [0, 1] (lungs dark), so the identity is level 0.5, width 1;
    a narrower window stretches the contrast of the mid-tones and saturates the ends, a shifted level brightens or
    darkens. The result stays in [0, 1] and keeps the input's type (a MetaTensor keeps its meta).

    Example::

        >>> window = RandWindow(prob=1.0, level_range=(0.5, 0.5), width_range=(0.5, 0.5))
        >>> window(torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]])).tolist()
        [[0.0, 0.0, 0.5, 1.0, 1.0]]
    """

    def __init__(self, prob: float = 0.5, level_range: Sequence[float] = (0.4, 0.6),
                 width_range: Sequence[float] = (0.6, 1.0)) -> None:
        super().__init__(prob)
        (self.level_low, self.level_high), (self.width_low, self.width_high) = level_range, width_range
        if not 0.0 < self.width_low <= self.width_high:
            raise ValueError(f"width_range must be positive and ordered, got {tuple(width_range)}")
        if self.level_low > self.level_high:
            raise ValueError(f"level_range must be ordered, got {tuple(level_range)}")
        self.level, self.width = 0.5, 1.0

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.level = float(self.R.uniform(self.level_low, self.level_high))
            self.width = float(self.R.uniform(self.width_low, self.width_high))

    def __call__(self, img: Any, randomize: bool = True) -> Any:
        if randomize:
            self.randomize()
        if not self._do_transform:
            return img
        low = self.level - self.width / 2.0
        if isinstance(img, torch.Tensor):
            return ((img - low) / self.width).clamp(0.0, 1.0)
        return np.clip((np.asarray(img) - low) / self.width, 0.0, 1.0)


class RandWindowd(RandomizableTransform, MapTransform):
    """Dictionary version of :class:`RandWindow`: one window drawn per item, applied to every key (the radiograph
    and its derived channels, e.g. the lung-segmented and bone-suppressed images, stay consistent).

    Example::

        RandWindowd(keys=["image", "bone_suppressed"], prob=0.5)
    """

    def __init__(self, keys: KeysCollection, prob: float = 0.5, level_range: Sequence[float] = (0.4, 0.6),
                 width_range: Sequence[float] = (0.6, 1.0), allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.window = RandWindow(prob=1.0, level_range=level_range, width_range=width_range)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandWindowd:
        super().set_random_state(seed, state)
        self.window.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        self.window.randomize()
        for key in self.key_iterator(d):
            d[key] = self.window(d[key], randomize=False)
        return d
