"""Seed 004's comparison table from one command: train and evaluate the ClaSegNet bundle once as the plain ResNet-50
(``mode`` ``baseline``) and once as ClaSegNet (``mode`` ``clasegnet``), then merge the two evaluations.

``python -m cxr_monai clasegnet-table`` is :class:`~cxr_monai.apps.bundle_table.BundleTable` on
``bundles/clasegnet``: for each row, as separate ``python -m monai.bundle run`` processes (printed before each step),
the bundle's training (``train.json`` + ``--configs``, ``--mode`` the row's) and its evaluation (the same +
``inference.json`` + ``evaluate.json``, ``--eval_variant`` the row's name) into ``OUT/<row slug>/`` (``train.log``,
``evaluate.log``); every run logs to ``OUT/mlruns.db`` (each training run named after its row). Then the rows'
``evaluation/report.json`` become ``OUT/table.md`` (:func:`~cxr_monai.apps.pneumothorax.merge_detection_tables`:
accuracy, precision, recall, AUC and Dice with bootstrap 95 % CIs, one confusion matrix per row), which is printed.

Rows (``--row``, repeatable; default: the seed's two, :data:`CLASEGNET_ROWS`): ``ResNet-50`` or ``ClaSegNet`` (a
default row by name), a mode alone (``baseline``: that default row), or ``NAME=MODE``. A row whose
``evaluation/report.json`` is newer than its ``models/model.pt`` is skipped (``--force`` runs it again); a failed run
stops the command, naming the row and its log.

Example::

    python -m cxr_monai clasegnet-table --dataset-dir /data/siim --out runs/seed004 \\
        --pretrained-path resnet50-0676ba61.pth
    python -m cxr_monai clasegnet-table --dataset-dir /data/phantoms --out runs/ptx --configs small.json \\
        -- --max_epochs 2
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cxr_monai.apps.bundle_table import (
    MANAGED_OVERRIDES,
    BundleTable,
    Row,
    add_table_arguments,
    run_table,
)

__all__ = ["CLASEGNET_ROWS", "MODES", "ClaSegNetTable", "parse_row"]

MODES = ("baseline", "clasegnet")
"""The bundle's ``mode`` values: the plain ResNet-50 classifier, and ClaSegNet (MIL loss + segmentation branch)."""

CLASEGNET_ROWS = (
    Row("ResNet-50", overrides={"mode": "baseline"}),
    Row("ClaSegNet", overrides={"mode": "clasegnet"}),
)
"""Seed 004's comparison rows, in its order."""

# bundle overrides the command sets itself (so `-- --key value` may not), with what to use instead
_MANAGED_OVERRIDES = {**MANAGED_OVERRIDES, "mode": "each row sets it: --row NAME=MODE"}
_EVALUATION_KEYS = ("test", "test_unhealthy")  # inference.json's infer_datalist_keys
_MASK_KEY = "lesion_mask"


def parse_row(text: str) -> Row:
    """A row from ``--row`` text: a default row's name, a mode (that default row) or ``NAME=MODE``;
    ``ValueError`` naming the text and the reason.

    >>> parse_row("ClaSegNet").overrides
    {'mode': 'clasegnet'}
    >>> parse_row("baseline").name
    'ResNet-50'
    >>> row = parse_row("ResNet-50, no augmentation=baseline")
    >>> row.name, row.slug, row.overrides
    ('ResNet-50, no augmentation', 'resnet-50-no-augmentation', {'mode': 'baseline'})
    """
    text = text.strip()
    by_name = {row.name.lower(): row for row in CLASEGNET_ROWS}
    by_mode = {row.overrides["mode"]: row for row in CLASEGNET_ROWS}
    if "=" not in text:
        row = by_name.get(text.lower()) or by_mode.get(text)
        if row is None:
            raise ValueError(f"row {text!r}: neither a default row ({', '.join(r.name for r in CLASEGNET_ROWS)}) nor "
                             f"a mode ({', '.join(MODES)}); NAME=MODE names a row")
        return row
    name, _, mode = text.rpartition("=")
    name, mode = name.strip(), mode.strip()
    if not name:
        raise ValueError(f"row {text!r}: no row name before '=' (NAME=MODE)")
    if mode not in MODES:
        raise ValueError(f"row {text!r}: unknown mode {mode!r} (modes: {', '.join(MODES)})")
    row = Row(name, overrides={"mode": mode})
    if not row.slug:
        raise ValueError(f"row {text!r}: the row name needs a letter or digit (its folder name)")
    return row


