"""Report files every evaluation writes: per-item CSV, JSON, a markdown table, and metric summaries with CIs.

A report is any object with ``metrics() -> {name: float}`` (what MLflow gets) and ``write(output_dir) ->
{file name: path}`` (what lands on disk and in the MLflow run): :class:`Report`. :func:`summarize_metric` gives
the mean ± std of a per-image metric with a percentile bootstrap 95 % CI that resamples images (or patients, when
``clusters`` names them), the form the bundle docs report results in.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cxr_monai.metrics.bootstrap import DEFAULT_RESAMPLES, cluster_bootstrap

__all__ = ["MetricSummary", "Report", "summarize_metric", "write_csv", "write_json", "write_text"]


@runtime_checkable
class Report(Protocol):
    """What :func:`~cxr_monai.reports.log_report_to_mlflow` needs of a report."""

    def metrics(self) -> dict[str, float]: ...

    def write(self, output_dir: str | os.PathLike) -> dict[str, Path]: ...


@dataclass(frozen=True)
class MetricSummary:
    """Mean ± std of a per-item metric over ``n`` items, with a bootstrap CI of the mean (``ci_low``, ``ci_high``)."""

    name: str
    n: int
    mean: float
    std: float
    median: float
    minimum: float
    maximum: float
    ci_low: float
    ci_high: float
    confidence: float
    unit: str

    def format(self, digits: int = 3) -> str:
        """``0.951 ± 0.020 (95 % CI 0.941 to 0.960, n = 20 images)``."""
        return (f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.confidence * 100:g} % CI "
                f"{self.ci_low:.{digits}f} to {self.ci_high:.{digits}f}, n = {self.n} {self.unit})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """``{prefix + name + "_mean": ..., "_std", "_ci_low", "_ci_high"}`` for MLflow."""
        base = f"{prefix}{self.name}"
        return {f"{base}_mean": self.mean, f"{base}_std": self.std, f"{base}_ci_low": self.ci_low,
                f"{base}_ci_high": self.ci_high}


def summarize_metric(
    name: str,
    values: Sequence[float],
    clusters: Sequence[Any] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    unit: str = "images",
) -> MetricSummary:
    """Summary of a per-item metric; non-finite values (an HD95 of an empty prediction) are an error, not dropped.

    ``clusters`` (one per value, e.g. the patient of each image) makes the bootstrap resample whole clusters;
    by default every item is its own cluster. ``std`` is the sample standard deviation (ddof 1; 0 for one item).

    >>> summary = summarize_metric("dice", [0.9, 0.95, 0.97, 0.92], n_resamples=200)
    >>> round(summary.mean, 3), summary.n
    (0.935, 4)
    """
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: need a non-empty list of values, got shape {array.shape}.")
    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise ValueError(f"{name}: {bad} of {array.size} values are not finite; report them apart instead of "
                         "averaging them away.")
    clusters = list(range(array.size)) if clusters is None else list(clusters)
    interval = cluster_bootstrap(lambda idx: float(array[idx].mean()), clusters, n_resamples=n_resamples,
                                 confidence=confidence, seed=seed, unit=unit)
    return MetricSummary(name=name, n=int(array.size), mean=float(array.mean()),
                         std=float(array.std(ddof=1)) if array.size > 1 else 0.0, median=float(np.median(array)),
                         minimum=float(array.min()), maximum=float(array.max()), ci_low=interval.low,
                         ci_high=interval.high, confidence=confidence, unit=unit)


def summary_table(summaries: Iterable[MetricSummary], digits: int = 4) -> str:
    """A markdown table of summaries: metric, mean ± std (95 % CI), median, min, max, n.

    >>> print(summary_table([summarize_metric("psnr", [30.0, 32.0], n_resamples=100)], digits=1).splitlines()[2])
    | psnr | 31.0 ± 1.4 (30.0 to 32.0) | 31.0 | 30.0 | 32.0 | 2 |
    """
    lines = ["| metric | mean ± std (95 % CI) | median | min | max | n |", "|---|---|---|---|---|---|"]
    for summary in summaries:
        values = (summary.mean, summary.std, summary.ci_low, summary.ci_high, summary.median, summary.minimum,
                  summary.maximum)
        mean, std, low, high, median, minimum, maximum = (f"{value:.{digits}f}" for value in values)
        lines.append(f"| {summary.name} | {mean} ± {std} ({low} to {high}) | {median} | {minimum} | {maximum} | "
                     f"{summary.n} |")
    return "\n".join(lines)


def _finite_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(item) for item in value]
    return value


def write_json(document: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``document`` as indented JSON (non-finite floats as ``null``); creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite_json(document), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, fields: Sequence[str] | None = None) -> Path:
    """Write ``rows`` as CSV with ``fields`` (default: the keys of the rows, in first-seen order); creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fields is None:
        fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows({key: row.get(key, "") for key in fields} for row in rows)
    return path


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (a markdown table, say); creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
