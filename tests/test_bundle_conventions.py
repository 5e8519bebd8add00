"""The MONAI bundle conventions, checked on every bundle under ``bundles/`` (issue #10).

Each entry of ``BUNDLES`` describes one bundle; every test here runs once per entry:

- fast: ``metadata.json`` against the vendored schema, ``verify_net_in_out`` with the quick-training configs,
  ``ckpt_export`` of the network's weights to TorchScript that computes what the eager network computes;
- slow (``-m slow``): a quick training SIGKILLed after its first checkpoint and resumed, which must end at the
  same iteration as an uninterrupted run (its outputs are shared by the test of ``models/model.pt``), and the
  multi-GPU config under ``torchrun`` with 2 processes on gloo.

The slow runs of one bundle should stay within about 3 minutes on 2 busy CPU cores: pick ``tiny`` overrides that
make an epoch a few iterations on small images. Bundle-specific assertions on the same runs go in ``checks``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "cxr_monai" / "schemas" / "bundle_metadata.schema.json"


def phantom_data(root: Path) -> dict[str, Path]:
    """The overrides pointing a bundle at a phantom folder from ``generate_phantoms``."""
    return {"dataset_dir": root, "datalist": root / "datalist.json"}


def _pix2pix_data(root: Path) -> dict[str, Path]:
    """The classification phantoms as the pix2pix bundle reads them (boxed images in training / validation / test,
    the others healthy), a datalist written next to the phantom folder."""
    from test_bundle_pix2pix import pix2pix_phantom_datalist

    datalist = pix2pix_phantom_datalist(root)
    return {"dataset_dir": datalist.parent, "datalist": datalist}


def _localisation_data(root: Path) -> dict[str, Path]:
    """The classification phantoms' boxed images as the localisation bundle reads them (a datalist written next to
    the phantom folder)."""
    from test_bundle_localisation import localisation_phantom_datalist

    return {"dataset_dir": root, "datalist": localisation_phantom_datalist(root)}


def _torchvision_unusable() -> str | None:
    from cxr_monai.utils import require_torchvision

    try:
        require_torchvision()
    except ImportError as error:
        return str(error)
    return None


@dataclass
class Run:
    """What a bundle-specific check gets: the run's output folder, its log, the last checkpoint, the data."""

    spec: BundleSpec
    output_dir: Path
    log: str
    final: dict
    data_dir: Path
    overrides: dict


