"""Small helpers shared by the package and the bundle configs: booleans from the command line, torch.distributed
ranks, and one-line reports of data errors."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from monai.utils import str2bool

__all__ = [
    "MissingOptionalDependency",
    "any_rank",
    "as_bool",
    "finish_distributed",
    "handlers_for_this_rank",
    "init_distributed",
    "is_distributed",
    "is_rank0",
    "one_line_error",
    "report_data_errors_in_one_line",
    "require_torchvision",
    "user_errors",
]


def as_bool(value: Any, name: str = "value") -> bool:
    """A bundle key's boolean: ``True``/``False``, ``1``/``0`` and the strings ``"true"``/``"false"``/``"1"``/``"0"``
    (any case; also MONAI's ``str2bool`` words ``yes``/``no``/``y``/``n``/``t``/``f``).

    ``python -m monai.bundle run --resume false`` passes the string ``'false'`` (Python Fire parses only Python
    literals), which plain ``if value:`` would take for true; the components and config expressions of the
    bundles read every boolean key through this function. Raises ``ValueError`` naming ``name`` otherwise.

    >>> [as_bool(v) for v in (True, "false", "True", "0", 1, np.bool_(False))]
    [True, False, True, False, True, False]
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    try:
        return str2bool(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise ValueError(f"{name} must be true or false (also 'true'/'false', 1/0), got {value!r}.") from None


def is_distributed() -> bool:
    """Whether this process is one rank of an initialised ``torch.distributed`` group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def is_rank0() -> bool:
    """Whether this process writes the run's files: rank 0, or the only process."""
    return not is_distributed() or torch.distributed.get_rank() == 0


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions whose message alone tells a user what went wrong and with which file: an unreadable image
    (:class:`~cxr_monai.io.CXRReadError`), a datalist that breaks the schema
    (:class:`~cxr_monai.data.DatalistError`), more images skipped than a run allows
    (:class:`~cxr_monai.data.robust.TooManySkippedError`) and a non-finite loss or weight (``FloatingPointError``,
    raised by :class:`~cxr_monai.handlers.NanGuard` and :class:`~cxr_monai.handlers.ResumableCheckpoint`)."""
    from cxr_monai.data.datalist import DatalistError
    from cxr_monai.data.robust import TooManySkippedError
    from cxr_monai.io.reader import CXRReadError

    return CXRReadError, DatalistError, TooManySkippedError, FloatingPointError


def report_data_errors_in_one_line() -> None:
    """Make an uncaught :func:`user_errors` exception end the program with its own one-line message.

    MONAI wraps an error raised while a bundle is parsed or run in ``RuntimeError('applying transform ...')`` and
    ``RuntimeError('Failed to evaluate ...')`` chains that end far from the cause; the bundles call this in
    ``initialize``, so a run stopped by bad data prints ``CXRReadError: /data/x.png: ...`` to stderr (exit
    status 1) instead. Every other exception, a bug, keeps Python's full traceback.

    Example::

        "initialize": ["$cxr_monai.utils.report_data_errors_in_one_line()", ...]
    """
    from cxr_monai.data.robust import root_cause

    previous = sys.excepthook
    if getattr(previous, "_cxr_monai_one_line", False):
        return

    def hook(kind: type[BaseException], error: BaseException, traceback: Any) -> None:
        root = root_cause(error)
        if isinstance(root, user_errors()):
            print(f"{type(root).__name__}: {root}", file=sys.stderr)
            return
        previous(kind, error, traceback)

    hook._cxr_monai_one_line = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (a collective: every rank must call it)."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else None
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())




def one_line_error(error: BaseException, limit: int = 1000) -> str:
    """``"<type>: <message>"`` on one line (the message's first line), at most ``limit`` characters."""
    lines = str(error).strip().splitlines()
    message = lines[0] + (" [...]" if len(lines) > 1 else "") if lines else ""
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text if len(text) <= limit else text[: limit - 5] + "[...]"



TORCHVISION_INSTALL_HINT = (
    "install the torchvision release paired with torch (the `detection` extra: pip install -e '.[detection]'; on "
    "the project's machines, whose torch is a CPU build: pip install torchvision==0.28.0 --find-links "
    "../shared/wheels, see ../shared/wheels/README.md)"
)


class MissingOptionalDependency(ImportError):
    """An optional dependency (an extra of setup.cfg) is missing or unusable; the message says what to install.
    Tests skip on it: the feature is absent from this install, not broken."""


def require_torchvision(what: str = "The Faster R-CNN detector") -> Any:
    """The ``torchvision`` module, or a :class:`MissingOptionalDependency` (an ``ImportError``) that says why it
    cannot be used and what to install.

    Two ways it fails: torchvision is not installed (the optional ``detection`` extra), or it is a build for
    another torch, e.g. the package index's CUDA torchvision beside a CPU torch, whose compiled operators do not
    register (``operator torchvision::nms does not exist``). The detection code calls this before anything else
    from torchvision, and the detection tests skip with its message.

    >>> require_torchvision().__name__  # doctest: +SKIP
    'torchvision'
    """
    try:
        import torchvision
        import torchvision.ops  # registers nms, roi_align...: the operators a mismatched build lacks
    except ModuleNotFoundError as error:
        if error.name != "torchvision":
            raise
        raise MissingOptionalDependency(f"{what} needs torchvision, which is not installed: "
                                        f"{TORCHVISION_INSTALL_HINT}.") from error
    except (RuntimeError, ImportError, OSError) as error:
        raise MissingOptionalDependency(
            f"{what} needs torchvision, but the installed torchvision does not work with torch {torch.__version__} "
            f"({one_line_error(error, 300)}); a torchvision built for another torch (e.g. a CUDA build beside a "
            f"CPU torch) fails this way: {TORCHVISION_INSTALL_HINT}."
        ) from error
    return torchvision


def init_distributed(backend: str, device: torch.device | str | None = None) -> None:
    """Join the ``torchrun`` process group (``env://``) once and pick this rank's GPU, for ``multi_gpu_train.json``."""
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_device(device)


def finish_distributed(timeout_s: float = 600.0) -> None:
    """Leave the process group together: wait until every rank is done, then destroy the group (``finalize`` of
    ``multi_gpu_train.json``).

    Without the wait, a rank that finishes first tears down its gloo connections while rank 0 still validates and
    writes; the process then aborts at exit ("terminate called without an active exception", SIGABRT) and
    ``torchrun`` reports the run as failed. On gloo the wait is a ``monitored_barrier`` that names a rank which never
    arrives within ``timeout_s``; NCCL has a plain barrier.
    """
    if not torch.distributed.is_initialized():
        return
    if torch.distributed.get_backend() == "gloo":
        import datetime

        torch.distributed.monitored_barrier(timeout=datetime.timedelta(seconds=timeout_s))
    else:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def handlers_for_this_rank(handlers: list, rank0_only: tuple[str, ...] = ("StatsHandler", "ProgressBar")) -> list:
    """The training handlers this rank runs: every rank runs all of them except the console ones named in
    ``rank0_only`` (class names), which only rank 0 keeps, so a multi-GPU log is not printed once per GPU."""
    if is_rank0():
        return list(handlers)
    return [handler for handler in handlers if type(handler).__name__ not in rank0_only]
