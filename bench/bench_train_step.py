"""Benchmark: a joint training iteration of ``ContextEncoderTrainer`` against the same iteration as a plain loop.

Both sides train copies of the same generator and discriminator, from the same weights, on the same prepared
batches, in the joint phase of seed 001 §4.2 (G and D both updated every iteration): G with
``0.998 * border-weighted L2 + 0.002 * BCE(D(G(x)), real)``, then D with ``BCE(D(x), real)`` and
``BCE(D(G(x)), fake)``, each with Adam (lr 2e-4, betas 0.5/0.999). The engine runs through Ignite
(``trainer.run()`` over a list of batches with a fixed ``epoch_length``); the reference is a ``for`` loop.

A third variant, the plain loop plus the engine's per-iteration bookkeeping (``gan_diagnostics`` and the seven
``.item()`` calls that give handlers plain floats), splits any difference into "bookkeeping" and
"Ignite/MONAI dispatch". On CUDA every ``.item()`` waits for the device, so the bookkeeping share grows there.

Before timing, both sides run two iterations from identical copies and their losses must agree; otherwise the
comparison would not be of the same maths and the benchmark stops.

Goal (issue #3, item 11): ``engine / hand loop <= 1.00``, i.e. the engine adds no overhead beyond noise.

    python bench/bench_train_step.py                       # small widths (16/256/16), batch 40, CPU
    python bench/bench_train_step.py --device cuda --amp --channels-last --batch-size 60 --widths paper
    python bench/bench_train_step.py --quick               # seconds; checks that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from _common import (
    Timing,
    add_common_arguments,
    measure_interleaved,
    paired_ratio,
    print_machine_info,
    print_table,
    ratio_line,
    resolve_device,
)
from ignite.engine import Events
from monai.utils import convert_to_tensor

from cxr_monai.apps.inpainting import (
    CenterHole,
    ContextEncoderTrainer,
    border_weight_map,
)
from cxr_monai.engines import GanSchedule
from cxr_monai.losses import gan_diagnostics
from cxr_monai.networks import ContextDiscriminator, ContextEncoder

LAMBDA_L2, LAMBDA_ADV = 0.998, 0.002  # seed 001 §3.2.3, the engine's defaults
LEARNING_RATE, BETAS = 2e-4, (0.5, 0.999)
PATCH, HOLE = 128, 64
WIDTHS = {"small": (16, 256, 16), "paper": (128, 4096, 128)}  # G base, G bottleneck, D base

Batch = Mapping[str, torch.Tensor]


def make_batches(count: int, batch_size: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``count`` batches as the bundle's patch transforms give them: ``masked``/``target`` in [0, 1], ``weight``."""
    generator = torch.Generator().manual_seed(seed)
    hole = CenterHole(HOLE)  # context-mean fill, as in the bundle
    start = (PATCH - HOLE) // 2
    weight = border_weight_map(HOLE)[None, None].repeat(batch_size, 1, 1, 1)
    batches = []
    for _ in range(count):
        patches = torch.rand(batch_size, 1, PATCH, PATCH, generator=generator)
        masked = convert_to_tensor(hole(patches.reshape(batch_size, PATCH, PATCH)), track_meta=False)
        masked = masked.reshape(batch_size, 1, PATCH, PATCH)  # plain tensors, as EnsureTyped(track_meta=False) gives
        target = patches[..., start : start + HOLE, start : start + HOLE].contiguous()
        batches.append({"masked": masked, "target": target, "weight": weight.clone()})
    return batches


class Networks:
    """A generator, a discriminator and their Adam optimisers on one device."""

    def __init__(self, widths: Sequence[int], device: torch.device, channels_last: bool, seed: int = 0) -> None:
        g_base, g_bottleneck, d_base = widths
        torch.manual_seed(seed)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.g = ContextEncoder(base_channels=g_base, bottleneck_channels=g_bottleneck)
        self.d = ContextDiscriminator(base_channels=d_base)
        self.g.to(device, memory_format=memory_format)
        self.d.to(device, memory_format=memory_format)
        self.g_opt = torch.optim.Adam(self.g.parameters(), lr=LEARNING_RATE, betas=BETAS)
        self.d_opt = torch.optim.Adam(self.d.parameters(), lr=LEARNING_RATE, betas=BETAS)

    def clone(self) -> Networks:
        return copy.deepcopy(self)


