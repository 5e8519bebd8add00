"""Benchmark: images/s of ClaSegNet vs the plain ResNet-50 baseline at 512 px, inference and one training step.

The pneumothorax bundle's network (``bundles/clasegnet/configs/train.json``): ``ClaSegNet`` on MONAI's 2D ResNet-50
(``layers`` 3, 4, 6, 3, ``width`` 1.0) with ``decoder_channels`` 256, 128, 64, 32, 16, 1 input channel, at
``train.json``'s 512 px; ``mode="clasegnet"`` returns a dict of ``"image"`` (noisy-or of the regions), ``"regions"``
(16x16 region logits at 512 px) and ``"segmentation"`` (full-size mask logits from the U-Net decoder), ``mode=
"baseline"`` the plain ResNet-50 (global average pool + linear: ``"image"`` only). Both are randomly initialised
from the same seed, so they share every backbone weight and differ only in their heads: the ratio of the two is the
cost of ClaSegNet's region head and segmentation branch. Inference runs as the bundle's evaluator and inference run
it: eval mode, ``torch.inference_mode()``, host-to-device copy, the image probability ``sigmoid(image)`` and, for
ClaSegNet, the region probabilities ``sigmoid(regions)`` and the mask ``sigmoid(segmentation) >= 0.5`` (what
``PneumothoraxWriter`` writes, before its resizing to the stored size). Each call takes a batch of phantom
radiographs held on the host (``make_phantom``: in [0, 1], as the reader gives them; every other one with a
pneumothorax, seed 004's balanced set), so images/s = batch / seconds per call. A training step is the bundle's
``SupervisedTrainer`` iteration: forward, ``ClaSegNetLoss`` with ``train.json``'s weights and ``normalize_regions``
true, called as ``loss(outputs, mask)`` on the phantoms' pneumothorax masks (blank for the normal images; the image
label is "the mask has a pixel"), backward, ``Adam`` with ``train.json``'s lr 1e-4. For ClaSegNet the loss is the
MIL term on the regions plus Dice + BCE on the segmentation, for the baseline the BCE of the image logit.

Measured side by side in one run (interleaved rounds, see ``bench/README.md``):

- inference of ClaSegNet and of the baseline at batch 1 and 4 (``--batch-sizes``), each batch ClaSegNet vs the
  baseline (the cost of the region head and the segmentation branch) and batch 4 vs 1 per network;
- at batch 4 (``--compare-batch``) channels-last vs contiguous (same weights), for both networks; on CUDA only AMP
  fp16 vs fp32 (``torch.autocast``, as the bundle's ``use_amp`` on a GPU);
- one training step at batch 2 (``--train-batch-size``: one pneumothorax image, one normal) of ClaSegNet vs the
  baseline; on CUDA also AMP fp16 (with a ``GradScaler``) vs fp32 for both;
- peak memory of a call of each variant above what was resident before it: for inference the call after one
  untimed warm-up call (what a call needs, without the one-time allocations of a network's first call), for
  training the first step (its activations, gradients and Adam's state, which the first step allocates): on CUDA
  ``torch.cuda.max_memory_allocated``; on Linux the peak resident set (``VmHWM``, reset through
  ``/proc/self/clear_refs``, after ``malloc_trim``); see ``_common.PeakMemory``.

A ResNet-50 call at 512 px takes about a second per image on one CPU thread, so nearly every timed block is one call
(``--block-seconds``, 1 s: as many calls as fill it, estimated from the untimed call whose memory is measured, at
least 1, at most 64); each block also makes ``Timer``'s 2 untimed warm-up calls, which is most of the run's time.

Before timing: the two networks must hold the same backbone weights; batch 4, channels-last and (loosely) AMP must
give batch 1's outputs for the first image, every output of the dict (relative to its range 1e-3; AMP 5e-2), same
network and image; every output must be finite; the training steps' first losses must be finite with the terms of
their mode (ClaSegNet: ``mil``, ``dice``, ``segmentation_bce``, ``segmentation``; baseline: ``image_bce``), and on CUDA the AMP step's
first loss must match the fp32 step's from the same weights and batch (relative 5e-2). ClaSegNet and the baseline
compute other functions, so their outputs are not compared.

Goal (issue #13): the figures themselves, images/s at 512 px in training and inference, and memory; the issue sets
no ratio to reach, so the ratio lines are informational (``no goal``). GPU figures come only with
``--device cuda``.

    python bench/bench_clasegnet.py                       # 512 px, batches 1/4, 3 rounds: 6-10 min on 2 shared cores
    python bench/bench_clasegnet.py --repeats 5           # tighter ratios
    python bench/bench_clasegnet.py --config small        # small.json's network (256 px, quarter width)
    python bench/bench_clasegnet.py --device cuda --batch-sizes 1 8 32 --compare-batch 8 --train-batch-size 8
    python bench/bench_clasegnet.py --quick               # seconds; checks that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from _common import (
    MAX_CALLS_PER_BLOCK,
    calls_per_block,
    measure_first,
    mib,
    milliseconds,
    relative_difference,
    throughput,
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
from cxr_monai.losses import ClaSegNetLoss
from cxr_monai.networks import ClaSegNet

CONFIG_DIR = REPO_ROOT / "bundles" / "clasegnet" / "configs"
TRAIN_CONFIG = json.loads((CONFIG_DIR / "train.json").read_text())
# small.json overrides train.json (the bundle loads them in this order)
CONFIGS = {"train": TRAIN_CONFIG, "small": {**TRAIN_CONFIG, **json.loads((CONFIG_DIR / "small.json").read_text())}}
LEARNING_RATE = float(TRAIN_CONFIG["learning_rate"])  # 1e-4 (small.json: 5e-4; the step's cost does not depend on it)
MIL_WEIGHT = float(TRAIN_CONFIG["mil_weight"])  # 1.0
SEGMENTATION_WEIGHT = float(TRAIN_CONFIG["segmentation_weight"])  # 1.0
NORMALIZE_REGIONS = bool(TRAIN_CONFIG["normalize_regions"])  # true
MODES = ("clasegnet", "baseline")
LABELS = {"clasegnet": "ClaSegNet", "baseline": "baseline"}
TERMS = {"clasegnet": ("mil", "dice", "segmentation_bce", "segmentation"), "baseline": ("image_bce",)}
QUICK_LAYERS = (1, 1, 1, 1)  # --quick: one bottleneck per stage (ClaSegNet's "small CPU setting")
MIN_SIZE = 64  # make_phantom's smallest image: a 2x2 region grid
PHANTOM_TRIES = 8  # seeds tried for an image whose pneumothorax did not fit


def make_inputs(count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` phantom radiographs and their pneumothorax masks, both ``(count, 1, size, size)`` float host tensors;
    even indices have a pneumothorax (a non-empty mask), odd ones none (a blank mask)."""
    images, masks = [], []
    seed = 0
    for index in range(count):
        abnormal = index % 2 == 0
        for _ in range(PHANTOM_TRIES):
            radiograph = make_phantom(size, seed=seed, findings=("Pneumothorax",) if abnormal else ())
            seed += 1
            if radiograph.lesion_mask.any() == abnormal:
                break
        else:
            raise RuntimeError(f"no pneumothorax fitted in {PHANTOM_TRIES} phantoms at {size} px")
        images.append(radiograph.image)
        masks.append(radiograph.lesion_mask)
    return (torch.from_numpy(np.stack(images))[:, None].float(),
            torch.from_numpy(np.stack(masks))[:, None].float())


