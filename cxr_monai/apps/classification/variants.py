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
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["INPUT_KEYS", "TABLE1_VARIANTS", "ClassifierTable", "RowFailed", "Variant", "parse_overrides",
           "parse_variant", "row_is_finished"]

INPUT_KEYS = ("image", "lung_segmented", "bone_suppressed")
"""The input keys ``train.json`` can build; each needs these datalist entry keys."""
_ENTRY_KEYS_OF_INPUT = {"image": "image", "lung_segmented": "lung_mask", "bone_suppressed": "bone_suppressed"}

DUAL_BRANCH_CONFIG = "dual_branch.json"
BINARY_CONFIG = "binary.json"
BINARY_SLUG = "binary"
_BUNDLE_CONFIGS = ("train.json", "inference.json", "evaluate.json", "mlflow.json")
_LOG_TAIL_LINES = 30

# bundle overrides the command sets itself (so `-- --key value` may not), with what to use instead
_MANAGED_OVERRIDES = {
    "config_file": "use --configs for extra config files",
    "meta_file": "the bundle's configs/metadata.json is used",
    "logging_file": "the bundle's configs/logging.conf is used",
    "bundle_root": "use --bundle-dir",
    "dataset_dir": "use --dataset-dir",
    "datalist": "use --datalist",
    "output_dir": "use --out; each row writes OUT/<row slug>",
    "input_keys": "use --variant NAME=KEYS",
    "eval_variant": "a row is named by --variant NAME=KEYS",
    "run_name": "each row's training run is named after the row",
    "tracking": "training runs get the bundle's configs/mlflow.json",
    "tracking_uri": "every row logs to OUT/mlruns.db",
    "pretrained_path": "use --pretrained-path (passed to the trainings only)",
}


@dataclass(frozen=True)
class Variant:
    """One Table 1 row: its name, the network's (frontal) input keys, and whether it is the dual-branch network.

    Example::

        Variant("+LungSegmentation", ("image", "lung_segmented"), dual_branch=True).slug  # 'lungsegmentation'
    """

    name: str
    input_keys: tuple[str, ...]
    dual_branch: bool = False

    @property
    def slug(self) -> str:
        """The row's folder name under the output folder: the name in lower case, runs of other characters ``-``."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    @property
    def overlays(self) -> tuple[str, ...]:
        """The bundle configs the row adds after ``train.json``."""
        return (DUAL_BRANCH_CONFIG,) if self.dual_branch else ()

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
    pairs: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("--") or token == "--":
            raise ValueError(f"bundle overrides after '--' are '--key value' pairs; {token!r} is not a --key")
        key, equals, value = token[2:].partition("=")
        if not equals:
            if index + 1 >= len(tokens) or tokens[index + 1].startswith("--"):
                raise ValueError(f"bundle override --{key} has no value")
            value = tokens[index + 1]
            index += 1
        index += 1
        managed = _MANAGED_OVERRIDES.get(key.replace("-", "_"))
        if managed:
            raise ValueError(f"bundle override --{key}: classifier-table sets it for each run ({managed})")
        pairs += [f"--{key}", value]
    return pairs


def row_is_finished(row_dir: str | os.PathLike) -> bool:
    """Whether ``row_dir/evaluation/report.json`` is newer than ``row_dir/models/model.pt``: the model was
    evaluated after its last change."""
    report = Path(row_dir) / "evaluation" / "report.json"
    model = Path(row_dir) / "models" / "model.pt"
    return report.is_file() and model.is_file() and report.stat().st_mtime_ns > model.stat().st_mtime_ns


def default_bundle_dir() -> Path:
    """``bundles/classifier`` of the checkout this package runs from."""
    return Path(__file__).resolve().parents[3] / "bundles" / "classifier"


class RowFailed(RuntimeError):
    """A row's training or evaluation exited non-zero; the message names the row and its log file."""


class _Verbatim(str):
    """An override value passed as it is (a URI), not as JSON."""


def _value(value: object) -> str:
    """An override as the command line carries it: paths and URIs as they are, everything else as JSON (Fire
    parses it: a row named ``2020`` stays a string)."""
    return str(value) if isinstance(value, (Path, _Verbatim)) else json.dumps(value)


