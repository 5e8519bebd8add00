"""Reconstruction metrics, anomaly scores and image-level bootstrap intervals."""

from __future__ import annotations

from cxr_monai.metrics.bootstrap import (
    DEFAULT_RESAMPLES,
    BootstrapInterval,
    cluster_bootstrap,
    image_level_intervals,
    patch_level_intervals,
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
    "DEFAULT_RESAMPLES",
    "PSNR_MAX_DB",
    "BootstrapInterval",
    "ReconstructionMetrics",
    "anomaly_auroc",
    "anomaly_score",
    "cluster_bootstrap",
    "image_level_intervals",
    "image_anomaly_score",
    "patch_level_intervals",
    "reconstruction_metrics",
    "summarize",
]
