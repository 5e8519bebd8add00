"""Ignite handlers shared by the project's trainers: resumable checkpoints, a NaN guard, image grids."""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

__all__ = [
    "CONTEXT_ENCODER_SCALARS",
    "ImageGridSaver",
    "NanGuard",
    "ResumableCheckpoint",
    "atomic_torch_save",
    "finite_scalars",
    "latest_checkpoint",
]

logger = logging.getLogger(__name__)

_CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)\.pt$")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: readers never see half a file.

    Group and others may read the file, as Ignite's ``DiskSaver`` does for checkpoints (a temporary file is
    0600), so a model written as root in a container stays readable on the host; a failed save leaves no
    temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as tmp:
        try:
            torch.save(obj, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
            os.chmod(tmp.name, os.stat(tmp.name).st_mode | stat.S_IRGRP | stat.S_IROTH)
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)


def _checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of the ``checkpoint_<iteration>.pt`` files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _CHECKPOINT_PATTERN.match(p.name)))


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The ``checkpoint_<iteration>.pt`` with the highest iteration in ``directory``, or None."""
    found = _checkpoints(Path(directory))
    return found[-1][1] if found else None


class ResumableCheckpoint:
    """Checkpoint every ``save_every`` iterations and at each epoch end; resume from the newest on start.

    A checkpoint holds the engine's counters and every object of ``to_save`` plus the engine state attributes
    named in ``state_attributes`` (networks, optimisers, grad scalers: anything with a ``state_dict``). It is
    written atomically by Ignite's :class:`DiskSaver` (rank 0 only under torch.distributed; DDP wrappers are
    unwrapped) and loads with ``torch.load(weights_only=True)``. With ``resume=True`` a run killed at any point
    restarts from its newest checkpoint and finishes with the same number of iterations, and the checkpoints
    already on disk count towards ``n_saved``. With ``resume=False`` the checkpoints of an earlier run are moved
    into ``previous_<UTC time>/`` in ``save_dir`` (kept, but never resumed from by mistake). Networks with a
    non-finite weight are never saved: the run stops with a ``FloatingPointError`` instead. ``model_path``
    additionally gets the plain ``state_dict`` of the object named ``model_key`` (the bundle's
    ``models/model.pt``) at each epoch end.

    Example::

        ckpt = ResumableCheckpoint("runs/ce/checkpoints", state_attributes=["g_network", "g_optimizer"],
                                   save_every=500, model_path="runs/ce/models/model.pt", model_key="g_network")
        ckpt.attach(trainer)
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        to_save: Mapping[str, Any] | None = None,
        state_attributes: Sequence[str] = (),
        save_every: int = 0,
        n_saved: int | None = 2,
        resume: bool = True,
        model_path: str | os.PathLike | None = None,
        model_key: str | None = None,
    ) -> None:
        names = set(to_save or {}) | set(state_attributes)
        if model_path is not None and model_key not in names:
            raise ValueError(f"model_key {model_key!r} is not one of the saved objects {sorted(names)}")
        self.save_dir = Path(save_dir)
        self.to_save = dict(to_save or {})
        self.state_attributes = tuple(state_attributes)
        self.save_every = int(save_every)
        self.n_saved = n_saved
        self.resume = resume
        self.model_path = Path(model_path) if model_path is not None else None
        self.model_key = model_key
        self.resumed_from: Path | None = None
        self._checkpoint: Checkpoint | None = None

    def attach(self, engine: Engine) -> None:
        # Engine state attributes (e.g. AdversarialTrainer's g_network) may be set after the handlers are
        # attached, so the checkpoint's objects are gathered when the run starts.
        engine.add_event_handler(Events.STARTED, self._start)
        if self.save_every > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_every), self._save)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._save)
        if self.model_path is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._save_model)

    def _objects(self, engine: Engine) -> dict[str, Any]:
        for name in self.state_attributes:
            if getattr(engine.state, name, None) is None:
                raise AttributeError(f"ResumableCheckpoint: the engine's state has no '{name}' to save")
            self.to_save[name] = getattr(engine.state, name)
        return {"engine": engine, **self.to_save}

    def _start(self, engine: Engine) -> None:
        if self._checkpoint is None:
            self._checkpoint = Checkpoint(
                self._objects(engine),
                DiskSaver(str(self.save_dir), atomic=True, create_dir=True, require_empty=False),
                filename_prefix="",
                n_saved=self.n_saved,
                global_step_transform=lambda eng, _: eng.state.iteration,
            )
        existing = _checkpoints(self.save_dir)
        if not self.resume:
            self._set_aside(engine, [path for _, path in existing])
        elif existing:
            self._checkpoint.load_state_dict({"_saved": [(iteration, path.name) for iteration, path in existing]})
            self.load_latest(engine)

    def _set_aside(self, engine: Engine, paths: Sequence[Path]) -> None:
        if paths and _is_rank0():
            folder = self.save_dir / time.strftime("previous_%Y%m%d-%H%M%S", time.gmtime())
            folder.mkdir(exist_ok=True)
            for path in paths:
                os.replace(path, folder / path.name)
            engine.logger.warning(f"resume is off: moved the {len(paths)} checkpoints of an earlier run to {folder}")
        if _is_distributed():
            torch.distributed.barrier()  # every rank, whatever it sees on disk: none goes on before the move

    def _save(self, engine: Engine) -> None:
        last = self._checkpoint.last_checkpoint if self._checkpoint else None
        # iteration and epoch-end events can coincide; one file per iteration is enough
        if last is not None and Path(str(last)).name == f"checkpoint_{engine.state.iteration}.pt":
            return
        self._check_finite(engine)
        self._checkpoint(engine)

    def _check_finite(self, engine: Engine) -> None:
        # A step on infinite gradients can poison the weights while the loss that produced them was finite, so
        # the loss guard alone cannot keep such a state out of a checkpoint. Every rank holds the same weights
        # under DDP, so every rank reaches the same verdict.
        for name, obj in self.to_save.items():
            if isinstance(obj, torch.nn.Module) and not all(bool(p.isfinite().all()) for p in obj.parameters()):
                latest = latest_checkpoint(self.save_dir)
                raise FloatingPointError(
                    f"non-finite weights in '{name}' at iteration {engine.state.iteration}: not checkpointing them; "
                    + (f"the last good checkpoint is {latest}." if latest else "no checkpoint was written yet.")
                )

    def _save_model(self, engine: Engine) -> None:
        if _is_rank0():
            module = self.to_save[self.model_key]
            module = getattr(module, "module", module)  # unwrap DistributedDataParallel
            atomic_torch_save(module.state_dict(), self.model_path)

    def load_latest(self, engine: Engine) -> None:
        path = latest_checkpoint(self.save_dir)
        if path is None:
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        max_epochs, epoch_length = engine.state.max_epochs, engine.state.epoch_length
        objects = self._objects(engine)
        for name, obj in list(objects.items()):
            # A run without AMP saves its disabled scaler as {}; an enabled one refuses that, so a run resumed
            # with AMP (e.g. a CPU or --use_amp false run continued on a GPU) starts its scaler afresh.
            if isinstance(obj, torch.amp.GradScaler) and obj.is_enabled() and state.get(name) == {}:
                engine.logger.info(f"{path}: '{name}' was saved without AMP; it starts from its initial scale")
                del objects[name]
        Checkpoint.load_objects(objects, state)
        # a resumed run may be asked to go further than the one that wrote the checkpoint
        engine.state.max_epochs = max(max_epochs or 0, engine.state.max_epochs or 0)
        self.resumed_from = path
        engine.logger.info(f"resumed from {path} at iteration {engine.state.iteration}, epoch {engine.state.epoch}")
        if epoch_length is not None and epoch_length != engine.state.epoch_length:
            # Ignite keeps the checkpoint's epoch length, which places the schedule's phase boundaries and the
            # end of the run; adopting the new one would move both under a run that is half done.
            engine.logger.warning(
                f"{path} was written by a run of {engine.state.epoch_length} iterations an epoch; this one's data "
                f"gives {epoch_length} (another GPU count or datalist?). Going on with {engine.state.epoch_length} "
                "so the run ends where it was planned to; --resume false starts afresh with the new length."
            )


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
        if not (_any_rank(bool(bad)) if _is_distributed() else bad):
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


