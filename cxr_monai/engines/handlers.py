"""Ignite handlers shared by the project's trainers: resumable checkpoints, a NaN guard, image grids, skipped images,
one-line failure reports and MLflow tracking."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import sqlite3
import stat
import tempfile
import time
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import torch
from ignite.engine import Engine, EventEnum, Events
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import MLFlowHandler
from monai.utils import path_to_uri

from cxr_monai.data.robust import SKIPPED_KEY, SkippingDataset, root_cause
from cxr_monai.engines.context_encoder_trainer import GanPhase
from cxr_monai.utils import as_bool, is_distributed, is_rank0

__all__ = [
    "CONTEXT_ENCODER_SCALARS",
    "PHASE_CODES",
    "KIND_TAG",
    "FailureHandler",
    "ImageGridSaver",
    "MLFlowTracker",
    "NanGuard",
    "ResumableCheckpoint",
    "RunEvents",
    "SkippedImagesHandler",
    "atomic_torch_save",
    "file_sha256",
    "find_training_run",
    "finite_scalars",
    "latest_checkpoint",
    "relocate_mlflow_artifacts",
]

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
    named in ``state_attributes`` (networks, optimisers, grad scalers: anything with a ``state_dict``). It is
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
        if not (_any_rank(bool(bad)) if is_distributed() else bad):
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
    """Write a PNG grid of inpainting results each epoch: rows original | masked | inpainted | 2×|difference|, each
    labelled on its left (:func:`~cxr_monai.visualize.inpainting_grid`).

    The same ``num_patches`` patches (the first ones of ``dataset``, e.g. the validation set) are inpainted
    by ``network`` after every ``every_n_epochs`` epochs, so the grids show one set of patches improving;
    the layout follows seed 001 Fig. 4. ``hole_size``, ``fill_value`` and ``overlap`` must match training.
    The bundle's MLflow settings log the grid folder as run artifacts (``grids/`` in the run).

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
        if not is_rank0():
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


def _any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (a collective: every rank must call it)."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.distributed.get_backend() == "nccl" else None
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


#: the per-iteration numbers of :class:`~cxr_monai.engines.ContextEncoderTrainer` worth a curve in MLflow
CONTEXT_ENCODER_SCALARS = ("loss", "g_loss", "d_loss", "l2", "g_adv", "minimax_value", "d_real", "d_fake", "phase")

#: the metric ``phase`` of :func:`finite_scalars`: the trainer's :class:`GanPhase` as a number
PHASE_CODES = {phase.value: float(code) for code, phase in enumerate(GanPhase)}


def finite_scalars(output: Mapping[str, Any], keys: Sequence[str] = CONTEXT_ENCODER_SCALARS) -> dict[str, float]:
    """The finite numbers among ``output[keys]``, for ``MLFlowHandler(output_transform=...)``.

    Values a phase did not compute are ``nan`` in the trainer's output; leaving them out keeps the MLflow
    curves free of gaps filled with NaN markers. The trainer's ``phase`` (``"g_l2"``, ``"d_only"``, ``"joint"``)
    becomes its :data:`PHASE_CODES` number (0, 1, 2), so MLflow plots the schedule next to the losses.

    Example::

        >>> finite_scalars({"loss": 0.5, "l2": 0.4, "d_loss": float("nan"), "pred": None})
        {'loss': 0.5, 'l2': 0.4}
        >>> finite_scalars({"g_loss": 0.5, "phase": "joint"}, keys=("g_loss", "phase"))
        {'g_loss': 0.5, 'phase': 2.0}
    """
    values = {}
    for key in keys:
        value = output.get(key) if isinstance(output, Mapping) else None
        if key == "phase" and isinstance(value, str):
            value = PHASE_CODES.get(value)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)) and math.isfinite(value):
            values[key] = float(value)
    return values


