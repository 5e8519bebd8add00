"""``bundles/pix2pix_augmentation``: the seed's setting in ``train.json`` (fast), then end-to-end runs on the
classification phantoms (slow): Pix2Pix and Pix2Pix-N train a few iterations, the generator writes the synthetic set,
whose box pixels must be the resized source's and whose datalist must load. The wiring is the point, not the images."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "pix2pix_augmentation"
CONFIGS = BUNDLE / "configs"
TINY = {"image_size": 64, "load_size": 72, "g_channels": [8, 16, 32, 32], "d_channels": 8, "max_epochs": 2,
        "checkpoint_every": 0}
PER_BOX = 2
BOX_KEYS = ("image", "lung_mask", "lung_boxes", "boxes", "box_labels")


def pix2pix_phantom_datalist(phantoms: Path) -> Path:
    """The datalist the bundle reads, from the classification phantoms (written next to them, not into them): the
    boxed images split into ``training`` (4), ``validation`` (1) and ``test``, the others ``healthy``; absolute
    paths. Idempotent."""
    out = phantoms.parent / f"{phantoms.name}_pix2pix" / "datalist.json"
    if out.is_file():
        return out
    source = json.loads((phantoms / "datalist.json").read_text())
    entries = [e for split in ("training", "validation", "test", "test_unhealthy") for e in source.get(split, [])]

    def absolute(entry: dict) -> dict:
        kept = {key: value for key, value in entry.items() if key in BOX_KEYS}
        return {**kept, **{key: str(phantoms / kept[key]) for key in ("image", "lung_mask") if key in kept}}

    boxed = [absolute(e) for e in entries if e.get("boxes")]
    healthy = [absolute(e) for e in entries if not e.get("boxes")]
    assert len(boxed) >= 6 and healthy, "the classification phantoms changed: pick other splits"
    document = {"name": "pix2pix phantoms", "description": "classification phantoms, boxed and healthy",
                "training": boxed[:4], "validation": boxed[4:5], "test": boxed[5:], "healthy": healthy}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1))
    return out


def test_train_json_is_the_seed_setting():
    from monai.bundle import ConfigParser

    from cxr_monai.losses import AdversarialBCELoss

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"device": "$torch.device('cpu')"})
    for key in ("g_optimizer", "d_optimizer"):
        group = parser.get_parsed_content(key).param_groups[0]
        assert group["lr"] == 2e-4 and tuple(group["betas"]) == (0.5, 0.999)
    assert isinstance(parser.get_parsed_content("adversarial_loss"), AdversarialBCELoss)
    loss = parser.get_parsed_content("g_loss")
    assert (loss.lambda_adv, loss.lambda_l1, loss.lambda_ssim) == (1.0, 100.0, 0.0)
    assert parser.get_parsed_content("image_size") == 256 and parser.get_parsed_content("healthy_limit") == 2000
    assert parser.get_parsed_content("use_healthy") is False  # Pix2Pix unless asked for Pix2Pix-N
    generator = parser.get_parsed_content("generator_def")
    unet = generator.generator
    convs = [m for m in unet.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert all(conv.kernel_size == (4, 4) for conv in convs)  # pix2pix's 4 x 4 U-Net ...
    assert [m.p for m in unet.modules() if isinstance(m, torch.nn.Dropout)] == [0.5] * 3  # ... decoder dropout
    assert isinstance(unet.out[-1], torch.nn.Tanh) and generator.mask_input and convs[0].in_channels == 2
    discriminator = parser.get_parsed_content("discriminator_def")
    logits = discriminator(torch.zeros(1, 3, 256, 256))
    assert len(logits) == 1 and logits[0].shape[-1] == 30  # one 70 x 70 PatchGAN: 30 x 30 logits at 256 px


@pytest.fixture(scope="module")
def datalist(classification_phantoms) -> Path:
    return pix2pix_phantom_datalist(classification_phantoms)


def _train(bundle_command, run_bundle, datalist: Path, out: Path, **overrides) -> None:
    run_bundle(bundle_command("pix2pix_augmentation", ["train.json", "small.json"], dataset_dir=datalist.parent,
                              datalist=datalist, output_dir=out, **TINY, **overrides),
               out.parent / f"{out.name}.log", timeout=300)


def _iterations(out: Path) -> int:
    from cxr_monai.handlers import latest_checkpoint

    return torch.load(latest_checkpoint(out / "checkpoints"), weights_only=True)["engine"]["iteration"]


@pytest.mark.slow
def test_pix2pix_and_pix2pix_n_train_and_generate_a_synthetic_set(datalist, bundle_command, run_bundle,
                                                                  tmp_path_factory):
    from cxr_monai.data import load_datalist
    from cxr_monai.io import read_cxr
    from cxr_monai.transforms import ResizeWithBoxes, box_mask

    work = tmp_path_factory.mktemp("pix2pix")
    document = json.loads(datalist.read_text())
    pairs = sum(len(entry["boxes"]) for entry in document["training"])
    batch = json.loads((CONFIGS / "small.json").read_text())["batch_size"]

    _train(bundle_command, run_bundle, datalist, work / "pix2pix", tracking=CONFIGS / "mlflow.json")
    with sqlite3.connect(work / "pix2pix" / "mlruns.db") as db:
        metrics = {name for (name,) in db.execute("select distinct key from metrics")}
    assert {"g_loss", "d_loss", "l1", "g_adv", "val_psnr", "val_mae"} <= metrics  # the validation split is used
    assert _iterations(work / "pix2pix") == TINY["max_epochs"] * -(-pairs // batch)  # one pair per box
    assert len(list((work / "pix2pix" / "grids").glob("grid_epoch*.png"))) == TINY["max_epochs"]
    _train(bundle_command, run_bundle, datalist, work / "pix2pix_n", use_healthy=True, healthy_limit=10)
    assert _iterations(work / "pix2pix_n") == TINY["max_epochs"] * -(-(pairs + 10) // batch)  # + healthy images

    run_bundle(bundle_command("pix2pix_augmentation", ["train.json", "small.json", "inference.json"],
                              dataset_dir=datalist.parent, datalist=datalist, output_dir=work / "pix2pix_n",
                              synthetic_per_box=PER_BOX, **TINY), work / "inference.log", timeout=300)
    out = work / "pix2pix_n" / "synthetic"
    assert len(list((out / "images").glob("*.png"))) == pairs * PER_BOX
    synthetic = load_datalist(out / "synthetic.json", "training")
    combined = load_datalist(out / "datalist.json", "training")
    assert len(synthetic) == pairs * PER_BOX and all(entry["synthetic"] for entry in synthetic)
    assert len(combined) == len(document["training"]) + len(synthetic)  # Ori + the synthetic images
    assert len(load_datalist(out / "datalist.json", "test")) == len(document["test"])
    size = TINY["image_size"]
    for entry in synthetic:
        image, _ = read_cxr(entry["image"])
        assert image.shape == (size, size)
        source, _ = read_cxr(entry["source"])
        resized, _ = ResizeWithBoxes(size)(torch.from_numpy(source)[None], None)
        inside = box_mask(entry["boxes"], (size, size))
        assert inside.any() and entry["box_labels"][0] != "No Finding"
        np.testing.assert_allclose(image[inside], resized[0].numpy()[inside], atol=1.0 / 65535)  # 16-bit PNG
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == pairs * PER_BOX and summary["sample_pairs_compared"] == pairs * (PER_BOX - 1)
    assert summary["dropout_at_generation"] and summary["mean_abs_difference_outside_box"] is not None
