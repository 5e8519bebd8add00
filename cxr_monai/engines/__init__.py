"""Ignite engines and handlers."""

from __future__ import annotations

from cxr_monai.engines.context_encoder_trainer import ContextEncoderTrainer, GanPhase, GanSchedule, InpaintingBatch
from cxr_monai.engines.handlers import ImageGridSaver, NanGuard, ResumableCheckpoint, atomic_torch_save

__all__ = [
    "ContextEncoderTrainer",
    "GanPhase",
    "GanSchedule",
    "ImageGridSaver",
    "InpaintingBatch",
    "NanGuard",
    "ResumableCheckpoint",
    "atomic_torch_save",
]