def _one_line(error: BaseException, limit: int = 1000) -> str:
    """``"<type>: <message>"`` on one line (the message's first line), at most ``limit`` characters."""
    lines = str(error).strip().splitlines()
    message = lines[0] + (" [...]" if len(lines) > 1 else "") if lines else ""
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return text if len(text) <= limit else text[: limit - 5] + "[...]"


class RunEvents(EventEnum):
    """Events the project's handlers fire on a trainer: ``FAILED`` once, when the run stops with an exception
    (fired by :class:`FailureHandler`; the exception is ``engine.state.failure``)."""

    FAILED = "run_failed"


def _register_run_events(engine: Engine) -> None:
    if not engine.has_registered_events(RunEvents.FAILED):
        engine.register_events(*RunEvents)


class FailureHandler:
    """The first ``EXCEPTION_RAISED`` handler of a trainer: report the failure in one line, tell the handlers that
    must act on it, re-raise.

    Ignite calls ``EXCEPTION_RAISED`` handlers in attach order and the first that raises ends the list, so with
    MONAI's ``StatsHandler`` (which logs the whole traceback, then raises) no later handler learns of a failure.
    Attached before it (first in the bundle's ``train#handlers``), this handler logs ``"<engine> stopped at
    iteration <i> (epoch <e>): <root cause>"`` (the innermost exception of MONAI's ``RuntimeError('applying transform
    ...')`` chains: the one that names the file), stores the exception as ``engine.state.failure``, fires
    :attr:`RunEvents.FAILED` (where :class:`MLFlowTracker` ends its run FAILED) and re-raises the exception
    unchanged, so a bug keeps its traceback.

    Example::

        trainer = ContextEncoderTrainer(..., train_handlers=[FailureHandler(), NanGuard(), StatsHandler()])
    """

    def attach(self, engine: Engine) -> None:
        _register_run_events(engine)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self)

    def __call__(self, engine: Engine, error: BaseException) -> None:
        if getattr(engine.state, "failure", None) is error:  # Ignite hands a re-raised exception on once more
            raise error
        engine.logger.error(
            f"{type(engine).__name__} stopped at iteration {engine.state.iteration} (epoch {engine.state.epoch}): "
            f"{_one_line(root_cause(error))}"
        )
        engine.state.failure = error
        try:
            engine.fire_event(RunEvents.FAILED)
        except Exception as handler_error:  # the run's own error is the one to report
            engine.logger.warning(f"a handler of {RunEvents.FAILED} failed too: {handler_error!r}")
        raise error


class SkippedImagesHandler:
    """Record the images a training run skipped as they reach the trainer, and stop the run when too many are.

    A :class:`~cxr_monai.data.robust.SkippingDataset` replaces each bad image by a usable one and sends its record
    along in ``batch["skipped_images"]`` (:class:`~cxr_monai.data.robust.SkippingCollate`), from whichever DataLoader
    worker process read it. This handler takes the records out of each batch before the iteration runs and adds them
    to the dataset's :class:`~cxr_monai.data.robust.SkipLog` (a warning naming the file and the reason, a row of
    ``skipped.csv``); when more than ``max_fraction`` of the dataset is skipped (or, of the images whose lung lesions
    cover, more than ``max_lesion_covered_fraction``) it raises
    :class:`~cxr_monai.data.robust.TooManySkippedError` with the counts and the first reasons. When the run starts it
    checks the log's other stages too (the bundle's validation images, skipped while the config was read). Under
    torch.distributed the records of all ranks are gathered whenever a rank has new ones (otherwise one all-reduce of
    a flag per iteration), so every rank counts the same images and stops at the same iteration; rank 0 writes them.

    Example::

        dataset = SkippingDataset(CacheDataset(datalist, SkippingCompose(transforms)), SkipLog("runs/ce/skipped.csv"))
        SkippedImagesHandler(dataset).attach(trainer)
    """

    def __init__(self, dataset: SkippingDataset, key: str = SKIPPED_KEY) -> None:
        if dataset.skip_log is None:
            raise ValueError("SkippedImagesHandler: the dataset has no skip_log to record the skipped images in.")
        self.skip_log = dataset.skip_log
        self.stage = dataset.stage
        self.total = len(dataset)
        self.key = key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine) -> None:
        self.skip_log.check()

    def __call__(self, engine: Engine) -> None:
        batch = engine.state.batch
        records = list(batch.pop(self.key, ())) if isinstance(batch, MutableMapping) else []
        if is_distributed():
            if not _any_rank(bool(records)):
                return
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, records)
            records = [record for part in gathered for record in part]
        for record in records:
            self.skip_log.add(self.stage, record, self.total, check=False)
        if records:
            self.skip_log.check(self.stage)

    def completed(self, engine: Engine) -> None:
        count = self.skip_log.count(self.stage)
        if count:
            where = f", listed in {self.skip_log.path}" if self.skip_log.path is not None else ""
            engine.logger.warning(f"{self.stage}: {count} of {self.total} images were skipped{where}")


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as ``sha256sum`` prints it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _local_path(location: str | None) -> Path | None:
    """The folder of a local artifact location (a plain path or a ``file:`` URI), else ``None``."""
    if not location:
        return None
    if location.startswith("file:"):
        return Path(unquote(urlparse(location).path))
    if "://" in location or ":" in location.split("/")[0]:
        return None
    return Path(location)


