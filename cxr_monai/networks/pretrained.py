"""What loading a user's pretrained weights did, logged the same way for every network that accepts them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["log_pretrained_summary"]


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
