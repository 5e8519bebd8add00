"""The context-encoder bundle end to end, through ``python -m monai.bundle`` as a user runs it.

Phantoms at 256 px, the ``small`` override and a few iterations per epoch keep each run to seconds; one
training run (``trained``) serves the inference/evaluation test and the re-run test, and the checks are on what a
user gets: checkpoints, ``models/model.pt``, PNGs, the evaluation table and the MLflow store. The conventions every
bundle shares (metadata schema, net in/out, TorchScript export, a SIGKILL mid-epoch and resume, two processes under
torchrun) are checked in test_bundle_conventions.py, whose ``BUNDLES`` entry for this bundle uses the same
``SHORT_RUN``.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import mlflow
import pytest
import torch

from cxr_monai.handlers import latest_checkpoint

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "context_encoder"
CONFIGS = BUNDLE / "configs"

# A run of 3 epochs (G-L2, D-only, joint) of 4 iterations each (CONTEXT_ENCODER_TINY in test_bundle_conventions.py).
SHORT_RUN = {"working_size": 256, "max_epochs": 3, "g_l2_epochs": 1, "d_only_epochs": 1, "epoch_length": 4,
             "patches_per_image": 8, "val_patches_per_image": 2}


@pytest.fixture(scope="module")
def command(bundle_command):
    """``command(configs, output_dir, data_dir, tracking=False, **overrides)``: a ``monai.bundle run`` of this bundle."""

    def build(configs: list[str], output_dir: Path, data_dir: Path, tracking: bool = False, **overrides) -> list[str]:
        return bundle_command(BUNDLE, configs, dataset_dir=data_dir, datalist=data_dir / "datalist.json",
                              output_dir=output_dir, tracking=CONFIGS / "mlflow.json" if tracking else None,
                              **overrides)

    return build


@pytest.fixture(scope="module")
def trained(bundle_phantoms, tmp_path_factory, command, run_bundle) -> Path:
    """The output folder of one ``SHORT_RUN`` training with MLflow tracking; copy it before changing it."""
    out = tmp_path_factory.mktemp("context_encoder") / "run"
    run_bundle(command(["train.json", "small.json"], out, bundle_phantoms, tracking=True, **SHORT_RUN),
               out.parent / "train.log")
    return out


def _runs(output_dir: Path) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{output_dir / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("context_encoder")
    return client, client.search_runs(experiment.experiment_id)


def test_train_json_alone_is_the_paper_setting():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    seed_001 = {  # docs/README.md "Paper -> config"
        "patch_size": 128, "patches_per_image": 20, "hole_size": 64, "hole_overlap": 0, "border_band": 4,
        "border_weight": 10.0, "lambda_l2": 0.998, "lambda_adv": 0.002, "learning_rate": 0.0002,
        "adam_betas": [0.5, 0.999], "g_l2_epochs": 2, "d_only_epochs": 4, "max_epochs": 90, "working_size": 1024,
        "g_base_channels": 128, "g_bottleneck_channels": 4096, "d_base_channels": 128,
    }
    assert {key: parser.get_parsed_content(key) for key in seed_001} == seed_001
    with torch.device("meta"):  # the paper's networks, counted without allocating 1.4 GB
        generator = parser.get_parsed_content("generator_def")
        discriminator = parser.get_parsed_content("discriminator_def")
        assert generator(torch.empty(2, 1, 128, 128)).shape == (2, 1, 64, 64)
        assert discriminator(torch.empty(2, 1, 64, 64)).shape == (2, 1)
    assert sum(p.numel() for p in generator.parameters()) == 357_069_953
    collate = parser.get_parsed_content("patch_collate")
    assert (collate.hole.hole.hole_size, collate.hole.hole.overlap) == (64, 0)
    assert int((collate.hole.weight == 10.0).sum()) == 64**2 - 56**2


@pytest.mark.slow
def test_train_infer_evaluate(trained, bundle_phantoms, tmp_path, command, run_bundle):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    assert latest_checkpoint(out / "checkpoints").name == "checkpoint_12.pt"
    weights = torch.load(out / "models" / "model.pt", weights_only=True)
    assert "decoder.4.conv.bias" in weights or any(k.startswith("decoder.") for k in weights)
    assert sorted(p.name for p in (out / "grids").glob("*.png")) == [f"grid_epoch000{e}.png" for e in (1, 2, 3)]

    client, runs = _runs(out)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    for key in ("l2", "loss", "g_loss", "d_loss", "g_adv", "minimax_value", "d_real", "d_fake", "phase", "val_psnr",
                "val_ssim"):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run.info.run_id, "l2")) == 12
    phases = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "phase"))
    assert [value for _, value in phases] == [0.0] * 4 + [1.0] * 4 + [2.0] * 4 and run.data.tags["phase"] == "joint"
    assert run.data.params["lambda_l2"] == "0.998" and run.data.params["patch_size"] == "128"
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "skipped.csv" in artifacts and any(a.startswith("config_") for a in artifacts)
    assert "grids/grid_epoch0003.png" in [a.path for a in client.list_artifacts(run.info.run_id, "grids")]
    assert run.data.tags["model_path"] == "models/model.pt"
    assert (out / "skipped.csv").read_text().splitlines() == ["stage,image,reason"]  # nothing skipped

    run_bundle(command(["train.json", "small.json", "inference.json"], out, bundle_phantoms, working_size=256,
                       infer_max_images=2, channels_last=True), tmp_path / "infer.log")  # the GPU default, on the CPU
    index = (out / "inference" / "index.csv").read_text().splitlines()
    assert any(",heatmap," in row or "heatmap" in row for row in index[1:])
    assert list((out / "inference" / "heatmaps").glob("*_overlay.png"))
    assert list((out / "inference" / "patches").glob("*_diff.png"))
    run_bundle(command(["train.json", "small.json", "inference.json"], out, bundle_phantoms, working_size=256,
                       infer_max_images=1, infer_datalist_key="test", inference_dir=str(out / "screen")),
               tmp_path / "screen.log")  # healthy images carry no boxes: heatmaps only
    screen = list(csv.DictReader(open(out / "screen" / "index.csv", newline="")))
    assert sorted(row["kind"] for row in screen) == ["heatmap", "overlay", "skipped"]

    moved = tmp_path / "moved" / "run"  # the output folder, MLflow store included, moved before evaluation
    moved.parent.mkdir()
    shutil.move(out, moved)
    out = moved
    run_bundle(command(["train.json", "small.json", "evaluate.json"], out, bundle_phantoms, tracking=True,
                       working_size=256, eval_patches_per_image=2),
               tmp_path / "evaluate.log")
    report = json.loads((out / "evaluation" / "report.json").read_text())
    assert report["counts"]["healthy"] > 0 and report["counts"]["unhealthy"] > 0
    assert "| PSNR |" in (out / "evaluation" / "table.md").read_text()
    image_counts = report["image_level"]["counts"]  # eval_image_level is on by default
    assert image_counts["healthy"] > 0 and image_counts["unhealthy"] > 0
    assert (out / "evaluation" / "per_image.csv").exists()
    client, runs = _runs(out)
    evaluate_runs = [r for r in runs if r.info.run_name == "evaluate"]
    assert len(evaluate_runs) == 1
    # (no eval_image_auroc: 5 healthy test images are fewer than eval_min_images_per_class)
    assert {"eval_healthy_psnr_mean", "eval_n_healthy_images"} <= set(evaluate_runs[0].data.metrics)
    tags = evaluate_runs[0].data.tags
    assert tags["training_run_id"] == tags["mlflow.parentRunId"] == run.info.run_id
    assert tags["model_path"] == "models/model.pt" and tags["model_sha256"] == run.data.tags["model_sha256"]
    assert (out / "mlruns").as_uri() in client.get_run(run.info.run_id).info.artifact_uri  # found after the move
    assert client.download_artifacts(run.info.run_id, "grids/grid_epoch0003.png", str(tmp_path / "download"))


def _corrupt_copy(phantoms: Path, destination: Path, sets: dict[str, int]) -> dict[str, str]:
    """The phantoms with the image of entry ``index`` of each datalist key in ``sets`` cut to garbage."""
    shutil.copytree(phantoms, destination)
    datalist = json.loads((destination / "datalist.json").read_text())
    broken = {}
    for key, index in sets.items():
        image = destination / datalist[key][index]["image"]
        image.write_bytes(b"not an image")
        broken[key] = str(image)
    return broken


@pytest.mark.slow
def test_bad_images_are_skipped_and_too_many_stop_the_run_in_one_line(bundle_phantoms, tmp_path, command,
                                                                      run_bundle):
    data = tmp_path / "data"
    broken = _corrupt_copy(bundle_phantoms, data, {"training": 0, "test_unhealthy": 0})
    out = tmp_path / "tolerant"
    one_epoch = {**SHORT_RUN, "max_epochs": 1, "epoch_length": 2}  # each load takes every image: 2 iterations do
    run_bundle(command(["train.json", "small.json"], out, data, tracking=True, max_skipped_fraction=0.2,
                       **one_epoch), tmp_path / "tolerant.log")
    rows = list(csv.DictReader(open(out / "skipped.csv", newline="")))
    assert [(row["stage"], row["image"]) for row in rows] == [("training", broken["training"])]
    assert f"skipping {broken['training']} (training)" in (tmp_path / "tolerant.log").read_text()
    assert latest_checkpoint(out / "checkpoints").name == "checkpoint_2.pt"
    client, [run] = _runs(out)
    assert run.info.status == "FINISHED"

    run_bundle(command(["train.json", "small.json", "inference.json"], out, data, working_size=256,
                       max_skipped_fraction=0.2), tmp_path / "infer.log")
    rows = list(csv.DictReader(open(out / "inference" / "skipped.csv", newline="")))
    assert [(row["stage"], row["image"]) for row in rows] == [("inference", broken["test_unhealthy"])]

    strict = tmp_path / "strict"  # the default max_skipped_fraction, 0.05: 1 of 9 training images is too many
    result = run_bundle(command(["train.json", "small.json"], strict, data, tracking=True, **one_epoch), check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("TooManySkippedError: training: 1 of 9 images could not be used")
    assert broken["training"] in last
    assert "Traceback" not in result.stderr and "applying transform" not in result.stdout + result.stderr
    client, [run] = _runs(strict)
    assert run.info.status == "FAILED" and broken["training"] in run.data.tags["failure"]


@pytest.mark.slow
def test_finished_run_rerun_rewrites_model_pt_and_resume_false_means_false(trained, bundle_phantoms, tmp_path,
                                                                           command, run_bundle):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    final = torch.load(latest_checkpoint(out / "checkpoints"), weights_only=True)["g_network"]
    torch.save({"stale": torch.zeros(1)}, out / "models" / "model.pt")  # what a kill in the last save leaves
    leftovers = [out / "models" / ".model.pt.x1y2z3a4.tmp", out / "checkpoints" / "tmpa1b2c3d4"]
    for path in leftovers:
        path.write_bytes(b"half")
    run_bundle(command(["train.json", "small.json"], out, bundle_phantoms, **SHORT_RUN), tmp_path / "rerun.log")
    written = torch.load(out / "models" / "model.pt", weights_only=True)
    assert set(written) == set(final) and all(torch.equal(written[key], final[key]) for key in final)
    assert not any(path.exists() for path in leftovers)
    assert "training was already complete at iteration 12" in (tmp_path / "rerun.log").read_text()

    fresh = command(["train.json", "small.json"], out, bundle_phantoms, **{**SHORT_RUN, "max_epochs": 1,
                                                                          "epoch_length": 1})
    fresh += ["--resume", "false"]  # as a user types it: Python Fire passes the string 'false'
    run_bundle(fresh, tmp_path / "fresh.log")
    log = (tmp_path / "fresh.log").read_text()
    assert "resumed from" not in log
    assert "moved the 2 checkpoints of an earlier run" in log  # the last two are kept
    assert len(list((out / "checkpoints").glob("previous_*"))) == 1
    assert latest_checkpoint(out / "checkpoints").name == "checkpoint_1.pt"
