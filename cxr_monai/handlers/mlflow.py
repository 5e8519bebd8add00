"""MLflow tracking: the project's MLflow handler, relocatable artifacts, a model's training run."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ignite.engine import Engine, Events
from monai.handlers import MLFlowHandler
from monai.utils import path_to_uri

from cxr_monai.data.robust import root_cause
from cxr_monai.handlers.checkpoint import file_sha256
from cxr_monai.handlers.failures import RunEvents, register_run_events
from cxr_monai.utils import as_bool, one_line_error

__all__ = ["KIND_TAG", "MLFlowTracker", "find_training_run", "relocate_mlflow_artifacts"]

logger = logging.getLogger(__name__)

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

    MONAI's ``MLFlowHandler`` (and :func:`~cxr_monai.apps.inpainting.log_report_to_mlflow`) create an experiment in a
    ``sqlite:///.../mlruns.db`` store with its artifacts in ``mlruns/`` next to the database, but MLflow stores that
    location, and each run's artifact URI under it, as an absolute path (a relative ``artifact_location`` is made
    absolute when the experiment is created). After ``mv runs/ce /elsewhere`` the store would read and write
    artifacts at the old place. An experiment is changed when its location is a local ``.../mlruns`` folder other
    than the database's own and the artifacts have evidently moved (the old folder is gone, or a run's folder is in
    the new one); its runs' artifact URIs get the same new prefix. Other stores (a tracking server) are left alone.
    :class:`MLFlowTracker` and :func:`~cxr_monai.apps.inpainting.log_report_to_mlflow` call this before they log, so any
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
    - **Phase** (adversarial trainers): with ``phase_key``, the tag ``phase`` holds the trainer's current phase
      (``g_l2``, ``d_only`` or ``joint``), updated when it changes; the per-iteration metric ``phase`` (its
      ``phase_codes`` number, :func:`~cxr_monai.handlers.finite_scalars`) is its history, the tag ``phase_codes``
      the legend.
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
        phase_key: the key of ``engine.state.output`` holding the phase name (None: no phase tag).
        phase_codes: phase name -> the number the per-iteration metric uses, written as the tag ``phase_codes``.
        args, kwargs: :class:`~monai.handlers.MLFlowHandler`'s arguments.

    Example::

        MLFlowTracker(tracking_uri="sqlite:////abs/runs/ce/mlruns.db", experiment_name="context_encoder",
                      artifacts=["runs/ce/grids"], artifact_root="runs/ce", model_path="runs/ce/models/model.pt",
                      output_transform=finite_scalars, close_on_complete=True).attach(trainer)

    (The context encoder's configs add ``phase_key="phase"`` and its
    :data:`~cxr_monai.apps.inpainting.PHASE_CODES`.)
    """

    def __init__(
        self,
        *args: Any,
        resume: bool | str = True,
        model_path: str | os.PathLike | None = None,
        artifact_root: str | os.PathLike | None = None,
        phase_key: str | None = None,
        phase_codes: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.resume = as_bool(resume, "resume")
        self.model_path = Path(model_path) if model_path is not None else None
        self.artifact_root = Path(artifact_root) if artifact_root is not None else None
        self.phase_key = phase_key
        self.phase_codes = dict(phase_codes or {})
        self._phase: str | None = None
        self._model_stamp: tuple[int, int] | None = None

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        if self.phase_key and self.iteration_log:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._tag_phase)
        if self.model_path is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._tag_model)
        if self.close_on_complete:
            register_run_events(engine)
            engine.add_event_handler(RunEvents.FAILED, self.failed)

    def start(self, engine: Engine) -> None:
        relocate_mlflow_artifacts(os.environ.get("MLFLOW_TRACKING_URI") or getattr(self.client, "tracking_uri", None))
        self._set_experiment()
        if self.cur_run is None:
            self.cur_run = self._training_run()
            if self.phase_codes:
                self.client.set_tag(self.cur_run.info.run_id, "phase_codes",
                                    ", ".join(f"{code:g}={name}" for name, code in self.phase_codes.items()))
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
                self.client.set_tag(run_id, "failure", one_line_error(root_cause(error), limit=5000))
            self.complete()
        finally:
            self.client.set_terminated(run_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
            self.cur_run = None
            self._dispose_sqlite_store()
