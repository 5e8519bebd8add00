"""Seed 003's Table 1 from one command: train and evaluate the classifier bundle once per input variant (a row),
then merge the rows' per-class AUROCs into one table.

``python -m cxr_monai classifier-table`` runs, for each row, as separate ``python -m monai.bundle run`` processes
(the commands a user would type, printed before each step): the bundle's training (``train.json`` + the row's
overlay + ``--configs``) and its evaluation (the same + ``inference.json`` + ``evaluate.json``), into
``OUT/<row slug>/`` (``train.log`` and ``evaluate.log`` there). Every run logs to one MLflow store,
``OUT/mlruns.db``: each training run is named after its row, each evaluation run is nested under it. Then the rows'
``evaluation/report.json`` become ``OUT/table.md`` (:func:`~cxr_monai.apps.classification.merge_auroc_tables`),
which is printed.

Rows (``--variant``, repeatable; default: Table 1's four rows, :data:`TABLE1_VARIANTS`):

- ``NAME=KEYS`` -- the row ``NAME`` on the input keys ``KEYS``, comma-separated, from :data:`INPUT_KEYS`
  (``"DN-121 + lung=image,lung_segmented"``);
- ``NAME=KEYS:dual`` -- the same on the dual-branch network (frontal ``KEYS`` + the entry's ``lateral``;
  ``configs/dual_branch.json``);
- ``KEYS`` or ``KEYS:dual`` -- named as ``evaluate.json`` names it: ``DN-121 (image + lung_segmented)``,
  ``DualBranch DN-121 (image)``;
- a Table 1 row name alone (``"+LungSegmentation"``) -- that row.

A row whose ``evaluation/report.json`` is newer than its ``models/model.pt`` is finished and skipped (``--force``
runs it again); any other row trains (resuming from its checkpoints: a finished training returns at once) and is
evaluated. A failed run stops the command, naming the row and its log. Initialisation: ``--pretrained-path FILE``
for every row's training, or ``--pretrain-datalist LIST``, which first trains the seed's binary normal/abnormal
model (``configs/binary.json``, into ``OUT/binary/``) and starts every row from its ``models/model.pt``.

Example::

    python -m cxr_monai classifier-table --dataset-dir /data --datalist chexpert.json --out runs/table1 \\
        --configs small.json -- --max_epochs 2
    python -m cxr_monai classifier-table --dataset-dir /data --datalist chexpert.json --out runs/lung \\
        --variant "DN-121=image" --variant "DN-121 + lung=image,lung_segmented"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from cxr_monai.apps.bundle_table import (
    MANAGED_OVERRIDES,
    BundleTable,
    RowFailed,
    TableRow,
    add_table_arguments,
    row_is_finished,
    run_table,
    training_entry_keys,
    write_stamp,
)
from cxr_monai.apps.bundle_table import parse_overrides as _parse_overrides

__all__ = ["INPUT_KEYS", "TABLE1_VARIANTS", "ClassifierTable", "RowFailed", "Variant", "parse_overrides",
           "parse_variant", "row_is_finished"]

INPUT_KEYS = ("image", "lung_segmented", "bone_suppressed")
"""The input keys ``train.json`` can build; each needs these datalist entry keys."""
_ENTRY_KEYS_OF_INPUT = {"image": "image", "lung_segmented": "lung_mask", "bone_suppressed": "bone_suppressed"}

DUAL_BRANCH_CONFIG = "dual_branch.json"
BINARY_CONFIG = "binary.json"
BINARY_SLUG = "binary"

# bundle overrides the command sets itself (so `-- --key value` may not), with what to use instead
_MANAGED_OVERRIDES = {
    **MANAGED_OVERRIDES,
    "input_keys": "use --variant NAME=KEYS",
    "eval_variant": "a row is named by --variant NAME=KEYS",
}


@dataclass(frozen=True)
class Variant(TableRow):
    """One Table 1 row: its name, the network's (frontal) input keys, and whether it is the dual-branch network.

    Example::

        Variant("+LungSegmentation", ("image", "lung_segmented"), dual_branch=True).slug  # 'lungsegmentation'
    """

    name: str
    input_keys: tuple[str, ...]
    dual_branch: bool = False

    @property
    def overlays(self) -> tuple[str, ...]:
        """The bundle configs the row adds after ``train.json``."""
        return (DUAL_BRANCH_CONFIG,) if self.dual_branch else ()

    def overrides_for(self, step: str) -> dict[str, object]:
        """Both runs build the network's input from ``input_keys``."""
        return {"input_keys": list(self.input_keys)}

    def describe(self) -> str:
        """The name with the network and inputs, unless the name already says them."""
        if self.name == _default_name(self.input_keys, self.dual_branch):
            return self.name
        return f"{self.name} ({'dual-branch, ' if self.dual_branch else ''}input {' + '.join(self.input_keys)})"


