"""Benchmark: images/s of the classifier's DenseNet-121 at 512 px, inference and one training step, with its variants.

The classifier bundle's network (``bundles/classifier/configs/train.json``): ``CXRDenseNet121`` with 13 classes
(the CheXpert findings of the seed's Table 1; ``train.json`` counts them from the datalist), its ``block_config``,
``downsample_input=True`` (the seed's extra stride-2 3x3 convolution + stride-2 max-pool, 512 px -> 128 px before
DenseNet's own stem), at ``train.json``'s 512 px; random initialisation (timing does not depend on the weights).
Inference runs as the bundle's evaluator and inference run it: eval mode, ``torch.inference_mode()``, host-to-device
copy, probabilities = ``sigmoid(logits)``. Each call takes a batch of phantom radiographs held on the host
(``make_phantom``: 512x512 in [0, 1], as the reader gives them) and returns logits and probabilities, so
images/s = batch / seconds per call. A training step is the bundle's ``SupervisedTrainer`` iteration: forward,
``MaskedBCEWithLogitsLoss`` with ``pos_weight`` (``class_weighting`` on: ``class_pos_weights`` of 1000 random label
rows) on random multi-hot labels with uncertain (-1) and unmentioned (NaN) entries, which the loss masks, backward,
``AdamW`` with ``train.json``'s lr 1e-4 and weight decay 1e-5.

Measured side by side in one run (interleaved rounds, see ``bench/README.md``):

- inference of the bundle's network (extra stem, 1 channel) at batch 1, 4 and 16 (``--batch-sizes``; 16 is
  ``train.json``'s ``val_batch_size``);
- inference at batch 4 (``--compare-batch``) of the variants, each against the bundle's network at that batch:
  plain DenseNet-121 at 512 px, i.e. without the extra stem (``downsample_input=False``, ``small.json``'s network,
  which that config runs at 256 px); 3 input channels (image + lung-segmented + bone-suppressed, Table 1's last
  row: the phantom's radiograph, the radiograph inside its lung mask, its rib-free ``soft_tissue`` image) vs 1;
  ``DualBranchDenseNet121`` with a lateral (frontal 1 channel + lateral 1 channel, ``lateral_present`` all true)
  vs the single branch; channels-last vs contiguous (same weights); on CUDA only AMP fp16 vs fp32
  (``torch.autocast``, as the bundle's ``amp`` on a GPU);
- one training step at batch 2 (``--train-batch-size``) of the same variants: extra stem vs plain, 3 vs 1
  channels, dual branch vs single, channels-last vs contiguous, on CUDA AMP fp16 (with a ``GradScaler``) vs fp32;
- peak memory of a call of each variant above what was resident before it: for inference the call after one
  untimed warm-up call (what a call needs, without the one-time allocations of a network's first call), for
  training the first step (its activations, gradients and AdamW's state, which the first step allocates): on CUDA
  ``torch.cuda.max_memory_allocated``; on Linux the peak resident set (``VmHWM``, reset through
  ``/proc/self/clear_refs``, after ``malloc_trim``); see ``_common.PeakMemory``.

The bundle's network takes tens of milliseconds per image on one CPU thread, so a timed block is not one call:
each variant's block makes as many calls as fill ``--block-seconds`` (1 s; estimated from the untimed call whose
memory is measured, at least 1, at most 64), which lowers the noise of the fast variants without multiplying the
cost of the slow ones (the plain network's training step takes seconds).

Before timing: batch 4 and 16, channels-last and (loosely) AMP must give batch 1's logits for the first image
(relative 1e-3; AMP 5e-2), same network and image; every variant's logits must be finite; the channels-last (and
AMP) training step's first loss must match the contiguous fp32 step's from the same weights and batch (relative
1e-3; AMP 5e-2). The stem, 3-channel and dual-branch networks compute other functions, so they are only checked
for finite outputs and losses.

Goal (issue #12): the figures themselves, images/s at 512 px in training and inference, and memory; the issue sets
no ratio to reach, so the ratio lines are informational (``no goal``). GPU figures come only with
``--device cuda``.

    python bench/bench_classifier.py                     # 512 px, batches 1/4/16, 5 rounds: ~5 min on 2 shared cores
    python bench/bench_classifier.py --repeats 3         # shorter
    python bench/bench_classifier.py --device cuda --batch-sizes 1 16 64 --compare-batch 16 --train-batch-size 16
    python bench/bench_classifier.py --quick             # seconds; checks that it runs
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
from cxr_monai.losses import MaskedBCEWithLogitsLoss, class_pos_weights
from cxr_monai.networks import CXRDenseNet121, DualBranchDenseNet121

TRAIN_CONFIG = json.loads((REPO_ROOT / "bundles" / "classifier" / "configs" / "train.json").read_text())
IMAGE_SIZE = int(TRAIN_CONFIG["image_size"])  # 512
BLOCK_CONFIG = tuple(int(n) for n in TRAIN_CONFIG["block_config"])  # DenseNet-121: 6, 12, 24, 16
LEARNING_RATE = float(TRAIN_CONFIG["learning_rate"])  # 1e-4
WEIGHT_DECAY = float(TRAIN_CONFIG["weight_decay"])  # 1e-5
EVAL_BATCH = int(TRAIN_CONFIG["val_batch_size"])  # 16
NUM_CLASSES = 13  # the CheXpert findings of the seed's Table 1 (train.json: len of the datalist's label_names)
# random labels as a CheXpert datalist holds them: 1 present, 0 absent, -1 uncertain, NaN (null) not mentioned
LABEL_VALUES, LABEL_PROBABILITIES = (1.0, 0.0, -1.0, math.nan), (0.15, 0.55, 0.10, 0.20)
LABEL_ROWS = 1000  # rows behind pos_weight (the bundle's class_weighting counts the training split)
# a 2x2 last dense-block map with the extra stem (densenet_input_size_limit gives 113 px for 1x1)
MIN_SIZE = 2 * 128


def make_inputs(count: int, size: int) -> dict[str, torch.Tensor]:
    """``count`` phantoms as ``(count, C, size, size)`` host tensors in [0, 1]: ``grey`` (the radiograph),
    ``three`` (radiograph, radiograph inside the lung mask, rib-free soft-tissue image) and ``lateral``."""
    radiographs = [make_phantom(size, seed=seed, bone_pairs=True, lateral=True) for seed in range(count)]
    image = np.stack([r.image for r in radiographs])
    lung_segmented = image * np.stack([r.lung_mask for r in radiographs])  # MaskIntensityd with the lung mask
    bone_suppressed = np.stack([r.soft_tissue for r in radiographs])
    lateral = np.stack([r.lateral.image for r in radiographs])
    return {
        "grey": torch.from_numpy(image)[:, None].float(),
        "three": torch.from_numpy(np.stack([image, lung_segmented, bone_suppressed], axis=1)).float(),
        "lateral": torch.from_numpy(lateral)[:, None].float(),
    }


def random_labels(rows: int, seed: int = 0) -> torch.Tensor:
    """``(rows, NUM_CLASSES)`` labels drawn from 1, 0, -1 and NaN (``multilabel_targets`` of a datalist's rows)."""
    generator = np.random.default_rng(seed)
    return torch.from_numpy(generator.choice(LABEL_VALUES, size=(rows, NUM_CLASSES), p=LABEL_PROBABILITIES)).float()


def make_network(kind: str, device: torch.device, in_channels: int = 1, channels_last: bool = False,
                 seed: int = 0) -> torch.nn.Module:
    """``stem``: the bundle's ``CXRDenseNet121``; ``plain``: the same without the extra stem; ``dual``:
    ``DualBranchDenseNet121`` (frontal ``in_channels``, lateral 1 channel) with the extra stem."""
    torch.manual_seed(seed)
    common = {"num_classes": NUM_CLASSES, "block_config": BLOCK_CONFIG}
    if kind == "dual":
        network: torch.nn.Module = DualBranchDenseNet121(in_channels=in_channels, lateral_channels=1,
                                                         downsample_input=True, **common)
    elif kind in ("stem", "plain"):
        network = CXRDenseNet121(in_channels=in_channels, downsample_input=kind == "stem", **common)
    else:
        raise ValueError(f"unknown network kind {kind!r}")
    return network.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def to_device(x: torch.Tensor, device: torch.device, memory_format: torch.memory_format) -> torch.Tensor:
    """Images (4-D) in ``memory_format``; anything else (``lateral_present`` flags) as it is."""
    if x.dim() == 4:
        return x.to(device, non_blocking=True, memory_format=memory_format)
    return x.to(device, non_blocking=True)


def autocast_or_not(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.float16) if amp else contextlib.nullcontext()


class Classifier:
    """Probabilities of a host-held batch, as the bundle's evaluator makes them (eval mode, inference mode,
    ``sigmoid`` of the logits); ``inputs`` are the network's positional arguments; returns ``(logits, probs)``."""

    def __init__(self, network: torch.nn.Module, device: torch.device, channels_last: bool = False,
                 amp: bool = False) -> None:
        self.network = network.eval()
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.amp = amp

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode(), autocast_or_not(self.device, self.amp):
            arguments = [to_device(x, self.device, self.memory_format) for x in inputs]
            logits = self.network(*arguments).float()
            probabilities = torch.sigmoid(logits)
        return logits, probabilities


class TrainStep:
    """One training iteration of the bundle's ``SupervisedTrainer``: forward, ``MaskedBCEWithLogitsLoss`` (with
    ``pos_weight``), backward, ``AdamW`` step (with a ``GradScaler`` under fp16 AMP); returns the loss."""

    def __init__(self, network: torch.nn.Module, inputs: Sequence[torch.Tensor], labels: torch.Tensor,
                 pos_weight: torch.Tensor, device: torch.device, channels_last: bool = False,
                 amp: bool = False) -> None:
        self.network = network.train()
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.inputs = [to_device(x, device, memory_format) for x in inputs]
        self.labels = labels.to(device)
        self.device, self.amp = device, amp
        self.loss = MaskedBCEWithLogitsLoss(pos_weight=pos_weight).to(device)
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def __call__(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_or_not(self.device, self.amp):
            logits = self.network(*self.inputs)
            loss = self.loss(logits.float(), self.labels)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, repeats=5)
    parser.add_argument("--size", type=int, default=IMAGE_SIZE,
                        help=f"image size in px (default: {IMAGE_SIZE}, train.json's image_size)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, EVAL_BATCH],
                        help="inference batches of the bundle's network; the smallest is the baseline of the batching "
                             f"ratios (default: 1 4 {EVAL_BATCH})")
    parser.add_argument("--compare-batch", type=int, default=4,
                        help="batch of the plain, 3-channel, dual-branch, channels-last and AMP comparisons "
                             "(default: 4)")
    parser.add_argument("--train-batch-size", type=int, default=2, help="images per training step (default: 2)")
    parser.add_argument("--block-seconds", type=float, default=1.0,
                        help="each timed block makes as many calls as fill this (estimated from an untimed call; "
                             f"1 to {MAX_CALLS_PER_BLOCK}); 0: one call (default: 1.0)")
    args = parser.parse_args(argv)
    device = resolve_device(parser, args.device)
    if args.quick:
        args.size, args.batch_sizes, args.compare_batch, args.train_batch_size = 256, [1, 2], 2, 2
        args.repeats, args.block_seconds = 1, 0.0
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.size < MIN_SIZE:
        parser.error(f"--size must be at least {MIN_SIZE} px, got {args.size}: with the extra stem the last dense "
                     "block's map is size/128, and at 1x1 the training step's batch norm over 2 values per channel "
                     "is too ill-conditioned for the channels-last check (2e-2 apart at 128 px)")
    if min(args.batch_sizes) < 1 or args.compare_batch < 1:
        parser.error("batch sizes must be at least 1")
    if args.train_batch_size < 2:
        parser.error("--train-batch-size must be at least 2 (batch norm in training mode over a few pixels of "
                     "the last dense block's map per image)")
    torch.set_num_threads(args.threads)
    batch_sizes = sorted(set(args.batch_sizes) | {args.compare_batch})
    base_batch, compare, train_batch = batch_sizes[0], args.compare_batch, args.train_batch_size
    cuda = device.type == "cuda"
    memory = PeakMemory(device)

    print_machine_info("classifier (CXRDenseNet121 / DualBranchDenseNet121): images per second and a training step",
                       device, {
        "network": f"CXRDenseNet121(num_classes {NUM_CLASSES}, block_config {list(BLOCK_CONFIG)}), downsample_input "
                   "True (train.json) vs False (plain DenseNet-121); 1 and 3 input channels; DualBranchDenseNet121 "
                   "(frontal 1 + lateral 1 channel); random initialisation",
        "input": f"phantom radiographs {args.size}x{args.size} in [0, 1] on the host; inference batches "
                 f"{batch_sizes}, comparisons at batch {compare}; training batch {train_batch}",
        "inference": "eval mode, torch.inference_mode(), host-to-device copy, sigmoid(logits)"
                     + ("; AMP fp16 also" if cuda else "; AMP fp16: CUDA only, not measured"),
        "training step": f"MaskedBCEWithLogitsLoss(pos_weight) on random labels (1/0/-1/NaN, p "
                         f"{'/'.join(f'{p:g}' for p in LABEL_PROBABILITIES)}) + backward + "
                         f"AdamW(lr {LEARNING_RATE:g}, wd {WEIGHT_DECAY:g})" + (", fp32 and AMP fp16" if cuda else
                                                                                ", fp32"),
        "timing": f"{args.repeats} interleaved rounds; per round and variant one Timer block of 2 warm-up calls "
                  f"and as many timed calls as fill {args.block_seconds:g} s (1-{MAX_CALLS_PER_BLOCK}; from the "
                  "memory-measured call)",
        "memory": f"{memory.method}; inference: the call after a warm-up call, training: the first step",
    })

    inputs = make_inputs(max(batch_sizes + [train_batch]), args.size)
    grey, three, lateral = inputs["grey"], inputs["three"], inputs["lateral"]
    stem = make_network("stem", device)
    stem_channels_last = copy.deepcopy(stem).to(memory_format=torch.channels_last)

    def present(batch: int) -> torch.Tensor:
        return torch.ones(batch, dtype=torch.bool)

    # inference variants: name -> (classifier, host inputs, batch, compared with batch 1 of the bundle's network)
    name_of_batch = {b: f"stem, 1 ch, batch {b}" for b in batch_sizes}
    names = {
        "plain": f"plain (no stem), 1 ch, batch {compare}",
        "three": f"stem, 3 ch, batch {compare}",
        "dual": f"dual branch + lateral, batch {compare}",
        "channels_last": f"stem, 1 ch, batch {compare}, channels-last",
        "amp": f"stem, 1 ch, batch {compare}, AMP fp16",
    }
    inference: dict[str, tuple[Classifier, tuple[torch.Tensor, ...], int, bool]] = {
        name_of_batch[b]: (Classifier(stem, device), (grey[:b],), b, True) for b in batch_sizes
    }
    inference[names["plain"]] = (Classifier(make_network("plain", device), device), (grey[:compare],), compare, False)
    inference[names["three"]] = (Classifier(make_network("stem", device, in_channels=3), device), (three[:compare],),
                                 compare, False)
    inference[names["dual"]] = (Classifier(make_network("dual", device), device),
                                (grey[:compare], lateral[:compare], present(compare)), compare, False)
    inference[names["channels_last"]] = (Classifier(stem_channels_last, device, channels_last=True),
                                         (grey[:compare],), compare, True)
    if cuda:
        inference[names["amp"]] = (Classifier(stem, device, amp=True), (grey[:compare],), compare, True)

    # a warm-up call, then one measured call: peak memory, the call's time, and the maths check against batch 1
    peaks: dict[str, int | None] = {}
    first_seconds: dict[str, float] = {}
    first_logits: dict[str, torch.Tensor] = {}
    for name, (classifier, host_inputs, _, _) in inference.items():
        classifier(*host_inputs)  # one-time allocations (the network's first call) stay out of the peak
        timed = measure_first(memory, lambda c=classifier, x=host_inputs: c(*x), device)
        (logits, probabilities), peaks[name], first_seconds[name] = timed
        if not (torch.isfinite(logits).all() and ((probabilities >= 0) & (probabilities <= 1)).all()):
            print(f"error: {name}: non-finite logits or probabilities outside [0, 1]", file=sys.stderr)
            return 1
        first_logits[name] = logits[:1].cpu().clone()
    reference = first_logits[name_of_batch[base_batch]]
    checks = []
    for name, (_, _, _, compared) in inference.items():
        if not compared or name == name_of_batch[base_batch]:
            continue
        tolerance = 5e-2 if name == names["amp"] else 1e-3
        difference = relative_difference(first_logits[name], reference)
        probability_gap = (torch.sigmoid(first_logits[name]) - torch.sigmoid(reference)).abs().max().item()
        checks.append(f"[{name}] vs batch {base_batch}: first image's logits differ by {difference:.1e} of their "
                      f"range, probabilities by at most {probability_gap:.1e}")
        if difference > tolerance or not math.isfinite(difference):
            print("\n".join(checks))
            print(f"error: [{name}] differs from batch {base_batch} by more than {tolerance:g}; the comparison "
                  "would not be of the same maths", file=sys.stderr)
            return 1

    # training steps: labels with masked entries, pos_weight as class_weighting makes it
    all_labels = random_labels(LABEL_ROWS)
    pos_weight = class_pos_weights(all_labels)
    labels = all_labels[:train_batch]
    kept = int(((labels == 0) | (labels == 1)).sum())
    train_names = {
        "stem": f"train stem, 1 ch, batch {train_batch}",
        "plain": f"train plain (no stem), 1 ch, batch {train_batch}",
        "three": f"train stem, 3 ch, batch {train_batch}",
        "dual": f"train dual branch + lateral, batch {train_batch}",
        "channels_last": f"train stem, 1 ch, batch {train_batch}, channels-last",
        "amp": f"train stem, 1 ch, batch {train_batch}, AMP fp16",
    }
    train_grey = (grey[:train_batch],)
    stem_for_training = make_network("stem", device)
    stem_for_training_cl = copy.deepcopy(stem_for_training).to(memory_format=torch.channels_last)
    stem_for_training_amp = copy.deepcopy(stem_for_training) if cuda else None

    def step(network: torch.nn.Module, host_inputs: Sequence[torch.Tensor], **kwargs: Any) -> TrainStep:
        return TrainStep(network, host_inputs, labels, pos_weight, device, **kwargs)

    training: dict[str, TrainStep] = {
        train_names["stem"]: step(stem_for_training, train_grey),
        train_names["plain"]: step(make_network("plain", device), train_grey),
        train_names["three"]: step(make_network("stem", device, in_channels=3), (three[:train_batch],)),
        train_names["dual"]: step(make_network("dual", device),
                                  (grey[:train_batch], lateral[:train_batch], present(train_batch))),
        train_names["channels_last"]: step(stem_for_training_cl, train_grey, channels_last=True),
    }
    if stem_for_training_amp is not None:
        training[train_names["amp"]] = step(stem_for_training_amp, train_grey, amp=True)
    first_losses: dict[str, float] = {}
    for name, train_step in training.items():
        loss, peaks[name], first_seconds[name] = measure_first(memory, train_step, device)
        first_losses[name] = loss.item()
        if not math.isfinite(first_losses[name]):
            print(f"error: {name}: the first step's loss is not finite", file=sys.stderr)
            return 1
    for key, tolerance in (("channels_last", 1e-3), ("amp", 5e-2)):
        if train_names[key] not in training:
            continue
        ours, theirs = first_losses[train_names[key]], first_losses[train_names["stem"]]
        difference = abs(ours - theirs) / max(abs(theirs), 1e-12)
        checks.append(f"[{train_names[key]}] vs [{train_names['stem']}]: first step's loss {ours:.6f} vs "
                      f"{theirs:.6f} (relative {difference:.1e})")
        if difference > tolerance:
            print("\n".join(checks))
            print(f"error: [{train_names[key]}] differs from fp32 contiguous by more than {tolerance:g}; the "
                  "comparison would not be of the same step", file=sys.stderr)
            return 1
    print("same maths:\n  " + "\n  ".join(checks))
    print(f"first training step's loss ({kept} of {labels.numel()} labels kept, the rest -1/NaN): "
          + ", ".join(f"{name}: {loss:.4f}" for name, loss in first_losses.items()), end="\n\n", flush=True)

    variants: dict[str, Callable[[], Any]] = {
        name: (lambda c=classifier, x=host_inputs: c(*x)) for name, (classifier, host_inputs, _, _) in inference.items()
    }
    variants.update(training)
    number = {name: calls_per_block(first_seconds[name], args.block_seconds) for name in variants}
    timings = measure_interleaved(variants, repeats=args.repeats, number=number, threads=args.threads)

    items = {name: batch for name, (_, _, batch, _) in inference.items()}
    items.update({name: train_batch for name in training})
    print_table(["inference", "batch", "calls/block", "ms/call", "IQR ms", "images/s", "process CPU ms/image",
                 "peak MiB"],
                [[name, batch, number[name], milliseconds(timings[name].median), milliseconds(timings[name].iqr),
                  f"{batch / timings[name].median:.2f}", f"{timings[name].cpu_median * 1e3 / batch:.0f}",
                  mib(peaks[name])] for name, (_, _, batch, _) in inference.items()])
    print_table(["training step", "steps/block", "ms/step", "IQR ms", "images/s", "process CPU ms/image",
                 "peak MiB"],
                [[name, number[name], milliseconds(timings[name].median), milliseconds(timings[name].iqr),
                  f"{train_batch / timings[name].median:.2f}",
                  f"{timings[name].cpu_median * 1e3 / train_batch:.0f}", mib(peaks[name])] for name in training])

    def per_second(name: str) -> tuple[float, ...]:
        return throughput(timings[name], items[name])

    def ratio(label: str, numerator: str, denominator: str) -> None:
        print(ratio_line(label, paired_ratio(per_second(numerator), per_second(denominator))))

    base = name_of_batch[base_batch]
    for batch in batch_sizes[1:]:
        ratio(f"images/s batch-{batch}/batch-{base_batch} [stem, 1 ch]", name_of_batch[batch], base)
    at = f"[batch {compare}]"
    ratio(f"images/s stem/plain {at}", name_of_batch[compare], names["plain"])
    ratio(f"images/s 3-ch/1-ch {at}", names["three"], name_of_batch[compare])
    ratio(f"images/s dual+lateral/single {at}", names["dual"], name_of_batch[compare])
    ratio(f"images/s channels-last/contiguous {at}", names["channels_last"], name_of_batch[compare])
    if cuda:
        ratio(f"images/s amp-fp16/fp32 {at}", names["amp"], name_of_batch[compare])
    at = f"[batch {train_batch}]"
    ratio(f"train images/s stem/plain {at}", train_names["stem"], train_names["plain"])
    ratio(f"train images/s 3-ch/1-ch {at}", train_names["three"], train_names["stem"])
    ratio(f"train images/s dual+lateral/single {at}", train_names["dual"], train_names["stem"])
    ratio(f"train images/s channels-last/contiguous {at}", train_names["channels_last"], train_names["stem"])
    if cuda:
        ratio(f"train images/s amp-fp16/fp32 {at}", train_names["amp"], train_names["stem"])

    best = max(name_of_batch.values(), key=lambda name: items[name] / timings[name].median)
    threads = f"torch threads: {torch.get_num_threads()}"
    print(f"images/s [stem, 1 ch, {args.size} px, {device}]: inference "
          + ", ".join(f"batch {b} {b / timings[name_of_batch[b]].median:.2f}" for b in batch_sizes)
          + f" (best {items[best] / timings[best].median:.2f} at batch {items[best]}); training batch {train_batch} "
          f"{train_batch / timings[train_names['stem']].median:.2f}; {threads}")
    print(f"images/s [plain DenseNet-121 (no stem), 1 ch, {args.size} px, {device}]: inference batch {compare} "
          f"{compare / timings[names['plain']].median:.2f}; training batch {train_batch} "
          f"{train_batch / timings[train_names['plain']].median:.2f}; {threads}")
    if memory.available:
        print(f"peak memory [{args.size} px, {device}]: inference stem, 1 ch "
              + ", ".join(f"batch {b} {mib(peaks[name_of_batch[b]])} MiB" for b in batch_sizes)
              + f"; training step batch {train_batch}: stem {mib(peaks[train_names['stem']])} MiB, plain "
              f"{mib(peaks[train_names['plain']])} MiB, 3 ch {mib(peaks[train_names['three']])} MiB, dual "
              f"{mib(peaks[train_names['dual']])} MiB")
    else:
        print(f"peak memory: {memory.method}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
