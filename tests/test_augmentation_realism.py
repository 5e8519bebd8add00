"""Realism of synthetic radiographs (issue #14): Fréchet distance on the features of a network trained here, its
bootstrap CI and real-vs-real reference, and the Fig. 2 grid of real and synthetic images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cxr_monai.apps.augmentation.figures import (
    augmentation_grid,
    write_augmentation_grid,
)
from cxr_monai.apps.augmentation.realism import (
    FeatureExtractor,
    RealismReport,
    _gram_frechet,
    evaluate_realism,
    extract_features,
    frechet_distance,
    real_baseline,
    realism_score,
)
from cxr_monai.data import load_datalist
from cxr_monai.data.builders.nih_boxes import build_nih_boxes_datalist


def _features(n: int = 60, d: int = 6, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def _small_network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(4, 6, 3, stride=2),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 2))


def test_identical_sets_score_zero_and_a_shifted_set_more():
    real = _features()
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    same = realism_score(real, real, n_resamples=100)
    assert same.value == pytest.approx(0.0, abs=1e-6)
    shifted = realism_score(real, _features(seed=1, shift=1.0), n_resamples=100)
    other_draw = realism_score(real, _features(seed=1), n_resamples=100)
    assert shifted.value > 4.0 > other_draw.value  # a 1.0 shift of 6 features adds about 6
    assert shifted.low <= shifted.value <= shifted.high and shifted.low > other_draw.high
    assert shifted.resamples == 100 and shifted.unit == "images"


@pytest.mark.parametrize("n, d", [(40, 5), (12, 30)])
def test_resample_formula_equals_monai_fid(n, d):
    """The bootstrap's SVD form is MONAI's FIDMetric, also with fewer images than features (singular covariances)."""
    real, synthetic = _features(n, d), _features(n + 3, d, shift=0.3, seed=2)
    exact = frechet_distance(real, synthetic)
    assert _gram_frechet(torch.as_tensor(real), torch.as_tensor(synthetic)) == pytest.approx(exact, rel=1e-4)


def test_bootstrap_draws_a_synthetic_source_as_one_cluster():
    real = _features(30)
    synthetic = np.repeat(_features(10, shift=0.5, seed=3), 3, axis=0)  # 3 copies of each source image
    by_image = realism_score(real, synthetic, n_resamples=200)
    by_source = realism_score(real, synthetic, synthetic_clusters=np.repeat(np.arange(10), 3), n_resamples=200)
    assert by_source.value == by_image.value
    assert by_source.high - by_source.low > by_image.high - by_image.low  # 10 independent images, not 30


def test_real_baseline_uses_disjoint_halves():
    real = _features(41)
    clusters = [f"image{k // 2}" for k in range(41)]  # pairs of rows are one image
    score, first, second = real_baseline(real, clusters, n_resamples=50, seed=5)
    assert set(first).isdisjoint(second) and sorted([*first, *second]) == list(range(41))
    assert {clusters[k] for k in first}.isdisjoint({clusters[k] for k in second})
    assert abs(len({clusters[k] for k in first}) - len({clusters[k] for k in second})) <= 1  # 10 and 11 images
    halves = real_baseline(real, clusters, n_resamples=50, seed=5)
    assert halves[0].value == score.value == pytest.approx(frechet_distance(real[first], real[second]))
    with pytest.raises(ValueError, match="at least 4"):
        real_baseline(real[:3])


def test_feature_extractor_pools_a_named_layer():
    network = _small_network()
    extractor = FeatureExtractor(network, "2")
    features = extractor(torch.rand(3, 1, 32, 32))
    assert features.shape == (3, 6)
    assert FeatureExtractor(network, "6")(torch.rand(2, 1, 32, 32)).shape == (2, 2)  # a (B, C) output as it is
    assert network.training  # put back as it was
    with pytest.raises(ValueError, match="has no layer 'conv9'.*its layers: 0, 1, 2"):
        FeatureExtractor(network, "conv9")
    entries = [{"image": np.full((1, 32, 32), value, np.float32)} for value in (0.1, 0.5, 0.9)]
    assert extract_features(extractor, entries, lambda entry: entry, batch_size=2).shape == (3, 6)


def test_report_writes_json_and_markdown(tmp_path):
    real = _features(20)
    baseline, _, _ = real_baseline(real, n_resamples=20)
    report = RealismReport({"Pix2Pix-N": realism_score(real, _features(seed=4, shift=1.0), n_resamples=20)},
                           baseline, {"real": 20, "Pix2Pix-N": 60, "real_half_1": 10, "real_half_2": 10},
                           {"network": "DenseNet121", "layer": "features", "dimension": 6})
    files = report.write(tmp_path)
    assert set(files) == {"realism.json", "realism.md"}
    document = json.loads(files["realism.json"].read_text())
    assert document["scores"]["Pix2Pix-N"]["value"] > document["real_vs_real"]["value"]
    text = files["realism.md"].read_text()
    assert "| Pix2Pix-N | 60 |" in text and "| real vs real (two halves) | 10 + 10 |" in text
    assert set(report.metrics()) == {"fid_pix2pix_n", "fid_pix2pix_n_ci_low", "fid_pix2pix_n_ci_high",
                                     "fid_real_vs_real", "fid_real_vs_real_ci_low", "fid_real_vs_real_ci_high"}


# ----------------------------------------------------------------------------------------------------------
# on phantoms: a boxes datalist, two "synthetic" sets written as the generator writes them, the grid figure


@pytest.fixture(scope="module")
def augmentation_sets(classification_phantoms, tmp_path_factory):
    root = tmp_path_factory.mktemp("realism")
    datalist = root / "boxes.json"
    build_nih_boxes_datalist(classification_phantoms / "Data_Entry_2017.csv",
                             classification_phantoms / "BBox_List_2017.csv", classification_phantoms / "images",
                             datalist, classes=["Effusion", "Cardiomegaly", "Nodule", "Mass"], healthy=0,
                             box_image_size=256, test_fraction=0.5)
    images = classification_phantoms / "images"
    real = load_datalist(datalist, ["training", "test"], base_dir=images)
    synthetic = {}
    for name, (gain, noise) in {"Pix2Pix": (1.0, 0.02), "Pix2Pix-N": (0.6, 0.2)}.items():
        folder = root / name.lower()
        (folder / "images").mkdir(parents=True)
        rng, entries = np.random.default_rng(0), []
        for number, entry in enumerate(real):
            from cxr_monai.io import LoadCXRImaged

            pixels = np.asarray(LoadCXRImaged(keys="image", ensure_channel_first=True)(
                {"image": entry["image"]})["image"])[0]
            pixels = np.clip(gain * pixels + noise * rng.normal(size=pixels.shape), 0, 1)
            path = folder / "images" / f"{number:03d}.png"
            Image.fromarray((pixels * 65535).astype(np.uint16)).save(path)
            entries.append({"image": f"images/{path.name}", "boxes": entry["boxes"], "box_labels": entry["box_labels"],
                            "source": entry["image"], "synthetic": True})
        (folder / "synthetic.json").write_text(json.dumps({"name": name, "training": entries}))
        synthetic[name] = folder / "synthetic.json"
    return {"datalist": datalist, "images": images, "real": real, "synthetic": synthetic}


def test_grid_figure(augmentation_sets, tmp_path):
    real = augmentation_sets["real"]
    synthetic = {name: load_datalist(path, "training") for name, path in augmentation_sets["synthetic"].items()}
    classes = ["Cardiomegaly", "Effusion", "Pneumothorax"]  # no phantom has a Pneumothorax box: grey tiles
    path = write_augmentation_grid(tmp_path / "fig2.png", real, synthetic, classes, tile_size=96)
    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    header = int(np.clip(96 // 8, 16, 32))
    assert height == header + 2 + 3 * (96 + 2)
    assert width == augmentation_grid(real, synthetic, classes, tile_size=96).shape[1] >= 80 + 3 * 98
    label_width = width - 3 * 98
    first_tile = pixels[header + 2: header + 2 + 96, label_width: label_width + 96]
    assert ((first_tile == [255, 64, 64]).all(axis=-1)).sum() > 50  # the box outline is drawn
    grey_tile = pixels[header + 2: header + 2 + 96, label_width + 2 * 98: label_width + 2 * 98 + 96]
    assert (grey_tile == 200).all()
    # a column shows one real image and the synthetic images made from it
    from cxr_monai.apps.augmentation.figures import _columns

    column = _columns(real, synthetic, "Cardiomegaly")
    assert column[1]["source"] == column[2]["source"] == column[0]["image"]


def test_evaluate_realism_writes_the_report_and_logs_it(augmentation_sets, tmp_path):
    from monai.transforms import Compose, Resized
    from monai.utils import path_to_sqlite_uri

    from cxr_monai.io import LoadCXRImaged

    network = _small_network()
    model_path = tmp_path / "model.pt"
    torch.save(network.state_dict(), model_path)
    transform = Compose([LoadCXRImaged(keys="image", ensure_channel_first=True),
                         Resized(keys="image", spatial_size=(64, 64))])
    tracking_uri = path_to_sqlite_uri(str(tmp_path / "mlruns.db"))
    report = evaluate_realism(augmentation_sets["datalist"], augmentation_sets["synthetic"], _small_network(), "2",
                              tmp_path / "realism", transform, model_path=model_path,
                              base_dir=augmentation_sets["images"], real_key=["training", "test"], n_resamples=50,
                              tile_size=64, tracking_uri=tracking_uri, experiment_name="realism_test")
    assert set(report.scores) == {"Pix2Pix", "Pix2Pix-N"}
    assert report.scores["Pix2Pix-N"].value > report.scores["Pix2Pix"].value
    for name in ("realism.json", "realism.md", "realism.png"):
        assert (tmp_path / "realism" / name).is_file()
    assert report.feature["dimension"] == 6 and report.counts["real"] == len(augmentation_sets["real"])
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("realism_test").experiment_id])[0]
    assert run.data.metrics["eval_fid_pix2pix_n"] == pytest.approx(report.scores["Pix2Pix-N"].value)
    with pytest.raises(ValueError, match="does not fit the feature network"):
        evaluate_realism(augmentation_sets["datalist"], augmentation_sets["synthetic"], torch.nn.Conv2d(1, 2, 3),
                         "", tmp_path / "bad", transform, model_path=model_path, base_dir=augmentation_sets["images"])