def make_network(mode: str, config: dict[str, Any], layers: Sequence[int], device: torch.device,
                 seed: int = 0) -> ClaSegNet:
    """``ClaSegNet(mode)`` with ``config``'s width and decoder; the same ``seed`` gives both modes the same backbone."""
    torch.manual_seed(seed)
    network = ClaSegNet(mode=mode, in_channels=1, layers=tuple(layers), width=float(config["width"]),
                        decoder_channels=tuple(int(c) for c in config["decoder_channels"]))
    return network.to(device)


def autocast_or_not(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.float16) if amp else contextlib.nullcontext()


class Predictor:
    """The evaluator's outputs for a host-held batch (eval mode, inference mode): the network's dict as float32, the
    image probability and, for ClaSegNet, the region probabilities and the mask (``sigmoid >= 0.5``)."""

    def __init__(self, network: torch.nn.Module, device: torch.device, channels_last: bool = False,
                 amp: bool = False) -> None:
        self.network = network.eval()
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.amp = amp

    def __call__(self, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        with torch.inference_mode(), autocast_or_not(self.device, self.amp):
            x = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
            outputs = {name: value.float() for name, value in self.network(x).items()}
            derived = {"probability": torch.sigmoid(outputs["image"])}
            if "regions" in outputs:
                derived["region_probabilities"] = torch.sigmoid(outputs["regions"])
                derived["mask"] = torch.sigmoid(outputs["segmentation"]) >= 0.5
        return outputs, derived


class TrainStep:
    """One training iteration of the bundle's ``SupervisedTrainer``: forward, ``ClaSegNetLoss(outputs, mask)``,
    backward, ``Adam`` step (with a ``GradScaler`` under fp16 AMP); returns the loss (``last_terms`` has its terms)."""

    def __init__(self, network: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, device: torch.device,
                 amp: bool = False) -> None:
        self.network = network.train()
        self.images, self.masks = images.to(device), masks.to(device)
        self.device, self.amp = device, amp
        self.loss = ClaSegNetLoss(mil_weight=MIL_WEIGHT, segmentation_weight=SEGMENTATION_WEIGHT,
                                  normalize_regions=NORMALIZE_REGIONS)
        self.optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)

    @property
    def last_terms(self) -> dict[str, torch.Tensor]:
        return self.loss.last_terms

    def __call__(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_or_not(self.device, self.amp):
            outputs = self.network(self.images)
            loss = self.loss(outputs, self.masks)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


def same_backbone(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Whether two ``ClaSegNet`` hold the same ``backbone.*`` tensors (weights and batch-norm buffers)."""
    state_a, state_b = a.backbone.state_dict(), b.backbone.state_dict()
    return state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="train",
                        help="the bundle's network: train.json's (ResNet-50, width 1.0, decoder 256-16) or small.json's "
                             "(width 0.25, decoder 64-8, 256 px) (default: train)")
    parser.add_argument("--size", type=int, default=None,
                        help="image size in px, a multiple of 32 (default: the config's image_size, 512 for train.json)")
    parser.add_argument("--layers", type=int, nargs=4, default=None,
                        help="bottleneck blocks per stage (default: the config's, ResNet-50's 3 4 6 3)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4],
                        help="inference batches of both networks; the smallest is the baseline of the batching "
                             "ratios (default: 1 4)")
    parser.add_argument("--compare-batch", type=int, default=4,
                        help="batch of the channels-last and AMP comparisons (default: 4)")
    parser.add_argument("--train-batch-size", type=int, default=2,
                        help="images per training step, half of them with a pneumothorax (default: 2)")
    parser.add_argument("--block-seconds", type=float, default=1.0,
                        help="each timed block makes as many calls as fill this (estimated from an untimed call; "
                             f"1 to {MAX_CALLS_PER_BLOCK}); 0: one call (default: 1.0)")
    args = parser.parse_args(argv)
    device = resolve_device(parser, args.device)
    if args.quick:
        args.config, args.size, args.layers = "small", 128, list(QUICK_LAYERS)
        args.batch_sizes, args.compare_batch, args.train_batch_size = [1, 2], 2, 2
        args.repeats, args.block_seconds = 1, 0.0
    config = CONFIGS[args.config]
    size = int(config["image_size"]) if args.size is None else args.size
    layers = tuple(int(n) for n in (config["layers"] if args.layers is None else args.layers))
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if size < MIN_SIZE or size % ClaSegNet.region_stride:
        parser.error(f"--size must be a multiple of {ClaSegNet.region_stride} (the region grid) and at least "
                     f"{MIN_SIZE} px (the smallest phantom), got {size}")
    if min(layers) < 1:
        parser.error("--layers needs 4 positive block counts")
    if min(args.batch_sizes) < 1 or args.compare_batch < 1:
        parser.error("batch sizes must be at least 1")
    if args.train_batch_size < 2:
        parser.error("--train-batch-size must be at least 2 (one image with a pneumothorax and one without, so "
                     "that both image labels and both MIL cases are in the step)")
    torch.set_num_threads(args.threads)
    batch_sizes = sorted(set(args.batch_sizes) | {args.compare_batch})
    base_batch, compare, train_batch = batch_sizes[0], args.compare_batch, args.train_batch_size
    cuda = device.type == "cuda"
    memory = PeakMemory(device)
    network_text = (f"ClaSegNet(layers {list(layers)}, width {float(config['width']):g}, decoder_channels "
                    f"{list(config['decoder_channels'])}, {args.config}.json), mode clasegnet vs baseline (plain "
                    "ResNet, same backbone weights); random initialisation")

    print_machine_info("ClaSegNet vs plain ResNet-50 (pneumothorax): images per second and a training step", device, {
        "network": network_text,
        "input": f"phantom radiographs {size}x{size} in [0, 1] on the host, every other one with a pneumothorax; "
                 f"inference batches {batch_sizes}, comparisons at batch {compare}; training batch {train_batch} "
                 "with the pneumothorax masks",
        "inference": "eval mode, torch.inference_mode(), host-to-device copy, sigmoid(image); ClaSegNet also "
                     "sigmoid(regions) and sigmoid(segmentation) >= 0.5"
                     + ("; AMP fp16 also" if cuda else "; AMP fp16: CUDA only, not measured"),
        "training step": f"ClaSegNetLoss(mil_weight {MIL_WEIGHT:g}, segmentation_weight {SEGMENTATION_WEIGHT:g}, "
                         f"normalize_regions {NORMALIZE_REGIONS}) on (outputs, mask) + backward + "
                         f"Adam(lr {LEARNING_RATE:g})" + (", fp32 and AMP fp16" if cuda else ", fp32"),
        "timing": f"{args.repeats} interleaved rounds; per round and variant one Timer block of 2 warm-up calls "
                  f"and as many timed calls as fill {args.block_seconds:g} s (1-{MAX_CALLS_PER_BLOCK}; from the "
                  "memory-measured call)",
        "memory": f"{memory.method}; inference: the call after a warm-up call, training: the first step",
    })

    images, masks = make_inputs(max(batch_sizes + [train_batch]), size)
    networks = {mode: make_network(mode, config, layers, device) for mode in MODES}
    if not same_backbone(networks["clasegnet"], networks["baseline"]):
        print("error: ClaSegNet and the baseline do not share their backbone weights; the ratio would not be the "
              "heads' cost", file=sys.stderr)
        return 1
    channels_last = {mode: copy.deepcopy(network).to(memory_format=torch.channels_last)
                     for mode, network in networks.items()}

    # inference variants: name -> (mode, predictor, batch, compared with batch 1 of the same network)
    def name_of(mode: str, batch: int, suffix: str = "") -> str:
        return f"{LABELS[mode]}, batch {batch}{suffix}"

    inference: dict[str, tuple[str, Predictor, int]] = {}
    for batch in batch_sizes:
        for mode in MODES:
            inference[name_of(mode, batch)] = (mode, Predictor(networks[mode], device), batch)
    for mode in MODES:
        inference[name_of(mode, compare, ", channels-last")] = (
            mode, Predictor(channels_last[mode], device, channels_last=True), compare)
    if cuda:
        for mode in MODES:
            inference[name_of(mode, compare, ", AMP fp16")] = (mode, Predictor(networks[mode], device, amp=True),
                                                               compare)

    # a warm-up call, then one measured call: peak memory, the call's time, and the maths check against batch 1
    peaks: dict[str, int | None] = {}
    first_seconds: dict[str, float] = {}
    first_outputs: dict[str, dict[str, torch.Tensor]] = {}
    for name, (mode, predictor, batch) in inference.items():
        host = images[:batch]
        predictor(host)  # one-time allocations (the network's first call) stay out of the peak
        (outputs, derived), peaks[name], first_seconds[name] = measure_first(memory, lambda p=predictor, x=host: p(x),
                                                                             device)
        probability = derived["probability"]
        if not (all(torch.isfinite(value).all() for value in outputs.values())
                and ((probability >= 0) & (probability <= 1)).all()):
            print(f"error: {name}: non-finite outputs or probabilities outside [0, 1]", file=sys.stderr)
            return 1
        first_outputs[name] = {key: value[:1].cpu().clone() for key, value in outputs.items()}
    checks = []
    for name, (mode, _, _) in inference.items():
        base = name_of(mode, base_batch)
        if name == base:
            continue
        tolerance = 5e-2 if name.endswith("AMP fp16") else 1e-3
        differences = {key: relative_difference(value, first_outputs[base][key])
                       for key, value in first_outputs[name].items()}
        checks.append(f"[{name}] vs batch {base_batch}: first image's "
                      + ", ".join(f"{key} {difference:.1e}" for key, difference in differences.items())
                      + " of their range")
        worst = max(differences.values())
        if worst > tolerance or not math.isfinite(worst):
            print("\n".join(checks))
            print(f"error: [{name}] differs from batch {base_batch} by more than {tolerance:g}; the comparison "
                  "would not be of the same maths", file=sys.stderr)
            return 1

    # training steps: one pneumothorax image and one normal image (and so on), with their masks
    train_images, train_masks = images[:train_batch], masks[:train_batch]
    positives = int((train_masks.flatten(1) > 0.5).any(dim=1).sum())
    train_names = {mode: f"train {LABELS[mode]}, batch {train_batch}" for mode in MODES}
    amp_names = {mode: f"train {LABELS[mode]}, batch {train_batch}, AMP fp16" for mode in MODES}
    training: dict[str, TrainStep] = {}
    train_modes: dict[str, str] = {}
    for mode in MODES:
        network = make_network(mode, config, layers, device)
        amp_copy = copy.deepcopy(network) if cuda else None
        training[train_names[mode]] = TrainStep(network, train_images, train_masks, device)
        train_modes[train_names[mode]] = mode
        if amp_copy is not None:
            training[amp_names[mode]] = TrainStep(amp_copy, train_images, train_masks, device, amp=True)
            train_modes[amp_names[mode]] = mode
    first_losses: dict[str, float] = {}
    first_terms: dict[str, dict[str, float]] = {}
    for name, train_step in training.items():
        loss, peaks[name], first_seconds[name] = measure_first(memory, train_step, device)
        first_losses[name] = loss.item()
        first_terms[name] = {key: value.item() for key, value in train_step.last_terms.items() if key != "loss"}
        mode = train_modes[name]
        if not math.isfinite(first_losses[name]) or not all(map(math.isfinite, first_terms[name].values())):
            print(f"error: {name}: the first step's loss is not finite", file=sys.stderr)
            return 1
        if set(first_terms[name]) != set(TERMS[mode]):
            print(f"error: {name}: loss terms {sorted(first_terms[name])}, expected {sorted(TERMS[mode])}",
                  file=sys.stderr)
            return 1
    for mode in MODES:
        if amp_names[mode] not in training:
            continue
        ours, theirs = first_losses[amp_names[mode]], first_losses[train_names[mode]]
        difference = abs(ours - theirs) / max(abs(theirs), 1e-12)
        checks.append(f"[{amp_names[mode]}] vs [{train_names[mode]}]: first step's loss {ours:.6f} vs {theirs:.6f} "
                      f"(relative {difference:.1e})")
        if difference > 5e-2:
            print("\n".join(checks))
            print(f"error: [{amp_names[mode]}] differs from fp32 by more than 5e-2; the comparison would not be of "
                  "the same step", file=sys.stderr)
            return 1
    checks.append("ClaSegNet and baseline: the same backbone weights (every backbone.* tensor equal)")
    print("same maths:\n  " + "\n  ".join(checks))
    print(f"first training step's loss ({positives} of {train_batch} images with a pneumothorax): "
          + "; ".join(f"{name}: {first_losses[name]:.4f} ("
                      + ", ".join(f"{key} {value:.4f}" for key, value in first_terms[name].items()) + ")"
                      for name in training), end="\n\n", flush=True)

    variants: dict[str, Callable[[], Any]] = {
        name: (lambda p=predictor, x=images[:batch]: p(x)) for name, (_, predictor, batch) in inference.items()
    }
    variants.update(training)
    number = {name: calls_per_block(first_seconds[name], args.block_seconds) for name in variants}
    timings = measure_interleaved(variants, repeats=args.repeats, number=number, threads=args.threads)

    items = {name: batch for name, (_, _, batch) in inference.items()}
    items.update({name: train_batch for name in training})
    print_table(["inference", "batch", "calls/block", "ms/call", "IQR ms", "images/s", "process CPU ms/image",
                 "peak MiB"],
                [[name, batch, number[name], milliseconds(timings[name].median), milliseconds(timings[name].iqr),
                  f"{batch / timings[name].median:.2f}", f"{timings[name].cpu_median * 1e3 / batch:.0f}",
                  mib(peaks[name])] for name, (_, _, batch) in inference.items()])
    print_table(["training step", "steps/block", "ms/step", "IQR ms", "images/s", "process CPU ms/image",
                 "peak MiB"],
                [[name, number[name], milliseconds(timings[name].median), milliseconds(timings[name].iqr),
                  f"{train_batch / timings[name].median:.2f}",
                  f"{timings[name].cpu_median * 1e3 / train_batch:.0f}", mib(peaks[name])] for name in training])

    def per_second(name: str) -> tuple[float, ...]:
        return throughput(timings[name], items[name])

    def ratio(label: str, numerator: str, denominator: str) -> tuple[float, float, float]:
        value = paired_ratio(per_second(numerator), per_second(denominator))
        print(ratio_line(label, value))
        return value

    head_share: dict[int, float] = {}
    for batch in batch_sizes:
        value = ratio(f"images/s ClaSegNet/baseline [batch {batch}]", name_of("clasegnet", batch),
                      name_of("baseline", batch))
        head_share[batch] = 1.0 - value[0]
    for mode in MODES:
        for batch in batch_sizes[1:]:
            ratio(f"images/s batch-{batch}/batch-{base_batch} [{LABELS[mode]}]", name_of(mode, batch),
                  name_of(mode, base_batch))
    for mode in MODES:
        ratio(f"images/s channels-last/contiguous [{LABELS[mode]}, batch {compare}]",
              name_of(mode, compare, ", channels-last"), name_of(mode, compare))
    if cuda:
        for mode in MODES:
            ratio(f"images/s amp-fp16/fp32 [{LABELS[mode]}, batch {compare}]", name_of(mode, compare, ", AMP fp16"),
                  name_of(mode, compare))
    train_ratio = ratio(f"train images/s ClaSegNet/baseline [batch {train_batch}]", train_names["clasegnet"],
                        train_names["baseline"])
    if cuda:
        ratio(f"train images/s ClaSegNet/baseline [batch {train_batch}, AMP fp16]", amp_names["clasegnet"],
              amp_names["baseline"])
        for mode in MODES:
            ratio(f"train images/s amp-fp16/fp32 [{LABELS[mode]}, batch {train_batch}]", amp_names[mode],
                  train_names[mode])

    threads = f"torch threads: {torch.get_num_threads()}"
    for mode in MODES:
        print(f"images/s [{LABELS[mode]}, {size} px, {device}]: inference "
              + ", ".join(f"batch {b} {b / timings[name_of(mode, b)].median:.2f}" for b in batch_sizes)
              + f"; training batch {train_batch} {train_batch / timings[train_names[mode]].median:.2f}; {threads}")
    print("share of ClaSegNet's time in its region head and segmentation branch (1 - the images/s ratio): "
          + ", ".join(f"inference batch {b} {share:.0%}" for b, share in head_share.items())
          + f", training batch {train_batch} {1.0 - train_ratio[0]:.0%}")
    if memory.available:
        def memory_pair(name_a: str, name_b: str) -> str:
            a, b = peaks[name_a], peaks[name_b]
            times = f", {a / b:.2f}x" if a is not None and b is not None and b > 0 else ""
            return f"{mib(a)} vs {mib(b)} MiB{times}"

        print(f"peak memory ClaSegNet vs baseline [{size} px, {device}]: inference "
              + ", ".join(f"batch {b} {memory_pair(name_of('clasegnet', b), name_of('baseline', b))}"
                          for b in batch_sizes)
              + f"; training step batch {train_batch} {memory_pair(train_names['clasegnet'], train_names['baseline'])}")
    else:
        print(f"peak memory: {memory.method}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
