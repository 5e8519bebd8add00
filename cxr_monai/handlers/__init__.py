"""Ignite handlers any of the project's engines uses: resumable checkpoints, a NaN guard, image grids, scalars
for curves, failure and skipped-image reports, MLflow tracking.

Example::

    from cxr_monai.handlers import NanGuard, ResumableCheckpoint

    ResumableCheckpoint("runs/seg/checkpoints", {"network": net, "optimizer": opt, "trainer": trainer}).attach(trainer)
    NanGuard(checkpoint_dir="runs/seg/checkpoints").attach(trainer)
"""

from __future__ import annotations

from cxr_monai.handlers.checkpoint import (
    ResumableCheckpoint,
    atomic_torch_save,
    file_sha256,
    latest_checkpoint,
    load_network_weights,
)
from cxr_monai.handlers.early_stopping import EarlyStopOnValidation
from cxr_monai.handlers.failures import (
    FailureHandler,
    RunEvents,
    SkippedImagesHandler,
    register_run_events,
)
from cxr_monai.handlers.image_grid import ImageGridSaver
from cxr_monai.handlers.mlflow import (
    KIND_TAG,
    MLFlowTracker,
    find_training_run,
    relocate_mlflow_artifacts,
)
from cxr_monai.handlers.nan_guard import NanGuard
from cxr_monai.handlers.per_image import DatalistWriter, PerImageHandler, filename_of
from cxr_monai.handlers.scalars import finite_scalars

__all__ = [
    "KIND_TAG",
    "DatalistWriter",
    "EarlyStopOnValidation",
    "FailureHandler",
    "ImageGridSaver",
    "MLFlowTracker",
    "NanGuard",
    "PerImageHandler",
    "ResumableCheckpoint",
    "RunEvents",
    "SkippedImagesHandler",
    "atomic_torch_save",
    "file_sha256",
    "filename_of",
    "find_training_run",
    "finite_scalars",
    "latest_checkpoint",
    "load_network_weights",
    "register_run_events",
    "relocate_mlflow_artifacts",
]
