"""Benchmark: one training step of the bone-suppression GAN at 256 and 512 px, train.json's and small.json's networks.

One joint iteration of the bundle's real trainer, ``PhasedAdversarialTrainer`` run through Ignite: the G step
(``fake = G(image)``, the conditional discriminator judging ``(image, fake)``, ``PairedImageLoss`` = hinge
adversarial + 100 L1 + 10 (1 - SSIM), ``data_range`` 1.0, backward, Adam), then the D step (hinge loss on
``(image, bone)`` and ``(image, fake)``, one backward each, Adam). Everything is built as
``bundles/bone_suppression/configs/train.json`` builds it: ``SelfAttentionUNet`` (``g_channels``,
``attention_sizes``, ``image_size`` = the benchmark's size, so the attention lands at the same 32 px feature
map), ``MultiScaleDiscriminator`` (2 channels in; ``d_channels``, ``d_layers``, ``d_scales``), Adam with the
config's learning rates and betas (0, 0.9), ``discriminator_input=conditional_pair``,
``prepare_batch=KeyedBatch(label_key="bone")``, the joint phase from the first iteration. The networks are
read from ``train.json`` ("full") and from ``train.json`` overridden by ``small.json`` ("small", the config a
CPU trains with), randomly initialised (timing does not depend on the weights). The batch is phantom pairs
(``make_phantom(size, seed, bone_pairs=True)``): the radiograph scaled to [-1, 1] as the bundle's
``ScaleIntensityRanged`` does, the bone image left in [0, 1], held on the host (``KeyedBatch`` moves it to the
device every step, as in training).

Each trainer is built once per variant (one epoch of one iteration over a one-batch list) and timed per
``trainer.run()``, i.e. one iteration through the engine per call, as ``bench_train_step.py`` times the context
encoder's engine. Measured side by side in one run (interleaved rounds, see ``bench/README.md``):

- every network (``--networks``: full, small) at every size (``--sizes``: 256 512), batch 1 (``--batch-size``);
- on CUDA only, for each of those also AMP fp16 (trainer ``amp=True``, ``amp_kwargs={"dtype": torch.float16}``,
  with the trainer's gradient scalers) and channels-last (trainer ``channels_last=True``), alone and together;
- peak memory of each variant's first step above what was resident before it (networks and batch; the figure
  includes the gradients and Adam's state, which the first step allocates): on CUDA
  ``torch.cuda.max_memory_allocated``; on Linux the peak resident set (``VmHWM``, reset through
  ``/proc/self/clear_refs``, after ``malloc_trim``); see ``_common.PeakMemory``.

Before timing, each variant's first step must be a joint step (G and D both updated) with finite losses; on CUDA
the channels-last and AMP variants' first-step losses must match fp32 contiguous from the same weights
(relative 1e-2, AMP 5e-2): they must be the same step.

Goal (issue #11): the figures themselves, seconds per training step at 256 and 512 px; the issue sets no ratio,
so the ratio lines (512/256 px per network, small/full per size; on CUDA AMP and channels-last) are
informational (``no goal``). GPU figures come only with ``--device cuda``.

    python bench/bench_bone_suppression.py                 # full + small, 256 + 512 px, 3 rounds, CPU: ~2.5 min on 2 shared cores
    python bench/bench_bone_suppression.py --repeats 1     # one round: ~1 min
    python bench/bench_bone_suppression.py --networks small --repeats 5      # small.json's networks only: ~1 min
    python bench/bench_bone_suppression.py --device cuda --batch-size 4      # train.json's batch on a GPU
    python bench/bench_bone_suppression.py --quick         # seconds; checks that it runs
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from _common import (
    REPO_ROOT,
    PeakMemory,
    Timing,
    add_common_arguments,
    measure_interleaved,
    paired_ratio,
    print_machine_info,
    print_table,
    ratio_line,
    resolve_device,
)

from cxr_monai.data import make_phantom
from cxr_monai.engines import (
    GanSchedule,
    KeyedBatch,
    PhasedAdversarialTrainer,
    conditional_pair,
)
from cxr_monai.losses import AdversarialHingeLoss, PairedImageLoss
from cxr_monai.networks import MultiScaleDiscriminator, SelfAttentionUNet

CONFIGS = REPO_ROOT / "bundles" / "bone_suppression" / "configs"
TERM_NAMES = {"l1": "l1", "ssim": "ssim", "adversarial": "g_adv"}  # train.json's trainer
DATA_RANGE = 1.0  # train.json's g_loss: the bone target in [0, 1]
CHECKED_LOSSES = ("g_loss", "d_loss", "l1", "ssim", "g_adv")
COMPARED_LOSSES = ("g_loss", "d_loss", "l1")  # g_adv starts near 0, where a relative difference means nothing
MIB = 2**20


@dataclass(frozen=True)
class Networks:
    """The generator, discriminator, optimiser and loss settings of one bundle config."""

    source: str
    g_channels: tuple[int, ...]
    attention_sizes: tuple[int, ...]
    g_spectral_norm: bool
    d_channels: int
    d_layers: int
    d_scales: int
    g_learning_rate: float
    d_learning_rate: float
    adam_betas: tuple[float, float]
    lambda_adv: float
    lambda_l1: float
    lambda_ssim: float

    @classmethod
    def from_configs(cls, *names: str) -> Networks:
        """Read from ``bundles/bone_suppression/configs/<name>``, later files overriding earlier ones."""
        config: dict[str, Any] = {}
        for name in names:
            config.update(json.loads((CONFIGS / name).read_text()))
        return cls(
            source=" + ".join(names),
            g_channels=tuple(int(c) for c in config["g_channels"]),
            attention_sizes=tuple(int(s) for s in config["attention_sizes"]),
            g_spectral_norm=bool(config["g_spectral_norm"]),
            d_channels=int(config["d_channels"]),
            d_layers=int(config["d_layers"]),
            d_scales=int(config["d_scales"]),
            g_learning_rate=float(config["g_learning_rate"]),
            d_learning_rate=float(config["d_learning_rate"]),
            adam_betas=(float(config["adam_betas"][0]), float(config["adam_betas"][1])),
            lambda_adv=float(config["lambda_adv"]),
            lambda_l1=float(config["lambda_l1"]),
            lambda_ssim=float(config["lambda_ssim"]),
        )

    def describe(self) -> str:
        return (f"G SelfAttentionUNet channels {list(self.g_channels)}, attention at {list(self.attention_sizes)} px"
                f"{', spectral norm' if self.g_spectral_norm else ''}; D MultiScaleDiscriminator {self.d_channels} "
                f"channels, {self.d_layers} layers, {self.d_scales} scales; Adam G {self.g_learning_rate:g} / D "
                f"{self.d_learning_rate:g} ({self.source})")

    def generator(self, size: int) -> SelfAttentionUNet:
        return SelfAttentionUNet(in_channels=1, out_channels=1, channels=self.g_channels, image_size=size,
                                 attention_sizes=self.attention_sizes, spectral_norm=self.g_spectral_norm)

    def discriminator(self) -> MultiScaleDiscriminator:
        return MultiScaleDiscriminator(in_channels=2, channels=self.d_channels, num_layers=self.d_layers,
                                       num_scales=self.d_scales)


def quick_networks(full: Networks, small: Networks) -> dict[str, Networks]:
    """Tiny stand-ins for ``--quick`` (4 levels, attention at 32 px): the same code paths, in seconds."""
    return {
        "full": replace(full, source="--quick stand-in for train.json", g_channels=(16, 32, 32, 32), d_channels=8,
                        d_layers=2),
        "small": replace(small, source="--quick stand-in for small.json", g_channels=(8, 16, 16, 16), d_channels=4,
                         d_layers=2),
    }


@dataclass(frozen=True)
class Variant:
    network: str  # "full" or "small"
    size: int
    amp: bool = False
    channels_last: bool = False

    @property
    def name(self) -> str:
        extras = (["AMP fp16"] if self.amp else []) + (["channels-last"] if self.channels_last else [])
        return f"{self.network}, {self.size} px" + "".join(f", {extra}" for extra in extras)

    @property
    def reference(self) -> Variant:
        """The fp32 contiguous variant of the same network and size."""
        return replace(self, amp=False, channels_last=False)


def make_batch(count: int, size: int) -> dict[str, torch.Tensor]:
    """``count`` phantom pairs as the bundle's preprocessing gives them: ``image`` in [-1, 1], ``bone`` in [0, 1]."""
    pairs = [make_phantom(size, seed=seed, bone_pairs=True) for seed in range(count)]
    image = torch.from_numpy(np.stack([pair.image for pair in pairs]))[:, None]
    bone = torch.from_numpy(np.stack([pair.bone for pair in pairs]))[:, None]
    return {"image": (image.clamp(0, 1) * 2 - 1).float(), "bone": bone.float()}