@dataclass(frozen=True)
class BundleSpec:
    """One bundle, as the tests here run it. Only ``name``, ``net_id`` and ``input_shape`` have no default."""

    name: str  # the folder under bundles/
    net_id: str  # the network in the configs: "network_def" (MONAI's default) or e.g. "generator_def"
    input_shape: tuple[int, ...]  # (N, C, *spatial) of a random batch for the exported network, as in metadata.json
    train_configs: tuple[str, ...] = ("train.json", "small.json")  # a quick training; also define the network
    multi_gpu_configs: tuple[str, ...] = ("multi_gpu_train.json",)  # added after train_configs under torchrun
    tiny: Mapping[str, Any] = field(default_factory=dict)  # overrides for every run here: small sizes, few iterations
    resume: Mapping[str, Any] = field(default_factory=dict)  # more overrides for kill-and-resume (checkpoint_every...)
    resume_iterations: int = 0  # the trainer's last iteration with tiny + resume
    ddp: Mapping[str, Any] = field(default_factory=dict)  # more overrides for the torchrun run
    ddp_iterations: int = 0  # the trainer's last iteration with tiny + ddp (per rank)
    phantoms: str = "bundle_phantoms"  # the conftest fixture with the phantom folder
    data: Callable[[Path], Mapping[str, Any]] = phantom_data  # that folder -> overrides (dataset_dir, datalist...)
    verify_args: Mapping[str, Any] = field(default_factory=dict)  # p / n / any of verify_net_in_out, for symbolic shapes
    key_in_ckpt: str = ""  # ckpt_export's key_in_ckpt: "" where models/model.pt is the network's state_dict
    checkpoint_network_key: str = "network"  # the network's state_dict in checkpoints/checkpoint_<iteration>.pt
    tracking: str | None = None  # a config under configs/ passed as --tracking (e.g. "mlflow.json"), or None
    mlflow_experiment: str | None = None  # with tracking: the experiment in <output_dir>/mlruns.db
    mlflow_metric: str = "loss"  # with tracking: a metric logged every iteration
    checks: Mapping[str, Callable[[Run], None]] = field(default_factory=dict)  # "resume" / "ddp": extra assertions
    own_mlflow_trainer_keys: tuple[str, ...] = ("output_transform", "tag_name")  # may differ from the template
    own_multi_gpu_keys: tuple[str, ...] = ()  # keys of multi_gpu_train.json that may differ from the template
    output_channels: int | None = None  # the exported network's channels where tiny changes metadata.json's
    output_key: str | None = None  # a network returning a dict of tensors: the output checked (its metadata entry)
    unavailable: Callable[[], str | None] = lambda: None  # why every test of the bundle is skipped here, or None
    exempt: Mapping[str, str] = field(default_factory=dict)  # test function name -> why it cannot apply (skipped)
    env: Mapping[str, str] = field(default_factory=dict)  # more environment of the slow runs (e.g. OMP_NUM_THREADS)

    @property
    def root(self) -> Path:
        return REPO / "bundles" / self.name

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def metadata(self) -> Path:
        return self.configs / "metadata.json"


def _mlflow_runs(output_dir: Path, experiment: str):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{output_dir / 'mlruns.db'}")
    return client, client.search_runs(client.get_experiment_by_name(experiment).experiment_id)


def _parser(spec: BundleSpec, **overrides):
    """The quick-training configs of ``spec`` with its metadata and ``tiny``, parsed in this process."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(spec.configs / name) for name in spec.train_configs])
    parser.read_meta(str(spec.metadata))
    parser.update({"bundle_root": str(spec.root), **spec.tiny, **overrides})
    return parser


# ----------------------------------------------------------------------------------------------------------
# bundle-specific checks


CONTEXT_ENCODER_TINY = {"working_size": 256, "max_epochs": 3, "g_l2_epochs": 1, "d_only_epochs": 1,
                        "epoch_length": 4, "patches_per_image": 8, "val_patches_per_image": 2}


def _context_encoder_validation_psnr(run: Run) -> float:
    """The bundle's validation of ``models/model.pt`` (channels-last) in this process, as a single-GPU run does it."""
    parser = _parser(run.spec, **{key: str(value) for key, value in run.spec.data(run.data_dir).items()},
                     output_dir=str(run.output_dir / "models"))
    generator = parser.get_parsed_content("generator")
    generator.load_state_dict(torch.load(run.output_dir / "models" / "model.pt", weights_only=True))
    generator.to(memory_format=torch.channels_last)  # as the torchrun run held it: the same float rounding
    evaluator = parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    return evaluator.state.metrics["val_psnr"]


def _context_encoder_ddp(run: Run) -> None:
    client, runs = _mlflow_runs(run.output_dir, run.spec.mlflow_experiment)
    assert "d_loss" in runs[0].data.metrics
    assert {"g_scaler", "d_scaler"} <= set(run.final) and run.final["g_scaler"] != {}  # float16 AMP, scaled, DDP
    # the logged validation is model.pt's: rank 0 validates the whole set with the weights it checkpoints. (Each
    # rank's BatchNorm running statistics drift apart between DDP's buffer broadcasts, so splitting validation
    # across ranks, as the model zoo's DistributedSampler pattern does, moved this PSNR by 4e-4 dB.)
    last_val_psnr = client.get_metric_history(runs[0].info.run_id, "val_psnr")[-1].value
    assert last_val_psnr == pytest.approx(_context_encoder_validation_psnr(run), rel=1e-5)


