"""A user's pretrained weights file, read and reported the same way for every network that accepts one."""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["adapt_input_kernel", "load_matching_tensors", "log_pretrained_summary", "read_state_dict", "shape_text"]

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


def adapt_input_kernel(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A convolution kernel ``(out, c, k, k)`` for ``in_channels`` inputs: summed over its c, divided, repeated.

    ``weight.sum(1) / in_channels`` in each of the ``in_channels`` input slots: the response to ``in_channels``
    copies of an image equals the original kernel's response to ``c`` copies of it. For ImageNet RGB kernels
    and a grey radiograph (``in_channels=1``) this is the sum over R, G, B (the kernel seen on a grey RGB image);
    for the grey binary model's stem and the 3-channel input (radiograph, lung-segmented, bone-suppressed), each
    channel gets a third of the grey kernel, so the start responds to the mean of three views of the same
    radiograph as the binary model responded to the radiograph.

    Example::

        >>> adapt_input_kernel(torch.ones(2, 3, 1, 1), 1).flatten().tolist()
        [3.0, 3.0]
    """
    if weight.shape[1] == in_channels:
        return weight
    return (weight.sum(dim=1, keepdim=True) / in_channels).repeat(1, in_channels, *([1] * (weight.dim() - 2)))


def load_matching_tensors(
    network: torch.nn.Module,
    path: str | os.PathLike,
    source: Mapping[str, tuple[str, torch.Tensor]],
    candidates: Mapping[str, tuple[str, torch.Tensor]],
    input_conv_keys: Sequence[str] = (),
    what: str = "Network",
    strict_shapes: bool = False,
    log: logging.Logger | None = None,
) -> dict[str, Any]:
    """Copy into ``network`` every tensor of ``candidates`` (network key -> (file key, tensor), the file's tensors
    after a loader's key mapping) whose key and shape match; the convolutions of ``input_conv_keys`` whose kernel
    differs only in input width are adapted first (:func:`adapt_input_kernel`); other shape mismatches are skipped
    (or raise with ``strict_shapes``, before anything is copied). ``source`` is the file's tensors by network key
    (for the unused file keys). Logs what it did and returns the summary (``path``, ``loaded``, ``adapted``,
    ``unmatched_source``, ``unmatched_target``, ``shape_mismatched``) that :func:`log_pretrained_summary` reads.
    """
    log = log or logging.getLogger(__name__)
    target = network.state_dict()
    input_convs = set(input_conv_keys)
    accepted: dict[str, torch.Tensor] = {}
    adapted, mismatched, used = [], [], set()
    for key, (file_key, value) in candidates.items():
        if key not in target:
            continue
        want = target[key]
        only_input_width_differs = (
            key in input_convs
            and value.dim() == want.dim() == 4
            and value.shape[0] == want.shape[0]
            and value.shape[1] != want.shape[1]
            and value.shape[2:] == want.shape[2:]
        )
        if only_input_width_differs:
            value = adapt_input_kernel(value, want.shape[1])
            adapted.append(key)
        if value.shape != want.shape:
            mismatched.append(f"{key} {shape_text(want)} <- {file_key} {shape_text(value)}")
            continue
        accepted[key] = value
        used.add(file_key)
    if mismatched and strict_shapes:
        raise ValueError(
            f"{what} weights file {str(path)!r}: {len(mismatched)} shapes differ from the network: {mismatched[:3]}"
        )
    with torch.no_grad():
        for key, value in accepted.items():
            target[key].copy_(value.to(dtype=target[key].dtype, device=target[key].device))
    summary: dict[str, Any] = {
        "path": str(path),
        "loaded": list(accepted),
        "adapted": [key for key in adapted if key in accepted],
        "unmatched_source": [file_key for file_key, _ in source.values() if file_key not in used],
        "unmatched_target": [key for key in target if key not in candidates and not key.endswith("num_batches_tracked")],
        "shape_mismatched": mismatched,
    }
    log.info("Loaded %d %s tensors from %s (%d input kernels adapted).", len(accepted), what, path, len(adapted))
    log_pretrained_summary(log, summary)
    return summary
