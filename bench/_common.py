"""Shared helpers of the benchmarks: machine report, interleaved timing, peak memory, tables and goal lines.

Benchmarks run on shared, noisy machines, so every comparison is measured side by side in one process:
the variants run round-robin (A, B, C, A, B, C, ...), each block timed by
:class:`torch.utils.benchmark.Timer` after its own warm-up calls, and a ratio is the median of the per-round
ratios, so a load spike that hits one round moves both sides of that round's ratio together.

Example::

    times = measure_interleaved({"batched": run_batched, "one": run_one}, repeats=5, threads=2)
    print_table(["variant", "median s"], [[name, f"{m.median:.3f}"] for name, m in times.items()])
    print(ratio_line("one/batched", paired_ratio(times["one"], times["batched"]), ">=", 5.0))
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import gc
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.benchmark import Timer

__all__ = [
    "REPO_ROOT",
    "PeakMemory",
    "Timing",
    "add_common_arguments",
    "cpu_model",
    "measure_interleaved",
    "paired_ratio",
    "print_machine_info",
    "print_table",
    "ratio_line",
    "resolve_device",
]

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Timing:
    """Seconds per call of one variant: one entry per round (``wall`` from ``Timer``, ``cpu`` = process CPU time)."""

    wall: tuple[float, ...]
    cpu: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def iqr(self) -> float:
        if len(self.wall) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.wall, n=4, method="inclusive")
        return q3 - q1

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)


class PeakMemory:
    """Peak memory of one call above what was in use before it (bytes), or ``None`` where it cannot be measured.

    On CUDA ``torch.cuda.max_memory_allocated``; on Linux the peak resident set (``VmHWM`` in ``/proc/self/status``,
    reset through ``/proc/self/clear_refs``, after ``malloc_trim``); elsewhere the resident-set growth from
    ``psutil`` if it is installed, else not measured. ``method`` says which, for the machine report.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._trim = self._malloc_trim()
        if device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated above memory_allocated before the call"
        elif self._reset_peak_rss():
            self.method = ("peak resident set (VmHWM, reset through /proc/self/clear_refs) above the resident set "
                           "before the call" + (", after malloc_trim" if self._trim else ""))
        elif self._psutil() is not None:
            self.method = "resident-set growth over the call (psutil; not its peak)"
        else:
            self.method = "not measured (no /proc peak RSS reset on this system and no psutil)"

    @property
    def available(self) -> bool:
        return not self.method.startswith("not measured")

    def measure(self, fn: Callable[[], Any]) -> tuple[Any, int | None]:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            result = fn()
            torch.cuda.synchronize(self.device)
            return result, torch.cuda.max_memory_allocated(self.device) - before
        if self._trim is not None:
            self._trim(0)  # hand freed heap pages back, so the baseline holds no memory the call could reuse
        if self.method.startswith("peak resident set"):
            self._reset_peak_rss()
            before = self._status_bytes("VmRSS")
            result = fn()
            return result, self._status_bytes("VmHWM") - before
        process = self._psutil()
        if process is not None:
            before = process.memory_info().rss
            result = fn()
            return result, process.memory_info().rss - before
        return fn(), None

    @staticmethod
    def _reset_peak_rss() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM) to the current RSS
            PeakMemory._status_bytes("VmHWM")
        except (OSError, ValueError):
            return False
        return True

    @staticmethod
    def _status_bytes(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                value, unit = line.split()[1:3]
                if unit != "kB":
                    raise ValueError(f"unexpected unit in /proc/self/status: {line!r}")
                return int(value) * 1024
        raise ValueError(f"/proc/self/status has no {key}")

    @staticmethod
    def _psutil() -> Any:
        try:
            import psutil
        except ImportError:
            return None
        return psutil.Process()

    @staticmethod
    def _malloc_trim() -> Callable[[int], int] | None:
        try:
            return ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            return None


def measure_interleaved(
    variants: Mapping[str, Callable[[], Any]],
    repeats: int,
    number: int | Mapping[str, int] = 1,
    threads: int | None = None,
    cpu_clock: Callable[[], float] = time.process_time,
) -> dict[str, Timing]:
    """Time each callable in ``repeats`` rounds, round-robin: A, B, C, A, B, C, ...

    A round calls each variant through :meth:`Timer.timeit(number) <torch.utils.benchmark.Timer.timeit>`
    (``number`` an int, or one per variant), which first makes ``max(2, number // 100)`` untimed warm-up calls,
    so every timed block starts warm even when another job has just evicted the caches. Recorded per call: wall
    seconds (``Timer``; it synchronises CUDA) and CPU seconds from ``cpu_clock`` (default: this process, all its
    threads; on a virtual machine it also counts time stolen by the hypervisor). ``threads`` is torch's
    intra-op thread count during the blocks (``Timer`` would default to 1; the default here is the current
    setting).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    threads = torch.get_num_threads() if threads is None else threads
    counts = {name: number if isinstance(number, int) else number[name] for name in variants}
    cpu_per_call: dict[str, list[float]] = {name: [] for name in variants}

    def with_cpu_time(name: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            start = cpu_clock()
            result = fn()
            cpu_per_call[name].append(cpu_clock() - start)
            return result

        return call

    timers = {
        name: Timer(stmt="fn()", globals={"fn": with_cpu_time(name, fn)}, description=name, num_threads=threads)
        for name, fn in variants.items()
    }
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, timer in timers.items():
            wall[name].append(timer.timeit(counts[name]).median)  # one timed block: seconds per call
            cpu[name].append(statistics.fmean(cpu_per_call[name][-counts[name]:]))  # its calls, not the warm-up
    return {name: Timing(tuple(wall[name]), tuple(cpu[name])) for name in variants}


def paired_ratio(
    numerator: Sequence[float] | Timing, denominator: Sequence[float] | Timing
) -> tuple[float, float, float]:
    """Median and interquartile range ``(median, q1, q3)`` of the per-round ratios ``numerator / denominator``."""
    num = numerator.wall if isinstance(numerator, Timing) else tuple(numerator)
    den = denominator.wall if isinstance(denominator, Timing) else tuple(denominator)
    if len(num) != len(den) or not num:
        raise ValueError(f"need the same non-zero number of rounds, got {len(num)} and {len(den)}")
    ratios = [n / d for n, d in zip(num, den)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, q1, q3


def ratio_line(name: str, ratio: float | tuple[float, float, float], goal_op: str | None = None,
               goal: float | None = None, note: str = "") -> str:
    """``ratio NAME = 1.02 (goal <= 1.00) MISS  [IQR of rounds 0.99-1.04]``; without a goal, informational.

    ``ratio`` is a value or ``paired_ratio``'s ``(median, q1, q3)``; the goal is judged on the printed value.
    """
    median, q1, q3 = ratio if isinstance(ratio, tuple) else (ratio, ratio, ratio)
    median = round(median, 2)
    line = f"ratio {name} = {median:.2f}"
    if goal_op is not None and goal is not None:
        if goal_op not in ("<=", ">="):
            raise ValueError(f"goal_op must be '<=' or '>=', got {goal_op!r}")
        passed = median <= goal if goal_op == "<=" else median >= goal
        line += f" (goal {goal_op} {goal:.2f}) {'PASS' if passed else 'MISS'}"
    else:
        line += " (no goal)"
    if q3 > q1:
        line += f"  [IQR of rounds {q1:.2f}-{q3:.2f}]"
    return line + (f"  {note}" if note else "")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _versions() -> str:
    import monai

    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}", f"monai {monai.__version__}"]
    try:
        import ignite

        parts.append(f"ignite {ignite.__version__}")
    except ImportError:
        pass
    return ", ".join(parts)


def print_machine_info(title: str, device: torch.device, extra: Mapping[str, Any] | None = None) -> None:
    """Print the benchmark title, the command, the date and what the figures depend on."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device_text = str(device)
    if device.type == "cuda":
        device_text += f" ({torch.cuda.get_device_name(device)})"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    rows = {
        "command": " ".join(shlex.quote(part) for part in [Path(sys.executable).name, *sys.argv]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": f"{os.cpu_count()} logical, {usable} usable by this process",
        "torch threads": str(torch.get_num_threads()),
        "versions": _versions(),
        "device": device_text,
        "load average": f"{load} (1, 5, 15 min; other jobs share this machine)",
        **{key: str(value) for key, value in (extra or {}).items()},
    }
    print(f"== {title} ==")
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    print(flush=True)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain-text table, columns left-aligned for text and right-aligned for numbers."""
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in cells) for i in range(len(headers))]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric)).rstrip()

    print(fmt([str(h) for h in headers]))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(fmt(row))
    print(flush=True)


def _is_number(text: str) -> bool:
    try:
        float(text.replace("x", "").replace("%", ""))
    except ValueError:
        return False
    return True


def add_common_arguments(parser: argparse.ArgumentParser, repeats: int) -> None:
    """``--quick``, ``--device``, ``--repeats``, ``--threads`` (the same meaning in every benchmark)."""
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and one round: checks that the benchmark runs, figures are meaningless")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--repeats", type=int, default=repeats,
                        help=f"timed rounds per variant, interleaved; medians are reported (default: {repeats})")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads in the main process (default: 1, as torch.utils.benchmark; "
                             "on a shared machine more threads than free cores make every op wait for a "
                             "descheduled thread)")


def resolve_device(parser: argparse.ArgumentParser, name: str) -> torch.device:
    """``torch.device(name)``, or a parser error when it is CUDA and none is visible."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        parser.error(f"--device {name}: {error}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {name}: torch sees no CUDA device (torch {torch.__version__})")
    return device


#: At most this many calls in one timed block (a block otherwise fills ``--block-seconds``).
MAX_CALLS_PER_BLOCK = 64
MIB = 2**20


def relative_difference(values: torch.Tensor, reference: torch.Tensor) -> float:
    """``max |values - reference| / max |reference|`` (on the host, float64)."""
    a, b = values.double().cpu(), reference.double().cpu()
    return (a - b).abs().max().item() / max(b.abs().max().item(), 1e-12)


def throughput(timing: Timing, items: int) -> tuple[float, ...]:
    """Items per second in each round."""
    return tuple(items / seconds for seconds in timing.wall)


def mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}"


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 0.1 else f"{seconds * 1e3:.0f}"


def calls_per_block(first_call_seconds: float, block_seconds: float) -> int:
    """Calls that fill ``block_seconds``, from one untimed call's seconds: at least 1, at most 64."""
    if block_seconds <= 0:
        return 1
    return max(1, min(MAX_CALLS_PER_BLOCK, math.floor(block_seconds / max(first_call_seconds, 1e-6))))


def measure_first(memory: PeakMemory, fn: Callable[[], Any], device: torch.device) -> tuple[Any, int | None, float]:
    """``fn()``'s result, its peak memory (``PeakMemory``) and the wall seconds of this call."""
    seconds: list[float] = []

    def timed() -> Any:
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
        return result

    result, peak = memory.measure(timed)
    return result, peak, seconds[0]
