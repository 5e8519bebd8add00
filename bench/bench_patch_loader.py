"""Benchmark: training patches per second per core of the context encoder's data path.

Three loaders over the same image files, each a ``monai.data.Dataset`` in a ``monai.data.DataLoader`` with the
same workers, timed side by side:

(a) **pipeline**: the bundle's ``train#preprocessing`` and ``patch_collate`` read from ``configs/train.json``
    (LoadCXRImaged of image and lung mask -> ResizeToWorkingResolutiond -> LungBoxesd ->
    RandLungPatchd(num_samples=20) -> EnsureTyped -> SelectItemsd, then CenterHoleCollate making the masked
    patches, targets and weights of the whole batch): one decode gives 20 patches.
(b) **decode-only floor**: ``read_cxr`` of the same files (image and lung mask) and nothing else, credited with
    20 patches per decode: the most patches/s the pipeline could give if everything after decoding were free.
(c) **per-patch loader**: the same pipeline and collate with ``num_samples=1`` and every image listed 20 times,
    i.e. one decode per patch.

Figures are patches/s in total and per worker process (workers run torch with one thread each), and the CPU time
per patch of the main process and its workers, which other jobs on a shared machine do not inflate. Goals (issue
#3, item 11): (a)/(b) >= 0.8 and (a)/(c) >= 20. The second can only be approached when decoding dominates:
with a fixed cost F per load and a cost P per patch, (a)/(c) = (F + P) / (F/20 + P), so the benchmark prints F
and P as estimated from (a) and (c), and an in-process, one-thread breakdown of one load by transform.

    python bench/bench_patch_loader.py                     # 8 phantoms at 1024 px, 2 workers
    python bench/bench_patch_loader.py --num-workers 8 --datalist /data/nih/datalist.json
    python bench/bench_patch_loader.py --quick
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from _common import (
    REPO_ROOT,
    add_common_arguments,
    measure_interleaved,
    paired_ratio,
    print_machine_info,
    print_table,
    ratio_line,
    resolve_device,
)
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, list_data_collate
from monai.data.utils import worker_init_fn as monai_worker_init_fn
from monai.transforms import Compose, apply_transform

from cxr_monai.data import generate_phantoms, load_datalist, validate_datalist
from cxr_monai.data.datalist import SPLIT_KEYS
from cxr_monai.io import read_cxr

DEFAULT_CONFIG = REPO_ROOT / "bundles" / "context_encoder" / "configs" / "train.json"
DECODED_KEYS = ("image", "lung_mask")  # the files the pipeline's LoadCXRImaged reads


def bundle_preprocessing(
    config_files: Sequence[Path], patches_per_image: int, working_size: int | None
) -> tuple[Compose, Callable[[Sequence], Any]]:
    """The bundle's training transforms (``train#preprocessing``) with the given patches per image, and the
    training loader's ``collate_fn`` (``patch_collate``, which makes the holes)."""
    parser = ConfigParser()
    parser.read_config([str(path) for path in config_files])
    parser["patches_per_image"] = patches_per_image
    if working_size is not None:
        parser["working_size"] = working_size
    return parser.get_parsed_content("train#preprocessing"), parser.get_parsed_content("train#dataloader#collate_fn")


def decode_only(entry: Mapping[str, Any]) -> int:
    """The floor's "transform": decode the files the pipeline loads with the project's reader, keep nothing."""
    for key in DECODED_KEYS:
        if entry.get(key) is not None:
            read_cxr(entry[key])
    return 1


def datalist_entries(path: Path) -> list[dict]:
    """Entries of every split of a datalist, with absolute paths."""
    document = validate_datalist(path)
    return [entry for key in SPLIT_KEYS if document.get(key) for entry in load_datalist(path, key)]


def _report_worker_pid(queue: Any, worker_id: int) -> None:
    """``worker_init_fn``: MONAI's per-worker seeding of random transforms, then tell the main process our pid."""
    monai_worker_init_fn(worker_id)
    queue.put(os.getpid())


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux ``/proc/<pid>/stat``, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class WorkerCpuClock:
    """CPU seconds used by this process plus the DataLoader workers started with :attr:`worker_init_fn`.

    Wall-clock patches/s per worker assumes each worker has a core to itself; on a shared machine it has not,
    and CPU time is the figure that does not depend on the other jobs. Needs Linux ``/proc``.
    """

    def __init__(self) -> None:
        self.available = Path(f"/proc/{os.getpid()}/stat").exists()
        self.queue = multiprocessing.SimpleQueue()
        self.worker_init_fn = functools.partial(_report_worker_pid, self.queue)
        self.pids: list[int] = []

    def collect_workers(self, count: int) -> None:
        """Wait for ``count`` started workers to report their pids."""
        self.pids += [self.queue.get() for _ in range(count)]

    def __call__(self) -> float:
        if not self.available:
            return time.process_time()
        return time.process_time() + sum(process_cpu_seconds(pid) for pid in self.pids)