def make_trainer(networks: Networks, variant: Variant, batch: Mapping[str, torch.Tensor], device: torch.device,
                 seed: int = 0) -> PhasedAdversarialTrainer:
    """The bundle's trainer for one iteration (one epoch over a one-batch list); same weights for a given seed."""
    torch.manual_seed(seed)
    generator = networks.generator(variant.size).to(device)
    discriminator = networks.discriminator().to(device)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=networks.g_learning_rate, betas=networks.adam_betas)
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=networks.d_learning_rate,
                                   betas=networks.adam_betas)
    adversarial = AdversarialHingeLoss()
    return PhasedAdversarialTrainer(
        device=device,
        max_epochs=1,
        epoch_length=1,
        train_data_loader=[batch],
        g_network=generator,
        g_optimizer=g_optimizer,
        d_network=discriminator,
        d_optimizer=d_optimizer,
        g_loss_function=PairedImageLoss(lambda_adv=networks.lambda_adv, lambda_l1=networks.lambda_l1,
                                        lambda_ssim=networks.lambda_ssim, adversarial_loss=adversarial,
                                        data_range=DATA_RANGE),
        d_loss_function=adversarial,
        schedule=GanSchedule(g_l2_epochs=0, d_only_epochs=0),
        discriminator_input=conditional_pair,
        term_names=TERM_NAMES,
        prepare_batch=KeyedBatch(label_key="bone"),
        amp=variant.amp,
        amp_kwargs={"dtype": torch.float16} if variant.amp else None,
        channels_last=variant.channels_last,
    )