# ----------------------------------------------------------------------------------------------------------
# the bundles

BUNDLES: list[BundleSpec] = [
    BundleSpec(
        name="context_encoder",
        net_id="generator_def",
        input_shape=(2, 1, 128, 128),
        tiny=CONTEXT_ENCODER_TINY,  # 3 epochs (G-L2, D-only, joint) of 4 iterations
        resume={"epoch_length": 6, "checkpoint_every": 2},
        resume_iterations=18,
        ddp={"epoch_length": 2, "channels_last": True, "use_amp": True},  # the CUDA defaults, on the CPU
        ddp_iterations=6,
        checkpoint_network_key="g_network",
        tracking="mlflow.json",
        mlflow_experiment="context_encoder",
        mlflow_metric="l2",
        checks={"ddp": _context_encoder_ddp},
        own_mlflow_trainer_keys=("output_transform", "tag_name", "phase_key", "phase_codes"),
        own_multi_gpu_keys=("generator", "discriminator", "network"),  # two DDP networks
    ),
    BundleSpec(
        name="lung_segmentation",
        net_id="network_def",
        input_shape=(2, 1, 128, 128),  # any size the VGG16 U-Net takes; metadata.json's 512 is checked above
        tiny={"image_size": 128, "width": 0.125, "max_epochs": 3},  # 9 training phantoms in batches of 4: 3 its
        resume={"checkpoint_every": 2},
        resume_iterations=9,
        ddp_iterations=6,  # 2 per epoch under torchrun (5 images a rank)
        checkpoint_network_key="network",
        tracking="mlflow.json",
        mlflow_experiment="lung_segmentation",
        mlflow_metric="loss",
    ),
    BundleSpec(
        name="bone_suppression",
        net_id="generator_def",
        input_shape=(2, 1, 64, 64),
        # 64 px, 4 levels; attention at the 8 px features (64 px at the 512 px of metadata.json's check)
        tiny={"image_size": 64, "g_channels": [8, 16, 32, 32], "attention_sizes": [8], "d_channels": 8,
              "max_epochs": 3},  # 9 training phantoms in batches of 4: 3 iterations an epoch
        resume={"checkpoint_every": 2},
        resume_iterations=9,
        ddp={"use_amp": True},  # float16 autocast and both gradient scalers, on the CPU
        ddp_iterations=6,  # 2 per epoch under torchrun (5 images a rank)
        checkpoint_network_key="g_network",
        tracking="mlflow.json",
        mlflow_experiment="bone_suppression",
        mlflow_metric="g_loss",
        own_multi_gpu_keys=("generator", "discriminator", "network"),  # two DDP networks
    ),
    BundleSpec(
        name="pix2pix_augmentation",
        net_id="generator_def",
        input_shape=(2, 2, 64, 64),  # the masked image and the box mask
        # 64 px (crops of 72 px), 4 levels; 10 training boxes (one pair each) in batches of 4: 3 iterations an epoch
        tiny={"image_size": 64, "load_size": 72, "g_channels": [8, 16, 32, 32], "d_channels": 8, "max_epochs": 3},
        phantoms="classification_phantoms",
        data=_pix2pix_data,
        resume={"checkpoint_every": 2},
        resume_iterations=9,
        ddp={"use_amp": True},  # float16 autocast and both gradient scalers, on the CPU
        ddp_iterations=6,  # 2 per epoch under torchrun (5 pairs a rank)
        checkpoint_network_key="g_network",
        tracking="mlflow.json",
        mlflow_experiment="pix2pix_augmentation",
        mlflow_metric="g_loss",
        own_multi_gpu_keys=("generator", "discriminator", "network"),  # two DDP networks
    ),
    BundleSpec(
        name="classifier",
        net_id="network_def",
        input_shape=(2, 1, 128, 128),
        # 128 px without the extra stem, one dense layer a block, the classification phantoms' 7 classes
        tiny={"image_size": 128, "downsample_input": False, "block_config": [1, 1, 1, 1], "num_classes": 7,
              "batch_size": 4, "max_epochs": 3},  # 12 training phantoms in batches of 4: 3 iterations an epoch
        verify_args={"_meta_#network_data_format#outputs#pred#num_channels": 7},
        output_channels=7,
        phantoms="classification_phantoms",
        resume={"checkpoint_every": 2},
        resume_iterations=9,
        ddp_iterations=6,  # 2 per epoch under torchrun (6 images a rank)
        tracking="mlflow.json",
        mlflow_experiment="classifier",
        mlflow_metric="loss",
        own_multi_gpu_keys=("network",),  # find_unused_parameters for the dual branch (studies without a lateral)
    ),
    BundleSpec(
        name="clasegnet",
        net_id="network_def",
        input_shape=(2, 1, 128, 128),
        # 128 px, one bottleneck a stage at small.json's quarter width; 9 training phantoms in batches of 4
        tiny={"image_size": 128, "layers": [1, 1, 1, 1], "batch_size": 4, "max_epochs": 2},
        output_key="image",  # a dict: image logit, region logits, segmentation logits
        phantoms="pneumothorax_phantoms",
        resume={"checkpoint_every": 2},
        resume_iterations=6,
        ddp_iterations=4,  # 2 per epoch under torchrun (5 images a rank)
        tracking="mlflow.json",
        mlflow_experiment="clasegnet",
        mlflow_metric="loss",
    ),
    BundleSpec(
        name="localisation",
        net_id="network_def",
        input_shape=(2, 1, 64, 64),
        # 64 px on a ResNet-18 FPN with a 32-wide box head, the classification phantoms' box labels (seed 0) as the
        # classes; 2 epochs of 2 steps, evaluated at steps 2 and 4
        tiny={"image_size": 64, "backbone": "resnet18", "representation_size": 32, "box_batch_size_per_image": 32,
              "class_names": ["Cardiomegaly", "Effusion", "Fracture", "Mass", "Nodule"], "steps_per_epoch": 2,
              "max_epochs": 2, "eval_every": 2, "report_steps": [2], "window": 2, "checkpoint_every": 100,
              "num_workers": 0},
        phantoms="classification_phantoms",
        data=_localisation_data,
        resume={"checkpoint_every": 2},  # killed after step 2, resumed for steps 3 and 4
        resume_iterations=4,
        ddp_iterations=4,  # epochs of steps_per_epoch iterations on every rank
        # one OpenMP thread a process, as in test_bundle_localisation.py: on 2 cores kept busy by other jobs, OpenMP
        # threads spinning for work made one tiny training take 51 s instead of 34 s (its 6 steps 23 s instead of 9)
        env={"OMP_NUM_THREADS": "1"},
        tracking="mlflow.json",
        mlflow_experiment="localisation",
        mlflow_metric="loss",
        unavailable=_torchvision_unusable,  # torchvision is the optional `detection` extra
        exempt={
            "test_network_in_out_shapes_match_metadata":
                "a detector takes a list of images and returns one dict of boxes, labels and scores per image, with "
                "a varying number of boxes: there is no output tensor whose shape verify_net_in_out could check "
                "(metadata.json describes the dicts)",
            "test_ckpt_export_gives_torchscript_that_computes_what_the_network_does":
                "torchvision's scripted detector returns (losses, detections) where the eager one returns the "
                "detections, so the two cannot be compared as tensors; the bundle has no TorchScript inference",
        },
    ),
]


