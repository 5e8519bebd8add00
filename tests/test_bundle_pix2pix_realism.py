"""``bundles/pix2pix_augmentation/configs/evaluate.json`` end to end on the classification phantoms: the realism of two
synthetic sets on a feature network's model file (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow


def _noisy_copies(real: list[dict], folder: Path, noise: float) -> Path:
    """A synthetic set as the generator writes it (``synthetic.json``, ``training``, paths relative to it, ``source``):
    the real images plus Gaussian noise of ``noise`` (standard deviation, [0, 1] intensity)."""
    from cxr_monai.io import LoadCXRImaged

    (folder / "images").mkdir(parents=True)
    rng, entries = np.random.default_rng(0), []
    for number, entry in enumerate(real):
        pixels = np.asarray(LoadCXRImaged(keys="image", ensure_channel_first=True)({"image": entry["image"]})["image"])[0]
        pixels = np.clip(pixels + noise * rng.normal(size=pixels.shape), 0, 1)
        Image.fromarray((pixels * 65535).astype(np.uint16)).save(folder / "images" / f"{number:03d}.png")
        entries.append({"image": f"images/{number:03d}.png", "boxes": entry["boxes"], "box_labels": entry["box_labels"],
                        "source": entry["image"], "synthetic": True})
    (folder / "synthetic.json").write_text(json.dumps({"name": folder.name, "training": entries}))
    return folder / "synthetic.json"


def test_evaluate_json_scores_synthetic_sets(classification_phantoms, tmp_path, bundle_command, run_bundle):
    from mlflow import MlflowClient
    from monai.utils import path_to_sqlite_uri

    from cxr_monai.data import load_datalist
    from cxr_monai.data.builders.nih_boxes import build_nih_boxes_datalist
    from cxr_monai.networks import CXRDenseNet121

    datalist = tmp_path / "boxes.json"
    build_nih_boxes_datalist(classification_phantoms / "Data_Entry_2017.csv",
                             classification_phantoms / "BBox_List_2017.csv", classification_phantoms / "images",
                             datalist, classes=["Effusion", "Cardiomegaly", "Nodule", "Mass"], healthy=2,
                             box_image_size=256, test_fraction=0.5)
    real = load_datalist(datalist, ["training", "test"], base_dir=classification_phantoms / "images")
    synthetic = {"Pix2Pix": _noisy_copies(real, tmp_path / "pix2pix", 0.02),
                 "Pix2Pix-N": _noisy_copies(real, tmp_path / "pix2pix_n", 0.2)}
    torch.manual_seed(0)
    feature_model = tmp_path / "classifier_model.pt"  # stands for the classifier bundle's model.pt
    torch.save(CXRDenseNet121(in_channels=1, num_classes=3, block_config=[1, 1, 1, 1]).state_dict(), feature_model)
    output_dir = tmp_path / "runs"
    run_bundle(bundle_command("pix2pix_augmentation", ["train.json", "evaluate.json"],
                              dataset_dir=classification_phantoms / "images", datalist=datalist, output_dir=output_dir,
                              synthetic_datalists={name: str(path) for name, path in synthetic.items()},
                              feature_model_path=feature_model, feature_num_classes=3,
                              **{"feature_network_def#block_config": [1, 1, 1, 1]}, feature_image_size=128,
                              realism_bootstrap_resamples=50, figure_tile_size=64), timeout=300)
    document = json.loads((output_dir / "realism" / "realism.json").read_text())
    assert set(document["scores"]) == {"Pix2Pix", "Pix2Pix-N"}
    assert document["scores"]["Pix2Pix-N"]["value"] > document["scores"]["Pix2Pix"]["value"]
    assert document["real_vs_real"]["value"] >= 0 and document["feature"]["dimension"] == 68
    assert document["counts"]["real"] == len(load_datalist(datalist, "test"))
    with Image.open(output_dir / "realism" / "realism.png") as figure:
        assert figure.size[1] == 16 + 2 + 3 * (64 + 2)  # header and the rows Real, Pix2Pix, Pix2Pix-N
    client = MlflowClient(tracking_uri=path_to_sqlite_uri(str((output_dir / "mlruns.db").resolve())))
    run = client.search_runs([client.get_experiment_by_name("pix2pix_augmentation").experiment_id])[0]
    assert run.info.run_name == "realism" and "eval_fid_pix2pix_n" in run.data.metrics
    assert {item.path for item in client.list_artifacts(run.info.run_id, "realism")} >= {
        "realism/realism.json", "realism/realism.md", "realism/realism.png"}
