"""Which network of a GAN trains when: phases by epoch and updates every k iterations.

The context encoder's schedule (seed 001 §4.2: G with L2 only, then D only, then both; §3.3: update one network only
every k iterations) as functions of the engine's epoch/iteration counters, so a resumed run continues exactly where
it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["GanPhase", "GanSchedule"]


class GanPhase(str, Enum):
    G_L2 = "g_l2"  # generator trained with the reconstruction loss only
    D_ONLY = "d_only"  # generator frozen, discriminator learns real vs inpainted
    JOINT = "joint"  # both, generator with the joint loss


@dataclass(frozen=True)
class GanSchedule:
    """Which network trains when.

    Args:
        g_l2_epochs: first epochs in which only G trains, with the L2 loss alone (paper: 2).
        d_only_epochs: following epochs in which only D trains (paper: 4); joint training afterwards.
        g_every: in the joint phase, update G only every ``g_every`` iterations (paper §4.1: 2, "freezing the
            generator once every two iterations").
        d_every: in the joint and D-only phases, update D only every ``d_every`` iterations.

    Example::

        >>> s = GanSchedule(g_l2_epochs=2, d_only_epochs=4, g_every=2)
        >>> s.phase(epoch=1), s.phase(epoch=3), s.phase(epoch=7)
        (<GanPhase.G_L2: 'g_l2'>, <GanPhase.D_ONLY: 'd_only'>, <GanPhase.JOINT: 'joint'>)
        >>> s.updates(epoch=7, iteration=1), s.updates(epoch=7, iteration=2)
        ((False, True), (True, True))
    """

    g_l2_epochs: int = 2
    d_only_epochs: int = 4
    g_every: int = 1
    d_every: int = 1

    def __post_init__(self) -> None:
        if self.g_l2_epochs < 0 or self.d_only_epochs < 0:
            raise ValueError(f"phase lengths must be >= 0, got {self.g_l2_epochs}, {self.d_only_epochs}")
        if self.g_every < 1 or self.d_every < 1:
            raise ValueError(f"g_every and d_every must be >= 1, got {self.g_every}, {self.d_every}")

    def phase(self, epoch: int) -> GanPhase:
        """Phase of a 1-based ``epoch``."""
        if epoch <= self.g_l2_epochs:
            return GanPhase.G_L2
        if epoch <= self.g_l2_epochs + self.d_only_epochs:
            return GanPhase.D_ONLY
        return GanPhase.JOINT

    def updates(self, epoch: int, iteration: int) -> tuple[bool, bool]:
        """``(update_g, update_d)`` for a 1-based epoch and 1-based global iteration."""
        phase = self.phase(epoch)
        update_g = phase is GanPhase.G_L2 or (phase is GanPhase.JOINT and iteration % self.g_every == 0)
        update_d = phase is not GanPhase.G_L2 and iteration % self.d_every == 0
        return update_g, update_d