def _default_name(input_keys: Sequence[str], dual_branch: bool) -> str:
    """A row's name when ``--variant`` gives none: ``evaluate.json``'s ``eval_variant`` default."""
    return f"{'DualBranch ' if dual_branch else ''}DN-121 ({' + '.join(input_keys)})"


TABLE1_VARIANTS = (
    Variant("DN-121", ("image",)),
    Variant("DualBranch DN-121", ("image",), dual_branch=True),
    Variant("+LungSegmentation", ("image", "lung_segmented"), dual_branch=True),
    Variant("+BoneSubtracted", ("image", "lung_segmented", "bone_suppressed"), dual_branch=True),
)
"""Seed 003's Table 1 rows, in its order."""

_VARIANT_SYNTAX = "NAME=KEYS[:dual], KEYS[:dual] or a Table 1 row name"


def parse_variant(text: str) -> Variant:
    """A row from ``--variant`` text (module docstring); ``ValueError`` naming the text and the reason.

    >>> parse_variant("DN-121 + lung=image,lung_segmented")
    Variant(name='DN-121 + lung', input_keys=('image', 'lung_segmented'), dual_branch=False)
    >>> parse_variant("image:dual").name
    'DualBranch DN-121 (image)'
    >>> parse_variant("+BoneSubtracted").input_keys
    ('image', 'lung_segmented', 'bone_suppressed')
    """
    text = text.strip()
    by_name = {variant.name: variant for variant in TABLE1_VARIANTS}
    if "=" not in text and text in by_name:
        return by_name[text]
    name, _, spec = text.rpartition("=")
    name = name.strip()
    if "=" in text and not name:
        raise ValueError(f"variant {text!r}: no row name before '=' ({_VARIANT_SYNTAX})")
    keys_text, colon, option = spec.partition(":")
    option = option.strip()
    if colon and option != "dual":
        raise ValueError(f"variant {text!r}: unknown option {':' + option!r} (the only option is ':dual', the "
                         "dual-branch network)")
    keys = tuple(key.strip() for key in keys_text.split(",") if key.strip())
    if not keys:
        raise ValueError(f"variant {text!r}: no input keys ({_VARIANT_SYNTAX}; keys from {', '.join(INPUT_KEYS)})")
    unknown = [key for key in keys if key not in INPUT_KEYS]
    if unknown:
        table_rows = "" if "=" in text else f", nor a Table 1 row ({', '.join(by_name)})"
        raise ValueError(f"variant {text!r}: unknown input key {', '.join(map(repr, unknown))} (known: "
                         f"{', '.join(INPUT_KEYS)}{table_rows})")
    if len(set(keys)) != len(keys):
        raise ValueError(f"variant {text!r}: an input key is given twice")
    dual_branch = bool(colon)
    if not name:
        name = _default_name(keys, dual_branch)
    variant = Variant(name, keys, dual_branch)
    if not variant.slug:
        raise ValueError(f"variant {text!r}: the row name needs a letter or digit (its folder name)")
    return variant


def parse_overrides(tokens: Sequence[str]) -> list[str]:
    """The bundle overrides after ``--`` as ``["--key", "value", ...]`` (``--key=value`` split in two);
    ``ValueError`` for a token that is not a ``--key``, a key without value, or a key the command sets itself.

    >>> parse_overrides(["--max_epochs", "2", "--image_size=128"])
    ['--max_epochs', '2', '--image_size', '128']
    """
    return _parse_overrides(tokens, _MANAGED_OVERRIDES, ClassifierTable.command)