def make_trainer(
    nets: Networks, batches: list[Batch], device: torch.device, amp: bool, channels_last: bool
) -> ContextEncoderTrainer:
    """The engine in its joint phase from the first iteration, one epoch of ``len(batches)`` iterations."""
    return ContextEncoderTrainer(
        device=device,
        max_epochs=1,
        epoch_length=len(batches),
        train_data_loader=batches,
        g_network=nets.g,
        g_optimizer=nets.g_opt,
        d_network=nets.d,
        d_optimizer=nets.d_opt,
        schedule=GanSchedule(g_l2_epochs=0, d_only_epochs=0),
        amp=amp,
        channels_last=channels_last,
    )


class PlainLoop:
    """The joint iteration written out in PyTorch: what a researcher would write without an engine.

    With ``bookkeeping=True`` it also computes what the engine hands to its handlers each iteration
    (``gan_diagnostics`` and plain floats of every loss) and returns those floats.
    """

    def __init__(self, nets: Networks, device: torch.device, amp: bool, channels_last: bool, bookkeeping: bool):
        self.nets, self.device, self.bookkeeping = nets, device, bookkeeping
        self.amp = amp  # autocast in the device's default dtype (float16 on CUDA), as the engine does
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        scaled = amp and torch.get_autocast_dtype(device.type) == torch.float16
        self.g_scaler = torch.amp.GradScaler(device.type, enabled=scaled)
        self.d_scaler = torch.amp.GradScaler(device.type, enabled=scaled)

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type) if self.amp else contextlib.nullcontext()

    def step(self, batch: Batch) -> dict[str, float] | None:
        g, d, g_opt, d_opt = self.nets.g, self.nets.d, self.nets.g_opt, self.nets.d_opt
        masked, target, weight = (
            batch[key].to(self.device, non_blocking=True, memory_format=self.memory_format)
            for key in ("masked", "target", "weight")
        )
        masked, target = masked * 2 - 1, target * 2 - 1  # [0, 1] -> the generator's [-1, 1], as InpaintingBatch
        g.train()
        d.train()

        g_opt.zero_grad(set_to_none=True)
        with self.autocast():
            fake = g(masked)
            fake_logits = d(fake).float()
            squared = weight * (fake.float() - target.float()).pow(2)
            l2 = squared.sum() / weight.expand_as(squared).sum()
            adversarial = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
            g_loss = LAMBDA_L2 * l2 + LAMBDA_ADV * adversarial
        self.g_scaler.scale(g_loss).backward()
        self.g_scaler.step(g_opt)
        self.g_scaler.update()

        fake = fake.detach()
        d_opt.zero_grad(set_to_none=True)  # also drops the D gradients left by G's backward
        with self.autocast():
            real_logits = d(target).float()
            d_loss_real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        self.d_scaler.scale(d_loss_real).backward()
        with self.autocast():
            fake_logits = d(fake).float()
            d_loss_fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        self.d_scaler.scale(d_loss_fake).backward()
        self.d_scaler.step(d_opt)
        self.d_scaler.update()

        if not self.bookkeeping:
            return None
        floats = {"l2": l2.item(), "g_adv": adversarial.item(), "loss": g_loss.item(),
                  "d_loss": (d_loss_real.detach() + d_loss_fake.detach()).item()}
        floats.update({key: value.item() for key, value in gan_diagnostics(real_logits, fake_logits).items()})
        return floats

    def run(self, batches: Sequence[Batch]) -> list[dict[str, float] | None]:
        return [self.step(batch) for batch in batches]