@dataclass
class ClassifierTable:
    """The runs behind one Table 1: a training and an evaluation of ``bundle_dir`` per row of ``variants`` into
    ``out/<slug>``, one MLflow store ``out/mlruns.db``, the merged table ``out/table.md``.

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

    dataset_dir: str | os.PathLike
    datalist: str | os.PathLike
    out: str | os.PathLike
    variants: Sequence[Variant] = TABLE1_VARIANTS
    configs: Sequence[str | os.PathLike] = ()
    overrides: Sequence[str] = ()
    pretrained_path: str | os.PathLike | None = None
    pretrain_datalist: str | os.PathLike | None = None
    pretrain_dataset_dir: str | os.PathLike | None = None
    bundle_dir: str | os.PathLike | None = None
    digits: int = 3
    python: str = field(default=sys.executable)

    def __post_init__(self) -> None:
        self.dataset_dir = Path(self.dataset_dir).resolve()
        self.datalist = Path(self.datalist).resolve()
        self.out = Path(self.out).resolve()
        self.bundle_dir = Path(self.bundle_dir or default_bundle_dir()).resolve()
        self.variants = tuple(self.variants)
        self.overrides = parse_overrides(list(self.overrides))
        if self.pretrained_path is not None and self.pretrain_datalist is not None:
            raise ValueError("give --pretrained-path or --pretrain-datalist, not both (the binary model of "
                             "--pretrain-datalist is the rows' pretrained_path)")
        self.pretrained_path = Path(self.pretrained_path).resolve() if self.pretrained_path else None
        self.pretrain_datalist = Path(self.pretrain_datalist).resolve() if self.pretrain_datalist else None
        if self.pretrain_datalist is not None:
            self.pretrain_dataset_dir = Path(self.pretrain_dataset_dir or self.pretrain_datalist.parent).resolve()
        if not self.variants:
            raise ValueError("no row to run")
        names: dict[str, Variant] = {}
        slugs: dict[str, Variant] = {}
        for variant in self.variants:
            if variant.name in names:
                raise ValueError(f"row {variant.name!r} is given twice")
            if variant.slug in slugs:
                raise ValueError(f"rows {slugs[variant.slug].name!r} and {variant.name!r} would share the folder "
                                 f"{variant.slug}/; rename one")
            if variant.slug == BINARY_SLUG and self.pretrain_datalist is not None:
                raise ValueError(f"row {variant.name!r}: its folder {BINARY_SLUG}/ is the binary pre-training's; "
                                 "rename it")
            names[variant.name], slugs[variant.slug] = variant, variant

    # ------------------------------------------------------------------------------------------------------
    # paths and commands

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.out / 'mlruns.db'}"

    @property
    def table_path(self) -> Path:
        return self.out / "table.md"

    @property
    def binary_model(self) -> Path:
        return self.out / BINARY_SLUG / "models" / "model.pt"

    def row_dir(self, variant: Variant) -> Path:
        return self.out / variant.slug

    def config_path(self, name: str | os.PathLike) -> Path:
        """A config file: ``name`` in the bundle's ``configs/`` if there, else ``name`` as a path."""
        in_bundle = Path(self.bundle_dir) / "configs" / name
        return in_bundle if in_bundle.is_file() else Path(name).resolve()

    def bundle_command(self, configs: Sequence[str | os.PathLike], **overrides: object) -> list[str]:
        """``python -m monai.bundle run --config_file "[...]" ... --key value ...`` + the pass-through overrides."""
        configs_dir = Path(self.bundle_dir) / "configs"
        command = [self.python, "-m", "monai.bundle", "run",
                   "--config_file", json.dumps([str(self.config_path(name)) for name in configs]),
                   "--meta_file", str(configs_dir / "metadata.json"),
                   "--logging_file", str(configs_dir / "logging.conf"),
                   "--bundle_root", str(self.bundle_dir)]
        for key, value in overrides.items():
            if value is not None:
                command += [f"--{key}", _value(value)]
        return command + list(self.overrides)

    def _common(self, output_dir: Path, dataset_dir: Path, datalist: Path) -> dict[str, object]:
        return {"dataset_dir": dataset_dir, "datalist": datalist, "output_dir": output_dir,
                "tracking_uri": _Verbatim(self.tracking_uri)}

    def train_command(self, variant: Variant) -> list[str]:
        pretrained = self.binary_model if self.pretrain_datalist is not None else self.pretrained_path
        return self.bundle_command(
            ["train.json", *variant.overlays, *self.configs],
            **self._common(self.row_dir(variant), self.dataset_dir, self.datalist),
            input_keys=list(variant.input_keys), run_name=variant.name,
            tracking=Path(self.bundle_dir) / "configs" / "mlflow.json", pretrained_path=pretrained)

    def evaluate_command(self, variant: Variant) -> list[str]:
        return self.bundle_command(
            ["train.json", *variant.overlays, *self.configs, "inference.json", "evaluate.json"],
            **self._common(self.row_dir(variant), self.dataset_dir, self.datalist),
            input_keys=list(variant.input_keys), eval_variant=variant.name)

    def binary_command(self) -> list[str]:
        assert self.pretrain_datalist is not None
        return self.bundle_command(
            ["train.json", BINARY_CONFIG, *self.configs],
            **self._common(self.out / BINARY_SLUG, Path(self.pretrain_dataset_dir), self.pretrain_datalist),
            run_name="binary normal/abnormal", tracking=Path(self.bundle_dir) / "configs" / "mlflow.json")

    # ------------------------------------------------------------------------------------------------------
    # checks before any run

    def check(self) -> None:
        """``ValueError`` naming the file and the reason for anything missing before a run starts (hours may pass
        before a later row would find it): bundle and overlay configs, ``--configs``, data, ``--pretrained-path``,
        the datalist entry keys the rows' inputs are made from, the pre-training list's ``label``."""
        configs_dir = Path(self.bundle_dir) / "configs"
        for name in _BUNDLE_CONFIGS:
            if not (configs_dir / name).is_file():
                raise ValueError(f"{configs_dir / name} not found: is {self.bundle_dir} the classifier bundle? "
                                 "(--bundle-dir)")
        needed = {DUAL_BRANCH_CONFIG: [v.name for v in self.variants if v.dual_branch]}
        if self.pretrain_datalist is not None:
            needed[BINARY_CONFIG] = ["--pretrain-datalist"]
        for name, users in needed.items():
            if users and not (configs_dir / name).is_file():
                raise ValueError(f"{configs_dir / name} not found; {', '.join(map(repr, users))} need(s) it")
        for name in self.configs:
            if not self.config_path(name).is_file():
                raise ValueError(f"--configs {name}: neither {configs_dir / name} nor {Path(name).resolve()} exists")
            if Path(name).name in (*_BUNDLE_CONFIGS, DUAL_BRANCH_CONFIG, BINARY_CONFIG):
                raise ValueError(f"--configs {name}: classifier-table adds {Path(name).name} itself where it belongs")
        if not Path(self.dataset_dir).is_dir():
            raise ValueError(f"--dataset-dir {self.dataset_dir}: not a folder")
        for option, path in (("--pretrained-path", self.pretrained_path),
                             ("--pretrain-datalist", self.pretrain_datalist)):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{option} {path}: file not found")
        datalist = Path(self.datalist)
        present = _training_entry_keys(datalist, "--datalist")
        for variant in self.variants:
            for input_key in variant.input_keys:
                entry_key = _ENTRY_KEYS_OF_INPUT[input_key]
                if entry_key not in present:
                    raise ValueError(f"--datalist {datalist}: no training entry has {entry_key!r}, from which row "
                                     f"{variant.name!r} makes its input {input_key!r}")
            if variant.dual_branch and "lateral" not in present:
                print(f"warning: {datalist}: no training entry has 'lateral'; the dual-branch row {variant.name!r} "
                      "trains without lateral views", file=sys.stderr)
        if self.pretrain_datalist is not None and "label" not in _training_entry_keys(
                Path(self.pretrain_datalist), "--pretrain-datalist"):
            raise ValueError(f"--pretrain-datalist {self.pretrain_datalist}: no training entry has 'label' (0 "
                             "normal, 1 abnormal), which the binary pre-training learns")

    # ------------------------------------------------------------------------------------------------------
    # running

    def steps(self) -> list[tuple[str, list[str], Path]]:
        """Every (title, command, log file) in order, skipped ones included (``--dry-run``)."""
        steps = []
        if self.pretrain_datalist is not None:
            steps.append(("binary normal/abnormal pre-training", self.binary_command(),
                          self.out / BINARY_SLUG / "train.log"))
        for variant in self.variants:
            steps.append((f"{variant.name}: training", self.train_command(variant),
                          self.row_dir(variant) / "train.log"))
            steps.append((f"{variant.name}: evaluation", self.evaluate_command(variant),
                          self.row_dir(variant) / "evaluate.log"))
        return steps

    def run(self, force: bool = False) -> Path:
        """Run the rows (skipping finished ones unless ``force``), then write and return ``table.md``.
        Raises :class:`RowFailed` at the first failed run."""
        self.out.mkdir(parents=True, exist_ok=True)
        rows = f"{len(self.variants)} row{'' if len(self.variants) == 1 else 's'}"
        print(f"== classifier-table: {rows} -> {self.out} (MLflow: {self.tracking_uri})",
              flush=True)
        if self.pretrain_datalist is not None:
            self._pretrain(force)
        reports = []
        for number, variant in enumerate(self.variants, 1):
            reports.append(self._run_row(variant, f"[{number}/{len(self.variants)}]", force))
        from cxr_monai.apps.classification.evaluation import merge_auroc_tables

        path = merge_auroc_tables(reports, self.table_path, digits=self.digits)
        print(f"\n== Table 1 ({path})\n", flush=True)
        print(path.read_text(encoding="utf-8"), end="")
        print(f"\nMLflow: mlflow ui --backend-store-uri {self.tracking_uri}", flush=True)
        return path

    def _pretrain(self, force: bool) -> None:
        folder = self.out / BINARY_SLUG
        stamp = folder / "finished.json"
        command = self.binary_command()
        if (not force and stamp.is_file() and self.binary_model.is_file()
                and stamp.stat().st_mtime_ns > self.binary_model.stat().st_mtime_ns):
            print(f"\n== binary normal/abnormal pre-training: skipped, finished ({stamp}; --force runs it again)",
                  flush=True)
            self._note_changed_settings(stamp, {"train": command})
            return
        self._step("binary normal/abnormal pre-training", command, folder / "train.log", "pre-training")
        _write_stamp(stamp, {"train": command})

    def _run_row(self, variant: Variant, number: str, force: bool) -> Path:
        folder = self.row_dir(variant)
        report = folder / "evaluation" / "report.json"
        commands = {"train": self.train_command(variant), "evaluate": self.evaluate_command(variant)}
        if not force and row_is_finished(folder):
            print(f"\n== {number} {variant.describe()}: skipped, {report} is newer than models/model.pt "
                  "(--force runs it again)", flush=True)
            self._note_changed_settings(folder / "row.json", commands)
            return report
        self._step(f"{number} {variant.describe()}: training", commands["train"], folder / "train.log",
                   f"row {variant.name!r}: training")
        report.unlink(missing_ok=True)  # a failed evaluation must not leave the previous model's report behind
        self._step(f"{number} {variant.name}: evaluation", commands["evaluate"], folder / "evaluate.log",
                   f"row {variant.name!r}: evaluation")
        if not report.is_file():
            raise RowFailed(f"row {variant.name!r}: evaluation wrote no {report}; log: {folder / 'evaluate.log'}")
        _write_stamp(folder / "row.json", {"name": variant.name, "input_keys": list(variant.input_keys),
                                           "dual_branch": variant.dual_branch, **commands})
        return report

    def _note_changed_settings(self, stamp: Path, commands: dict[str, list[str]]) -> None:
        try:
            recorded = json.loads(stamp.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return
        changed = [step for step, command in commands.items()
                   if step in recorded and recorded[step][1:] != command[1:]]  # [1:]: any interpreter
        if changed:
            print(f"   note: its {' and '.join(changed)} command(s), recorded in {stamp}, differ from this "
                  "invocation's; --force runs it with these settings", flush=True)

    def _step(self, title: str, command: list[str], log_path: Path, what: str) -> None:
        print(f"\n== {title}\n$ {shlex.join(command)}", flush=True)
        started = time.monotonic()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log:
            process = subprocess.run(command, check=False, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        if process.returncode != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
            print("\n".join(tail), file=sys.stderr, flush=True)
            raise RowFailed(f"{what} failed (exit {process.returncode}); log: {log_path}")
        print(f"   done in {time.monotonic() - started:.0f} s (log: {log_path})", flush=True)


def _training_entry_keys(path: Path, option: str) -> set[str]:
    """The keys of the ``training`` entries of the datalist ``path``; ``ValueError`` naming ``option``."""
    if not path.is_file():
        raise ValueError(f"{option} {path}: file not found")
    try:
        training = json.loads(path.read_text(encoding="utf-8")).get("training") or []
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{option} {path}: not a JSON datalist ({error})") from None
    return {key for entry in training if isinstance(entry, dict) for key in entry}


def _write_stamp(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**document, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2) + "\n",
                    encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------
# command line


def _variant_argument(text: str) -> Variant:
    try:
        return parse_variant(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
    parser.add_argument("--dataset-dir", required=True, type=Path, metavar="DIR",
                        help="the bundle's dataset_dir (entry paths are relative to it)")
    parser.add_argument("--datalist", type=Path, metavar="JSON", help="datalist (default: DIR/datalist.json)")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT",
                        help="output folder: OUT/<row slug>/ per row, OUT/mlruns.db, OUT/table.md")
    parser.add_argument("--variant", dest="variants", action="append", type=_variant_argument, metavar="ROW",
                        help="a row: NAME=KEYS[:dual], KEYS[:dual] or a Table 1 row name (repeatable; see below)")
    parser.add_argument("--configs", action="extend", nargs="+", default=[], metavar="JSON",
                        help="extra config files after each row's overlay (name in the bundle's configs/, or a "
                             "path): small.json on a CPU")
    init = parser.add_mutually_exclusive_group()
    init.add_argument("--pretrained-path", type=Path, metavar="FILE",
                      help="pretrained_path of every row's training (binary model or ImageNet DenseNet-121 weights)")
    init.add_argument("--pretrain-datalist", type=Path, metavar="JSON",
                      help="first train the binary normal/abnormal model (configs/binary.json; entries' 'label' "
                           "0/1) on this list into OUT/binary/, and start every row from it")
    parser.add_argument("--pretrain-dataset-dir", type=Path, metavar="DIR",
                        help="dataset_dir of --pretrain-datalist (default: its folder)")
    parser.add_argument("--force", action="store_true",
                        help="run finished rows (and the pre-training) again; their trainings resume from their "
                             "checkpoints (add -- --resume false to train afresh)")
    parser.add_argument("--bundle-dir", type=Path, metavar="DIR", help="classifier bundle (default: this checkout's)")
    parser.add_argument("--digits", type=int, default=3, help="decimals of the AUROCs in table.md (default 3)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument("overrides", nargs="*", metavar="-- --KEY VALUE",
                        help="bundle overrides for every run, after '--' (-- --max_epochs 2 --image_size 128)")


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
    try:
        table = table_from_args(args)
        table.check()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        finished = {table.row_dir(v) for v in table.variants if row_is_finished(table.row_dir(v))}
        for title, command, log in table.steps():
            skipped = " [finished: skipped unless --force]" if log.parent in finished else ""
            print(f"== {title} (log: {log}){skipped}\n$ {shlex.join(command)}")
        return 0
    try:
        table.run(force=args.force)
    except (RowFailed, ValueError) as error:  # ValueError: rows' reports that do not merge (other classes)
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
