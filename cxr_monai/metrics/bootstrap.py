"""Bootstrap confidence intervals that resample images, not patches (issue #9: honest figures).

Patches of one radiograph share its anatomy, contrast and acquisition, so they are not independent: a CI that
resamples patches is too narrow. :func:`cluster_bootstrap` resamples whole images (clusters) with replacement,
optionally within strata (e.g. healthy and abnormal images separately, so every resample keeps both classes), and
recomputes a statistic of all the samples of the drawn images; the interval is the percentile interval of the
resampled statistics. :func:`patch_level_intervals` and :func:`image_level_intervals` apply it to the figures the
context-encoder evaluation reports: the AUROC and the PSNR gap (healthy minus unhealthy, dB).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = ["BootstrapInterval", "cluster_bootstrap", "image_level_intervals", "patch_level_intervals"]

DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class BootstrapInterval:
    """A statistic, its percentile bootstrap interval and how it was obtained.

    ``resamples`` counts the resamples the interval comes from; ``skipped`` those where the statistic was undefined
    (e.g. a resample without a positive).
    """

    value: float
    low: float
    high: float
    confidence: float
    resamples: int
    skipped: int
    unit: str

    def format(self, digits: int = 3) -> str:
        """``0.812 (95 % CI 0.701-0.905)``."""
        return (f"{self.value:.{digits}f} ({self.confidence * 100:g} % CI {self.low:.{digits}f} to "
                f"{self.high:.{digits}f})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cluster_bootstrap(
    statistic: Callable[[np.ndarray], float],
    clusters: Sequence[Any],
    strata: Sequence[Any] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    unit: str = "images",
) -> BootstrapInterval:
    """Percentile bootstrap CI of ``statistic`` resampling whole clusters with replacement.

    ``statistic(indices)`` gets the sample indices of one resample (the samples of each drawn cluster, repeated as
    often as it was drawn) and returns a float, or NaN when undefined for that resample (skipped and counted).
    ``clusters[i]`` names the cluster (image) of sample ``i``; with ``strata`` (one label per sample, constant
    within a cluster) the clusters of each stratum are resampled separately, keeping their count.

    Example::

        >>> scores = np.array([0.1, 0.2, 0.8, 0.9]); images = ["a", "a", "b", "c"]
        >>> cluster_bootstrap(lambda idx: scores[idx].mean(), images, n_resamples=200).value
        0.5
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    clusters = list(clusters)
    strata = list(strata) if strata is not None else [0] * len(clusters)
    if len(strata) != len(clusters):
        raise ValueError(f"{len(strata)} strata for {len(clusters)} samples.")
    members: dict[Any, list[int]] = {}
    stratum_of: dict[Any, Any] = {}
    for index, (cluster, stratum) in enumerate(zip(clusters, strata)):
        members.setdefault(cluster, []).append(index)
        if stratum_of.setdefault(cluster, stratum) != stratum:
            raise ValueError(f"cluster {cluster!r} lies in two strata ({stratum_of[cluster]!r}, {stratum!r}).")
    by_stratum: dict[Any, list[np.ndarray]] = {}
    for cluster, indices in members.items():
        by_stratum.setdefault(stratum_of[cluster], []).append(np.asarray(indices, dtype=np.int64))
    value = float(statistic(np.arange(len(clusters), dtype=np.int64)))
    rng = np.random.default_rng(seed)
    resampled, skipped = [], 0
    for _ in range(int(n_resamples)):
        parts = []
        for groups in by_stratum.values():
            parts += [groups[k] for k in rng.integers(0, len(groups), size=len(groups))]
        result = float(statistic(np.concatenate(parts))) if parts else float("nan")
        if np.isfinite(result):
            resampled.append(result)
        else:
            skipped += 1
    if not resampled:
        low = high = float("nan")
    else:
        alpha = (1.0 - confidence) / 2.0
        low, high = (float(q) for q in np.quantile(resampled, [alpha, 1.0 - alpha]))
    return BootstrapInterval(value, low, high, confidence, len(resampled), skipped, unit)


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def patch_level_intervals(
    images: Sequence[str],
    is_unhealthy: Sequence[bool],
    scores: Sequence[float],
    psnr: Sequence[float],
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, BootstrapInterval]:
    """CIs of the patch AUROC (unhealthy positive, by ``scores``) and of the PSNR gap (mean healthy minus mean
    unhealthy PSNR, dB), resampling the images the patches come from (an image may give patches to both sets).

    Example::

        intervals = patch_level_intervals(["a", "a", "b"], [False, True, False], [0.1, 0.3, 0.2], [25, 20, 24])
        intervals["auroc"].format()
    """
    labels = np.asarray(is_unhealthy, dtype=bool)
    scores, psnr = np.asarray(scores, dtype=np.float64), np.asarray(psnr, dtype=np.float64)

    def gap(indices: np.ndarray) -> float:
        chosen = labels[indices]
        if chosen.all() or not chosen.any():
            return float("nan")
        return float(psnr[indices][~chosen].mean() - psnr[indices][chosen].mean())

    def auroc(indices: np.ndarray) -> float:
        return _auroc(labels[indices], scores[indices])

    return {
        "auroc": cluster_bootstrap(auroc, images, None, n_resamples, confidence, seed),
        "psnr_gap": cluster_bootstrap(gap, images, None, n_resamples, confidence, seed),
    }


def image_level_intervals(
    is_abnormal: Sequence[bool],
    scores: Sequence[float],
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, BootstrapInterval]:
    """CI of the image-level AUROC (abnormal positive), resampling healthy and abnormal images separately.

    Example::

        image_level_intervals([False, False, True, True], [0.1, 0.4, 0.35, 0.8])["auroc"].value
    """
    labels = np.asarray(is_abnormal, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    return {
        "auroc": cluster_bootstrap(lambda idx: _auroc(labels[idx], scores[idx]), list(range(len(labels))),
                                   labels.tolist(), n_resamples, confidence, seed)
    }