@dataclass
class LoaderCase:
    """One loader and how to count its output: the patches in each batch, or ``credited_per_item`` per item."""

    name: str
    loader: DataLoader
    device: torch.device
    passes: int = 1  # passes over the data per timed block
    credited_per_item: int | None = None

    def one_pass(self) -> int:
        patches = 0
        for batch in self.loader:
            if self.credited_per_item:
                patches += len(batch) * self.credited_per_item
                continue
            patches += len(batch["masked"])
            if self.device.type == "cuda":  # what the trainer's prepare_batch does with the network inputs
                for key in ("masked", "target", "weight"):
                    batch[key].to(self.device, non_blocking=True)
        return patches

    def block(self) -> int:
        return sum(self.one_pass() for _ in range(self.passes))


def stage_breakdown(
    pipeline: Compose, collate: Callable[[Sequence], Any], entry: Mapping[str, Any], repeats: int
) -> list[tuple[str, float, int]]:
    """``(step, seconds per load, items out)`` for each transform of ``pipeline`` on one entry, then ``collate``
    of its output, one thread.

    Each step is timed on the previous one's output, a transform applied to every item as ``Compose`` does.
    """
    calls: dict[str, Callable[[], Any]] = {
        f"   floor: read_cxr({key})": (lambda path=entry[key]: read_cxr(path)) for key in DECODED_KEYS if key in entry
    }
    items_out = dict.fromkeys(calls, 1)
    data: Any = dict(entry)
    for index, transform in enumerate(pipeline.transforms):
        name = f"{index + 1}. {type(transform).__name__}"
        calls[name] = lambda t=transform, d=data: apply_transform(t, d, map_items=True)
        data = calls[name]()
        items_out[name] = len(data) if isinstance(data, list) else 1
    name = f"{len(pipeline.transforms) + 1}. collate_fn {type(collate).__name__}"
    calls[name] = lambda d=data if isinstance(data, list) else [data]: collate(d)
    items_out[name] = 1
    timings = measure_interleaved(calls, repeats=repeats, threads=1)
    return [(name, timing.median, items_out[name]) for name, timing in timings.items()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, repeats=5)
    parser.add_argument("--num-workers", type=int, default=2,
                        help="DataLoader worker processes for all three loaders (default: 2, this machine's cores)")
    parser.add_argument("--images", type=int, default=8, help="phantoms to generate (default: 8)")
    parser.add_argument("--size", type=int, default=1024, help="phantom size in px (default: 1024)")
    parser.add_argument("--datalist", type=Path, default=None,
                        help="benchmark on this datalist's images (all splits) instead of generated phantoms")
    parser.add_argument("--config", type=Path, nargs="+", default=[DEFAULT_CONFIG],
                        help="bundle config file(s) giving train#preprocessing (default: the bundle's train.json)")
    parser.add_argument("--patches-per-image", type=int, default=20, help="patches per load in (a) (default: 20)")
    parser.add_argument("--images-per-batch", type=int, default=3,
                        help="loads per batch in (a) and (b); (c) batches the same number of patches (default: 3)")
    parser.add_argument("--working-size", type=int, default=None,
                        help="override the config's working_size (default: the config's, 1024 in train.json)")
    parser.add_argument("--passes", type=int, default=3,
                        help="passes over the data per timed block for (a) and (b); (c) makes 1 (default: 3)")
    args = parser.parse_args(argv)
    device = resolve_device(parser, args.device)
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    torch.set_num_threads(args.threads)  # the main process: collation; workers run one thread each
    if args.quick:
        args.images, args.size, args.passes, args.repeats = 3, 256, 1, 1
        args.working_size = args.working_size or 256
    if min(args.patches_per_image, args.images_per_batch, args.passes, args.images) < 1 or args.num_workers < 0:
        parser.error("counts must be positive and --num-workers >= 0")

    with tempfile.TemporaryDirectory(prefix="bench_patch_loader_") as tmp:
        if args.datalist is None:
            source = generate_phantoms(tmp, num_images=args.images, size=args.size, seed=0)
            datalist = source.datalist
            data_text = (f"{args.images} phantoms at {args.size} px ({source.num_dicom} DICOM, "
                         f"{args.images - source.num_dicom} PNG), generated in a temporary folder")
        else:
            datalist = args.datalist
            data_text = f"{datalist}"
        entries = datalist_entries(datalist)
        if not entries:
            parser.error(f"{datalist}: no entries in any split")
        return run(args, entries, data_text, device)