class ImageGridSaver:
    """Write a PNG grid of inpainting results each epoch: original | masked | inpainted | 2×|difference|.

    The same ``num_patches`` patches (the first ones of ``dataset``, e.g. the validation set) are inpainted
    by ``network`` after every ``every_n_epochs`` epochs, so the grids show one set of patches improving;
    the layout follows seed 001 Fig. 4. ``hole_size``, ``fill_value`` and ``overlap`` must match training.
    The bundle's MLflow settings log the grid folder as run artifacts.

    Example::

        ImageGridSaver(generator, val_dataset, "runs/ce/grids", fill_value=0.5).attach(trainer)
    """

    def __init__(
        self,
        network: torch.nn.Module,
        dataset: Sequence[Any],
        output_dir: str | os.PathLike,
        num_patches: int = 8,
        hole_size: int = 64,
        fill_value: float | str = "context_mean",
        overlap: int = 0,
        every_n_epochs: int = 1,
        image_key: str = "image",
        prefix: str = "grid",
    ) -> None:
        self.network = network
        self.dataset = dataset
        self.output_dir = Path(output_dir)
        self.num_patches = num_patches
        self.hole = {"hole_size": hole_size, "fill_value": fill_value, "overlap": overlap}
        self.every_n_epochs = every_n_epochs
        self.image_key = image_key
        self.prefix = prefix
        self._patches: torch.Tensor | None = None
        self.written: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self)

    def patches(self) -> torch.Tensor:
        """The fixed ``(N, 1, P, P)`` patches, gathered from the dataset on first use."""
        if self._patches is None:
            found: list[torch.Tensor] = []
            for index in range(len(self.dataset)):
                item = self.dataset[index]
                for sample in item if isinstance(item, (list, tuple)) else [item]:
                    found.append(torch.as_tensor(sample[self.image_key]).float())
                if len(found) >= self.num_patches:
                    break
            if not found:
                raise ValueError("ImageGridSaver: the dataset gave no patches to show")
            self._patches = torch.stack(found[: self.num_patches])
        return self._patches

    def __call__(self, engine: Engine) -> None:
        if not _is_rank0():
            return
        from cxr_monai.engines.inpainting import inpaint_patches, mask_patches
        from cxr_monai.visualize import inpainting_grid, save_png

        patches = self.patches()
        network = getattr(self.network, "module", self.network)
        inpainted = inpaint_patches(network, patches, **self.hole)
        grid = inpainting_grid(patches, mask_patches(patches, **self.hole), inpainted)
        path = self.output_dir / f"{self.prefix}_epoch{engine.state.epoch:04d}.png"
        save_png(grid, path)
        self.written.append(path)


def _is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (a collective: every rank must call it)."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else None
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def _is_rank0() -> bool:
    return not _is_distributed() or torch.distributed.get_rank() == 0



#: the per-iteration numbers of :class:`~cxr_monai.engines.ContextEncoderTrainer` worth a curve in MLflow
CONTEXT_ENCODER_SCALARS = ("loss", "l2", "g_adv", "d_loss", "minimax_value", "d_real", "d_fake")


def finite_scalars(output: Mapping[str, Any], keys: Sequence[str] = CONTEXT_ENCODER_SCALARS) -> dict[str, float]:
    """The finite numbers among ``output[keys]``, for ``MLFlowHandler(output_transform=...)``.

    Values a phase did not compute are ``nan`` in the trainer's output; leaving them out keeps the MLflow
    curves free of gaps filled with NaN markers.

    Example::

        >>> finite_scalars({"loss": 0.5, "l2": 0.4, "d_loss": float("nan"), "pred": None})
        {'loss': 0.5, 'l2': 0.4}
    """
    values = {}
    for key in keys:
        value = output.get(key) if isinstance(output, Mapping) else None
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and math.isfinite(value):
            values[key] = float(value)
    return values