@dataclass
class ClassifierTable(BundleTable):
    """The runs behind one Table 1: a training and an evaluation of ``bundle_dir`` per row of ``variants`` into
    ``out/<slug>``, one MLflow store ``out/mlruns.db``, the merged table ``out/table.md``
    (:class:`~cxr_monai.apps.bundle_table.BundleTable` with Table 1's rows and the binary pre-training).

    Args:
        dataset_dir, datalist: the bundle's ``dataset_dir`` and ``datalist``.
        out: the output folder.
        variants: the rows, in table order.
        configs: extra config files after each row's overlay (file names in the bundle's ``configs/``, or paths).
        overrides: bundle overrides for every run (``["--max_epochs", "2"]``, :func:`parse_overrides`).
        pretrained_path: ``pretrained_path`` of every row's training.
        pretrain_datalist, pretrain_dataset_dir: train the binary normal/abnormal model on that list first
            (``dataset_dir`` default: the list's folder) and start every row from it.
        bundle_dir: the classifier bundle (default: this checkout's).

    Example::

        table = ClassifierTable("/data", "/data/chexpert.json", "runs/table1", configs=["small.json"],
                                overrides=["--max_epochs", "2"])
        table.check()
        print(table.run().read_text())
    """

    variants: Sequence[Variant] = TABLE1_VARIANTS
    _: KW_ONLY
    pretrain_datalist: str | Path | None = None
    pretrain_dataset_dir: str | Path | None = None

    command = "classifier-table"
    bundle_name = "classifier"
    table_title = "Table 1"
    managed_overrides = _MANAGED_OVERRIDES
    overlay_configs = (DUAL_BRANCH_CONFIG, BINARY_CONFIG)

    def __post_init__(self) -> None:
        self.variants = tuple(self.variants)
        if self.pretrained_path is not None and self.pretrain_datalist is not None:
            raise ValueError("give --pretrained-path or --pretrain-datalist, not both (the binary model of "
                             "--pretrain-datalist is the rows' pretrained_path)")
        self.pretrain_datalist = Path(self.pretrain_datalist).resolve() if self.pretrain_datalist else None
        if self.pretrain_datalist is not None:
            self.pretrain_dataset_dir = Path(self.pretrain_dataset_dir or self.pretrain_datalist.parent).resolve()
        super().__post_init__()

    @property
    def rows(self) -> tuple[Variant, ...]:
        return tuple(self.variants)

    def merge(self, reports: Sequence[Path]) -> Path:
        from cxr_monai.apps.classification.evaluation import merge_auroc_tables

        return merge_auroc_tables(reports, self.table_path, digits=self.digits)

    def reserved_slugs(self) -> dict[str, str]:
        return {BINARY_SLUG: "the binary pre-training's"} if self.pretrain_datalist is not None else {}

    # ------------------------------------------------------------------------------------------------------
    # the binary pre-training

    @property
    def binary_model(self) -> Path:
        return Path(self.out) / BINARY_SLUG / "models" / "model.pt"

    def training_pretrained_path(self) -> Path | None:
        return self.binary_model if self.pretrain_datalist is not None else self.pretrained_path

    def binary_command(self) -> list[str]:
        assert self.pretrain_datalist is not None
        return self.bundle_command(
            ["train.json", BINARY_CONFIG, *self.configs],
            **self.common_overrides(Path(self.out) / BINARY_SLUG, Path(self.pretrain_dataset_dir),
                                    self.pretrain_datalist),
            run_name="binary normal/abnormal", tracking=Path(self.bundle_dir) / "configs" / "mlflow.json")

    def pre_steps(self) -> list[tuple[str, list[str], Path]]:
        if self.pretrain_datalist is None:
            return []
        return [("binary normal/abnormal pre-training", self.binary_command(),
                 Path(self.out) / BINARY_SLUG / "train.log")]

    def before_rows(self, force: bool) -> None:
        if self.pretrain_datalist is None:
            return
        folder = Path(self.out) / BINARY_SLUG
        stamp = folder / "finished.json"
        command = self.binary_command()
        if (not force and stamp.is_file() and self.binary_model.is_file()
                and stamp.stat().st_mtime_ns > self.binary_model.stat().st_mtime_ns):
            print(f"\n== binary normal/abnormal pre-training: skipped, finished ({stamp}; --force runs it again)",
                  flush=True)
            self.note_changed_settings(stamp, {"train": command})
            return
        self.step("binary normal/abnormal pre-training", command, folder / "train.log", "pre-training")
        write_stamp(stamp, {"train": command})

    # ------------------------------------------------------------------------------------------------------
    # checks before any run

    def needed_configs(self) -> dict[str, list[str]]:
        needed = {DUAL_BRANCH_CONFIG: [v.name for v in self.variants if v.dual_branch]}
        if self.pretrain_datalist is not None:
            needed[BINARY_CONFIG] = ["--pretrain-datalist"]
        return needed

    def input_files(self) -> list[tuple[str, Path | None]]:
        return [("--pretrained-path", self.pretrained_path), ("--pretrain-datalist", self.pretrain_datalist)]

    def check_rows(self, training_keys: set[str]) -> None:
        """The datalist entry keys the rows' inputs are made from (a missing ``lateral`` is a warning)."""
        for variant in self.variants:
            for input_key in variant.input_keys:
                entry_key = _ENTRY_KEYS_OF_INPUT[input_key]
                if entry_key not in training_keys:
                    raise ValueError(f"--datalist {self.datalist}: no training entry has {entry_key!r}, from which "
                                     f"row {variant.name!r} makes its input {input_key!r}")
            if variant.dual_branch and "lateral" not in training_keys:
                print(f"warning: {self.datalist}: no training entry has 'lateral'; the dual-branch row "
                      f"{variant.name!r} trains without lateral views", file=sys.stderr)

    def check(self) -> None:
        """``ValueError`` naming the file and the reason for anything missing before a run starts (hours may pass
        before a later row would find it): bundle and overlay configs, ``--configs``, data, ``--pretrained-path``,
        the datalist entry keys the rows' inputs are made from, the pre-training list's ``label``."""
        super().check()
        if self.pretrain_datalist is not None and "label" not in training_entry_keys(
                Path(self.pretrain_datalist), "--pretrain-datalist"):
            raise ValueError(f"--pretrain-datalist {self.pretrain_datalist}: no training entry has 'label' (0 "
                             "normal, 1 abnormal), which the binary pre-training learns")


