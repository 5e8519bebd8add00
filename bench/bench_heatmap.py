"""Benchmark: full-radiograph anomaly heatmap, windows inpainted in batches vs one window at a time.

``AnomalyHeatmapInferer`` (128 px windows over the lung boxes, 64 px hole, stride 32) on one 1024 px phantom with
``batch_size=64`` and with ``batch_size=1``: same image, same boxes, same windows, same generator (random DCGAN
initialisation; timing does not depend on the weights). Both heatmaps must agree before anything is timed.

Two more rows run the generator alone on the same windows, masked beforehand, 64 and 1 per call: their ratio is
what batching can give on this machine once the inferer's own per-call work (cropping, masking, range mapping,
accumulating) is left out, which tells whether a miss comes from the inferer or from the hardware.

Goal (issue #3, item 11): batched / one-at-a-time speed-up >= 5; also reported: the time of one 1024 px
heatmap at stride 32 (wall and process CPU seconds).

    python bench/bench_heatmap.py                         # small generator (16/256), CPU
    python bench/bench_heatmap.py --widths paper --stride 256 --repeats 1   # paper width (128/4096) on a CPU: ~3 min
    python bench/bench_heatmap.py --device cuda --widths paper --channels-last   # as the bundle runs on a GPU
    python bench/bench_heatmap.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

import torch
from _common import (
    add_common_arguments,
    measure_interleaved,
    paired_ratio,
    print_machine_info,
    print_table,
    ratio_line,
    resolve_device,
)
from monai.networks import eval_mode

from cxr_monai.apps.inpainting import AnomalyHeatmapInferer, mask_patches
from cxr_monai.data import make_phantom
from cxr_monai.networks import ContextEncoder
from cxr_monai.transforms import to_network_range

WIDTHS = {"small": (16, 256), "paper": (128, 4096)}  # generator base channels, bottleneck
WINDOW, HOLE = 128, 64


def network_only(generator: torch.nn.Module, masked: torch.Tensor, batch_size: int) -> None:
    """The generator alone over pre-masked windows in [-1, 1], ``batch_size`` per call (autocast on CUDA, as the
    inferer)."""
    amp = torch.autocast("cuda") if masked.is_cuda else contextlib.nullcontext()
    with eval_mode(generator), amp:
        for chunk in masked.split(batch_size):
            generator(chunk)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, repeats=5)
    parser.add_argument("--widths", nargs="+", choices=sorted(WIDTHS), default=["small"],
                        help="generator widths to run: small (16/256) and/or paper (128/4096; on a CPU about 0.3 s per "
                             "window batched and 1.6 s alone, so use a coarse --stride there)")
    parser.add_argument("--size", type=int, default=1024, help="phantom size in px (default: 1024)")
    parser.add_argument("--stride", type=int, default=32, help="window stride in px (default: 32)")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per call when batched (default: 64)")
    parser.add_argument("--channels-last", action="store_true",
                        help="run the generator channels-last in every variant, as the bundle does on CUDA")
    args = parser.parse_args(argv)
    device = resolve_device(parser, args.device)
    if args.quick:
        args.size, args.stride, args.repeats, args.widths = 512, 64, 1, ["small"]
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)

    radiograph = make_phantom(args.size, seed=0)
    image = torch.from_numpy(radiograph.image)[None]  # (1, H, W), [0, 1], as the reader gives it
    boxes = radiograph.lung_boxes
    batched = AnomalyHeatmapInferer(WINDOW, HOLE, args.stride, batch_size=args.batch_size, device=device)
    one = AnomalyHeatmapInferer(WINDOW, HOLE, args.stride, batch_size=1, device=device)
    windows = batched.windows(boxes, image.shape[-2:])
    patches = torch.stack([image[:, row : row + WINDOW, col : col + WINDOW] for row, col in windows])
    masked = to_network_range(mask_patches(patches, HOLE)).to(device)
    print_machine_info("full-image anomaly heatmap: batched vs one window at a time", device, {
        "image": f"phantom {args.size}x{args.size} px, lung boxes {boxes}",
        "windows": f"{len(windows)} windows of {WINDOW} px, hole {HOLE}, stride {args.stride}",
        "generators": ", ".join(f"{w} (base {WIDTHS[w][0]}, bottleneck {WIDTHS[w][1]})" for w in args.widths)
                      + (", channels-last" if args.channels_last else ""),
        "timing": f"{args.repeats} interleaved rounds, each call timed after 2 warm-up calls "
                  "(torch.utils.benchmark.Timer)",
    })

    summary = []
    for width in args.widths:
        torch.manual_seed(0)
        base, bottleneck = WIDTHS[width]
        generator = ContextEncoder(image_size=WINDOW, out_size=HOLE, base_channels=base,
                                   bottleneck_channels=bottleneck).to(device)
        if args.channels_last:
            generator.to(memory_format=torch.channels_last)
        heat_batched, heat_one = batched(image, generator, boxes), one(image, generator, boxes)
        same_nan = torch.equal(heat_batched.heatmap.isnan(), heat_one.heatmap.isnan())
        difference = (heat_batched.heatmap - heat_one.heatmap).nan_to_num(0.0).abs().max().item()
        print(f"[{width}] same heatmap batched and one at a time: max |difference| {difference:.1e}, "
              f"{'same' if same_nan else 'DIFFERENT'} uncovered pixels")
        if not same_nan or difference > 1e-3:
            print(f"error: [{width}] the two heatmaps differ; the comparison would not be of the same work",
                  file=sys.stderr)
            return 1
        names = (f"[{width}] heatmap, {args.batch_size} windows/call", f"[{width}] heatmap, 1 window/call",
                 f"[{width}] generator only, {args.batch_size}/call", f"[{width}] generator only, 1/call")
        timings = measure_interleaved({
            names[0]: lambda g=generator: batched(image, g, boxes),
            names[1]: lambda g=generator: one(image, g, boxes),
            names[2]: lambda g=generator: network_only(g, masked, args.batch_size),
            names[3]: lambda g=generator: network_only(g, masked, 1),
        }, repeats=args.repeats, threads=args.threads)
        print_table(["variant", "s/image", "IQR s", "ms/window", "process CPU s/image"],
                    [[name, f"{t.median:.3f}", f"{t.iqr:.3f}", f"{t.median / len(windows) * 1e3:.2f}",
                      f"{t.cpu_median:.3f}"] for name, t in timings.items()])
        summary.append(ratio_line(f"heatmap one-window/batched [{width}]",
                                  paired_ratio(timings[names[1]], timings[names[0]]), ">=", 5.0))
        summary.append(ratio_line(f"generator-only one/batched [{width}]",
                                  paired_ratio(timings[names[3]], timings[names[2]]),
                                  note="what batching can give on this device"))
        summary.append(ratio_line(f"heatmap/generator-only, batched [{width}]",
                                  paired_ratio(timings[names[0]], timings[names[2]]),
                                  note="the inferer's work beyond the generator"))
        heatmap_time = timings[names[0]]
        summary.append(f"time [{width}]: one {args.size} px heatmap, stride {args.stride}, {len(windows)} windows, "
                       f"{args.batch_size}/call on {device}: {heatmap_time.median:.2f} s wall, "
                       f"{heatmap_time.cpu_median:.2f} s process CPU, torch threads: {torch.get_num_threads()}")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
