"""Benchmark: lung masks per second of ``VGG16UNet`` at 512 px, batched, narrower and channels-last; one training step.

The lung-segmentation bundle's network (``bundles/lung_segmentation/configs/train.json``: 512 px, width 1.0,
``norm="batch"``; ``small.json``: width 0.25), random initialisation (timing does not depend on the weights), run
the way the bundle's evaluator and inference run it: eval mode, ``torch.inference_mode()``, then the
postprocessing ``Activationsd(sigmoid=True)`` + ``AsDiscreted(threshold=0.5)`` as ``sigmoid(logits) >= 0.5``.
Each call takes a batch of phantom radiographs held on the host (1x512x512, [0, 1], as the reader gives them)
to the device and returns its masks, so masks/s = batch / seconds per call.

Measured side by side in one run (interleaved rounds, see ``bench/README.md``):

- inference at width 1.0 with batch 1, 4 and 8 (``--batch-sizes``);
- inference at batch 4 (``--compare-batch``): width 0.25 vs 1.0, channels-last vs contiguous, and on CUDA only
  AMP fp16 vs fp32 (``torch.autocast``, as the bundle's ``amp`` on a GPU);
- one training step, ``DiceCELoss(sigmoid=True)`` + backward + ``AdamW`` (the bundle's lr 1e-4, weight decay
  1e-5) on batch 2 (``--train-batch-size``) with the phantoms' lung masks: width 1.0 vs 0.25, fp32 (on CUDA
  also AMP fp16 with a ``GradScaler``, as the bundle trains on a GPU);
- peak memory of each variant's first call above what was resident before it (model, inputs, for the training
  step also the model's weights but not yet its gradients or AdamW state): on CUDA
  ``torch.cuda.max_memory_allocated``; on Linux the peak resident set (``VmHWM`` in ``/proc/self/status``,
  reset through ``/proc/self/clear_refs``); elsewhere the resident-set growth from ``psutil`` if it is
  installed, else not measured.

Before timing, every width-1.0 inference variant's logits of the first image must match batch 1's (same
network, same image): batching, channels-last and (loosely) AMP must not change the masks' maths.

Goal (issue #10): the figures themselves, masks/s at 512 px on a CPU, batched; the issue sets no ratio to
reach, so the ratio lines are informational (``no goal``).

    python bench/bench_lung_segmentation.py                    # 512 px, batches 1/4/8, CPU: ~25 min on 2 shared cores
    python bench/bench_lung_segmentation.py --batch-sizes 1 4 --repeats 1   # shorter
    python bench/bench_lung_segmentation.py --device cuda --batch-sizes 1 4 8 32
    python bench/bench_lung_segmentation.py --quick            # seconds; checks that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from _common import (
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
from monai.losses import DiceCELoss

from cxr_monai.data import make_phantom
from cxr_monai.networks import VGG16UNet

WIDE, NARROW = 1.0, 0.25  # train.json and small.json
NORM = "batch"
THRESHOLD = 0.5  # AsDiscreted(threshold=0.5) of the bundle's postprocessing
LEARNING_RATE, WEIGHT_DECAY = 1e-4, 1e-5  # train.json
MIB = 2**20


def make_batch(count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` phantom radiographs ``(count, 1, size, size)`` in [0, 1] and their lung masks (float 0/1)."""
    radiographs = [make_phantom(size, seed=seed) for seed in range(count)]
    images = torch.from_numpy(np.stack([r.image for r in radiographs]))[:, None]
    masks = torch.from_numpy(np.stack([r.lung_mask for r in radiographs]).astype(np.float32))[:, None]
    return images, masks


