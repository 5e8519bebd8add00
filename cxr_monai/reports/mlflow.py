"""Log an evaluation report to MLflow: its metrics, its files, and the link to the training run of the model."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.utils import path_to_uri

from cxr_monai.handlers import (
    KIND_TAG,
    file_sha256,
    find_training_run,
    relocate_mlflow_artifacts,
)
from cxr_monai.reports.writer import Report

__all__ = ["log_report_to_mlflow"]

logger = logging.getLogger(__name__)


def _default_artifact_location(tracking_uri: str) -> str | None:
    """``<folder of the database>/mlruns`` for a local SQLite store, as MONAI's ``MLFlowHandler`` does."""
    if tracking_uri.startswith("sqlite:///"):
        return path_to_uri(Path(tracking_uri[len("sqlite:///") :]).parent / "mlruns")
    return None


def log_report_to_mlflow(
    report: Report,
    tracking_uri: str,
    experiment_name: str = "cxr_monai",
    run_name: str | None = "evaluate",
    run_id: str | None = None,
    files: Mapping[str, str | os.PathLike] | None = None,
    artifact_path: str = "evaluation",
    prefix: str = "eval_",
    artifact_location: str | None = None,
    model_path: str | os.PathLike | None = None,
) -> str:
    """Log a report's metrics (``prefix`` + ``report.metrics()``) and its files to MLflow.

    With ``run_id`` the metrics go into that run (e.g. the training run); otherwise a new run ``run_name`` is
    created in ``experiment_name`` (created if missing, artifacts under ``<db folder>/mlruns`` for a
    ``sqlite:///`` store, as MONAI's handler does) and closed. ``files`` are the paths its ``write`` returned;
    when ``None`` the files are written to a temporary folder for the upload. The URI must be a database or server
    URI (``sqlite:///...``): MLflow 3 refuses its file store. ``MLFLOW_TRACKING_URI``, when set, takes precedence
    over ``tracking_uri``, as in MONAI's ``MLFlowHandler``, so the table lands in the store the training run
    went to. A store whose folder was moved is pointed at its artifacts first
    (:func:`~cxr_monai.handlers.relocate_mlflow_artifacts`). Returns the run id.

    With ``model_path`` (the model file that was scored) the run gets the tags ``model_path`` (relative to the
    store's folder when inside it) and ``model_sha256``, and, when a training run of the experiment tagged the
    same sha256 (:class:`~cxr_monai.handlers.MLFlowTracker`), ``training_run_id``/``training_run_name`` and
    ``mlflow.parentRunId``: the MLflow UI shows the evaluation nested under the training run that wrote the model.
    The run's note says what was scored. A new run carries ``cxr_monai.kind = evaluate`` and ends FAILED if
    logging fails.

    Example::

        run_id = log_report_to_mlflow(report, "sqlite:////abs/runs/ce/mlruns.db", "context_encoder",
                                      model_path="/abs/runs/ce/models/model.pt")
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        raise ValueError(f"tracking_uri {tracking_uri!r} is an MLflow file store, which MLflow 3 refuses; use "
                         "sqlite:///<absolute path>/mlruns.db (monai.utils.path_to_sqlite_uri) or a server URI.")
    relocate_mlflow_artifacts(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    created = run_id is None
    if created:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            location = artifact_location or _default_artifact_location(tracking_uri)
            experiment_id = client.create_experiment(experiment_name, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
        run_id = client.create_run(experiment_id, run_name=run_name, tags={KIND_TAG: "evaluate"}).info.run_id
    else:
        experiment_id = client.get_run(run_id).info.experiment_id
    try:
        if model_path is not None:
            client.log_batch(run_id, tags=_model_tags(client, experiment_id, tracking_uri, Path(model_path)))
        timestamp = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}{key}", float(value), timestamp, 0) for key, value in report.metrics().items()
                   if math.isfinite(value)]
        client.log_batch(run_id, metrics=metrics)
        with tempfile.TemporaryDirectory() as scratch:
            paths = files if files is not None else report.write(scratch)
            for path in paths.values():
                client.log_artifact(run_id, os.fspath(path), artifact_path)
    except BaseException:
        if created:
            client.set_terminated(run_id, "FAILED")
        raise
    if created:
        client.set_terminated(run_id)
    return run_id


def _model_tags(client: Any, experiment_id: str, tracking_uri: str, model_path: Path) -> list:
    """The tags naming the scored model file and the training run that wrote it (see :func:`log_report_to_mlflow`)."""
    from mlflow.entities import RunTag

    sha256 = file_sha256(model_path)
    shown = model_path.resolve()
    if tracking_uri.startswith("sqlite:///"):
        store = Path(tracking_uri[len("sqlite:///"):]).parent.resolve()
        shown = shown.relative_to(store) if shown.is_relative_to(store) else shown
    tags = {"model_path": shown.as_posix(), "model_sha256": sha256}
    training = find_training_run(client, experiment_id, sha256)
    if training is None:
        logger.warning("no training run of this MLflow experiment wrote %s (sha256 %s); the evaluation run is not "
                       "linked to one", model_path, sha256)
        tags["mlflow.note.content"] = (f"Evaluation of {tags['model_path']} (sha256 {sha256}); no training run of "
                                       "this experiment logged a model with these bytes.")
    else:
        tags.update({"training_run_id": training.info.run_id, "training_run_name": training.info.run_name or "",
                     "mlflow.parentRunId": training.info.run_id})
        tags["mlflow.note.content"] = (f"Evaluation of {tags['model_path']} (sha256 {sha256}), the model written by "
                                       f"training run {training.info.run_name} ({training.info.run_id}).")
    return [RunTag(key, value) for key, value in tags.items()]