@dataclass
class ClaSegNetTable(BundleTable):
    """The runs behind seed 004's comparison table: a training and an evaluation of the ClaSegNet bundle per row
    (default: ResNet-50 and ClaSegNet) into ``out/<slug>``, one MLflow store ``out/mlruns.db``, the merged table
    ``out/table.md``.

    Args:
        dataset_dir, datalist: the bundle's ``dataset_dir`` and ``datalist`` (entries with ``lesion_mask``).
        out: the output folder.
        rows: the rows, in table order (:class:`~cxr_monai.apps.bundle_table.Row`\\ s with ``mode``).
        configs, overrides, pretrained_path, bundle_dir, digits, python: as
            :class:`~cxr_monai.apps.bundle_table.BundleTable` (``pretrained_path``: torchvision ResNet-50 weights,
            for every row's training).

    Example::

        table = ClaSegNetTable("/data/siim", "/data/siim/datalist.json", "runs/seed004",
                               pretrained_path="resnet50-0676ba61.pth")
        table.check()
        print(table.run().read_text())
    """

    rows: Sequence[Row] = CLASEGNET_ROWS

    command = "clasegnet-table"
    bundle_name = "clasegnet"
    table_title = "ClaSegNet vs ResNet-50"
    managed_overrides = _MANAGED_OVERRIDES

    def __post_init__(self) -> None:
        self.rows = tuple(self.rows)
        super().__post_init__()

    def merge(self, reports: Sequence[Path]) -> Path:
        from cxr_monai.apps.pneumothorax.evaluation import merge_detection_tables

        return merge_detection_tables(reports, self.table_path, digits=self.digits)

    def check_rows(self, training_keys: set[str]) -> None:
        """Training and evaluation entries need ``lesion_mask`` (the pneumothorax mask, blank when normal)."""
        if _MASK_KEY not in training_keys:
            raise ValueError(f"--datalist {self.datalist}: no training entry has {_MASK_KEY!r} (the pneumothorax "
                             "mask, blank when normal), which every row's training reads")
        keys = _EVALUATION_KEYS
        if "--infer_datalist_keys" in self.overrides:
            value = self.overrides[self.overrides.index("--infer_datalist_keys") + 1]
            try:
                keys = json.loads(value)
            except json.JSONDecodeError:
                keys = value
            keys = (keys,) if isinstance(keys, str) else tuple(keys)
        document = json.loads(Path(self.datalist).read_text(encoding="utf-8"))
        entries = [entry for key in keys for entry in (document.get(key) or []) if isinstance(entry, dict)]
        if not any(_MASK_KEY in entry for entry in entries):
            raise ValueError(f"--datalist {self.datalist}: no {' or '.join(keys)} entry has {_MASK_KEY!r}, which "
                             "the evaluation reads")


# ----------------------------------------------------------------------------------------------------------
# command line


def _row_argument(text: str) -> Row:
    try:
        return parse_row(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_row_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--row", dest="rows", action="append", type=_row_argument, metavar="ROW",
                        help="a row: ResNet-50, ClaSegNet, a mode (baseline, clasegnet) or NAME=MODE (repeatable; "
                             "default: ResNet-50 and ClaSegNet)")


def _add_initialisation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pretrained-path", type=Path, metavar="FILE",
                        help="pretrained_path of every row's training (torchvision ResNet-50 weights)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m cxr_monai clasegnet-table --dataset-dir DIR --out OUT [--row ...] [-- --key value ...]``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "rows (--row, repeatable; default: the seed's two):\n"
        "  ResNet-50        the plain ResNet-50 classifier (mode baseline)\n"
        "  ClaSegNet        ResNet-50 features, MIL loss on the masks, segmentation branch (mode clasegnet)\n"
        "  NAME=MODE        row NAME in mode baseline or clasegnet\n\n"
        "A row whose evaluation/report.json is newer than its models/model.pt is skipped (--force runs it again).\n\n"
        "example:\n"
        "  python -m cxr_monai clasegnet-table --dataset-dir /data/siim --out runs/seed004 \\\n"
        "      --pretrained-path resnet50.pth\n"
        "  python -m cxr_monai clasegnet-table --dataset-dir phantoms --out runs/ptx --configs small.json \\\n"
        "      -- --max_epochs 2 --image_size 128")
    add_table_arguments(parser, "clasegnet", rows=_add_row_argument, initialisation=_add_initialisation_arguments,
                        digits_help="decimals of the figures in table.md (default 3)")


def table_from_args(args: argparse.Namespace) -> ClaSegNetTable:
    """The :class:`ClaSegNetTable` of parsed arguments; ``ValueError`` for a bad combination."""
    return ClaSegNetTable(
        dataset_dir=args.dataset_dir, datalist=args.datalist or args.dataset_dir / "datalist.json", out=args.out,
        rows=args.rows or CLASEGNET_ROWS, configs=args.configs, overrides=args.overrides,
        pretrained_path=args.pretrained_path, bundle_dir=args.bundle_dir, digits=args.digits)


def run(args: argparse.Namespace) -> int:
    return run_table(table_from_args, args)