def relocate_mlflow_artifacts(tracking_uri: str | None) -> list[str]:
    """Point the experiments and runs of a local SQLite MLflow store at ``<folder of the database>/mlruns`` again
    after that folder was moved or copied; returns the names of the experiments changed.

    MONAI's ``MLFlowHandler`` (and :func:`~cxr_monai.engines.log_report_to_mlflow`) create an experiment in a
    ``sqlite:///.../mlruns.db`` store with its artifacts in ``mlruns/`` next to the database, but MLflow stores that
    location, and each run's artifact URI under it, as an absolute path (a relative ``artifact_location`` is made
    absolute when the experiment is created). After ``mv runs/ce /elsewhere`` the store would read and write
    artifacts at the old place. An experiment is changed when its location is a local ``.../mlruns`` folder other
    than the database's own and the artifacts have evidently moved (the old folder is gone, or a run's folder is in
    the new one); its runs' artifact URIs get the same new prefix. Other stores (a tracking server) are left alone.
    :class:`MLFlowTracker` and :func:`~cxr_monai.engines.log_report_to_mlflow` call this before they log, so any
    later bundle run on the moved folder repairs it; ``mlflow ui`` on a moved folder needs it called once.

    Example::

        relocate_mlflow_artifacts("sqlite:////new/place/runs/ce/mlruns.db")  # ['context_encoder']
    """
    if not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return []
    database = Path(tracking_uri[len("sqlite:///"):])
    if not database.is_file():
        return []
    here = (database.parent / "mlruns").resolve()
    changed = []
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        try:
            query = "SELECT experiment_id, name, artifact_location FROM experiments"
            experiments = connection.execute(query).fetchall()
        except sqlite3.OperationalError:  # not an MLflow store (yet)
            return []
        for experiment_id, name, location in experiments:
            old = _local_path(location)
            if old is None or old.name != "mlruns" or old.resolve() == here:
                continue
            run_ids = [row[0] for row in connection.execute("SELECT run_uuid FROM runs WHERE experiment_id = ?",
                                                            (experiment_id,))]
            if old.exists() and not any((here / run_id).is_dir() for run_id in run_ids):
                continue
            new = path_to_uri(here) if location.startswith("file:") else str(here)
            connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                               (new, experiment_id))
            connection.execute(
                "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
                (new, len(location) + 1, experiment_id, len(location), location),
            )
            changed.append(name)
            logger.info("MLflow experiment %r: artifacts moved from %s to %s", name, location, new)
    return changed


#: the tag that tells this project's MLflow runs apart: ``"train"`` or ``"evaluate"``
KIND_TAG = "cxr_monai.kind"


