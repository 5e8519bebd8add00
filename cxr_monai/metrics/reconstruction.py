"""Per-patch reconstruction metrics of the inpainted hole (seed 001, §4.3, Table 1) and anomaly AUROC."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from monai.metrics import MSEMetric, PSNRMetric, SSIMMetric
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score

__all__ = [
    "PSNR_MAX_DB",
    "ReconstructionMetrics",
    "anomaly_auroc",
    "anomaly_score",
    "image_anomaly_score",
    "reconstruction_metrics",
    "summarize",
]

#: PSNR of identical images is infinite; it is reported as this many dB, like the reference ``psnr.py``
#: of BoyuanJiang/context_encoder_pytorch (``if mse == 0: return 100``).
PSNR_MAX_DB = 100.0


def _as_batch(name: str, images: torch.Tensor | np.ndarray, data_range: float) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.ndim != 4:
        raise ValueError(f"{name} must be a batch (B, C, H, W), got shape {tuple(images.shape)}.")
    images = images.detach().to(torch.float64)
    low, high = images.min().item(), images.max().item()
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    tolerance = 1e-4 * data_range
    if low < -tolerance or high > data_range + tolerance:
        raise ValueError(
            f"{name} must lie in [0, {data_range}] (got [{low:.4g}, {high:.4g}]); map generator output from "
            f"[-1, 1] with (y + 1) / 2 first."
        )
    return images


def reconstruction_metrics(
    prediction: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    data_range: float = 1.0,
    ssim_kernel_type: str = "uniform",
    ssim_win_size: int = 7,
    psnr_max: float = PSNR_MAX_DB,
) -> dict[str, np.ndarray]:
    """Per-sample MSE, PSNR and SSIM between inpainted and true holes, as in Table 1 of seed 001.

    Inputs are the hole only (the generator output and the patch's ``target`` key, ``(B, 1, 64, 64)``), with
    intensities in ``[0, data_range]``; anything outside raises ``ValueError`` (a [-1, 1] tensor passed by
    mistake would otherwise give plausible but wrong numbers).

    - ``mse``: mean squared error on the 8-bit scale, intensities ``* 255 / data_range``, the scale of the
      seed's MSE column (79.20 healthy, 164.82 unhealthy). MONAI ``MSEMetric``, in float64.
    - ``psnr``: MONAI ``PSNRMetric`` with ``max_val=255`` on the same scale, i.e. ``10 log10(255^2 / mse)``.
      Identical images give ``inf``; values are clipped at ``psnr_max`` (100 dB, as the reference code
      returns), so means and standard deviations stay finite. 100 dB is an 8-bit MSE of 6.5e-6, far below
      one grey level, so the clip touches nothing but (near-)exact copies.
    - ``ssim``: MONAI ``SSIMMetric`` with ``data_range`` given explicitly (SSIM does not change with the
      intensity scale when ``data_range`` scales with it). The default 7x7 uniform window is scikit-image's
      default (the usual tool in 2018); it leaves a 58x58 map on a 64 px hole, where an 11x11 Gaussian window
      leaves 54x54. MONAI uses population (co)variances, scikit-image's default sample ones; with
      ``use_sample_covariance=False`` the two agree to float precision.

    Returns:
        ``{"mse": (B,), "psnr": (B,), "ssim": (B,)}`` float64 arrays, ready for a per-patch CSV.

    Example::

        >>> target = torch.full((1, 1, 64, 64), 0.5)
        >>> metrics = reconstruction_metrics(target + 10 / 255, target)
        >>> round(float(metrics["mse"][0]), 3), round(float(metrics["psnr"][0]), 2)  # 10 grey levels off
        (100.0, 28.13)
    """
    prediction = _as_batch("prediction", prediction, data_range)
    target = _as_batch("target", target, data_range)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target must have the same shape, got {tuple(prediction.shape)} and "
                         f"{tuple(target.shape)}.")
    if min(target.shape[-2:]) < ssim_win_size:
        raise ValueError(f"ssim_win_size {ssim_win_size} is larger than the images {tuple(target.shape[-2:])}.")
    to_8bit = 255.0 / data_range
    mse = MSEMetric(reduction="none")(prediction * to_8bit, target * to_8bit)
    psnr = PSNRMetric(max_val=255.0, reduction="none")(prediction * to_8bit, target * to_8bit)
    ssim = SSIMMetric(
        spatial_dims=2, data_range=data_range, kernel_type=ssim_kernel_type, win_size=ssim_win_size,
        reduction="none",
    )(prediction, target)
    return {
        "mse": mse.view(-1).cpu().numpy(),
        "psnr": psnr.clamp(max=psnr_max).view(-1).cpu().numpy(),
        "ssim": ssim.view(-1).to(torch.float64).cpu().numpy(),
    }


def anomaly_score(
    inpainted: torch.Tensor | np.ndarray,
    original: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray | None = None,
) -> np.ndarray:
    """Per-patch anomaly score: mean ``|original - inpainted|`` over the hole, in the images' intensity units.

    A model trained on healthy tissue reproduces healthy holes and "heals" abnormal ones, so the residual is
    larger where there is a lesion (Fig. 4 of seed 001). Pass the holes themselves, ``(B, C, h, w)``, or full
    patches with the ``hole_mask`` key as ``mask`` (any shape broadcastable to the images, non-zero in the
    hole). Alternatives with the same idea: the per-patch MSE (the ``mse`` column, which ranks like PSNR),
    ``1 - SSIM``, or the maximum of a smoothed difference map, which favours small, bright lesions over
    diffuse differences.

    Example::

        >>> anomaly_score(torch.zeros(2, 1, 4, 4), torch.tensor([0.0, 0.5]).view(2, 1, 1, 1).expand(2, 1, 4, 4))
        array([0. , 0.5])
    """
    inpainted = torch.as_tensor(inpainted).detach().to(torch.float64)
    original = torch.as_tensor(original).detach().to(torch.float64)
    if inpainted.shape != original.shape or inpainted.ndim != 4:
        raise ValueError(f"inpainted and original must be batches (B, C, H, W) of the same shape, got "
                         f"{tuple(inpainted.shape)} and {tuple(original.shape)}.")
    difference = (original - inpainted).abs()
    if mask is None:
        return difference.flatten(1).mean(1).cpu().numpy()
    mask = torch.as_tensor(mask, device=difference.device).to(torch.float64)
    try:
        mask = (mask != 0).to(torch.float64).expand_as(difference)
    except RuntimeError as error:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to images of shape "
                         f"{tuple(difference.shape)}.") from error
    counts = mask.flatten(1).sum(1)
    if (counts == 0).any():
        raise ValueError(f"mask is empty for samples {torch.nonzero(counts == 0).view(-1).tolist()}.")
    return ((difference * mask).flatten(1).sum(1) / counts).cpu().numpy()


def image_anomaly_score(
    heatmap: torch.Tensor | np.ndarray,
    region: torch.Tensor | np.ndarray | None = None,
    quantile: float = 0.95,
) -> float:
    """Image-level anomaly score: the ``quantile`` of a full-image anomaly heatmap over its covered pixels.

    ``heatmap`` is ``(H, W)`` with NaN where no window reached (as
    :class:`~cxr_monai.apps.inpainting.AnomalyHeatmapInferer` gives); ``region`` (same shape, non-zero inside; e.g. the
    lung mask) keeps the pixels that count, so bright edges of the mediastinum or diaphragm inside a lung box do
    not. A high quantile rather than the mean because a lesion covers a small part of the lungs, and rather than
    the maximum because a few pixels at a rib edge would decide it.

    Example::

        >>> image_anomaly_score(np.array([[0.1, 0.2], [0.3, np.nan]]), quantile=0.5)
        0.2
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {quantile}.")
    values = torch.as_tensor(heatmap).detach().to(torch.float64).cpu()
    if values.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {tuple(values.shape)}.")
    counted = torch.isfinite(values)
    if region is not None:
        region = torch.as_tensor(region).detach().cpu()
        if region.numel() != values.numel():
            raise ValueError(f"region of shape {tuple(region.shape)} does not match the heatmap's "
                             f"{tuple(values.shape)}.")
        counted &= region.reshape(values.shape) != 0
    if not counted.any():
        where = " inside the region" if region is not None else ""
        raise ValueError(f"the heatmap has no covered pixel{where} to score.")
    return float(np.quantile(values[counted].numpy(), quantile))  # torch.quantile stops at 2**24 values


def anomaly_auroc(healthy_scores: ArrayLike, unhealthy_scores: ArrayLike) -> float:
    """Area under the ROC curve separating unhealthy (positive) from healthy patches by their scores.

    Example::

        >>> anomaly_auroc([0.1, 0.2], [0.3, 0.4])
        1.0
    """
    healthy = np.asarray(healthy_scores, dtype=np.float64).ravel()
    unhealthy = np.asarray(unhealthy_scores, dtype=np.float64).ravel()
    for name, scores in (("healthy_scores", healthy), ("unhealthy_scores", unhealthy)):
        if scores.size == 0:
            raise ValueError(f"{name} is empty; AUROC needs both healthy and unhealthy patches.")
        if not np.isfinite(scores).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
    labels = np.concatenate([np.zeros(healthy.size), np.ones(unhealthy.size)])
    return float(roc_auc_score(labels, np.concatenate([healthy, unhealthy])))


def summarize(per_sample: Mapping[str, ArrayLike], ddof: int = 0) -> dict[str, float]:
    """Mean and standard deviation of each per-sample metric, flat for ``mlflow.log_metrics``.

    ``ddof=0`` (population standard deviation, NumPy's default) is assumed for the seed's "mean ± std".

    Example::

        >>> summarize({"psnr": [30.0, 32.0]})
        {'psnr_mean': 31.0, 'psnr_std': 1.0}
    """
    summary: dict[str, float] = {}
    for name, values in per_sample.items():
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            raise ValueError(f"no values for metric {name!r}.")
        summary[f"{name}_mean"] = float(values.mean())
        summary[f"{name}_std"] = float(values.std(ddof=ddof))
    return summary


class ReconstructionMetrics:
    """Collects :func:`reconstruction_metrics` and :func:`anomaly_score` over batches of inpainted holes.

    Example::

        >>> metrics = ReconstructionMetrics()
        >>> batch = metrics(torch.full((2, 1, 64, 64), 0.5), torch.full((2, 1, 64, 64), 0.5))
        >>> sorted(metrics.aggregate()), metrics.summary()["psnr_mean"]
        (['anomaly_score', 'mse', 'psnr', 'ssim'], 100.0)
    """

    names = ("mse", "psnr", "ssim", "anomaly_score")

    def __init__(self, data_range: float = 1.0, ssim_kernel_type: str = "uniform", ssim_win_size: int = 7,
                 psnr_max: float = PSNR_MAX_DB) -> None:
        self.data_range = data_range
        self.ssim_kernel_type = ssim_kernel_type
        self.ssim_win_size = ssim_win_size
        self.psnr_max = psnr_max
        self.reset()

    def reset(self) -> None:
        self._batches: dict[str, list[np.ndarray]] = {name: [] for name in self.names}

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> dict[str, np.ndarray]:
        """Metrics of one batch, ``{name: (B,)}``; also kept for :meth:`aggregate`."""
        batch = reconstruction_metrics(prediction, target, self.data_range, self.ssim_kernel_type,
                                       self.ssim_win_size, self.psnr_max)
        batch["anomaly_score"] = anomaly_score(prediction, target)
        for name in self.names:
            self._batches[name].append(batch[name])
        return batch

    def aggregate(self) -> dict[str, np.ndarray]:
        """All samples seen since :meth:`reset`, in order, ``{name: (N,)}``."""
        if not self._batches["mse"]:
            raise ValueError("ReconstructionMetrics has seen no batch since reset().")
        return {name: np.concatenate(values) for name, values in self._batches.items()}

    def summary(self, ddof: int = 0) -> dict[str, float]:
        """``{name_mean, name_std}`` over all samples seen, see :func:`summarize`."""
        return summarize(self.aggregate(), ddof=ddof)