def run(args: argparse.Namespace, entries: list[dict], data_text: str, device: torch.device) -> int:
    per_image, workers = args.patches_per_image, args.num_workers
    cores = max(workers, 1)
    pipeline, collate = bundle_preprocessing(args.config, per_image, args.working_size)
    per_patch, _ = bundle_preprocessing(args.config, 1, args.working_size)
    cpu = WorkerCpuClock()
    print_machine_info("patch data path: decode once, many patches", device, {
        "data": f"{data_text}; {len(entries)} images",
        "pipeline": " -> ".join(type(t).__name__ for t in pipeline.transforms)
                    + f", collate_fn {type(collate).__name__} (from {', '.join(p.name for p in args.config)})",
        "loaders": f"monai DataLoader, {workers} workers ({cores} process(es) counted as cores), "
                   f"{args.images_per_batch} loads ({args.images_per_batch * per_image} patches) per batch",
        "timing": f"{args.passes} pass(es) per block for (a), (b), 1 for (c); {args.repeats} interleaved rounds, "
                  "each after 2 warm-up calls (torch.utils.benchmark.Timer)",
        "CPU time": "main process + its DataLoader workers (/proc)" if cpu.available else "n/a (no /proc)",
    })

    def loader(dataset: Dataset, batch_size: int, collate_fn: Callable | None = None) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                          worker_init_fn=cpu.worker_init_fn, collate_fn=collate_fn or list_data_collate)

    cases = [
        LoaderCase("(a) pipeline, 1 decode -> N patches",
                   loader(Dataset(entries, pipeline), args.images_per_batch, collate), device, args.passes),
        LoaderCase("(b) decode-only floor, N credited", loader(Dataset(entries, decode_only), args.images_per_batch),
                   device, args.passes, credited_per_item=per_image),
        LoaderCase("(c) per-patch loader, 1 decode -> 1",
                   loader(Dataset([e for e in entries for _ in range(per_image)], per_patch),
                          args.images_per_batch * per_image, collate), device, passes=1),
    ]
    patches = {case.name: case.one_pass() * case.passes for case in cases}  # also starts the workers
    cpu.collect_workers(workers * len(cases))
    timings = measure_interleaved({case.name: case.block for case in cases}, repeats=args.repeats, cpu_clock=cpu)

    # one core's seconds per patch, per round: wall time x processes / patches, and CPU time / patches
    wall = {name: [t * cores / patches[name] for t in timing.wall] for name, timing in timings.items()}
    cpu_time = {name: [t / patches[name] for t in timing.cpu] for name, timing in timings.items()}
    rows = []
    for name, timing in timings.items():
        rate = patches[name] / timing.median
        cpu_ms = f"{statistics.median(cpu_time[name]) * 1e3:.2f}" if cpu.available else "n/a"
        rows.append([name, patches[name], f"{timing.median:.2f}", f"{rate:.0f}", f"{rate / cores:.0f}",
                     f"{statistics.median(wall[name]) * 1e3:.2f}", cpu_ms])
    print_table(["loader", "patches/block", "s/block", "patches/s", "patches/s/core", "core ms/patch", "CPU ms/patch"],
                rows)
    a, b, c = (wall[case.name] for case in cases)
    print(ratio_line("pipeline/decode-floor (patches/s/core)", paired_ratio(b, a), ">=", 0.8))
    print(ratio_line("pipeline/per-patch-loader (patches/s/core)", paired_ratio(c, a), ">=", float(per_image)))
    if cpu.available:
        a_cpu, b_cpu, c_cpu = (cpu_time[case.name] for case in cases)
        print(ratio_line("pipeline/decode-floor (CPU time per patch)", paired_ratio(b_cpu, a_cpu),
                         note="the same ratio in CPU time, insensitive to other jobs"))
        print(ratio_line("pipeline/per-patch-loader (CPU time per patch)", paired_ratio(c_cpu, a_cpu)))
        a, c = a_cpu, c_cpu
    basis = "CPU time" if cpu.available else "wall time x workers"
    print(explain(statistics.median(a), statistics.median(c), per_image, basis))

    rounds = min(args.repeats, 3)
    print(f"\none load, in process, one thread, by step ({rounds} round(s), medians):")
    breakdown = stage_breakdown(pipeline, collate, entries[0], repeats=rounds)
    print_table(["step", "ms per load", "items out"],
                [[name, f"{seconds * 1e3:.2f}", items] for name, seconds, items in breakdown])
    return 0


def explain(a: float, c: float, per_image: int, basis: str) -> str:
    """Fixed cost F per load and cost P per patch from one core's seconds per patch of (a) and (c).

    (a) spends ``F/N + P`` per patch and (c) ``F + P``, so ``F = (c - a) N / (N - 1)`` and ``P = a - F/N``.
    """
    if per_image < 2:
        return "why: with 1 patch per load (a) and (c) are the same loader."
    fixed = max((c - a) * per_image / (per_image - 1), 0.0)
    patch = max(a - fixed / per_image, 0.0)
    return (f"\nwhy: one load costs a fixed F ~ {fixed * 1e3:.1f} ms plus P ~ {patch * 1e3:.2f} ms per patch ({basis} "
            f"of one core, from (a) and (c)), so (a)/(c) = (F + P)/(F/{per_image} + P) = "
            f"{(fixed + patch) / (fixed / per_image + patch):.1f}; it nears {per_image} only when P << "
            f"F/{per_image} = {fixed / per_image * 1e3:.2f} ms, and (a)/(b) nears 1 only when P and the non-decode "
            "part of F are small against the decode time (see the breakdown below).")


if __name__ == "__main__":
    sys.exit(main())
