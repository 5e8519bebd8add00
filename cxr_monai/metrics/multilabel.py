"""Per-class AUROC of a multi-label classifier with bootstrap CIs, the macro mean, and seed 003's Table 1 layout.

Labels follow the datalist contract (docs/data_contract.md): 1 present, 0 absent, -1 uncertain and NaN (``null``)
not mentioned. Uncertain and unmentioned entries are left out of that class's AUROC (never counted as negatives). The
CI of every AUROC and of the macro mean resamples whole images, or whole patients with ``clusters`` (the images of one
patient are not independent); a class without a positive or a negative in the scored set has no AUROC (NaN, left out
of the macro mean and named in the table).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from sklearn.metrics import roc_auc_score, roc_curve

from cxr_monai.metrics.bootstrap import (
    DEFAULT_RESAMPLES,
    BootstrapInterval,
    cluster_bootstrap,
)

__all__ = ["MaskedMacroAUROC", "MultiLabelAuroc", "auroc_table", "masked_macro_auroc", "multilabel_auroc", "plot_roc_curves"]


def _known(labels: np.ndarray) -> np.ndarray:
    return np.isfinite(labels) & (labels >= 0)


def _class_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    known = _known(labels)
    y = labels[known]
    if y.size == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, scores[known]))


@dataclass(frozen=True)
class MultiLabelAuroc:
    """Per-class AUROC intervals (``None`` where a class cannot be scored), the macro mean and the class counts."""

    class_names: tuple[str, ...]
    per_class: tuple[BootstrapInterval | None, ...]
    macro: BootstrapInterval | None
    positives: tuple[int, ...]
    negatives: tuple[int, ...]

    def metrics(self, prefix: str = "auroc_") -> dict[str, float]:
        """``{auroc_<class>: value, ..., auroc_macro: value}`` for MLflow (scored classes only)."""
        values = {f"{prefix}{name.lower().replace(' ', '_')}": interval.value
                  for name, interval in zip(self.class_names, self.per_class) if interval is not None}
        if self.macro is not None:
            values[f"{prefix}macro"] = self.macro.value
        return values

    def to_dict(self) -> dict[str, Any]:
        return {"classes": [{"name": name, "positives": pos, "negatives": neg,
                             "auroc": interval.to_dict() if interval is not None else None}
                            for name, interval, pos, neg in zip(self.class_names, self.per_class, self.positives,
                                                                self.negatives)],
                "macro": self.macro.to_dict() if self.macro is not None else None}


def multilabel_auroc(
    labels: Sequence[Sequence[float]] | np.ndarray,
    scores: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
    clusters: Sequence[Any] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> MultiLabelAuroc:
    """AUROC of each class and their macro mean, with percentile bootstrap CIs over images (or ``clusters``).

    ``labels`` and ``scores`` are ``(N, C)``; ``None``/NaN and -1 labels are left out of their class. The macro
    mean averages the classes that can be scored on the full set; a resample in which one of them has a single
    label value is skipped (counted in the interval's ``skipped``).

    >>> result = multilabel_auroc([[1, 0], [0, 1], [1, -1], [0, 0]], [[0.9, 0.2], [0.1, 0.8], [0.7, 0.5], [0.3, 0.1]],
    ...                           ["A", "B"], n_resamples=200)
    >>> result.per_class[0].value, result.per_class[1].value, result.macro.value
    (1.0, 1.0, 1.0)
    """
    y = np.asarray([[np.nan if v is None else float(v) for v in row] for row in labels], dtype=float)
    s = np.asarray(scores, dtype=float)
    if y.ndim != 2 or y.shape != s.shape or y.shape[1] != len(class_names):
        raise ValueError(f"labels {y.shape} and scores {s.shape} must both be (N, {len(class_names)})")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    clusters = list(range(len(y))) if clusters is None else list(clusters)
    positives = tuple(int(((y[:, c] == 1)).sum()) for c in range(y.shape[1]))
    negatives = tuple(int(((y[:, c] == 0)).sum()) for c in range(y.shape[1]))
    per_class: list[BootstrapInterval | None] = []
    scored = []
    for c in range(y.shape[1]):
        if np.isnan(_class_auroc(y[:, c], s[:, c])):
            per_class.append(None)
            continue
        scored.append(c)
        per_class.append(cluster_bootstrap(lambda idx, c=c: _class_auroc(y[idx, c], s[idx, c]), clusters,
                                           n_resamples=n_resamples, confidence=confidence, seed=seed))

    def macro(idx: np.ndarray) -> float:
        values = [_class_auroc(y[idx, c], s[idx, c]) for c in scored]
        return float(np.mean(values)) if values and np.all(np.isfinite(values)) else float("nan")

    macro_interval = (cluster_bootstrap(macro, clusters, n_resamples=n_resamples, confidence=confidence, seed=seed)
                      if scored else None)
    return MultiLabelAuroc(tuple(class_names), tuple(per_class), macro_interval, positives, negatives)


def auroc_table(rows: Mapping[str, MultiLabelAuroc], abbreviations: Mapping[str, str] | None = None,
                digits: int = 3) -> str:
    """Markdown table laid out like seed 003 Table 1: one row per model / input variant, one column per class, then
    the macro average; each cell the AUROC, and below the table each row's macro mean with its CI.

    >>> table = auroc_table({"DN-121": multilabel_auroc([[1], [0]], [[0.8], [0.2]], ["Atelectasis"], n_resamples=10)},
    ...                     {"Atelectasis": "AT"})
    >>> table.splitlines()[2]
    '| DN-121 | 1.000 | 1.000 |'
    """
    if not rows:
        raise ValueError("no rows to tabulate")
    names = next(iter(rows.values())).class_names
    if any(result.class_names != names for result in rows.values()):
        raise ValueError("every row must score the same classes in the same order")
    abbreviations = abbreviations or {}
    header = ["architecture / inputs", *(abbreviations.get(name, name) for name in names), "AVG"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, result in rows.items():
        cells = [f"{interval.value:.{digits}f}" if interval is not None else "—" for interval in result.per_class]
        average = f"{result.macro.value:.{digits}f}" if result.macro is not None else "—"
        lines.append("| " + " | ".join([label, *cells, average]) + " |")
    lines.append("")
    for label, result in rows.items():
        unscored = [name for name, interval in zip(names, result.per_class) if interval is None]
        macro = result.macro.format(digits) if result.macro is not None else "not scored"
        note = f"; not scored (one label value only): {', '.join(unscored)}" if unscored else ""
        lines.append(f"- {label}: macro AUROC {macro}{note}")
    return "\n".join(lines) + "\n"


def plot_roc_curves(labels: np.ndarray, scores: np.ndarray, class_names: Sequence[str], path: str | os.PathLike,
                    title: str = "ROC curves") -> Path:
    """One ROC curve per scorable class in one PNG (matplotlib, Agg), the AUROC in each legend entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray([[np.nan if v is None else float(v) for v in row] for row in labels], dtype=float)
    s = np.asarray(scores, dtype=float)
    figure, axes = plt.subplots(figsize=(7, 7), dpi=100)
    for c, name in enumerate(class_names):
        known = _known(y[:, c])
        if not known.any() or y[known, c].min() == y[known, c].max():
            continue
        fpr, tpr, _ = roc_curve(y[known, c], s[known, c])
        axes.plot(fpr, tpr, lw=1.2, label=f"{name} ({_class_auroc(y[:, c], s[:, c]):.3f})")
    axes.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    axes.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right", fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return path


def masked_macro_auroc(scores: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """The mean AUROC over the classes that have both label values among their known (0/1) labels; NaN if none.

    >>> masked_macro_auroc(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.3]]), np.array([[1, -1], [0, 1], [1, np.nan]]))
    1.0
    """
    s = scores.detach().cpu().float().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, float)
    y = labels.detach().cpu().float().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels, float)
    values = [_class_auroc(y[:, c], s[:, c]) for c in range(y.shape[1])]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


class MaskedMacroAUROC(CumulativeIterationMetric):
    """MONAI cumulative metric: the macro AUROC of multi-label predictions with uncertain (-1) and unmentioned (NaN)
    labels left out of their class (MONAI's ``ROCAUCMetric`` would count them). For a validation key metric::

        "val_auroc": {"_target_": "IgniteMetricHandler", "metric_fn": {"_target_": "cxr_monai.metrics.MaskedMacroAUROC"},
                      "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return y_pred, y

    def aggregate(self) -> float:  # type: ignore[override]
        y_pred, y = self.get_buffer()
        return masked_macro_auroc(y_pred, y)