def make_network(width: float, device: torch.device, channels_last: bool = False, seed: int = 0) -> VGG16UNet:
    torch.manual_seed(seed)
    network = VGG16UNet(in_channels=1, out_channels=1, width=width, norm=NORM)
    return network.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class Segmenter:
    """Masks of a host-held batch, as the bundle's evaluator makes them (eval mode, inference mode, sigmoid,
    threshold); returns ``(logits, masks)``."""

    def __init__(self, network: torch.nn.Module, device: torch.device, channels_last: bool = False,
                 amp: bool = False) -> None:
        self.network = network.eval()
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.amp = amp

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        autocast = torch.autocast(self.device.type, dtype=torch.float16) if self.amp else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            inputs = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
            logits = self.network(inputs).float()
            masks = (torch.sigmoid(logits) >= THRESHOLD).to(torch.float32)
        return logits, masks


class TrainStep:
    """One training iteration of the bundle's ``SupervisedTrainer``: forward, ``DiceCELoss(sigmoid=True)``,
    backward, ``AdamW`` step (with a ``GradScaler`` under fp16 AMP); returns the loss."""

    def __init__(self, network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                 amp: bool = False) -> None:
        self.network = network.train()
        self.images, self.labels = images.to(device), labels.to(device)
        self.device, self.amp = device, amp
        self.loss = DiceCELoss(sigmoid=True)
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)

    def __call__(self) -> torch.Tensor:
        autocast = torch.autocast(self.device.type, dtype=torch.float16) if self.amp else contextlib.nullcontext()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = self.network(self.images)
            loss = self.loss(logits.float(), self.labels)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