@pytest.fixture(scope="module", params=BUNDLES, ids=lambda spec: spec.name)
def spec(request) -> BundleSpec:
    reason = request.param.unavailable()
    if reason:
        pytest.skip(f"{request.param.name}: {reason}")
    return request.param


def _skip_if_exempt(spec: BundleSpec, test: str) -> None:
    if test in spec.exempt:
        pytest.skip(f"{spec.name} is exempt: {spec.exempt[test]}")


@pytest.fixture(scope="module")
def data_dir(spec, request) -> Path:
    return request.getfixturevalue(spec.phantoms)


def _train_command(bundle_command, spec: BundleSpec, configs, output_dir: Path, data_dir: Path, **overrides):
    tracking = spec.configs / spec.tracking if spec.tracking else None
    settings = {**spec.data(data_dir), "output_dir": output_dir, "tracking": tracking, **spec.tiny, **overrides}
    return bundle_command(spec.name, configs, **settings)


def _env(spec: BundleSpec) -> dict[str, str] | None:
    """The environment of ``spec``'s bundle processes: this one's plus ``spec.env`` (None: this one's)."""
    return {**os.environ, **spec.env} if spec.env else None


def _iteration(checkpoint: Path) -> int:
    return int(checkpoint.stem.split("_")[1])


# ----------------------------------------------------------------------------------------------------------
# fast


