"""Stop a run cleanly when a loss turns NaN or infinite."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence

import torch
from ignite.engine import Engine, Events

from cxr_monai.handlers.checkpoint import latest_checkpoint
from cxr_monai.utils import any_rank, is_distributed

__all__ = ["NanGuard"]

logger = logging.getLogger(__name__)

class NanGuard:
    """Stop training with a clear message when a loss is not finite, before any checkpoint of that state.

    Attach it before the checkpoint handler (Ignite runs handlers in attach order), so the newest checkpoint
    on disk is the last good one. ``output_keys`` are read from ``engine.state.output``; a key whose value is
    ``nan`` because its network was not updated this iteration (see ``skip_if``) is not checked. Under
    torch.distributed every rank stops at the same iteration when any rank's loss is not finite (one all-reduce of
    a flag per iteration): DistributedDataParallel has averaged that rank's gradients into all of them, and a
    rank that went on would checkpoint the poisoned weights, then hang at its next collective.

    Example::

        NanGuard(["l2", "d_loss"], checkpoint_dir="runs/ce/checkpoints").attach(trainer)
    """

    def __init__(
        self,
        output_keys: Sequence[str] = ("loss",),
        checkpoint_dir: str | os.PathLike | None = None,
        skip_if: Mapping[str, str] | None = None,
    ) -> None:
        self.output_keys = tuple(output_keys)
        self.checkpoint_dir = checkpoint_dir
        self.skip_if = dict(skip_if or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        if not isinstance(output, Mapping):
            return
        bad = {}
        for key in self.output_keys:
            flag = self.skip_if.get(key)
            if flag is not None and not output.get(flag, True):
                continue
            value = output.get(key)
            if value is None:
                continue
            value = float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)
            if not math.isfinite(value):
                bad[key] = value
        if not (any_rank(bool(bad)) if is_distributed() else bad):
            return
        where = ""
        if self.checkpoint_dir is not None:
            latest = latest_checkpoint(self.checkpoint_dir)
            where = f"; the last good checkpoint is {latest}" if latest else "; no checkpoint was written yet"
        what = ", ".join(f"{k}={v}" for k, v in bad.items()) if bad else "on another rank (see its log)"
        raise FloatingPointError(
            f"non-finite loss at iteration {engine.state.iteration} (epoch {engine.state.epoch}): {what}{where}. "
            "Lower the learning rate, check the input intensities, or resume from the checkpoint with a different "
            "seed."
        )
