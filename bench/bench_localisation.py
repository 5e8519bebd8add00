"""Benchmark: images/s of the localisation bundle's Faster R-CNN at 256 px, a training step and inference.

The network of ``bundles/localisation/configs/train.json``: torchvision's Faster R-CNN ResNet-50 FPN
(``cxr_monai.networks.faster_rcnn_fpn``, ``backbone`` resnet50, ``representation_size`` 1024, the seed's six
classes, ``min_size = max_size = image_size`` 256, ``box_score_thresh`` 0.05), randomly initialised. Inputs are
phantom radiographs (``make_phantom``, in [0, 1] as the reader gives them) with an enlarged heart and an effusion,
their boxes as targets (Cardiomegaly and Effusion), held on the host; images/s = batch / seconds per call.

- **Training step**, as ``DetectionTrainer``'s iteration: ``losses = model(images, targets)`` (torchvision's loss
  dict), backward of their sum, ``Adam`` with train.json's lr 3e-4; at the seed's batch 2 (``--train-batch-size``).
- **Inference**, as ``DetectionEvaluator``'s: eval mode, ``torch.inference_mode()``, host-to-device copy, the
  detections to the host; at batch 1 and 2 (``--batch-sizes``).
- On CUDA only: both again under AMP fp16 (``torch.autocast``, a ``GradScaler`` for the step), as the bundle's
  ``use_amp`` on a GPU.
- Peak memory of a call above what was resident before it (``_common.PeakMemory``): for inference the call after
  one untimed warm-up call, for training the first step (its activations, gradients and Adam's state).

Before timing: every loss term of the first step must be finite and the four Faster R-CNN terms; batch 2's
detections for the first image must equal batch 1's (the same boxes, labels and scores, 1e-3 of their range, after
the first ``--compare-boxes`` boxes; a batch-dependent ``GeneralizedRCNNTransform`` padding would break this; at a
fixed square size there is none).

Goal (issue #14): the figures themselves; the issue sets no ratio to reach, so the ratio lines are informational
(``no goal``). GPU figures come only with ``--device cuda``.

    python bench/bench_localisation.py                    # 256 px, 3 rounds: a few minutes on 2 shared cores
    python bench/bench_localisation.py --device cuda --batch-sizes 1 8 --train-batch-size 8
    python bench/bench_localisation.py --quick            # seconds: 64 px on a ResNet-18 FPN; checks that it runs
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from _common import (
    REPO_ROOT,
    PeakMemory,
    add_common_arguments,
    calls_per_block,
    measure_first,
    measure_interleaved,
    mib,
    milliseconds,
    paired_ratio,
    print_machine_info,
    print_table,
    ratio_line,
    relative_difference,
    resolve_device,
    throughput,
)

from cxr_monai.data import make_phantom
from cxr_monai.transforms.detection import DetectionTargets

CONFIG = json.loads((REPO_ROOT / "bundles" / "localisation" / "configs" / "train.json").read_text())
CLASS_NAMES = tuple(CONFIG["class_names"])  # the seed's six
LEARNING_RATE = float(CONFIG["learning_rate"])  # 3e-4
SIZE = int(CONFIG["image_size"])  # 256
SCORE_THRESHOLD = float(CONFIG["score_threshold"])  # 0.05
FINDINGS = ("Cardiomegaly", "Effusion")  # phantom findings that are also seed classes
TERMS = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
QUICK = {"size": 64, "backbone": "resnet18", "representation_size": 32}


def make_inputs(count: int, size: int) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """``count`` phantom radiographs ``(1, size, size)`` with their finding boxes as torchvision targets."""
    convert = DetectionTargets(CLASS_NAMES)
    images, targets = [], []
    for seed in range(count):
        radiograph = make_phantom(size, seed=seed, findings=FINDINGS)
        images.append(torch.from_numpy(np.ascontiguousarray(radiograph.image))[None].float())
        lesions = [lesion for lesion in radiograph.lesions if lesion.finding in CLASS_NAMES]
        targets.append(convert([list(lesion.box) for lesion in lesions], [lesion.finding for lesion in lesions]))
    return images, targets


def make_network(size: int, backbone: str, representation_size: int, device: torch.device,
                 seed: int = 0) -> torch.nn.Module:
    from cxr_monai.networks import faster_rcnn_fpn

    torch.manual_seed(seed)
    return faster_rcnn_fpn(CLASS_NAMES, size, backbone, representation_size,
                           box_score_thresh=SCORE_THRESHOLD).to(device)


def autocast_or_not(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.float16) if amp else torch.autocast(device.type, enabled=False)


class Predictor:
    """``DetectionEvaluator``'s call: eval mode, inference mode, host-to-device copy, detections to the host."""

    def __init__(self, network: torch.nn.Module, device: torch.device, amp: bool = False) -> None:
        self.network, self.device, self.amp = network.eval(), device, amp

    def __call__(self, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        with torch.inference_mode(), autocast_or_not(self.device, self.amp):
            found = self.network([image.to(self.device, non_blocking=True) for image in images])
        return [{key: value.float().cpu() if value.is_floating_point() else value.cpu()
                 for key, value in item.items()} for item in found]


class TrainStep:
    """``DetectionTrainer``'s iteration: torchvision's loss dict, backward of the sum, Adam (GradScaler under fp16
    AMP); returns the summed loss, ``last_terms`` the dict."""

    def __init__(self, network: torch.nn.Module, images: Sequence[torch.Tensor],
                 targets: Sequence[dict[str, torch.Tensor]], device: torch.device, amp: bool = False) -> None:
        self.network = network.train()
        self.images = [image.to(device) for image in images]
        self.targets = [{key: value.to(device) for key, value in target.items()} for target in targets]
        self.device, self.amp = device, amp
        self.optimizer = torch.optim.Adam(network.parameters(), lr=LEARNING_RATE)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp)
        self.last_terms: dict[str, float] = {}

    def __call__(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast_or_not(self.device, self.amp):
            losses = self.network(self.images, self.targets)
        total = sum(value.float() for value in losses.values())
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.last_terms = {key: float(value.detach()) for key, value in losses.items()}
        return total.detach()


def same_detections(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], count: int) -> float:
    """The largest relative difference of the first ``count`` boxes and scores (inf when labels or counts differ)."""
    n = min(count, len(a["scores"]), len(b["scores"]))
    if len(a["scores"]) < n or len(b["scores"]) < n or not torch.equal(a["labels"][:n], b["labels"][:n]):
        return math.inf
    if n == 0:
        return 0.0
    return max(relative_difference(a["boxes"][:n], b["boxes"][:n]), relative_difference(a["scores"][:n],
                                                                                        b["scores"][:n]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, repeats=3)
    parser.add_argument("--size", type=int, default=None, help=f"image size in px (default: train.json's {SIZE})")
    parser.add_argument("--backbone", default=None,
                        help=f"ResNet of the FPN (default: train.json's {CONFIG['backbone']})")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2],
                        help="inference batches; the smallest is the baseline of the batching ratio (default: 1 2)")
    parser.add_argument("--train-batch-size", type=int, default=int(CONFIG["batch_size"]),
                        help=f"training step batch (default: train.json's {CONFIG['batch_size']}, the seed's)")
    parser.add_argument("--block-seconds", type=float, default=1.0,
                        help="seconds a timed block aims at (calls per block from the first call; default 1)")
    parser.add_argument("--compare-boxes", type=int, default=5,
                        help="how many top detections of batch 1 and the larger batches must agree (default 5)")
    args = parser.parse_args(argv)
    device = resolve_device(parser, args.device)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if min(args.batch_sizes) < 1 or args.train_batch_size < 1:
        parser.error("batch sizes must be at least 1")
    size = QUICK["size"] if args.quick and args.size is None else (args.size or SIZE)
    backbone = args.backbone or (QUICK["backbone"] if args.quick else CONFIG["backbone"])
    width = QUICK["representation_size"] if args.quick else int(CONFIG["representation_size"])
    repeats = 1 if args.quick else args.repeats
    block_seconds = 0.0 if args.quick else args.block_seconds
    torch.set_num_threads(args.threads)
    batch_sizes = sorted(set(args.batch_sizes))
    base_batch, train_batch = batch_sizes[0], args.train_batch_size
    cuda = device.type == "cuda"
    memory = PeakMemory(device)

    print_machine_info("Faster R-CNN (localisation, seed 002): images per second, training and inference", device, {
        "network": f"faster_rcnn_fpn({len(CLASS_NAMES)} classes, {size} px, backbone {backbone}, representation_size "
                   f"{width}); random initialisation",
        "input": f"phantom radiographs {size}x{size} in [0, 1] on the host with {' and '.join(FINDINGS)} boxes; "
                 f"inference batches {batch_sizes}; training batch {train_batch}",
        "inference": "eval mode, torch.inference_mode(), host-to-device copy, detections to the host"
                     + ("; AMP fp16 also" if cuda else "; AMP fp16: CUDA only, not measured"),
        "training step": f"loss dict summed + backward + Adam(lr {LEARNING_RATE:g})" + (", fp32 and AMP fp16"
                                                                                      if cuda else ", fp32"),
        "timing": f"{repeats} interleaved rounds; per round and variant one Timer block of 2 warm-up calls and as "
                  f"many timed calls as fill {block_seconds:g} s (1-64)",
        "memory": f"{memory.method}; inference: the call after a warm-up call, training: the first step",
    })

    images, targets = make_inputs(max(batch_sizes + [train_batch]), size)
    network = make_network(size, backbone, width, device)

    inference: dict[str, tuple[Predictor, int]] = {f"inference, batch {b}": (Predictor(network, device), b)
                                                   for b in batch_sizes}
    if cuda:
        inference.update({f"inference, batch {b}, AMP fp16": (Predictor(network, device, amp=True), b)
                          for b in batch_sizes})
    peaks: dict[str, int | None] = {}
    first_seconds: dict[str, float] = {}
    first_found: dict[str, dict[str, torch.Tensor]] = {}
    for name, (predictor, batch) in inference.items():
        host = images[:batch]
        predictor(host)
        found, peaks[name], first_seconds[name] = measure_first(memory, lambda p=predictor, x=host: p(x), device)
        if not all(torch.isfinite(item["boxes"]).all() and torch.isfinite(item["scores"]).all() for item in found):
            print(f"error: {name}: non-finite detections", file=sys.stderr)
            return 1
        first_found[name] = found[0]
    checks = []
    base = f"inference, batch {base_batch}"
    for name in inference:
        if name == base or name.endswith("AMP fp16"):
            continue
        difference = same_detections(first_found[name], first_found[base], args.compare_boxes)
        checks.append(f"[{name}] vs batch {base_batch}: first image's top {args.compare_boxes} detections differ by "
                      f"{difference:.1e} of their range")
        if difference > 1e-3:
            print("\n".join(checks))
            print(f"error: [{name}] detects other boxes than batch {base_batch}; the comparison would not be of the "
                  "same maths", file=sys.stderr)
            return 1

    training: dict[str, TrainStep] = {f"train, batch {train_batch}": TrainStep(
        make_network(size, backbone, width, device), images[:train_batch], targets[:train_batch], device)}
    if cuda:
        training[f"train, batch {train_batch}, AMP fp16"] = TrainStep(
            make_network(size, backbone, width, device), images[:train_batch], targets[:train_batch], device, amp=True)
    first_losses: dict[str, float] = {}
    for name, step in training.items():
        loss, peaks[name], first_seconds[name] = measure_first(memory, step, device)
        first_losses[name] = loss.item()
        if set(step.last_terms) != TERMS or not all(map(math.isfinite, [first_losses[name],
                                                                          *step.last_terms.values()])):
            print(f"error: {name}: loss terms {step.last_terms}, expected finite {sorted(TERMS)}", file=sys.stderr)
            return 1
    print("same maths:\n  " + "\n  ".join(checks or ["(one inference batch: nothing to compare)"]))
    print("first training step's loss: " + "; ".join(
        f"{name}: {first_losses[name]:.4f} (" + ", ".join(f"{k} {v:.4f}" for k, v in training[name].last_terms.items())
        + ")" for name in training), end="\n\n", flush=True)

    variants: dict[str, Callable[[], Any]] = {name: (lambda p=predictor, x=images[:batch]: p(x))
                                              for name, (predictor, batch) in inference.items()}
    variants.update(training)
    number = {name: calls_per_block(first_seconds[name], block_seconds) for name in variants}
    timings = measure_interleaved(variants, repeats=repeats, number=number, threads=args.threads)
    items = {name: batch for name, (_, batch) in inference.items()} | {name: train_batch for name in training}
    print_table(["variant", "batch", "calls/block", "ms/call", "IQR ms", "images/s", "process CPU ms/image",
                 "peak MiB"],
                [[name, items[name], number[name], milliseconds(timings[name].median),
                  milliseconds(timings[name].iqr), f"{items[name] / timings[name].median:.2f}",
                  f"{timings[name].cpu_median * 1e3 / items[name]:.0f}", mib(peaks[name])] for name in variants])

    def ratio(label: str, numerator: str, denominator: str) -> None:
        print(ratio_line(label, paired_ratio(throughput(timings[numerator], items[numerator]),
                                             throughput(timings[denominator], items[denominator]))))

    for batch in batch_sizes[1:]:
        ratio(f"images/s batch-{batch}/batch-{base_batch} [inference]", f"inference, batch {batch}", base)
    ratio(f"images/s training/inference [batch {train_batch} vs {base_batch}]", f"train, batch {train_batch}", base)
    if cuda:
        for batch in batch_sizes:
            ratio(f"images/s amp-fp16/fp32 [inference, batch {batch}]", f"inference, batch {batch}, AMP fp16",
                  f"inference, batch {batch}")
        ratio(f"images/s amp-fp16/fp32 [train, batch {train_batch}]", f"train, batch {train_batch}, AMP fp16",
              f"train, batch {train_batch}")
    print(f"images/s [Faster R-CNN {backbone} FPN, {size} px, {device}]: training batch {train_batch} "
          f"{train_batch / timings[f'train, batch {train_batch}'].median:.2f}; inference "
          + ", ".join(f"batch {b} {b / timings[f'inference, batch {b}'].median:.2f}" for b in batch_sizes)
          + f"; torch threads: {torch.get_num_threads()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