def test_every_bundle_is_in_the_table():
    present = {path.parent.parent.name for path in (REPO / "bundles").glob("*/configs/metadata.json")}
    assert present <= {spec.name for spec in BUNDLES}, "add the new bundle to BUNDLES in this module"


def test_the_shared_pieces_are_the_templates():
    """A bundle is self-contained (model-zoo layout), so what every bundle shares is copied from
    ``cxr_monai/bundle_template`` (``python -m cxr_monai new-bundle``), not imported: the licence, the logging
    settings, the MLflow wiring and the multi-GPU set-up. They must not drift from it, and nothing may be left
    to fill in."""
    from cxr_monai.scaffold import FILL_IN, render_template

    for spec in BUNDLES:
        template = render_template(spec.name)
        for name in ("LICENSE", "configs/logging.conf"):
            assert (spec.root / name).read_text() == template[name], f"{spec.name}/{name} differs from the template"
        tracking = json.loads((spec.configs / "mlflow.json").read_text())
        expected = json.loads(template["configs/mlflow.json"])
        own = set(spec.own_mlflow_trainer_keys)  # what the bundle's trainer logs (its output_transform, phases)
        for key in own:
            expected["configs"]["trainer"].pop(key, None)
            tracking["configs"]["trainer"].pop(key, None)
        assert tracking == expected, f"{spec.name}/configs/mlflow.json differs from the template beyond {own}"
        gpu = json.loads((spec.configs / "multi_gpu_train.json").read_text())
        expected = json.loads(template["configs/multi_gpu_train.json"])
        for key in spec.own_multi_gpu_keys:  # e.g. two DDP-wrapped networks instead of one "network"
            gpu.pop(key, None)
            expected.pop(key, None)
        assert gpu == expected, f"{spec.name}/configs/multi_gpu_train.json differs from the template"
        for path in [*spec.configs.glob("*"), *(spec.root / "docs").glob("*")]:
            assert FILL_IN not in path.read_text(errors="replace"), f"{path} still has a '{FILL_IN}' part"


def test_new_bundle_writes_the_template_and_never_overwrites(tmp_path):
    from cxr_monai.scaffold import new_bundle

    root = new_bundle("demo_net", tmp_path)
    assert json.loads((root / "configs" / "mlflow.json").read_text())["configs"]["experiment_name"] == "demo_net"
    assert "runs/demo_net/mlruns.db" in (root / "docs" / "README.md").read_text()
    _validate_metadata(root / "configs" / "metadata.json")  # the skeleton is schema-valid before it is filled in
    with pytest.raises(FileExistsError, match="demo_net: already exists"):
        new_bundle("demo_net", tmp_path)
    with pytest.raises(ValueError, match="lower-case letters"):
        new_bundle("Demo Net", tmp_path)


