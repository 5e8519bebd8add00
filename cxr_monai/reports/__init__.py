"""Evaluation reports: one writer (CSV, JSON, markdown), metric summaries with bootstrap CIs, and MLflow logging
linked to the training run of the scored model.

Example::

    from cxr_monai.reports import summarize_metric

    print(summarize_metric("dice", per_image_dice).format())  # 0.951 ± 0.020 (95 % CI 0.941 to 0.960, n = 20 images)
"""

from __future__ import annotations

from cxr_monai.reports.mlflow import log_report_to_mlflow
from cxr_monai.reports.writer import (
    MetricSummary,
    Report,
    summarize_metric,
    summary_table,
    write_csv,
    write_json,
    write_text,
)

__all__ = ["MetricSummary", "Report", "log_report_to_mlflow", "summarize_metric", "summary_table", "write_csv", "write_json", "write_text"]
