"""Ignite engines and handlers."""

from __future__ import annotations

from cxr_monai.engines.evaluation import (
    ImageLevelReport,
    ImageScores,
    InpaintingEvaluation,
    InpaintingReport,
    PatchSet,
    collect_image_scores,
    collect_patches,
    evaluate_images,
    evaluate_inpainting,
    log_report_to_mlflow,
    markdown_table,
    write_report,
)
from cxr_monai.engines.inpainting import (
    AnomalyHeatmap,
    AnomalyHeatmapInferer,
    InpaintingInference,
    NoWindowError,
    from_network_range,
    inpaint_centres,
    inpaint_patches,
    lung_window_starts,
    mask_patches,
    to_network_range,
)
from cxr_monai.engines.context_encoder_trainer import ContextEncoderTrainer, GanPhase, GanSchedule, InpaintingBatch
from cxr_monai.engines.handlers import (
    CONTEXT_ENCODER_SCALARS,
    ImageGridSaver,
    NanGuard,
    ResumableCheckpoint,
    atomic_torch_save,
    finite_scalars,
)

__all__ = [
    "AnomalyHeatmap",
    "AnomalyHeatmapInferer",
    "ImageLevelReport",
    "ImageScores",
    "InpaintingEvaluation",
    "InpaintingInference",
    "InpaintingReport",
    "NoWindowError",
    "PatchSet",
    "collect_image_scores",
    "collect_patches",
    "evaluate_images",
    "evaluate_inpainting",
    "from_network_range",
    "inpaint_centres",
    "inpaint_patches",
    "log_report_to_mlflow",
    "lung_window_starts",
    "markdown_table",
    "mask_patches",
    "to_network_range",
    "write_report",
    "CONTEXT_ENCODER_SCALARS",
    "ContextEncoderTrainer",
    "GanPhase",
    "GanSchedule",
    "ImageGridSaver",
    "InpaintingBatch",
    "NanGuard",
    "ResumableCheckpoint",
    "atomic_torch_save",
    "finite_scalars",
]
