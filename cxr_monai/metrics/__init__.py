"""Metrics."""

from __future__ import annotations

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
    "PSNR_MAX_DB",
    "ReconstructionMetrics",
    "anomaly_auroc",
    "anomaly_score",
    "image_anomaly_score",
    "reconstruction_metrics",
    "summarize",
]
