"""Per-iteration numbers of an engine output for MLflow and stats curves."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["finite_scalars"]


def finite_scalars(
    output: Mapping[str, Any],
    keys: Sequence[str] | None = None,
    codes: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, float]:
    """The finite numbers among ``output[keys]`` (every scalar entry when ``keys`` is None), for
    ``MLFlowHandler(output_transform=...)`` or ``StatsHandler(output_transform=...)``.

    Values a step did not compute are ``nan`` in an adversarial trainer's output; leaving them out keeps the
    MLflow curves free of gaps filled with NaN markers. ``codes[key]`` turns a string value into a number
    (a GAN phase name into its code), so MLflow plots the schedule next to the losses.

    Example::

        >>> finite_scalars({"loss": 0.5, "l2": 0.4, "d_loss": float("nan"), "pred": None})
        {'loss': 0.5, 'l2': 0.4}
        >>> finite_scalars({"g_loss": 0.5, "phase": "joint"}, keys=("g_loss", "phase"), codes={"phase": {"joint": 2.0}})
        {'g_loss': 0.5, 'phase': 2.0}
    """
    if not isinstance(output, Mapping):
        return {}
    values = {}
    for key in output if keys is None else keys:
        value = output.get(key)
        if isinstance(value, str) and codes is not None and key in codes:
            value = codes[key].get(value)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            values[key] = float(value)
    return values