def relative_difference(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |logits - reference| / max |reference|`` (on the host, float64)."""
    a, b = logits.double().cpu(), reference.double().cpu()
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-12)


def throughput(timing: Timing, items: int) -> tuple[float, ...]:
    """Items per second in each round."""
    return tuple(items / seconds for seconds in timing.wall)


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--size", type=int, default=512, help="image size in px, a multiple of 32 (default: 512)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8],
                        help="inference batches at width 1.0; the smallest is the baseline of the batching ratios "
                             "(default: 1 4 8)")
    parser.add_argument("--compare-batch", type=int, default=4,
                        help="batch of the width, channels-last and AMP comparisons (default: 4)")
    parser.add_argument("--train-batch-size", type=int, default=2, help="images per training step (default: 2)")
    args = parser.parse_args(argv)
    device = resolve_device(parser, args.device)
    if args.quick:
        args.size, args.batch_sizes, args.compare_batch, args.repeats = 64, [1, 4], 4, 1
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.size < 32 or args.size % 32:
        parser.error(f"--size must be a positive multiple of 32 (five 2x2 max-pools), got {args.size}")
    if min(args.batch_sizes) < 1 or args.compare_batch < 1:
        parser.error("batch sizes must be at least 1")
    if args.train_batch_size < 2:
        parser.error("--train-batch-size must be at least 2 (batch norm in training mode)")
    torch.set_num_threads(args.threads)
    batch_sizes = sorted(set(args.batch_sizes) | {args.compare_batch})
    base_batch, compare = batch_sizes[0], args.compare_batch
    cuda = device.type == "cuda"
    memory = PeakMemory(device)

    print_machine_info("lung segmentation (VGG16UNet): masks per second and a training step", device, {
        "network": f"VGG16UNet(in 1, out 1, norm {NORM!r}), widths {WIDE} (train.json) and {NARROW} (small.json), "
                   "random initialisation",
        "input": f"phantom radiographs 1x{args.size}x{args.size}, [0, 1], on the host; inference batches "
                 f"{batch_sizes}, comparisons at batch {compare}; training batch {args.train_batch_size}",
        "inference": "eval mode, torch.inference_mode(), host-to-device copy, sigmoid >= 0.5 masks"
                     + ("; AMP fp16 also" if cuda else "; AMP fp16: CUDA only, not measured"),
        "training step": "DiceCELoss(sigmoid=True) + backward + AdamW(lr 1e-4, wd 1e-5)"
                         + (", fp32 and AMP fp16" if cuda else ", fp32"),
        "timing": f"{args.repeats} interleaved rounds, each call timed after 2 warm-up calls "
                  "(torch.utils.benchmark.Timer)",
        "memory": f"{memory.method}; each variant's first call",
    })

    images, labels = make_batch(max(batch_sizes), args.size)
    wide = make_network(WIDE, device)
    narrow = make_network(NARROW, device)
    wide_channels_last = copy.deepcopy(wide).to(memory_format=torch.channels_last)

    # inference variants: name -> (segmenter, batch, compared with batch 1 of the same network)
    batched = {f"width {WIDE}, batch {b}": (Segmenter(wide, device), b, True) for b in batch_sizes}
    name_of_batch = {b: f"width {WIDE}, batch {b}" for b in batch_sizes}
    names = {
        "narrow": f"width {NARROW}, batch {compare}",
        "channels_last": f"width {WIDE}, batch {compare}, channels-last",
        "amp": f"width {WIDE}, batch {compare}, AMP fp16",
    }
    inference = dict(batched)
    inference[names["narrow"]] = (Segmenter(narrow, device), compare, False)
    inference[names["channels_last"]] = (Segmenter(wide_channels_last, device, channels_last=True), compare, True)
    if cuda:
        inference[names["amp"]] = (Segmenter(wide, device, amp=True), compare, True)

    # first calls: peak memory, and the maths check against batch 1 of the same network
    peaks: dict[str, int | None] = {}
    first_logits: dict[str, torch.Tensor] = {}
    for name, (segmenter, batch, _) in inference.items():
        (logits, _), peaks[name] = memory.measure(lambda s=segmenter, b=batch: s(images[:b]))
        if not torch.isfinite(logits).all():
            print(f"error: {name}: non-finite logits", file=sys.stderr)
            return 1
        first_logits[name] = logits[:1].cpu().clone()
    reference = first_logits[name_of_batch[base_batch]]
    checks = []
    for name, (_, _, compared) in inference.items():
        if not compared or name == name_of_batch[base_batch]:
            continue
        tolerance = 5e-2 if name == names["amp"] else 1e-3
        difference = relative_difference(first_logits[name], reference)
        agree = ((first_logits[name] >= 0) == (reference >= 0)).double().mean().item()
        checks.append(f"[{name}] vs batch {base_batch}: first image's logits differ by {difference:.1e} of their "
                      f"range, masks agree on {agree:.2%} of pixels")
        if difference > tolerance or not math.isfinite(difference):
            print("\n".join(checks))
            print(f"error: [{name}] differs from batch {base_batch} by more than {tolerance:g}; the comparison "
                  "would not be of the same maths", file=sys.stderr)
            return 1
    print("same maths:\n  " + "\n  ".join(checks))

    # training steps: the first one's peak memory (includes the gradients and AdamW's state) and loss
    train_images, train_labels = images[: args.train_batch_size], labels[: args.train_batch_size]
    if len(train_images) < args.train_batch_size:
        train_images, train_labels = make_batch(args.train_batch_size, args.size)
    train_names = {"wide": f"train width {WIDE}, batch {args.train_batch_size}",
                   "narrow": f"train width {NARROW}, batch {args.train_batch_size}",
                   "amp": f"train width {WIDE}, batch {args.train_batch_size}, AMP fp16"}
    training = {
        train_names["wide"]: TrainStep(make_network(WIDE, device), train_images, train_labels, device),
        train_names["narrow"]: TrainStep(make_network(NARROW, device), train_images, train_labels, device),
    }
    if cuda:
        training[train_names["amp"]] = TrainStep(make_network(WIDE, device), train_images, train_labels, device,
                                                 amp=True)
    losses = []
    for name, step in training.items():
        loss, peaks[name] = memory.measure(step)
        losses.append(f"{name}: {loss.item():.4f}")
        if not math.isfinite(loss.item()):
            print(f"error: {name}: the first step's loss is not finite", file=sys.stderr)
            return 1
    print("first training step's loss: " + ", ".join(losses), end="\n\n", flush=True)

    variants: dict[str, Callable[[], Any]] = {
        name: (lambda s=segmenter, b=batch: s(images[:b])) for name, (segmenter, batch, _) in inference.items()
    }
    variants.update(training)
    timings = measure_interleaved(variants, repeats=args.repeats, threads=args.threads)

    items = {name: batch for name, (_, batch, _) in inference.items()}
    items.update({name: args.train_batch_size for name in training})
    print_table(["inference", "batch", "ms/call", "IQR ms", "masks/s", "process CPU ms/mask", "peak MiB"],
                [[name, batch, f"{timings[name].median * 1e3:.0f}", f"{timings[name].iqr * 1e3:.0f}",
                  f"{batch / timings[name].median:.2f}", f"{timings[name].cpu_median * 1e3 / batch:.0f}",
                  mib(peaks[name])] for name, (_, batch, _) in inference.items()])
    print_table(["training step", "ms/step", "IQR ms", "images/s", "process CPU ms/image", "peak MiB"],
                [[name, f"{timings[name].median * 1e3:.0f}", f"{timings[name].iqr * 1e3:.0f}",
                  f"{args.train_batch_size / timings[name].median:.2f}",
                  f"{timings[name].cpu_median * 1e3 / args.train_batch_size:.0f}", mib(peaks[name])]
                 for name in training])

    def per_second(name: str) -> tuple[float, ...]:
        return throughput(timings[name], items[name])

    base = name_of_batch[base_batch]
    for batch in batch_sizes[1:]:
        print(ratio_line(f"masks/s batch-{batch}/batch-{base_batch} [width {WIDE}]",
                         paired_ratio(per_second(name_of_batch[batch]), per_second(base))))
    print(ratio_line(f"masks/s width-{NARROW}/width-{WIDE} [batch {compare}]",
                     paired_ratio(per_second(names["narrow"]), per_second(name_of_batch[compare]))))
    print(ratio_line(f"masks/s channels-last/contiguous [batch {compare}]",
                     paired_ratio(per_second(names["channels_last"]), per_second(name_of_batch[compare]))))
    if cuda:
        print(ratio_line(f"masks/s amp-fp16/fp32 [batch {compare}]",
                         paired_ratio(per_second(names["amp"]), per_second(name_of_batch[compare]))))
    print(ratio_line(f"train images/s width-{NARROW}/width-{WIDE} [batch {args.train_batch_size}]",
                     paired_ratio(per_second(train_names["narrow"]), per_second(train_names["wide"]))))
    if cuda:
        print(ratio_line(f"train images/s amp-fp16/fp32 [batch {args.train_batch_size}]",
                         paired_ratio(per_second(train_names["amp"]), per_second(train_names["wide"]))))

    best = max(name_of_batch.values(), key=lambda name: items[name] / timings[name].median)
    threads = f"torch threads: {torch.get_num_threads()}"
    print(f"masks/s [width {WIDE}, {args.size} px, {device}]: "
          + ", ".join(f"batch {b} {b / timings[name_of_batch[b]].median:.2f}" for b in batch_sizes)
          + f"; best {items[best] / timings[best].median:.2f} at batch {items[best]}; {threads}")
    print(f"masks/s [width {NARROW}, {args.size} px, {device}]: "
          f"batch {compare} {compare / timings[names['narrow']].median:.2f}; {threads}")
    if memory.available:
        print(f"peak memory [{args.size} px, {device}]: inference width {WIDE} "
              + ", ".join(f"batch {b} {mib(peaks[name_of_batch[b]])} MiB" for b in batch_sizes)
              + f"; training step batch {args.train_batch_size}: width {WIDE} {mib(peaks[train_names['wide']])} MiB,"
              f" width {NARROW} {mib(peaks[train_names['narrow']])} MiB")
    else:
        print(f"peak memory: {memory.method}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
