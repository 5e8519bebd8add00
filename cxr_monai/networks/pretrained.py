"""A user's pretrained weights file, read and reported the same way for every network that accepts one."""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["log_pretrained_summary", "read_state_dict", "shape_text"]

#: Containers a weights file may wrap its state dict in: ``{"state_dict": ...}``, ``{"model": ...}``, a
#: ``CheckpointSaver`` file ``{"network": ...}``.
STATE_DICT_WRAPPERS = ("state_dict", "model", "network")


def read_state_dict(path: str | os.PathLike, what: str = "Weights") -> dict[str, torch.Tensor]:
    """The tensors of a weights file, read with ``torch.load(weights_only=True)`` (no pickled code runs), unwrapped
    from :data:`STATE_DICT_WRAPPERS`, with DDP's ``module.`` prefix removed; ``what`` names the file in errors
    (``"DenseNet weights"``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one that is not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist.")
    try:
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise ValueError(
            f"{what} file {str(path)!r} could not be read as a state dict with torch.load(weights_only=True) "
            f"(save the model's state_dict(), not the model object): {err}"
        ) from err
    for wrapper in STATE_DICT_WRAPPERS:
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
            break
    if not isinstance(state, Mapping):
        message = f"{what} file {str(path)!r} holds a {type(state).__name__}, not a state dict."
        raise ValueError(message)  # noqa: TRY004 - a ValueError like every other bad-content case
    return {key.removeprefix("module."): value for key, value in state.items()
            if isinstance(key, str) and isinstance(value, torch.Tensor)}


def shape_text(tensor: torch.Tensor) -> str:
    """``"64x3x7x7"`` (``"scalar"`` for a 0-d tensor), as the loaders' mismatch messages write shapes."""
    return "x".join(str(size) for size in tensor.shape) or "scalar"


def log_pretrained_summary(log: logging.Logger, summary: Mapping[str, Any], tensors: str = "Network tensors") -> None:
    """Log a loader's summary (``path``, ``loaded``, ``unmatched_source``, ``unmatched_target``,
    ``shape_mismatched``): unused file keys at INFO; tensors left at their initialisation, tensors skipped for
    their shape, and a file that matched nothing as warnings, each naming the file. ``tensors`` names what was
    loaded into (e.g. ``"Encoder tensors"``).
    """
    path = summary["path"]
    if summary["unmatched_source"]:
        log.info("Not used from %s: %s", path, ", ".join(summary["unmatched_source"]))
    if summary["unmatched_target"]:
        log.warning("%s left at their initialisation (no counterpart in %s): %s", tensors, path,
                    ", ".join(summary["unmatched_target"]))
    if summary["shape_mismatched"]:
        log.warning("Skipped %d tensors whose shapes differ (%s): %s", len(summary["shape_mismatched"]), path,
                    "; ".join(summary["shape_mismatched"]))
    if not summary["loaded"]:
        log.warning("No tensor of %s matched the network; it keeps its random initialisation.", path)
