"""The main job on phantoms: generate data, train the context encoder, inpaint, evaluate, point at the results.

``python -m cxr_monai demo --out runs/demo`` runs, as separate ``python -m monai.bundle run`` processes (the
commands a user would type, printed before each step), the context-encoder bundle's ``train.json`` +
``small.json`` (a CPU-sized graph of the paper's network), ``inference.json`` and ``evaluate.json`` on phantom
radiographs, all tracked in one MLflow sqlite store under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

BUNDLE_NAME = "context_encoder"


def default_bundle_dir() -> Path:
    """``bundles/context_encoder`` of the checkout this package runs from."""
    return Path(__file__).resolve().parents[1] / "bundles" / BUNDLE_NAME


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)")
    parser.add_argument("--num-images", type=int, default=48, help="phantom radiographs to generate (default: 48)")
    parser.add_argument("--size", type=int, default=512, help="phantom size in px (default: 512)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: small.json's)")
    parser.add_argument("--epoch-length", type=int, default=None, help="iterations per epoch (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed for phantoms and training (default: 0)")
    parser.add_argument("--bundle-dir", type=Path, default=None, help="bundle folder (default: this checkout's)")
    parser.add_argument("--fresh", action="store_true", help="delete previous checkpoints instead of resuming")


def _bundle_command(bundle_dir: Path, configs: list[str], **overrides: object) -> list[str]:
    files = [str(bundle_dir / "configs" / name) for name in configs]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(files)]
    command += ["--meta_file", str(bundle_dir / "configs" / "metadata.json")]
    command += ["--logging_file", str(bundle_dir / "configs" / "logging.conf")]
    for key, value in overrides.items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return command


def _run_step(title: str, command: list[str], log_path: Path) -> None:
    print(f"\n== {title}\n$ {shlex.join(command)}", flush=True)
    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        process = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    if process.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-40:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"{title} failed (exit {process.returncode}); full log: {log_path}")
    print(f"   done in {time.monotonic() - started:.0f} s (log: {log_path})", flush=True)


def run(args: argparse.Namespace) -> int:
    from cxr_monai.data.phantom import generate_phantoms

    out = args.out.resolve()
    bundle_dir = (args.bundle_dir or default_bundle_dir()).resolve()
    if not (bundle_dir / "configs" / "train.json").is_file():
        print(f"error: no bundle at {bundle_dir} (run from a cxr-monai checkout or pass --bundle-dir)", file=sys.stderr)
        return 2
    data_dir = out / "phantoms"
    run_dir = out / BUNDLE_NAME
    if args.fresh and (run_dir / "checkpoints").is_dir():
        for path in (run_dir / "checkpoints").glob("checkpoint_*.pt"):
            path.unlink()

    print(f"== phantoms: {args.num_images} images at {args.size} px -> {data_dir}", flush=True)
    if not (data_dir / "datalist.json").is_file():
        generate_phantoms(data_dir, num_images=args.num_images, size=args.size, seed=args.seed)
    common = {
        "bundle_root": str(bundle_dir),
        "dataset_dir": str(data_dir),
        "datalist": str(data_dir / "datalist.json"),
        "output_dir": str(run_dir),
        "seed": args.seed,
    }
    train_overrides = dict(common)
    if args.epochs is not None:
        train_overrides["max_epochs"] = args.epochs
    if args.epoch_length is not None:
        train_overrides["epoch_length"] = args.epoch_length
    tracking = str(bundle_dir / "configs" / "mlflow.json")
    _run_step(
        "train (train.json + small.json)",
        _bundle_command(bundle_dir, ["train.json", "small.json"], tracking=tracking, **train_overrides),
        run_dir / "logs" / "train.log",
    )
    _run_step(
        "inference (inference.json + small.json)",
        _bundle_command(bundle_dir, ["train.json", "small.json", "inference.json"], **common),
        run_dir / "logs" / "inference.log",
    )
    _run_step(
        "evaluation (evaluate.json + small.json)",
        _bundle_command(bundle_dir, ["train.json", "small.json", "evaluate.json"], tracking=tracking, **common),
        run_dir / "logs" / "evaluate.log",
    )

    table = run_dir / "evaluation" / "table.md"
    print("\n== results")
    if table.is_file():
        print(table.read_text())
    print(f"table, per-patch and per-image CSVs, JSON:  {run_dir / 'evaluation'}")
    print(f"training grids:                            {run_dir / 'grids'}")
    print(f"patch PNGs, heatmaps, image ranking:       {run_dir / 'inference'}")
    print(f"generator weights:                         {run_dir / 'models' / 'model.pt'}")
    print(f"MLflow store:                              {run_dir / 'mlruns.db'}")
    print(f"open it with:                              mlflow ui --backend-store-uri sqlite:///{run_dir / 'mlruns.db'}")
    return 0
