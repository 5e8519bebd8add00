"""Context-encoder inpainting for abnormality highlighting (seeds 000/001: Belli et al. 2018).

Everything only the context encoder needs: the centre hole and its border weights (:mod:`.holes`), the
border-weighted L2 and joint loss (:mod:`.losses`), the adversarial trainer (:mod:`.trainer`), inpainting and
anomaly heatmaps (:mod:`.inference`) and the healthy-vs-unhealthy evaluation (:mod:`.evaluation`). The networks
are :class:`cxr_monai.networks.ContextEncoder` and :class:`cxr_monai.networks.ContextDiscriminator`.

Example::

    from cxr_monai.apps.inpainting import CenterHole, inpaint_patches

    filled = inpaint_patches(generator, patches, CenterHole(hole_size=64))  # (B, 1, 128, 128) in [0, 1]
"""

from __future__ import annotations

from cxr_monai.apps.inpainting.evaluation import (
    HEALTHY,
    UNHEALTHY,
    ImageLevelReport,
    ImageScores,
    InpaintingEvaluation,
    InpaintingReport,
    PatchSet,
    collect_image_scores,
    collect_patches,
    evaluate_images,
    evaluate_inpainting,
    markdown_table,
    write_report,
)
from cxr_monai.apps.inpainting.holes import (
    CONTEXT_MEAN,
    CenterHole,
    CenterHoleCollate,
    CenterHoleD,
    CenterHoled,
    CenterHoleDict,
    border_weight_map,
    whole_image_hole_transforms,
)
from cxr_monai.apps.inpainting.inference import (
    AnomalyHeatmap,
    AnomalyHeatmapInferer,
    InpaintingGrid,
    InpaintingInference,
    NoWindowError,
    inpaint_centres,
    inpaint_patches,
    lung_image_score,
    lung_window_starts,
    mask_patches,
    paste_centres,
)
from cxr_monai.apps.inpainting.losses import (
    BorderWeightedL2Loss,
    ContextEncoderLoss,
    ContextEncoderLossOutput,
)
from cxr_monai.apps.inpainting.trainer import (
    CONTEXT_ENCODER_SCALARS,
    PHASE_CODES,
    ContextEncoderTrainer,
    InpaintingBatch,
    context_encoder_scalars,
)

__all__ = [
    "AnomalyHeatmap",
    "AnomalyHeatmapInferer",
    "BorderWeightedL2Loss",
    "CONTEXT_ENCODER_SCALARS",
    "CONTEXT_MEAN",
    "CenterHole",
    "CenterHoleCollate",
    "CenterHoleD",
    "CenterHoleDict",
    "CenterHoled",
    "ContextEncoderLoss",
    "ContextEncoderLossOutput",
    "ContextEncoderTrainer",
    "HEALTHY",
    "ImageLevelReport",
    "ImageScores",
    "InpaintingBatch",
    "InpaintingEvaluation",
    "InpaintingGrid",
    "InpaintingInference",
    "InpaintingReport",
    "NoWindowError",
    "PHASE_CODES",
    "PatchSet",
    "UNHEALTHY",
    "border_weight_map",
    "collect_image_scores",
    "collect_patches",
    "context_encoder_scalars",
    "evaluate_images",
    "evaluate_inpainting",
    "inpaint_centres",
    "inpaint_patches",
    "log_report_to_mlflow",
    "lung_image_score",
    "lung_window_starts",
    "markdown_table",
    "mask_patches",
    "paste_centres",
    "whole_image_hole_transforms",
    "write_report",
]
