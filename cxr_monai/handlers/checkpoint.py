"""Resumable, atomic checkpoints: the latest trainer state for resume and the model weights for inference."""

from __future__ import annotations

import hashlib
import logging
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

from cxr_monai.utils import as_bool, is_distributed, is_rank0

__all__ = ["ResumableCheckpoint", "atomic_torch_save", "file_sha256", "latest_checkpoint", "load_network_weights"]

logger = logging.getLogger(__name__)

_CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)\.pt$")
# Ignite's atomic DiskSaver writes tempfile.NamedTemporaryFile(dir=save_dir): "tmp" + 8 characters
_IGNITE_TEMPORARY = re.compile(r"^tmp[a-z0-9_]{8}$")


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
    named in ``state_attributes`` (networks, optimisers, grad scalers: anything with a ``state_dict``; looked up in
    ``engine.state``, then on the engine, as MONAI's ``SupervisedTrainer`` keeps them; a scaler that is None without
    AMP is left out). It is
    written atomically by Ignite's :class:`DiskSaver` (rank 0 only under torch.distributed; DDP wrappers are
    unwrapped) and loads with ``torch.load(weights_only=True)``. With ``resume=True`` a run killed at any point
    restarts from its newest checkpoint and finishes with the same number of iterations, and the checkpoints
    already on disk count towards ``n_saved``. With ``resume=False`` the checkpoints of an earlier run are moved
    into ``previous_<UTC time>/`` in ``save_dir`` (kept, but never resumed from by mistake). Networks with a
    non-finite weight are never saved: the run stops with a ``FloatingPointError`` instead. ``model_path``
    additionally gets the plain ``state_dict`` of the object named ``model_key`` (the bundle's
    ``models/model.pt``) at each epoch end; a resumed run that finds training already complete (killed during that
    last save, say) writes it again from the newest checkpoint. Temporary files of saves cut short by a kill
    (Ignite's ``tmp*`` in ``save_dir``, ``.model.pt.*.tmp`` next to ``model_path``) are removed when a run starts.
    ``resume`` accepts ``true``/``false``/``'true'``/``'false'``/``1``/``0`` (:func:`cxr_monai.utils.as_bool`).

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
        resume: bool | str = True,
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
        self.resume = as_bool(resume, "resume")
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
            # MONAI's AdversarialTrainer keeps its networks in engine.state, SupervisedTrainer on the engine itself
            value = getattr(engine.state, name, None)
            value = getattr(engine, name, None) if value is None else value
            if value is None:
                if name.endswith("scaler"):  # no GradScaler without AMP: nothing to save
                    continue
                raise AttributeError(f"ResumableCheckpoint: the engine (and its state) has no '{name}' to save")
            self.to_save[name] = value
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
        self._remove_temporary_files(engine)
        existing = _checkpoints(self.save_dir)
        if not self.resume:
            self._set_aside(engine, [path for _, path in existing])
        elif existing:
            self._checkpoint.load_state_dict({"_saved": [(iteration, path.name) for iteration, path in existing]})
            self.load_latest(engine)
            state = engine.state
            planned = (state.epoch_length or 0) * (state.max_epochs or 0)
            if self.model_path is not None and planned and state.iteration >= planned:
                # Ignite runs no epoch of a finished run, so its last model.pt save is redone here
                self._save_model(engine)
                engine.logger.info(f"training was already complete at iteration {state.iteration}: wrote "
                                   f"{self.model_path} again from {self.resumed_from}")

    def _remove_temporary_files(self, engine: Engine) -> None:
        if not is_rank0():
            return
        found = [p for p in self.save_dir.glob("tmp*") if _IGNITE_TEMPORARY.match(p.name) and p.is_file()]
        if self.model_path is not None:
            found += [p for p in self.model_path.parent.glob(f".{self.model_path.name}.*.tmp") if p.is_file()]
        for path in found:
            path.unlink(missing_ok=True)
            engine.logger.info(f"removed {path}, the temporary file of a save cut short")

    def _set_aside(self, engine: Engine, paths: Sequence[Path]) -> None:
        if paths and is_rank0():
            folder = self.save_dir / time.strftime("previous_%Y%m%d-%H%M%S", time.gmtime())
            folder.mkdir(exist_ok=True)
            for path in paths:
                os.replace(path, folder / path.name)
            engine.logger.warning(f"resume is off: moved the {len(paths)} checkpoints of an earlier run to {folder}")
        if is_distributed():
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
        if is_rank0():
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



def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as ``sha256sum`` prints it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_network_weights(network: torch.nn.Module, path: str | os.PathLike, key: str | None = None,
                         map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Load ``models/model.pt`` (a state dict) or one network of a checkpoint into ``network``, strictly.

    For runners that are not Ignite engines (an engine attaches MONAI's ``CheckpointLoader`` instead). ``key``
    picks a network from a ``checkpoint_<iteration>.pt`` (e.g. ``"g_network"``); without it a checkpoint whose
    state dicts sit under several keys is an error listing them. The file is read with ``weights_only=True`` and
    loaded through Ignite's ``Checkpoint.load_objects`` (DDP-wrapped networks included). A missing file, or
    weights of another architecture, raise one error naming the file. Returns ``network``.

    Example (a bundle's ``initialize``)::

        "$cxr_monai.handlers.load_network_weights(@generator, @ckpt_path, map_location=@device)"
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file (train first, or point ckpt_path at a model.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle, zip and weights_only errors alike
        raise ValueError(f"{path}: not a weights file torch.load can read with weights_only=True ({error})") from error
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict")
    nested = sorted(name for name, value in state.items() if isinstance(value, Mapping))
    if key is not None:
        if key not in state:
            raise KeyError(f"{path}: has no {key!r}; its keys: {', '.join(sorted(state))}")
        state = state[key]
    elif nested and len(nested) == len(state):
        raise ValueError(f"{path}: is a checkpoint of several objects ({', '.join(nested)}); name one as key")
    try:
        Checkpoint.load_objects({"network": network}, {"network": state}, strict=True)
    except RuntimeError as error:
        details = " ".join(line.strip() for line in str(error).splitlines()[1:])
        details = details if len(details) <= 400 else details[:400] + " ..."
        raise ValueError(f"{path}: does not fit {type(network).__name__}; trained with other network settings "
                         f"(e.g. with or without small.json)? {details}") from error
    return network

