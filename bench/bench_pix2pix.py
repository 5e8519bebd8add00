"""Benchmark: one training step of pathology-preserving pix2pix (seed 002) at 256 px, train.json's and small.json's networks.

One joint iteration of the bundle's real trainer, ``PhasedAdversarialTrainer`` run through Ignite: the G step
(``fake = PathologyPreservingGenerator(cat(x, m))`` = ``x + G(x, m) ⊙ (1 − m)``, the conditional PatchGAN judging
``(x, m, fake)``, ``PairedImageLoss`` = BCE adversarial + 100 L1, backward, Adam 2e-4 (0.5, 0.999)), then the D step
(BCE on ``(x, m, y)`` and ``(x, m, fake)``, one backward each, Adam). The generator, discriminator, optimisers and losses
are the bundle's own, parsed from ``bundles/pix2pix_augmentation/configs/train.json`` ("full": pix2pix's 7-level U-Net,
64…512 channels, decoder dropout 0.5; one 70 × 70 PatchGAN) and from ``train.json`` + ``small.json`` ("small"), with
``image_size`` set to the benchmark's size, randomly initialised (timing does not depend on the weights). The batch is
phantom radiographs (``make_phantom``) in [-1, 1] with one box of annotation-like size (a quarter of each side) in the
right lung, masked as the bundle masks it (``BoxMask``, ``KeepBoxes``), held on the host.

Each trainer is built once per variant (one epoch of one iteration over a one-batch list) and timed per
``trainer.run()``; variants run side by side in interleaved rounds (see ``bench/README.md``):

- every network (``--networks``: full, small) at every size (``--sizes``, default 256, the seed's), batch 1
  (``--batch-size``; pix2pix's);
- peak memory of each variant's first step above what was resident before it (``_common.PeakMemory``).

Before timing, each variant's first step must be a joint step with finite losses, and the output's box pixels must be
the input's exactly (the composition inside the generator). Goal: the issue sets none; the small/full ratio line is
informational (``no goal``).

    python bench/bench_pix2pix.py                     # full + small at 256 px, 3 rounds, CPU: ~1 min on 2 shared cores
    python bench/bench_pix2pix.py --networks small --repeats 5
    python bench/bench_pix2pix.py --device cuda --batch-size 4
    python bench/bench_pix2pix.py --quick             # seconds; checks that it runs
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from _common import (
    REPO_ROOT,
    PeakMemory,
    add_common_arguments,
    measure_interleaved,
    paired_ratio,
    print_machine_info,
    print_table,
    ratio_line,
    resolve_device,
)

from cxr_monai.data import make_phantom
from cxr_monai.engines import KeyedBatch, PhasedAdversarialTrainer, conditional_pair
from cxr_monai.transforms import BoxMask, KeepBoxes

CONFIGS = REPO_ROOT / "bundles" / "pix2pix_augmentation" / "configs"
NETWORK_CONFIGS = {"full": ("train.json",), "small": ("train.json", "small.json")}
QUICK = {"g_channels": [8, 16, 16, 16], "d_channels": 8, "d_layers": 2}  # --quick stand-ins: the same code paths
CHECKED_LOSSES = ("g_loss", "d_loss", "l1", "g_adv")
MIB = 2**20


@dataclass(frozen=True)
class Variant:
    network: str
    size: int

    @property
    def name(self) -> str:
        return f"{self.network}, {self.size} px"


def parse_bundle(network: str, size: int, device: torch.device, quick: bool) -> Any:
    """The bundle's configs for ``network`` with ``image_size`` = ``size``, parsed (nothing instantiated yet)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in NETWORK_CONFIGS[network]])
    parser.update({"image_size": size, "device": f"$torch.device('{device}')", **(QUICK if quick else {})})
    return parser


def describe(parser: Any) -> str:
    get = parser.get
    return (f"G PathologyPreservingGenerator(SelfAttentionUNet channels {get('g_channels')}, no attention, dropout "
            f"{get('g_dropout')}, mask input {get('mask_input')}); D MultiScaleDiscriminator {get('d_channels')} "
            f"channels, {get('d_layers')} layers, {get('d_scales')} scale(s), no spectral norm; Adam "
            f"{get('learning_rate')} {get('adam_betas')}")