def _validate_metadata(path: Path) -> None:
    from monai.bundle import verify_metadata

    verify_metadata(meta_file=str(path), filepath=str(SCHEMA))  # raises on a mismatch


def test_metadata_matches_the_vendored_schema(spec):
    _validate_metadata(spec.metadata)


def test_network_in_out_shapes_match_metadata(spec):
    from monai.bundle import verify_net_in_out  # what `python -m monai.bundle verify_net_in_out` calls

    _skip_if_exempt(spec, "test_network_in_out_shapes_match_metadata")
    if spec.output_key:  # MONAI's check reads output.shape: a dict of outputs is checked here, the same way
        stated = json.loads(spec.metadata.read_text())["network_data_format"]
        network = _parser(spec).get_parsed_content(spec.net_id).eval()
        (image,) = stated["inputs"].values()
        with torch.no_grad():
            outputs = network(torch.rand(spec.input_shape))
        assert spec.input_shape[1] == image["num_channels"]
        for name, output in stated["outputs"].items():
            assert outputs[name].shape[1] == output["num_channels"], name
        return
    verify_net_in_out(net_id=spec.net_id, meta_file=str(spec.metadata),
                      config_file=[str(spec.configs / name) for name in spec.train_configs],
                      bundle_root=str(spec.root), device="cpu", **spec.verify_args, **spec.tiny)