def check_same_maths(widths: Sequence[int], batches: list[Batch], device: torch.device, amp: bool,
                     channels_last: bool) -> float:
    """Largest relative difference between the engine's and the plain loop's losses over two iterations."""
    reference = Networks(widths, device, channels_last)
    engine_nets, loop_nets = reference.clone(), reference.clone()
    trainer = make_trainer(engine_nets, batches[:2], device, amp, channels_last)
    engine_losses: list[dict[str, float]] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: engine_losses.append(dict(e.state.output)))
    trainer.run()
    loop_losses = PlainLoop(loop_nets, device, amp, channels_last, bookkeeping=True).run(batches[:2])
    worst = 0.0
    for step, (engine_out, loop_out) in enumerate(zip(engine_losses, loop_losses), start=1):
        for key in ("l2", "g_adv", "loss", "d_loss", "d_real", "d_fake"):
            a, b = float(engine_out[key]), float(loop_out[key])
            difference = abs(a - b) / max(abs(a), abs(b), 1e-12)
            if not math.isfinite(difference):
                raise SystemExit(f"step {step}: {key} is not finite (engine {a}, plain loop {b})")
            worst = max(worst, difference)
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, repeats=5)
    parser.add_argument("--batch-size", type=int, default=40,
                        help="patches per iteration (default 40: the small config's 2 images x 20 patches)")
    parser.add_argument("--iterations", type=int, default=4, help="iterations per timed run (default: 4)")
    parser.add_argument("--widths", choices=sorted(WIDTHS), default="small",
                        help="network widths: small (G 16/256, D 16) or paper (G 128/4096, D 128; slow on CPU)")
    parser.add_argument("--amp", action="store_true", help="autocast on both sides, with GradScaler where its dtype is float16 (CUDA; a CPU autocasts to bfloat16)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format on both sides")
    args = parser.parse_args(argv)
    device = resolve_device(parser, args.device)
    if args.quick:
        args.batch_size, args.iterations, args.repeats = 4, 2, 1
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    if args.batch_size < 2 or args.iterations < 2:
        parser.error("--batch-size and --iterations must be at least 2 (the 1x1 bottleneck's batch norm needs 2 "
                     "samples; the maths check runs 2 iterations)")
    widths = WIDTHS[args.widths]
    print_machine_info("engine train step vs hand-written loop", device, {
        "networks": f"{args.widths}: G base {widths[0]}, bottleneck {widths[1]}; D base {widths[2]}",
        "batch": f"{args.batch_size} patches 1x{PATCH}x{PATCH}, hole {HOLE}",
        "timing": f"{args.iterations} iterations per run; {args.repeats} interleaved rounds, each run timed after "
                  "2 warm-up runs (torch.utils.benchmark.Timer)",
        "amp / channels-last": f"{args.amp} / {args.channels_last}",
    })

    batches = make_batches(args.iterations, args.batch_size)
    difference = check_same_maths(widths, batches, device, args.amp, args.channels_last)
    tolerance = 1e-4 if not args.amp else 1e-2
    print(f"same maths: engine and plain-loop losses over 2 iterations agree to {difference:.1e} (relative)")
    if difference > tolerance:
        print(f"error: the losses differ by more than {tolerance:g}; the two sides do not compute the same step",
              file=sys.stderr)
        return 1

    reference = Networks(widths, device, args.channels_last)
    trainer = make_trainer(reference.clone(), batches, device, args.amp, args.channels_last)
    plain = PlainLoop(reference.clone(), device, args.amp, args.channels_last, bookkeeping=False)
    booked = PlainLoop(reference.clone(), device, args.amp, args.channels_last, bookkeeping=True)
    names = ("engine", "hand loop", "hand loop + bookkeeping")
    runs = measure_interleaved(
        {names[0]: trainer.run, names[1]: lambda: plain.run(batches), names[2]: lambda: booked.run(batches)},
        repeats=args.repeats, threads=args.threads,
    )
    per_iteration = {name: Timing(tuple(t / args.iterations for t in timing.wall),
                                  tuple(t / args.iterations for t in timing.cpu)) for name, timing in runs.items()}
    print_table(
        ["variant", "ms/iteration", "IQR ms", "ms/patch", "process CPU ms/iteration"],
        [[name, f"{t.median * 1e3:.1f}", f"{t.iqr * 1e3:.1f}", f"{t.median * 1e3 / args.batch_size:.2f}",
          f"{t.cpu_median * 1e3:.1f}"] for name, t in per_iteration.items()],
    )
    print(ratio_line("engine/hand-loop", paired_ratio(runs[names[0]], runs[names[1]]), "<=", 1.00))
    print(ratio_line("engine/(hand-loop+bookkeeping)", paired_ratio(runs[names[0]], runs[names[2]]),
                     note="Ignite + MONAI dispatch, prepare_batch, events"))
    print(ratio_line("(hand-loop+bookkeeping)/hand-loop", paired_ratio(runs[names[2]], runs[names[1]]),
                     note="gan_diagnostics + 7 .item() per iteration"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