def make_batch(count: int, size: int) -> dict[str, torch.Tensor]:
    """``count`` phantoms with one box each, as the bundle's preprocessing gives them: ``condition`` = (x, m) and
    ``image`` = y, in [-1, 1]."""
    conditions, images = [], []
    side = size // 4
    for seed in range(count):
        image = torch.from_numpy(np.asarray(make_phantom(size, seed=seed).image, dtype=np.float32))[None] * 2 - 1
        box = [[size // 8, size // 3, size // 8 + side, size // 3 + side]]  # inside the right lung (image left)
        mask = BoxMask()(image, box)
        conditions.append(torch.cat([KeepBoxes()(image, mask), mask]))
        images.append(image)
    return {"condition": torch.stack(conditions), "image": torch.stack(images)}


def make_trainer(parser: Any, batch: Mapping[str, torch.Tensor], device: torch.device,
                 seed: int = 0) -> PhasedAdversarialTrainer:
    """The bundle's networks, optimisers, losses and trainer settings for one iteration over a one-batch list."""
    torch.manual_seed(seed)
    return PhasedAdversarialTrainer(
        device=device,
        max_epochs=1,
        epoch_length=1,
        train_data_loader=[batch],
        g_network=parser.get_parsed_content("generator"),
        g_optimizer=parser.get_parsed_content("g_optimizer"),
        d_network=parser.get_parsed_content("discriminator"),
        d_optimizer=parser.get_parsed_content("d_optimizer"),
        g_loss_function=parser.get_parsed_content("g_loss"),
        d_loss_function=parser.get_parsed_content("adversarial_loss"),
        schedule=parser.get_parsed_content("schedule"),
        discriminator_input=conditional_pair,
        term_names={"l1": "l1", "adversarial": "g_adv"},
        prepare_batch=KeyedBatch(image_key="condition", label_key="image"),
    )


def check_first_step(trainer: PhasedAdversarialTrainer, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The losses of the step just run; raises unless it was a joint step with finite losses whose output keeps the
    box pixels of the input exactly."""
    output = trainer.state.output
    if output.get("phase") != "joint" or not (output.get("update_g") and output.get("update_d")):
        raise RuntimeError(f"not a joint step (phase {output.get('phase')!r})")
    losses = {key: float(output[key]) for key in CHECKED_LOSSES}
    if not all(math.isfinite(value) for value in losses.values()):
        raise RuntimeError(f"non-finite losses: {losses}")
    inside = batch["condition"][:, -1:].bool()
    if not torch.equal(output["pred"].cpu()[inside], batch["image"][inside]):
        raise RuntimeError("the generated image's box pixels are not the input's")
    return losses


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256],
                        help="image sizes in px (default: 256, the seed's; train.json's U-Net needs a multiple of 128)")
    parser.add_argument("--networks", nargs="+", choices=list(NETWORK_CONFIGS), default=list(NETWORK_CONFIGS),
                        help="full: train.json's networks; small: small.json's (default: both)")
    parser.add_argument("--batch-size", type=int, default=1, help="pairs per step (default: 1, pix2pix's)")
    args = parser.parse_args(argv)
    device = resolve_device(parser, args.device)
    if args.threads < 1 or args.batch_size < 1:
        parser.error("--threads and --batch-size must be at least 1")
    if args.quick:
        args.sizes, args.repeats = [64], 1
    sizes = sorted(set(args.sizes))
    torch.set_num_threads(args.threads)
    memory = PeakMemory(device)
    variants = [Variant(network, size) for size in sizes for network in NETWORK_CONFIGS if network in args.networks]
    parsers = {variant: parse_bundle(variant.network, variant.size, device, args.quick) for variant in variants}

    print_machine_info("pathology-preserving pix2pix: one training step (PhasedAdversarialTrainer)", device, {
        **{f"{v.network} networks": describe(parsers[v]) + (" (--quick stand-ins)" if args.quick else "")
           for v in variants if v.size == sizes[0]},
        "loss": "G: PairedImageLoss(BCE adversarial x1, L1 x100) with the conditional D judging (x, m, fake); D: BCE "
                "on (x, m, y) and (x, m, fake), one backward each",
        "input": f"phantoms with one box (a quarter of each side), batch {args.batch_size}, sizes {sizes} px, "
                 "[-1, 1], on the host",
        "timing": f"trainer.run() = one joint iteration through the engine per call; {args.repeats} interleaved "
                  "rounds (torch.utils.benchmark.Timer)",
        "memory": f"{memory.method}; each variant's first step",
    })

    batches = {size: make_batch(args.batch_size, size) for size in sizes}
    trainers = {v: make_trainer(parsers[v], batches[v.size], device) for v in variants}
    peaks: dict[Variant, int | None] = {}
    for variant, trainer in trainers.items():
        _, peaks[variant] = memory.measure(trainer.run)
        try:
            losses = check_first_step(trainer, batches[variant.size])
        except RuntimeError as error:
            print(f"error: [{variant.name}] first step: {error}", file=sys.stderr)
            return 1
        print(f"first step [{variant.name}]: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
              + "; box pixels kept exactly")
    print(flush=True)

    timings = measure_interleaved({v.name: trainer.run for v, trainer in trainers.items()}, repeats=args.repeats,
                                  threads=args.threads)
    timing = {v: timings[v.name] for v in variants}
    print_table(["training step", "s/step", "IQR s", "steps/s", "pairs/s", "process CPU s/step", "peak MiB"],
                [[v.name, f"{timing[v].median:.3f}", f"{timing[v].iqr:.3f}", f"{1 / timing[v].median:.3f}",
                  f"{args.batch_size / timing[v].median:.3f}", f"{timing[v].cpu_median:.3f}",
                  "n/a" if peaks[v] is None else f"{peaks[v] / MIB:.0f}"] for v in variants])
    for size in sizes:
        if Variant("full", size) in timing and Variant("small", size) in timing:
            per_second = {key: tuple(1 / s for s in timing[Variant(key, size)].wall) for key in ("small", "full")}
            print(ratio_line(f"steps/s small/full [{size} px]", paired_ratio(per_second["small"], per_second["full"])))
    for variant in variants:
        print(f"s/step [{variant.name}, batch {args.batch_size}, {device}]: {timing[variant].median:.3f} "
              f"({1 / timing[variant].median:.3f} steps/s); torch threads: {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
