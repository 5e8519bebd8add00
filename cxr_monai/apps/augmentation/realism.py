"""How close synthetic radiographs come to real ones: a Fréchet distance on the features of a network trained here.

The issue asks for an FID-style score between real and synthetic images. Inception features (ImageNet) are not
used: no weights are downloaded. :class:`FeatureExtractor` takes any network the user trained with this project
(the classifier bundle's DenseNet, the localisation bundle's Faster R-CNN backbone, ...) and the name of one of
its layers; a forward hook global-average-pools that layer's activations into one vector per image.
:func:`realism_score` gives MONAI's :class:`~monai.metrics.FIDMetric` between the real and the synthetic features
with a percentile bootstrap CI that resamples images (:func:`~cxr_monai.metrics.bootstrap.cluster_bootstrap`; the
synthetic images of one source image are one cluster), and :func:`real_baseline` the same distance between two
disjoint halves of the real images, the reference the number needs: a Fréchet distance of a finite sample is
biased upwards, by more the fewer images and the more features, so only a synthetic score near the real-vs-real
one means "as close as another draw of real images". :class:`RealismReport` writes ``realism.json`` and
``realism.md`` and logs to MLflow (:func:`~cxr_monai.reports.log_report_to_mlflow`).

Example::

    extractor = FeatureExtractor(densenet, "features.denselayer4")  # any named layer of a trained network
    real = extract_features(extractor, real_entries, transform)
    fake = extract_features(extractor, synthetic_entries, transform)
    score = realism_score(real, fake, synthetic_clusters=[e["source"] for e in synthetic_entries])
    print(score.format(2))
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxr_monai.metrics.bootstrap import BootstrapInterval, cluster_bootstrap

__all__ = [
    "FeatureExtractor",
    "require_feature_model",
    "RealismReport",
    "evaluate_realism",
    "extract_features",
    "frechet_distance",
    "real_baseline",
    "realism_score",
]

#: Bootstrap resamples of a realism score: each costs one SVD of an (n_real x n_synthetic) matrix.
DEFAULT_REALISM_RESAMPLES = 500


class FeatureExtractor:
    """Global-average-pooled activations of the layer ``layer`` (a name of ``network.named_modules()``) of
    ``network``, one ``(D,)`` vector per image, read by a forward hook while ``network`` runs in eval mode.

    A layer with a ``(B, C, *spatial)`` output gives ``C`` features (the mean over the spatial axes); a ``(B, C)``
    output is used as it is. The network's own output is discarded, so a detector (e.g. a torchvision Faster
    R-CNN, which takes the batch as a list of images) works as well as a classifier.

    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    >>> FeatureExtractor(net, "1")(torch.zeros(3, 1, 16, 16)).shape
    torch.Size([3, 4])
    """

    def __init__(self, network: torch.nn.Module, layer: str, device: str | torch.device | None = None):
        modules = dict(network.named_modules())
        if layer not in modules or not layer:
            names = [name for name in modules if name]
            shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
            raise ValueError(f"{type(network).__name__} has no layer {layer!r}; its layers: {shown}")
        self.network, self.layer = network, layer
        self.device = torch.device(device) if device is not None else next(
            (p.device for p in network.parameters()), torch.device("cpu"))
        self._module = modules[layer]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            captured.append(output)

        handle = self._module.register_forward_hook(hook)
        was_training = self.network.training
        try:
            self.network.eval()
            with torch.no_grad():
                self.network(images.to(self.device))
        finally:
            handle.remove()
            self.network.train(was_training)
        if not captured:
            raise RuntimeError(f"layer {self.layer!r} did not run in the forward pass of {type(self.network).__name__}")
        output = captured[-1]
        if not isinstance(output, torch.Tensor) or output.ndim < 2:
            kind = type(output).__name__ if not isinstance(output, torch.Tensor) else f"{output.ndim}-d tensor"
            raise ValueError(f"layer {self.layer!r} gives a {kind}, not a (B, C, ...) tensor: name a layer with one "
                             "tensor output (e.g. a Faster R-CNN's 'backbone.body.layer4', not its FPN)")
        features = output.float().flatten(2).mean(dim=2) if output.ndim > 2 else output.float()
        return features.cpu()


def extract_features(
    extractor: Callable[[torch.Tensor], torch.Tensor],
    entries: Sequence[Mapping[str, Any]],
    transform: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    batch_size: int = 8,
    image_key: str = "image",
) -> np.ndarray:
    """``(N, D)`` float64 features of the datalist ``entries``: each ``transform``-ed (it loads ``image_key`` and
    brings it to the network's input: size, channels, intensity), batched and passed to ``extractor``. An image that
    fails to load is an error naming it (a score over a silently shrunk set would not compare)."""
    if not entries:
        raise ValueError("no image to extract features from")
    features, batch = [], []
    for number, entry in enumerate(entries):
        try:
            image = transform(dict(entry))[image_key]
        except Exception as error:
            raise ValueError(f"{entry.get(image_key, entry)}: cannot prepare the image for the feature network "
                             f"({type(error).__name__}: {error})") from error
        batch.append(torch.as_tensor(image, dtype=torch.float32))
        if len(batch) == batch_size or number == len(entries) - 1:
            features.append(extractor(torch.stack(batch)).double().numpy())
            batch = []
    return np.concatenate(features, axis=0)


def frechet_distance(real: np.ndarray | torch.Tensor, synthetic: np.ndarray | torch.Tensor) -> float:
    """MONAI's :class:`~monai.metrics.FIDMetric` between two ``(N, D)`` feature sets (``N >= 2`` each).

    >>> rng = np.random.default_rng(0)
    >>> round(frechet_distance(rng.normal(size=(50, 3)), rng.normal(size=(50, 3)) + 1.0), 1)  # 3 expected
    2.4
    """
    from monai.metrics import FIDMetric

    real, synthetic = (torch.as_tensor(np.asarray(x), dtype=torch.float64) for x in (real, synthetic))
    _check_features(real, synthetic)
    return float(FIDMetric()(synthetic, real))


def _check_features(real: torch.Tensor, synthetic: torch.Tensor) -> None:
    if real.ndim != 2 or synthetic.ndim != 2 or real.shape[1] != synthetic.shape[1]:
        raise ValueError(f"features must be (N, D) with one D, got {tuple(real.shape)} and {tuple(synthetic.shape)}")
    if min(len(real), len(synthetic)) < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 images a set, got {len(real)} and {len(synthetic)}")


def _gram_frechet(real: torch.Tensor, synthetic: torch.Tensor) -> float:
    """The same distance without the ``D x D`` matrix square root: with ``A`` the centred features over
    ``sqrt(N - 1)``, ``Σ = AᵀA`` and ``tr sqrt(Σ₁Σ₂)`` is the sum of the singular values of ``A₁A₂ᵀ`` (the non-zero
    eigenvalues of ``Σ₁Σ₂`` are those of ``(A₁A₂ᵀ)(A₁A₂ᵀ)ᵀ``). Exact, and an SVD of an ``(N₁, N₂)`` matrix instead of
    scipy's ``sqrtm`` of a ``(D, D)`` one (tens of seconds for 2048 features): what the bootstrap resamples use."""
    diff = real.mean(0) - synthetic.mean(0)
    a = (real - real.mean(0)) / math.sqrt(len(real) - 1)
    b = (synthetic - synthetic.mean(0)) / math.sqrt(len(synthetic) - 1)
    cross = torch.linalg.svdvals(a @ b.T).sum()
    return float(diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * cross)


def realism_score(
    real: np.ndarray,
    synthetic: np.ndarray,
    real_clusters: Sequence[Any] | None = None,
    synthetic_clusters: Sequence[Any] | None = None,
    n_resamples: int = DEFAULT_REALISM_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """Fréchet distance between real and synthetic features (:func:`frechet_distance`) with a percentile bootstrap
    CI: each resample draws the real and the synthetic images separately with replacement (a two-sample bootstrap;
    ``*_clusters`` name the image of each row, e.g. a synthetic image's ``source``, so that the images made from one
    source are drawn together). Resamples drawing fewer than 2 distinct images of a set are skipped.

    >>> rng = np.random.default_rng(0)
    >>> real, same = rng.normal(size=(40, 3)), rng.normal(size=(40, 3))
    >>> realism_score(real, same, n_resamples=50).value < realism_score(real, same + 2.0, n_resamples=50).value
    True
    """
    real_t, synthetic_t = (torch.as_tensor(np.asarray(x), dtype=torch.float64) for x in (real, synthetic))
    _check_features(real_t, synthetic_t)
    n_real = len(real_t)
    real_clusters = list(range(n_real)) if real_clusters is None else list(real_clusters)
    synthetic_clusters = list(range(len(synthetic_t))) if synthetic_clusters is None else list(synthetic_clusters)
    if len(real_clusters) != n_real or len(synthetic_clusters) != len(synthetic_t):
        raise ValueError(f"{len(real_clusters)} and {len(synthetic_clusters)} cluster names for {n_real} real and "
                         f"{len(synthetic_t)} synthetic images")
    stacked = torch.cat([real_t, synthetic_t])
    clusters = [("real", c) for c in real_clusters] + [("synthetic", c) for c in synthetic_clusters]
    strata = [cluster[0] for cluster in clusters]
    point = frechet_distance(real_t, synthetic_t)

    def statistic(indices: np.ndarray) -> float:
        if len(indices) == len(stacked) and np.array_equal(indices, np.arange(len(stacked))):
            return point  # the full sample: MONAI's FIDMetric, computed once
        chosen_real, chosen_synthetic = indices[indices < n_real], indices[indices >= n_real]
        if len(np.unique(chosen_real)) < 2 or len(np.unique(chosen_synthetic)) < 2:
            return float("nan")
        return _gram_frechet(stacked[chosen_real], stacked[chosen_synthetic])

    return cluster_bootstrap(statistic, clusters, strata=strata, n_resamples=n_resamples, confidence=confidence,
                             seed=seed, unit="images")


def real_baseline(
    real: np.ndarray,
    clusters: Sequence[Any] | None = None,
    n_resamples: int = DEFAULT_REALISM_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[BootstrapInterval, np.ndarray, np.ndarray]:
    """The real-vs-real reference: the real images' clusters (default: each image) shuffled with ``seed`` and cut into
    two disjoint halves, and :func:`realism_score` between them. Returns the score and the row indices of the two
    halves (no cluster in both). Its sample is half the real set, so it runs somewhat higher than a distance between
    two full-size real sets would.

    >>> score, first, second = real_baseline(np.random.default_rng(0).normal(size=(40, 3)), n_resamples=20)
    >>> len(first), len(second), set(first) & set(second)
    (20, 20, set())
    """
    real = np.asarray(real)
    clusters = list(range(len(real))) if clusters is None else list(clusters)
    if len(clusters) != len(real):
        raise ValueError(f"{len(clusters)} cluster names for {len(real)} real images")
    names = list(dict.fromkeys(clusters))
    if len(names) < 4:
        raise ValueError(f"a real-vs-real baseline needs at least 4 real images (2 a half), got {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    first_names = {names[k] for k in order[: len(names) // 2]}
    first = np.array([row for row, name in enumerate(clusters) if name in first_names])
    second = np.array([row for row, name in enumerate(clusters) if name not in first_names])
    score = realism_score(real[first], real[second], [clusters[r] for r in first], [clusters[r] for r in second],
                          n_resamples=n_resamples, confidence=confidence, seed=seed)
    return score, first, second


@dataclass
class RealismReport:
    """Fréchet distances of synthetic sets to the real images, with the real-vs-real reference.

    ``scores``: set name -> its :func:`realism_score`; ``baseline``: :func:`real_baseline`; ``counts``: images per set
    (and ``real``, ``real_half_1``, ``real_half_2``); ``feature``: how the features were made (network, layer, D,
    model file). ``metrics()`` / ``write()`` make it a :class:`~cxr_monai.reports.Report` for MLflow.
    """

    scores: dict[str, BootstrapInterval]
    baseline: BootstrapInterval
    counts: dict[str, int]
    feature: dict[str, Any] = field(default_factory=dict)
    figure: str | None = None

    @staticmethod
    def _key(name: str) -> str:
        return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")

    def metrics(self) -> dict[str, float]:
        """``fid_<set>``, ``fid_<set>_ci_low`` / ``_ci_high`` and ``fid_real_vs_real`` (same suffixes)."""
        values: dict[str, float] = {}
        for name, score in [*self.scores.items(), ("real_vs_real", self.baseline)]:
            key = f"fid_{self._key(name)}"
            values.update({key: score.value, f"{key}_ci_low": score.low, f"{key}_ci_high": score.high})
        return values

    def to_dict(self) -> dict[str, Any]:
        return {"scores": {name: score.to_dict() for name, score in self.scores.items()},
                "real_vs_real": self.baseline.to_dict(), "counts": dict(self.counts), "feature": dict(self.feature),
                "figure": self.figure}

    def markdown(self, digits: int = 2) -> str:
        feature = self.feature
        lines = [
            "# Realism: Fréchet distance to the real images",
            "",
            f"Features: global-average-pooled `{feature.get('layer', '?')}` of {feature.get('network', 'a network')} "
            f"({feature.get('dimension', '?')} features"
            + (f", weights `{feature['model_path']}`" if feature.get("model_path") else "") + "). Lower is closer; "
            f"{self.baseline.confidence * 100:g} % percentile bootstrap CIs over images (resamples drawing fewer "
            "than 2 distinct images of a set are skipped).",
            "",
            "| set | images | FID | CI | resamples |",
            "| --- | ---: | ---: | --- | ---: |",
        ]
        for name, score in self.scores.items():
            lines.append(f"| {name} | {self.counts.get(name, '?')} | {score.value:.{digits}f} | "
                         f"{score.low:.{digits}f} to {score.high:.{digits}f} | {score.resamples} |")
        lines.append(f"| real vs real (two halves) | {self.counts.get('real_half_1', '?')} + "
                     f"{self.counts.get('real_half_2', '?')} | {self.baseline.value:.{digits}f} | "
                     f"{self.baseline.low:.{digits}f} to {self.baseline.high:.{digits}f} | "
                     f"{self.baseline.resamples} |")
        lines += ["", (f"The synthetic sets are compared with all {self.counts.get('real', '?')} real images; the "
                       "reference compares two disjoint halves of them, so its smaller sample biases it upwards: a "
                       "synthetic set at or below it is as close to the real images as real images are to each "
                       "other at this sample size.")]
        if self.figure:
            lines += ["", f"![real and synthetic images]({self.figure})"]
        return "\n".join(lines) + "\n"

    def write(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        paths = {"realism.json": output_dir / "realism.json", "realism.md": output_dir / "realism.md"}
        paths["realism.json"].write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        paths["realism.md"].write_text(self.markdown(), encoding="utf-8")
        if self.figure and (output_dir / self.figure).is_file():
            paths[self.figure] = output_dir / self.figure
        return paths


def _named_datalists(datalists: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike] | str
                     ) -> dict[str, Path]:
    """``{name: path}``: a mapping as given; a list (or one path) named by each file's folder (``synthetic.json`` of
    ``runs/pix2pix_n/synthetic`` -> ``synthetic``, else the file's stem when folders repeat)."""
    if isinstance(datalists, Mapping):
        named = {str(name): Path(path) for name, path in datalists.items()}
    else:
        paths = [Path(datalists)] if isinstance(datalists, (str, os.PathLike)) else [Path(p) for p in datalists]
        folders = [path.parent.name or path.stem for path in paths]
        names = folders if len(set(folders)) == len(folders) else [str(path.with_suffix("")) for path in paths]
        named = dict(zip(names, paths))
    if not named:
        raise ValueError("no synthetic datalist to score")
    return named


def require_feature_model(path: str | os.PathLike | None) -> Path:
    """The feature network's weights file, which a realism score needs: features of an untrained network would
    give a number without meaning. ``ValueError`` saying what to pass when it is missing.

    >>> require_feature_model(None)
    Traceback (most recent call last):
    ...
    ValueError: feature_model_path is not set: pass the model.pt of a network trained with this project (e.g. the classifier bundle's, or the localisation bundle's Ori detector with its feature_network_def)
    """
    if not path:
        raise ValueError("feature_model_path is not set: pass the model.pt of a network trained with this project "
                         "(e.g. the classifier bundle's, or the localisation bundle's Ori detector with its "
                         "feature_network_def)")
    if not Path(path).is_file():
        raise ValueError(f"feature_model_path {path}: file not found")
    return Path(path)


def evaluate_realism(
    real_datalist: str | os.PathLike,
    synthetic_datalists: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike],
    network: torch.nn.Module,
    layer: str,
    output_dir: str | os.PathLike,
    transform: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    model_path: str | os.PathLike | None = None,
    real_key: str | Sequence[str] = "test",
    synthetic_key: str = "training",
    base_dir: str | os.PathLike | None = None,
    figure_real_keys: Sequence[str] = ("training", "test"),
    figure_classes: Sequence[str] | None = None,
    tile_size: int = 192,
    n_resamples: int = DEFAULT_REALISM_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    tracking_uri: str | None = None,
    experiment_name: str = "pix2pix_augmentation",
    run_name: str = "realism",
) -> RealismReport:
    """Score synthetic sets against the real images and write ``realism.json``, ``realism.md`` and ``realism.png``.

    - ``network`` with ``model_path`` loaded into it (strict; a state dict written by one of this project's bundles,
      read with ``torch.load(weights_only=True)``), features from ``layer`` (:class:`FeatureExtractor`), images
      prepared by ``transform`` (it loads ``image``: the network's own input size, channels and intensity).
    - Real images: the ``real_key`` section(s) of ``real_datalist`` (``base_dir``: its dataset folder); each synthetic
      set: the ``synthetic_key`` section of its datalist (``{name: path}``, paths relative to that file's folder),
      clustered by ``source`` for the bootstrap.
    - ``realism.png``: :func:`~cxr_monai.apps.augmentation.figures.write_augmentation_grid` of the real images of
      ``figure_real_keys`` (the synthetic images' sources are training images) and every set.
    - ``tracking_uri``: the report goes to MLflow (run ``run_name`` of ``experiment_name``, tagged with the model).
    """
    from cxr_monai.apps.augmentation.figures import write_augmentation_grid
    from cxr_monai.data import load_datalist, validate_datalist
    from cxr_monai.networks.pretrained import read_state_dict

    output_dir = Path(output_dir)
    named = _named_datalists(synthetic_datalists)
    if model_path is not None:
        state = read_state_dict(model_path, "Feature network weights")
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ValueError(f"{model_path}: does not fit the feature network {type(network).__name__} "
                             f"(is feature_network_def the network that wrote it?): {error}") from error
    if device is not None:
        network = network.to(device)
    extractor = FeatureExtractor(network, layer, device)
    real_entries = load_datalist(real_datalist, real_key, base_dir=base_dir, min_entries=4)
    real = extract_features(extractor, real_entries, transform, batch_size)
    real_clusters = [entry["image"] for entry in real_entries]
    scores, counts, synthetic_sets = {}, {"real": len(real_entries)}, {}
    for name, path in named.items():
        entries = load_datalist(path, synthetic_key, min_entries=2)
        synthetic = extract_features(extractor, entries, transform, batch_size)
        scores[name] = realism_score(real, synthetic, real_clusters, [e.get("source", e["image"]) for e in entries],
                                     n_resamples=n_resamples, confidence=confidence, seed=seed)
        counts[name], synthetic_sets[name] = len(entries), entries
    baseline, first, second = real_baseline(real, real_clusters, n_resamples, confidence, seed)
    counts.update(real_half_1=len(first), real_half_2=len(second))

    present = [key for key in figure_real_keys if validate_datalist(real_datalist).get(key)]
    figure_real = load_datalist(real_datalist, present, base_dir=base_dir) if present else real_entries
    write_augmentation_grid(output_dir / "realism.png", figure_real, synthetic_sets, figure_classes, tile_size)
    feature = {"network": type(network).__name__, "layer": layer, "dimension": int(real.shape[1]),
               "model_path": str(model_path) if model_path is not None else None,
               "real_datalist": str(real_datalist), "real_key": real_key if isinstance(real_key, str) else list(real_key),
               "synthetic_datalists": {name: str(path) for name, path in named.items()}}
    report = RealismReport(scores, baseline, counts, feature, figure="realism.png")
    files = report.write(output_dir)
    if tracking_uri:
        from cxr_monai.reports import log_report_to_mlflow

        log_report_to_mlflow(report, tracking_uri, experiment_name, run_name=run_name, files=files,
                             artifact_path="realism", model_path=model_path)
    return report