# ----------------------------------------------------------------------------------------------------------
# command line


def _variant_argument(text: str) -> Variant:
    try:
        return parse_variant(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_variant_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", dest="variants", action="append", type=_variant_argument, metavar="ROW",
                        help="a row: NAME=KEYS[:dual], KEYS[:dual] or a Table 1 row name (repeatable; see below)")


def _add_initialisation_arguments(parser: argparse.ArgumentParser) -> None:
    init = parser.add_mutually_exclusive_group()
    init.add_argument("--pretrained-path", type=Path, metavar="FILE",
                      help="pretrained_path of every row's training (binary model or ImageNet DenseNet-121 weights)")
    init.add_argument("--pretrain-datalist", type=Path, metavar="JSON",
                      help="first train the binary normal/abnormal model (configs/binary.json; entries' 'label' "
                           "0/1) on this list into OUT/binary/, and start every row from it")
    parser.add_argument("--pretrain-dataset-dir", type=Path, metavar="DIR",
                        help="dataset_dir of --pretrain-datalist (default: its folder)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m cxr_monai classifier-table --dataset-dir DIR --out OUT [--variant ...] [-- --key value ...]``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "rows (--variant, repeatable; default: Table 1's four rows):\n"
        + "".join(f"  {v.describe()}\n" for v in TABLE1_VARIANTS) + "a row is written as\n"
        "  NAME=KEYS        row NAME on the comma-separated input keys KEYS (" + ", ".join(INPUT_KEYS) + ")\n"
        "  NAME=KEYS:dual   the same on the dual-branch network (frontal KEYS + the entry's lateral)\n"
        "  KEYS[:dual]      named as evaluate.json names it: 'DN-121 (image + lung_segmented)'\n"
        "  ROW              a Table 1 row by name: '+LungSegmentation'\n\n"
        "A row whose evaluation/report.json is newer than its models/model.pt is skipped (--force runs it again).\n\n"
        "example:\n"
        "  python -m cxr_monai classifier-table --dataset-dir /data --datalist chexpert.json --out runs/t1 \\\n"
        "      --variant 'DN-121=image' --variant 'DN-121 + lung=image,lung_segmented' --configs small.json \\\n"
        "      -- --max_epochs 2 --image_size 128")
    add_table_arguments(
        parser, "classifier", rows=_add_variant_argument, initialisation=_add_initialisation_arguments,
        force_help="run finished rows (and the pre-training) again; their trainings resume from their checkpoints "
                   "(add -- --resume false to train afresh)",
        digits_help="decimals of the AUROCs in table.md (default 3)")


def table_from_args(args: argparse.Namespace) -> ClassifierTable:
    """The :class:`ClassifierTable` of parsed arguments; ``ValueError`` for a bad combination."""
    if args.pretrain_dataset_dir is not None and args.pretrain_datalist is None:
        raise ValueError("--pretrain-dataset-dir needs --pretrain-datalist")
    return ClassifierTable(
        dataset_dir=args.dataset_dir, datalist=args.datalist or args.dataset_dir / "datalist.json", out=args.out,
        variants=args.variants or TABLE1_VARIANTS, configs=args.configs, overrides=args.overrides,
        pretrained_path=args.pretrained_path, pretrain_datalist=args.pretrain_datalist,
        pretrain_dataset_dir=args.pretrain_dataset_dir, bundle_dir=args.bundle_dir, digits=args.digits)


def run(args: argparse.Namespace) -> int:
    return run_table(table_from_args, args)