def first_step_losses(trainer: PhasedAdversarialTrainer) -> dict[str, float]:
    """The losses of the step the trainer has just run; raises if it was not a joint step with finite losses."""
    output = trainer.state.output
    if output.get("phase") != "joint" or not (output.get("update_g") and output.get("update_d")):
        raise RuntimeError(f"not a joint step (phase {output.get('phase')!r}, update_g {output.get('update_g')}, "
                           f"update_d {output.get('update_d')})")
    losses = {key: float(output[key]) for key in CHECKED_LOSSES}
    bad = [key for key, value in losses.items() if not math.isfinite(value)]
    if bad:
        raise RuntimeError(f"non-finite losses {bad}: {losses}")
    return losses


def relative_difference(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def throughput(timing: Timing, items: int) -> tuple[float, ...]:
    """Items per second in each round."""
    return tuple(items / seconds for seconds in timing.wall)


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}"


def check_sizes(parser: argparse.ArgumentParser, networks: Mapping[str, Networks], sizes: Sequence[int]) -> None:
    """A parser error for a size a network cannot be built for (depth, bottleneck, attention width)."""
    for key, net in networks.items():
        for size in sizes:
            try:
                with torch.device("meta"):
                    replace(net, g_spectral_norm=False).generator(size)
            except ValueError as error:
                parser.error(f"--sizes {size} does not fit the {key} network: {error}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512],
                        help="image sizes in px; the smallest is the baseline of the size ratios (default: 256 512; "
                             "train.json's networks need a multiple of 128, at least 256)")
    parser.add_argument("--networks", nargs="+", choices=["full", "small"], default=["full", "small"],
                        help="full: train.json's networks; small: small.json's (default: both)")
    parser.add_argument("--batch-size", type=int, default=1, help="image pairs per step (default: 1)")
    args = parser.parse_args(argv)
    device = resolve_device(parser, args.device)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    configs = {"full": Networks.from_configs("train.json"), "small": Networks.from_configs("train.json", "small.json")}
    if args.quick:
        configs = quick_networks(configs["full"], configs["small"])
        args.sizes, args.repeats = [64, 128], 1
    sizes = sorted(set(args.sizes))
    network_keys = [key for key in ("full", "small") if key in args.networks]
    networks = {key: configs[key] for key in network_keys}
    check_sizes(parser, networks, sizes)
    torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    memory = PeakMemory(device)

    modes = [(False, False)] + ([(True, False), (False, True), (True, True)] if cuda else [])  # (amp, channels-last)
    variants = [Variant(key, size, amp=amp, channels_last=channels_last)
                for size in sizes for key in network_keys for amp, channels_last in modes]

    print_machine_info("bone suppression GAN: one training step (PhasedAdversarialTrainer)", device, {
        **{f"{key} networks": net.describe() for key, net in networks.items()},
        "loss": "G: PairedImageLoss(hinge adversarial x1, L1 x100, 1-SSIM x10, data_range 1.0) with the conditional "
                "D judging (image, fake); D: hinge on (image, bone) and (image, fake), one backward each",
        "input": f"phantom pairs (make_phantom bone_pairs=True), batch {args.batch_size}, sizes {sizes} px; image "
                 "in [-1, 1], bone in [0, 1], on the host",
        "variants": "fp32 contiguous" + ("; AMP fp16, channels-last, AMP fp16 + channels-last" if cuda
                                         else "; AMP fp16 and channels-last: CUDA only, not measured"),
        "timing": f"trainer.run() = one joint iteration through the engine per call; {args.repeats} interleaved "
                  "rounds, each call timed after 2 warm-up calls (torch.utils.benchmark.Timer)",
        "memory": f"{memory.method}; each variant's first step",
    })

    batches = {size: make_batch(args.batch_size, size) for size in sizes}
    trainers = {variant: make_trainer(networks[variant.network], variant, batches[variant.size], device)
                for variant in variants}

    # first steps: peak memory, and the check that each is a joint step with finite (and, on CUDA, matching) losses
    peaks: dict[Variant, int | None] = {}
    losses: dict[Variant, dict[str, float]] = {}
    for variant, trainer in trainers.items():
        _, peaks[variant] = memory.measure(trainer.run)
        try:
            losses[variant] = first_step_losses(trainer)
        except RuntimeError as error:
            print(f"error: [{variant.name}] first step: {error}", file=sys.stderr)
            return 1
    print("first step's losses:\n  " + "\n  ".join(
        f"[{variant.name}] " + ", ".join(f"{key} {value:.4f}" for key, value in losses[variant].items())
        for variant in variants))
    for variant in variants:
        if variant == variant.reference:
            continue
        tolerance = 5e-2 if variant.amp else 1e-2
        worst = max(relative_difference(losses[variant][key], losses[variant.reference][key])
                    for key in COMPARED_LOSSES)
        print(f"same step: [{variant.name}] vs fp32 contiguous: {', '.join(COMPARED_LOSSES)} differ by at most "
              f"{worst:.1e} (relative)")
        if worst > tolerance:
            print(f"error: [{variant.name}] differs from fp32 contiguous by more than {tolerance:g}; the comparison "
                  "would not be of the same step", file=sys.stderr)
            return 1
    print(flush=True)

    timings = measure_interleaved({variant.name: trainer.run for variant, trainer in trainers.items()},
                                  repeats=args.repeats, threads=args.threads)
    timing = {variant: timings[variant.name] for variant in variants}
    print_table(["training step", "s/step", "IQR s", "steps/s", "images/s", "process CPU s/step", "peak MiB"],
                [[v.name, f"{timing[v].median:.3f}", f"{timing[v].iqr:.3f}", f"{1 / timing[v].median:.3f}",
                  f"{args.batch_size / timing[v].median:.3f}", f"{timing[v].cpu_median:.3f}", mib(peaks[v])]
                 for v in variants])

    def per_second(variant: Variant) -> tuple[float, ...]:
        return throughput(timing[variant], 1)

    base = sizes[0]
    for key in network_keys:
        for size in sizes[1:]:
            print(ratio_line(f"s/step {size}px/{base}px [{key}]",
                             paired_ratio(timing[Variant(key, size)], timing[Variant(key, base)]),
                             note=f"(pixels x{(size / base) ** 2:g})"))
    if len(network_keys) == 2:
        for size in sizes:
            print(ratio_line(f"steps/s small/full [{size} px]",
                             paired_ratio(per_second(Variant("small", size)), per_second(Variant("full", size)))))
    if cuda:
        for size in sizes:
            for key in network_keys:
                fp32 = Variant(key, size)
                print(ratio_line(f"steps/s amp-fp16/fp32 [{key}, {size} px]",
                                 paired_ratio(per_second(Variant(key, size, amp=True)), per_second(fp32))))
                print(ratio_line(f"steps/s channels-last/contiguous [{key}, {size} px, fp32]",
                                 paired_ratio(per_second(Variant(key, size, channels_last=True)), per_second(fp32))))
                print(ratio_line(f"steps/s channels-last/contiguous [{key}, {size} px, AMP fp16]",
                                 paired_ratio(per_second(Variant(key, size, amp=True, channels_last=True)),
                                              per_second(Variant(key, size, amp=True)))))

    threads = f"torch threads: {torch.get_num_threads()}"
    for key in network_keys:
        print(f"s/step [{key}, batch {args.batch_size}, {device}]: "
              + ", ".join(f"{size} px {timing[Variant(key, size)].median:.3f} "
                          f"({1 / timing[Variant(key, size)].median:.3f} steps/s)" for size in sizes)
              + f"; {threads}")
    if memory.available:
        print(f"peak memory of the first step [batch {args.batch_size}, {device}, fp32]: "
              + "; ".join(f"{key} " + ", ".join(f"{size} px {mib(peaks[Variant(key, size)])} MiB" for size in sizes)
                          for key in network_keys))
    else:
        print(f"peak memory: {memory.method}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
