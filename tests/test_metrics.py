from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from cxr_monai.metrics import (
    PSNR_MAX_DB,
    ReconstructionMetrics,
    anomaly_auroc,
    anomaly_score,
    image_anomaly_score,
    reconstruction_metrics,
    summarize,
)


def noisy_pair(batch: int = 3, seed: int = 0, noise: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, 1, 64, 64, generator=generator, dtype=torch.float64)
    prediction = (target + noise * torch.randn(target.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    return prediction, target


def test_identical_images():
    _, target = noisy_pair()
    metrics = reconstruction_metrics(target, target)
    assert set(metrics) == {"mse", "psnr", "ssim"}
    assert all(values.shape == (3,) for values in metrics.values())
    np.testing.assert_array_equal(metrics["mse"], 0.0)
    np.testing.assert_array_equal(metrics["psnr"], PSNR_MAX_DB)  # inf clipped, stays finite in mean/std
    np.testing.assert_allclose(metrics["ssim"], 1.0, atol=1e-6)
    assert summarize(metrics)["psnr_std"] == 0.0


def test_known_mse_on_8bit_scale():
    target = torch.full((2, 1, 64, 64), 100 / 255, dtype=torch.float64)
    prediction = target.clone()
    prediction[0] += 10 / 255  # 10 grey levels everywhere
    prediction[1, :, :32] += 20 / 255  # 20 grey levels on half the pixels
    metrics = reconstruction_metrics(prediction, target)
    np.testing.assert_allclose(metrics["mse"], [100.0, 200.0], rtol=1e-9)
    np.testing.assert_allclose(metrics["psnr"], [10 * math.log10(255**2 / 100), 10 * math.log10(255**2 / 200)])


def test_psnr_agrees_with_mse_and_scale_is_explicit():
    prediction, target = noisy_pair()
    metrics = reconstruction_metrics(prediction, target)
    np.testing.assert_allclose(metrics["psnr"], 10 * np.log10(255**2 / metrics["mse"]), rtol=1e-10)
    on_8bit = reconstruction_metrics(prediction * 255, target * 255, data_range=255.0)
    for name in metrics:
        np.testing.assert_allclose(on_8bit[name], metrics[name], rtol=1e-5)


@pytest.mark.parametrize("kernel_type, win_size", [("uniform", 7), ("gaussian", 11)])
def test_ssim_matches_scikit_image(kernel_type, win_size):
    prediction, target = noisy_pair(noise=0.1)
    ssim = reconstruction_metrics(prediction, target, ssim_kernel_type=kernel_type, ssim_win_size=win_size)["ssim"]
    reference = [
        structural_similarity(
            prediction[i, 0].numpy(), target[i, 0].numpy(), data_range=1.0, win_size=win_size,
            gaussian_weights=kernel_type == "gaussian", sigma=1.5, use_sample_covariance=False,
        )
        for i in range(len(ssim))
    ]
    np.testing.assert_allclose(ssim, reference, atol=1e-5)
    assert (ssim < 1).all()


def test_metrics_reject_bad_input():
    _, target = noisy_pair()
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        reconstruction_metrics(target * 2 - 1, target)
    with pytest.raises(ValueError, match="NaN"):
        reconstruction_metrics(torch.full_like(target, float("nan")), target)
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_metrics(target[:, :, :32], target)
    with pytest.raises(ValueError, match="B, C, H, W"):
        reconstruction_metrics(target[0], target[0])


def test_anomaly_score_on_hole_and_with_mask():
    original = torch.zeros(2, 1, 128, 128)
    original[1, :, 32:96, 32:96] = 0.25
    original[1, :, 32:48, 32:96] = 0.75  # a quarter of the hole brighter
    inpainted = torch.zeros(2, 1, 128, 128)
    hole = (..., slice(32, 96), slice(32, 96))
    scores = anomaly_score(inpainted[hole], original[hole])
    np.testing.assert_allclose(scores, [0.0, 0.75 * 0.25 + 0.25 * 0.75])
    hole_mask = torch.zeros(1, 1, 128, 128)
    hole_mask[hole] = 1
    original[1, :, :8] = 1.0  # context differences must not count
    np.testing.assert_allclose(anomaly_score(inpainted, original, hole_mask), scores)
    with pytest.raises(ValueError, match="empty"):
        anomaly_score(inpainted, original, torch.zeros(1, 1, 128, 128))


def test_anomaly_auroc():
    assert anomaly_auroc([0.1, 0.2, 0.3], [0.5, 0.6]) == 1.0
    assert anomaly_auroc([0.4, 0.4], [0.4, 0.4, 0.4]) == 0.5
    assert anomaly_auroc([0.9], [0.1]) == 0.0
    assert anomaly_auroc(np.array([0.1, 0.3]), np.array([0.2, 0.4])) == 0.75
    with pytest.raises(ValueError, match="unhealthy_scores is empty"):
        anomaly_auroc([0.1], [])
    with pytest.raises(ValueError, match="NaN"):
        anomaly_auroc([float("nan")], [0.1])


def test_cumulative_metrics_and_summary():
    metrics = ReconstructionMetrics()
    with pytest.raises(ValueError, match="no batch"):
        metrics.aggregate()
    first, second = noisy_pair(seed=1), noisy_pair(batch=2, seed=2, noise=0.1)
    batch = metrics(*first)
    assert batch["anomaly_score"].shape == (3,)
    metrics(*second)
    collected = metrics.aggregate()
    assert all(values.shape == (5,) for values in collected.values())
    np.testing.assert_allclose(collected["mse"][3:], reconstruction_metrics(*second)["mse"])
    summary = metrics.summary()
    assert summary["psnr_mean"] == pytest.approx(collected["psnr"].mean())
    assert summary["ssim_std"] == pytest.approx(collected["ssim"].std())
    assert metrics.summary(ddof=1)["mse_std"] == pytest.approx(collected["mse"].std(ddof=1))
    metrics.reset()
    with pytest.raises(ValueError):
        metrics.aggregate()


def test_image_anomaly_score_is_a_quantile_of_the_covered_pixels_in_the_region():
    heatmap = np.arange(16, dtype=np.float64).reshape(4, 4)
    heatmap[0, :] = np.nan  # no window reached the top row
    region = np.zeros((1, 4, 4))  # a (C, H, W) lung mask, as the transforms give
    region[0, :, :2] = 1
    assert image_anomaly_score(heatmap, quantile=1.0) == 15.0
    assert image_anomaly_score(heatmap, quantile=0.5) == pytest.approx(np.median(np.arange(4, 16)))
    assert image_anomaly_score(heatmap, region, quantile=1.0) == 13.0  # columns 0-1 of rows 1-3
    assert image_anomaly_score(torch.as_tensor(heatmap), torch.as_tensor(region), 0.0) == 4.0
    with pytest.raises(ValueError, match="no covered pixel inside the region"):
        image_anomaly_score(heatmap, np.pad(np.ones((1, 4)), ((0, 3), (0, 0))))
    with pytest.raises(ValueError, match="no covered pixel"):
        image_anomaly_score(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="does not match"):
        image_anomaly_score(heatmap, np.ones((3, 3)))
    with pytest.raises(ValueError, match="quantile"):
        image_anomaly_score(heatmap, quantile=95)


# ---------------------------------------------------------------------------------------------------------------
# bootstrap CIs over images (issue #9: honest figures)


def test_cluster_bootstrap_resamples_whole_images():
    from cxr_monai.metrics.bootstrap import cluster_bootstrap

    # two images of 50 identical patches each: resampling patches would give a near-zero width, images do not
    values = np.array([0.0] * 50 + [1.0] * 50)
    images = ["a"] * 50 + ["b"] * 50
    interval = cluster_bootstrap(lambda idx: values[idx].mean(), images, n_resamples=400, seed=0)
    assert interval.value == 0.5 and interval.low == 0.0 and interval.high == 1.0
    per_patch = cluster_bootstrap(lambda idx: values[idx].mean(), list(range(100)), n_resamples=400, seed=0)
    assert per_patch.high - per_patch.low < 0.3
    assert interval.resamples == 400 and interval.skipped == 0 and "95 % CI" in interval.format()


def test_cluster_bootstrap_strata_and_undefined_resamples():
    from cxr_monai.metrics.bootstrap import cluster_bootstrap, image_level_intervals, patch_level_intervals

    rng = np.random.default_rng(0)
    labels = np.array([0] * 30 + [1] * 30, dtype=bool)
    scores = rng.normal(size=60) + 1.5 * labels
    result = image_level_intervals(labels, scores, n_resamples=500)["auroc"]
    assert result.skipped == 0 and result.low < result.value < result.high  # strata keep both classes every time
    unstratified = cluster_bootstrap(lambda idx: float("nan") if len(set(idx.tolist())) < 2 else 1.0, [0, 1],
                                     n_resamples=200)  # a resample of one image twice is undefined: skipped
    assert unstratified.skipped > 0 and unstratified.resamples + unstratified.skipped == 200
    with pytest.raises(ValueError, match="two strata"):
        cluster_bootstrap(lambda idx: 0.0, ["a", "a"], strata=[0, 1])
    # an image giving a healthy and an unhealthy patch is one unit; the gap is healthy minus unhealthy PSNR
    intervals = patch_level_intervals(["a", "a", "b", "c"], [False, True, False, True], [0.1, 0.5, 0.2, 0.4],
                                      [30.0, 25.0, 28.0, 24.0], n_resamples=300)
    assert intervals["psnr_gap"].value == pytest.approx(29.0 - 24.5) and intervals["auroc"].value == 1.0