def test_ckpt_export_gives_torchscript_that_computes_what_the_network_does(spec, tmp_path):
    from monai.bundle import ckpt_export

    _skip_if_exempt(spec, "test_ckpt_export_gives_torchscript_that_computes_what_the_network_does")
    torch.manual_seed(0)
    network = _parser(spec).get_parsed_content(spec.net_id)
    state = network.state_dict()
    torch.save({spec.key_in_ckpt: state} if spec.key_in_ckpt else state, tmp_path / "model.pt")
    exported = tmp_path / "model.ts"
    # what `python -m monai.bundle ckpt_export ...` runs, called here: a subprocess would only add MONAI's ~10 s
    # import (the command line itself is exercised by every other bundle run)
    ckpt_export(net_id=spec.net_id, filepath=str(exported), ckpt_file=str(tmp_path / "model.pt"),
                meta_file=str(spec.metadata), config_file=[str(spec.configs / name) for name in spec.train_configs],
                bundle_root=str(spec.root), **({"key_in_ckpt": spec.key_in_ckpt} if spec.key_in_ckpt else {}),
                **spec.tiny)
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(str(exported), _extra_files=extra).eval()
    stated = json.loads(spec.metadata.read_text())["network_data_format"]
    assert json.loads(extra["metadata.json"])["network_data_format"] == stated
    batch = torch.rand(spec.input_shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected, got = network.eval()(batch), scripted(batch)
    torch.testing.assert_close(got, expected)  # the checkpoint's weights, not a fresh initialisation
    output = spec.output_key or next(iter(stated["outputs"]))
    if spec.output_key:
        got = got[spec.output_key]
    assert got.shape[1] == (spec.output_channels or stated["outputs"][output]["num_channels"])


# ----------------------------------------------------------------------------------------------------------
# slow: a killed and resumed quick training, shared by the tests of its outputs, and torchrun


@pytest.fixture(scope="module")
def resumed_run(spec, data_dir, tmp_path_factory, bundle_command, start_bundle, run_bundle) -> dict:
    """A quick training SIGKILLed once its first checkpoint is on disk, then the same command again."""
    from cxr_monai.handlers import latest_checkpoint

    work = tmp_path_factory.mktemp(f"resume_{spec.name}")
    out = work / "run"
    command = _train_command(bundle_command, spec, spec.train_configs, out, data_dir, **spec.resume)
    process = start_bundle(command, work / "killed.log", env=_env(spec))
    deadline = time.monotonic() + 300
    while latest_checkpoint(out / "checkpoints") is None and process.poll() is None:
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail("no checkpoint within 5 minutes")
        time.sleep(0.05)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    first = latest_checkpoint(out / "checkpoints")
    killed = {"returncode": process.returncode, "at": _iteration(first) if first else None,
              "log": (work / "killed.log").read_text(errors="replace")}
    run_bundle(command, work / "resumed.log", timeout=600, env=_env(spec))
    return {"out": out, "killed": killed, "log": (work / "resumed.log").read_text(errors="replace"),
            "settings": {**spec.tiny, **spec.resume}}


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume_finishes_the_same_iterations(spec, data_dir, resumed_run):
    from cxr_monai.handlers import latest_checkpoint

    out, killed = resumed_run["out"], resumed_run["killed"]
    assert killed["returncode"] == -signal.SIGKILL, "the run ended before it could be killed:\n" + killed["log"][-3000:]
    killed_at = killed["at"]
    assert 0 < killed_at < spec.resume_iterations
    assert f"checkpoint_{killed_at}.pt at iteration {killed_at}" in resumed_run["log"]
    final = torch.load(latest_checkpoint(out / "checkpoints"), weights_only=True)
    assert final["engine"]["iteration"] == spec.resume_iterations
    assert final["engine"]["max_epochs"] == resumed_run["settings"]["max_epochs"]
    if spec.tracking:
        client, runs = _mlflow_runs(out, spec.mlflow_experiment)
        assert len(runs) == 1  # the resumed process continued the killed one's MLflow run
        steps = {metric.step for metric in client.get_metric_history(runs[0].info.run_id, spec.mlflow_metric)}
        assert set(range(killed_at + 1, spec.resume_iterations + 1)) <= steps
    if "resume" in spec.checks:
        spec.checks["resume"](Run(spec, out, resumed_run["log"], final, data_dir, resumed_run["settings"]))


@pytest.mark.slow
def test_model_pt_is_the_last_checkpoints_network(spec, resumed_run):
    from cxr_monai.handlers import latest_checkpoint

    out = resumed_run["out"]
    final = torch.load(latest_checkpoint(out / "checkpoints"), weights_only=True)[spec.checkpoint_network_key]
    written = torch.load(out / "models" / "model.pt", weights_only=True)
    written = written[spec.key_in_ckpt] if spec.key_in_ckpt else written
    assert set(written) == set(final) and all(torch.equal(written[key], final[key]) for key in final)
    network = _parser(spec).get_parsed_content(spec.net_id)
    network.load_state_dict(written, strict=True)  # what ckpt_export and inference load


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_gloo_processes(spec, data_dir, tmp_path, bundle_command, run_bundle):
    from cxr_monai.handlers import latest_checkpoint

    out = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}"]
    args = _train_command(bundle_command, spec, [*spec.train_configs, *spec.multi_gpu_configs], out, data_dir,
                          **spec.ddp)
    assert args[0] == "-m"
    run_bundle(args[1:], tmp_path / "ddp.log", launcher=[*torchrun, "-m"], timeout=600, env=_env(spec))
    log = (tmp_path / "ddp.log").read_text(errors="replace")
    final = torch.load(latest_checkpoint(out / "checkpoints"), weights_only=True)
    assert final["engine"]["iteration"] == spec.ddp_iterations
    assert not any(key.startswith("module.") for key in final[spec.checkpoint_network_key])  # DDP unwrapped
    assert log.count("Engine run finished") >= 2  # both ranks trained
    assert "Grad strides do not match bucket view strides" not in log  # channels-last before DDP, where used
    if spec.tracking:
        _, runs = _mlflow_runs(out, spec.mlflow_experiment)
        assert len(runs) == 1 and spec.mlflow_metric in runs[0].data.metrics  # one run for both ranks
    if "ddp" in spec.checks:
        spec.checks["ddp"](Run(spec, out, log, final, data_dir, {**spec.tiny, **spec.ddp}))