def _is_training_run(run: Any) -> bool:
    default = "evaluate" if run.info.run_name == "evaluate" else "train"  # runs logged before the tag existed
    return run.data.tags.get(KIND_TAG, default) == "train"


def find_training_run(client: Any, experiment_id: str, model_sha256: str) -> Any | None:
    """The newest training run of the experiment whose ``model_sha256`` tag (:class:`MLFlowTracker`) is
    ``model_sha256``: the run that wrote the model file with those bytes; ``None`` if there is none."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.model_sha256 = '{model_sha256}'",
                              order_by=["attributes.start_time DESC"])
    return next((run for run in runs if _is_training_run(run)), None)


class MLFlowTracker(MLFlowHandler):
    """MONAI's :class:`~monai.handlers.MLFlowHandler` with what a long, resumable training run needs in MLflow.

    - **Failure**: the handler that owns the run (``close_on_complete=True``) ends it FAILED (KILLED for a
      ``KeyboardInterrupt``) when the engine stops with an exception, with the tag ``failure`` (the one-line root
      cause) and the artifacts written so far; MONAI's handler leaves it RUNNING. It acts on
      :attr:`RunEvents.FAILED`, so the engine needs a :class:`FailureHandler` attached before any ``StatsHandler``
      (the bundle's ``train.json`` has it first).
    - **Which run**: a run continues the newest unfinished (RUNNING, FAILED or KILLED) training run of the
      experiment and sets it RUNNING again, so a killed or failed training resumed from its checkpoint goes on in the
      same MLflow run (MONAI's handler continues the *oldest* unfinished run of any kind, which could be a failed
      evaluation). With ``resume=False`` those runs end KILLED and a new one starts. Runs carry the tag
      ``cxr_monai.kind = train``.
    - **Phase**: the tag ``phase`` holds the trainer's current phase (``g_l2``, ``d_only`` or ``joint``), updated when
      it changes; the per-iteration metric ``phase`` (0, 1, 2: :func:`finite_scalars`) is its history, the tag
      ``phase_codes`` the legend.
    - **Model**: after each epoch (and on completion), the tags ``model_path`` (relative to ``artifact_root``) and
      ``model_sha256`` of ``model_path``: an evaluation run finds the training run that wrote the model it scored by
      them (:func:`find_training_run`).
    - **Artifacts** keep their folder relative to ``artifact_root`` (``grids/grid_epoch0001.png``) instead of all
      landing at the top of the run; they are logged on completion and on failure.
    - **Moved folders**: a local SQLite store moved with its output folder is pointed at its artifacts again when a
      run starts (:func:`relocate_mlflow_artifacts`).

    Args:
        resume: continue the newest unfinished training run, or end those runs and start a new one (a string
            ``"false"`` counts as false).
        model_path: the model file to tag (the bundle's ``models/model.pt``).
        artifact_root: the folder artifact paths are taken relative to (the bundle's ``output_dir``).
        phase_key: the key of ``engine.state.output`` holding the phase name.
        args, kwargs: :class:`~monai.handlers.MLFlowHandler`'s arguments.

    Example::

        MLFlowTracker(tracking_uri="sqlite:////abs/runs/ce/mlruns.db", experiment_name="context_encoder",
                      artifacts=["runs/ce/grids"], artifact_root="runs/ce", model_path="runs/ce/models/model.pt",
                      output_transform=finite_scalars, close_on_complete=True).attach(trainer)
    """

    def __init__(
        self,
        *args: Any,
        resume: bool | str = True,
        model_path: str | os.PathLike | None = None,
        artifact_root: str | os.PathLike | None = None,
        phase_key: str | None = "phase",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.resume = as_bool(resume, "resume")
        self.model_path = Path(model_path) if model_path is not None else None
        self.artifact_root = Path(artifact_root) if artifact_root is not None else None
        self.phase_key = phase_key
        self._phase: str | None = None
        self._model_stamp: tuple[int, int] | None = None

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        if self.phase_key and self.iteration_log:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._tag_phase)
        if self.model_path is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._tag_model)
        if self.close_on_complete:
            _register_run_events(engine)
            engine.add_event_handler(RunEvents.FAILED, self.failed)

    def start(self, engine: Engine) -> None:
        relocate_mlflow_artifacts(os.environ.get("MLFLOW_TRACKING_URI") or getattr(self.client, "tracking_uri", None))
        self._set_experiment()
        if self.cur_run is None:
            self.cur_run = self._training_run()
            self.client.set_tag(self.cur_run.info.run_id, "phase_codes",
                                ", ".join(f"{code:g}={name}" for name, code in PHASE_CODES.items()))
        super().start(engine)

    def _training_run(self) -> Any:
        experiment_id = self.experiment.experiment_id
        runs = self.client.search_runs([experiment_id], order_by=["attributes.start_time DESC"])
        unfinished = [
            run for run in runs
            if run.info.status != self.run_finish_status and _is_training_run(run)
            and (self.run_name is None or run.info.run_name == self.run_name)
        ]
        if unfinished and self.resume:
            run_id = unfinished[0].info.run_id
            if unfinished[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            if "failure" in unfinished[0].data.tags:
                self.client.delete_tag(run_id, "failure")  # that attempt's cause; this one starts clean
            logger.info("MLflow: continuing run %s (%s)", unfinished[0].info.run_name, run_id)
            return self.client.get_run(run_id)
        for run in unfinished:
            self.client.set_terminated(run.info.run_id, "KILLED")
            logger.info("MLflow: resume is off, ended the unfinished run %s as KILLED", run.info.run_name)
        run_name = f"run_{time.strftime('%Y%m%d_%H%M%S')}" if self.run_name is None else self.run_name
        return self.client.create_run(experiment_id, run_name=run_name, tags={KIND_TAG: "train"})

    def _tag_phase(self, engine: Engine) -> None:
        output = engine.state.output
        phase = output.get(self.phase_key) if isinstance(output, Mapping) else None
        if self.cur_run is not None and isinstance(phase, str) and phase != self._phase:
            self.client.set_tag(self.cur_run.info.run_id, "phase", phase)
            self._phase = phase

    def _relative(self, path: Path) -> str:
        if self.artifact_root is not None:
            try:
                return path.resolve().relative_to(self.artifact_root.resolve()).as_posix()
            except ValueError:
                pass
        return str(path.resolve())

    def _tag_model(self, engine: Engine | None = None) -> None:
        if self.cur_run is None or self.model_path is None or not self.model_path.is_file():
            return
        info = self.model_path.stat()
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self._model_stamp:
            return
        self.client.set_tag(self.cur_run.info.run_id, "model_path", self._relative(self.model_path))
        self.client.set_tag(self.cur_run.info.run_id, "model_sha256", file_sha256(self.model_path))
        self._model_stamp = stamp

    def _artifact_path(self, path: str) -> str | None:
        if self.artifact_root is None:
            return None
        try:
            folder = Path(path).resolve().parent.relative_to(self.artifact_root.resolve())
        except ValueError:
            return None
        return None if folder == Path(".") else folder.as_posix()

    def complete(self) -> None:
        """Tag the model and log the artifacts, each under its folder relative to ``artifact_root``."""
        self._tag_model()
        if self.artifacts and self.cur_run:
            for path in self._parse_artifacts():
                self.client.log_artifact(self.cur_run.info.run_id, path, self._artifact_path(path))

    def failed(self, engine: Engine) -> None:
        """End the run FAILED (KILLED for a ``KeyboardInterrupt``), after its artifacts and the cause."""
        if self.cur_run is None:
            return
        error = getattr(engine.state, "failure", None)
        run_id = self.cur_run.info.run_id
        try:
            if error is not None:
                self.client.set_tag(run_id, "failure", _one_line(root_cause(error), limit=5000))
            self.complete()
        finally:
            self.client.set_terminated(run_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
            self.cur_run = None
            self._dispose_sqlite_store()
