"""Reconstruction metrics, anomaly scores, image-level bootstrap intervals, multi-label AUROC, localisation accuracy and
binary detection metrics (accuracy, precision, recall, AUC, Dice, confusion matrix)."""

from __future__ import annotations

from cxr_monai.metrics.binary import BinaryDetectionMetrics, binary_detection_metrics, mask_dice
from cxr_monai.metrics.bootstrap import (
    DEFAULT_RESAMPLES,
    BootstrapInterval,
    cluster_bootstrap,
    image_level_intervals,
    patch_level_intervals,
)
from cxr_monai.metrics.localisation import (
    DEFAULT_THRESHOLDS,
    GroundTruthBox,
    box_iobb,
    box_iou,
    heatmap_boxes,
    localisation_accuracy,
)
from cxr_monai.metrics.multilabel import (
    MaskedMacroAUROC,
    MultiLabelAuroc,
    auroc_table,
    masked_macro_auroc,
    multilabel_auroc,
    plot_roc_curves,
)
from cxr_monai.metrics.reconstruction import (
    PSNR_MAX_DB,
    ReconstructionMetrics,
    anomaly_auroc,
    anomaly_score,
    image_anomaly_score,
    reconstruction_metrics,
    summarize,
)

__all__ = [
    "BinaryDetectionMetrics",
    "DEFAULT_RESAMPLES",
    "DEFAULT_THRESHOLDS",
    "PSNR_MAX_DB",
    "BootstrapInterval",
    "GroundTruthBox",
    "MaskedMacroAUROC",
    "MultiLabelAuroc",
    "ReconstructionMetrics",
    "anomaly_auroc",
    "anomaly_score",
    "auroc_table",
    "binary_detection_metrics",
    "box_iobb",
    "box_iou",
    "cluster_bootstrap",
    "heatmap_boxes",
    "image_level_intervals",
    "image_anomaly_score",
    "localisation_accuracy",
    "mask_dice",
    "masked_macro_auroc",
    "multilabel_auroc",
    "patch_level_intervals",
    "plot_roc_curves",
    "reconstruction_metrics",
    "summarize",
]
