"""A results table from one command: train and evaluate a bundle once per row, then merge the rows' reports.

:class:`BundleTable` is what ``classifier-table`` (:class:`~cxr_monai.apps.classification.ClassifierTable`) and
``clasegnet-table`` (:class:`~cxr_monai.apps.pneumothorax.ClaSegNetTable`) share; a subclass says which bundle,
which rows, what a row overrides, which datalist keys the rows need and how the reports merge.

For each row, as separate ``python -m monai.bundle run`` processes (the commands a user would type, printed before
each step): the bundle's training (``train.json`` + the row's overlays + ``--configs``) and its evaluation (the
same + ``inference.json`` + ``evaluate.json``, with ``eval_variant`` = the row's name), into ``OUT/<row slug>/``
(``train.log`` and ``evaluate.log`` there, ``row.json`` with the commands once finished). Every run logs to one
MLflow store, ``OUT/mlruns.db``: each training run is named after its row. Then the rows'
``evaluation/report.json`` become ``OUT/table.md`` (:meth:`BundleTable.merge`), which is printed.

A row whose ``evaluation/report.json`` is newer than its ``models/model.pt`` is finished and skipped (``force`` runs
it again; a skipped row whose recorded commands differ from this invocation's says so); any other row trains
(resuming from its checkpoints: a finished training returns at once) and is evaluated. A failed run stops the
command with :class:`RowFailed`, naming the row and its log. Bundle overrides after ``--`` go to every run, except
those the command sets itself (:attr:`BundleTable.managed_overrides`, refused with what to use instead).

Example (a subclass)::

    @dataclass
    class MyTable(BundleTable):
        rows: Sequence[Row] = (Row("A", overrides={"mode": "a"}), Row("B", overrides={"mode": "b"}))
        command = "my-table"
        bundle_name = "mybundle"

        def merge(self, reports):
            return merge_my_reports(reports, self.table_path, digits=self.digits)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BUNDLE_CONFIGS", "MANAGED_OVERRIDES", "BundleTable", "Row", "RowFailed", "TableRow",
           "add_table_arguments", "parse_overrides", "row_is_finished", "run_table", "slugify", "training_entry_keys",
           "write_stamp"]

BUNDLE_CONFIGS = ("train.json", "inference.json", "evaluate.json", "mlflow.json")
"""The bundle configs every table runs with (each bundle has them)."""
_LOG_TAIL_LINES = 30

MANAGED_OVERRIDES: Mapping[str, str] = {
    "config_file": "use --configs for extra config files",
    "meta_file": "the bundle's configs/metadata.json is used",
    "logging_file": "the bundle's configs/logging.conf is used",
    "bundle_root": "use --bundle-dir",
    "dataset_dir": "use --dataset-dir",
    "datalist": "use --datalist",
    "output_dir": "use --out; each row writes OUT/<row slug>",
    "eval_variant": "each row's evaluation is named after the row",
    "run_name": "each row's training run is named after the row",
    "tracking": "training runs get the bundle's configs/mlflow.json",
    "tracking_uri": "every row logs to OUT/mlruns.db",
    "pretrained_path": "use --pretrained-path (passed to the trainings only)",
}
"""Bundle overrides every table sets itself (so ``-- --key value`` may not), with what to use instead."""


def slugify(name: str) -> str:
    """A row's folder name: ``name`` in lower case, runs of other characters ``-``.

    >>> slugify("DualBranch DN-121")
    'dualbranch-dn-121'
    """
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


class TableRow:
    """What :class:`BundleTable` needs of a row; a subclass (a frozen dataclass) has a ``name`` and may change the
    rest: the overlays, the overrides of each run, how it describes itself."""

    name: str

    @property
    def slug(self) -> str:
        """The row's folder name under the output folder (:func:`slugify` of the name)."""
        return slugify(self.name)

    @property
    def overlays(self) -> tuple[str, ...]:
        """The bundle configs the row adds after ``train.json`` (file names in the bundle's ``configs/``)."""
        return ()

    def overrides_for(self, step: str) -> dict[str, Any]:
        """The row's bundle overrides of its ``"train"`` or ``"evaluate"`` run."""
        return {}

    def describe(self) -> str:
        """The row as the progress lines name it."""
        return self.name


@dataclass(frozen=True)
class Row(TableRow):
    """A row of any bundle: its name, the overlay configs after ``train.json`` and its bundle overrides (``overrides``
    for both runs, ``train_overrides`` / ``evaluate_overrides`` for one).

    Example::

        Row("ResNet-50", overrides={"mode": "baseline"}).slug  # 'resnet-50'
    """

    name: str
    overlays: tuple[str, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)
    train_overrides: Mapping[str, Any] = field(default_factory=dict)
    evaluate_overrides: Mapping[str, Any] = field(default_factory=dict)

    def overrides_for(self, step: str) -> dict[str, Any]:
        return {**self.overrides, **(self.train_overrides if step == "train" else self.evaluate_overrides)}


def parse_overrides(tokens: Sequence[str], managed: Mapping[str, str] = MANAGED_OVERRIDES,
                    command: str = "this command") -> list[str]:
    """The bundle overrides after ``--`` as ``["--key", "value", ...]`` (``--key=value`` split in two);
    ``ValueError`` for a token that is not a ``--key``, a key without value, or a key of ``managed`` (``command``
    sets it itself; the message says what to use instead).

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
        reason = managed.get(key.replace("-", "_"))
        if reason:
            raise ValueError(f"bundle override --{key}: {command} sets it for each run ({reason})")
        pairs += [f"--{key}", value]
    return pairs


def row_is_finished(row_dir: str | os.PathLike, report_name: str = "report.json") -> bool:
    """Whether ``row_dir/evaluation/<report_name>`` is newer than ``row_dir/models/model.pt``: the model was
    evaluated after its last change."""
    report = Path(row_dir) / "evaluation" / report_name
    model = Path(row_dir) / "models" / "model.pt"
    return report.is_file() and model.is_file() and report.stat().st_mtime_ns > model.stat().st_mtime_ns


class RowFailed(RuntimeError):
    """A row's training or evaluation exited non-zero; the message names the row and its log file."""


class _Verbatim(str):
    """An override value passed as it is (a URI), not as JSON."""


def _value(value: object) -> str:
    """An override as the command line carries it: paths and URIs as they are, everything else as JSON (Fire
    parses it: a row named ``2020`` stays a string)."""
    return str(value) if isinstance(value, (Path, _Verbatim)) else json.dumps(value)


def training_entry_keys(path: Path, option: str) -> set[str]:
    """The keys of the ``training`` entries of the datalist ``path``; ``ValueError`` naming ``option``."""
    if not path.is_file():
        raise ValueError(f"{option} {path}: file not found")
    try:
        training = json.loads(path.read_text(encoding="utf-8")).get("training") or []
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{option} {path}: not a JSON datalist ({error})") from None
    return {key for entry in training if isinstance(entry, dict) for key in entry}


def write_stamp(path: Path, document: dict) -> None:
    """``document`` with the time it finished, as JSON at ``path`` (a row's ``row.json``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**document, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2) + "\n",
                    encoding="utf-8")


@dataclass
class BundleTable(ABC):
    """The runs behind one results table: a training and an evaluation of ``bundle_dir`` per row into
    ``out/<slug>``, one MLflow store ``out/mlruns.db``, the merged table ``out/table.md``.

    A subclass (a dataclass) gives its rows as ``rows`` (a field, or a property over its own field; a tuple by the
    time its ``__post_init__`` calls this class's, which checks them), names its
    command and bundle (:attr:`command`, :attr:`bundle_name`), and implements :meth:`merge`; it may extend
    :attr:`managed_overrides`, :meth:`check_rows`, :meth:`reserved_slugs`, :meth:`pre_steps` / :meth:`before_rows`
    (runs before the rows) and :meth:`training_pretrained_path`.

    Args:
        dataset_dir, datalist: the bundle's ``dataset_dir`` and ``datalist``.
        out: the output folder.
        configs: extra config files after each row's overlays (file names in the bundle's ``configs/``, or paths).
        overrides: bundle overrides for every run (``["--max_epochs", "2"]``, :func:`parse_overrides`).
        pretrained_path: ``pretrained_path`` of every row's training.
        bundle_dir: the bundle (default: this checkout's ``bundles/<bundle_name>``).
        digits: decimals in ``table.md``.
        python: the interpreter of the bundle runs.
    """

    dataset_dir: str | os.PathLike
    datalist: str | os.PathLike
    out: str | os.PathLike
    _: KW_ONLY
    configs: Sequence[str | os.PathLike] = ()
    overrides: Sequence[str] = ()
    pretrained_path: str | os.PathLike | None = None
    bundle_dir: str | os.PathLike | None = None
    digits: int = 3
    python: str = field(default=sys.executable)

    command = "bundle-table"
    """The command's name, as messages name it."""
    bundle_name = ""
    """The bundle's folder under ``bundles/``."""
    table_title = "table"
    """The merged table's title in the output."""
    managed_overrides = MANAGED_OVERRIDES
    """Bundle overrides the command sets itself, with what to use instead (:func:`parse_overrides`)."""
    overlay_configs = ()
    """Configs the command adds itself where they belong (every overlay a row may have): not for ``--configs``."""
    bundle_configs = BUNDLE_CONFIGS
    """The bundle's configs the runs use (checked before any run)."""
    evaluation_configs = ("inference.json", "evaluate.json")
    """The configs a row's evaluation adds after its training's."""
    report_name = "report.json"
    """What a row's evaluation writes in ``<row>/evaluation/``: the file :meth:`merge` reads."""

    def __post_init__(self) -> None:
        self.dataset_dir = Path(self.dataset_dir).resolve()
        self.datalist = Path(self.datalist).resolve()
        self.out = Path(self.out).resolve()
        self.bundle_dir = Path(self.bundle_dir or self.default_bundle_dir()).resolve()
        self.overrides = parse_overrides(list(self.overrides), self.managed_overrides, self.command)
        self.pretrained_path = Path(self.pretrained_path).resolve() if self.pretrained_path else None
        self.validate_rows()

    def validate_rows(self) -> None:
        """``ValueError`` for no row, a name given twice, two rows sharing a folder or a reserved folder."""
        if not self.rows:
            raise ValueError("no row to run")
        names: dict[str, TableRow] = {}
        slugs: dict[str, TableRow] = {}
        reserved = self.reserved_slugs()
        for row in self.rows:
            if row.name in names:
                raise ValueError(f"row {row.name!r} is given twice")
            if row.slug in slugs:
                raise ValueError(f"rows {slugs[row.slug].name!r} and {row.name!r} would share the folder "
                                 f"{row.slug}/; rename one")
            if row.slug in reserved:
                raise ValueError(f"row {row.name!r}: its folder {row.slug}/ is {reserved[row.slug]}; rename it")
            names[row.name], slugs[row.slug] = row, row

    # ------------------------------------------------------------------------------------------------------
    # what a subclass gives

    @property
    @abstractmethod
    def rows(self) -> Sequence[TableRow]:
        """The rows, in table order (a property or a dataclass field of the subclass)."""

    @abstractmethod
    def merge(self, reports: Sequence[Path]) -> Path:
        """Write the rows' ``report.json`` files as :attr:`table_path` and return it."""

    def reserved_slugs(self) -> dict[str, str]:
        """Folders under ``out`` that are not a row's, with whose they are (``{"binary": "the pre-training's"}``)."""
        return {}

    def check_rows(self, training_keys: set[str]) -> None:
        """``ValueError`` where the datalist's training entries (their keys: ``training_keys``) lack what a row
        needs."""

    def needed_configs(self) -> dict[str, list[str]]:
        """Bundle configs the rows (or options) need, with who needs them: every row's overlays."""
        needed: dict[str, list[str]] = {}
        for row in self.rows:
            for name in row.overlays:
                needed.setdefault(name, []).append(row.name)
        return needed

    def input_files(self) -> list[tuple[str, Path | None]]:
        """Files the options name, as ``(option, path)``: each must exist before a run."""
        return [("--pretrained-path", self.pretrained_path)]

    def training_pretrained_path(self) -> Path | None:
        """``pretrained_path`` of every row's training."""
        return self.pretrained_path

    def pre_steps(self) -> list[tuple[str, list[str], Path]]:
        """Runs before the rows, as :meth:`steps` lists them."""
        return []

    def before_rows(self, force: bool) -> None:
        """Run :meth:`pre_steps` (skipping finished ones unless ``force``)."""

    # ------------------------------------------------------------------------------------------------------
    # paths and commands

    def default_bundle_dir(self) -> Path:
        """``bundles/<bundle_name>`` of the checkout this package runs from."""
        return Path(__file__).resolve().parents[2] / "bundles" / self.bundle_name

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{Path(self.out) / 'mlruns.db'}"

    @property
    def table_path(self) -> Path:
        return Path(self.out) / "table.md"

    def row_dir(self, row: TableRow) -> Path:
        return Path(self.out) / row.slug

    def config_path(self, name: str | os.PathLike) -> Path:
        """A config file: ``name`` in the bundle's ``configs/`` if there, else ``name`` as a path."""
        in_bundle = Path(self.bundle_dir) / "configs" / name
        return in_bundle if in_bundle.is_file() else Path(name).resolve()

    def bundle_command(self, configs: Sequence[str | os.PathLike], **overrides: object) -> list[str]:
        """``python -m monai.bundle run --config_file "[...]" ... --key value ...`` + the pass-through overrides
        (``None`` values left out)."""
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

    def common_overrides(self, output_dir: Path, dataset_dir: Path | None = None,
                         datalist: Path | None = None) -> dict[str, object]:
        """Data, output folder and MLflow store of a run (default data: the table's)."""
        return {"dataset_dir": dataset_dir or self.dataset_dir, "datalist": datalist or self.datalist,
                "output_dir": output_dir, "tracking_uri": _Verbatim(self.tracking_uri)}

    def train_command(self, row: TableRow) -> list[str]:
        return self.bundle_command(
            ["train.json", *row.overlays, *self.configs], **self.common_overrides(self.row_dir(row)),
            **row.overrides_for("train"), run_name=row.name,
            tracking=Path(self.bundle_dir) / "configs" / "mlflow.json", pretrained_path=self.training_pretrained_path())

    def evaluate_command(self, row: TableRow) -> list[str]:
        return self.bundle_command(
            ["train.json", *row.overlays, *self.configs, *self.evaluation_configs],
            **self.common_overrides(self.row_dir(row)), **row.overrides_for("evaluate"), eval_variant=row.name)

    # ------------------------------------------------------------------------------------------------------
    # checks before any run

    def check(self) -> None:
        """``ValueError`` naming the file and the reason for anything missing before a run starts (hours may pass
        before a later row would find it): bundle and overlay configs, ``--configs``, data, the files options name,
        the datalist entry keys the rows need (:meth:`check_rows`)."""
        configs_dir = Path(self.bundle_dir) / "configs"
        for name in self.bundle_configs:
            if not (configs_dir / name).is_file():
                raise ValueError(f"{configs_dir / name} not found: is {self.bundle_dir} the {self.bundle_name} "
                                 "bundle? (--bundle-dir)")
        for name, users in self.needed_configs().items():
            if users and not (configs_dir / name).is_file():
                raise ValueError(f"{configs_dir / name} not found; {', '.join(map(repr, users))} need(s) it")
        for name in self.configs:
            if not self.config_path(name).is_file():
                raise ValueError(f"--configs {name}: neither {configs_dir / name} nor {Path(name).resolve()} exists")
            if Path(name).name in (*self.bundle_configs, *self.overlay_configs):
                raise ValueError(f"--configs {name}: {self.command} adds {Path(name).name} itself where it belongs")
        if not Path(self.dataset_dir).is_dir():
            raise ValueError(f"--dataset-dir {self.dataset_dir}: not a folder")
        for option, path in self.input_files():
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{option} {path}: file not found")
        self.check_rows(training_entry_keys(Path(self.datalist), "--datalist"))

    # ------------------------------------------------------------------------------------------------------
    # running

    def steps(self) -> list[tuple[str, list[str], Path]]:
        """Every (title, command, log file) in order, skipped ones included (``--dry-run``)."""
        steps = self.pre_steps()
        for row in self.rows:
            steps.append((f"{row.name}: training", self.train_command(row), self.row_dir(row) / "train.log"))
            steps.append((f"{row.name}: evaluation", self.evaluate_command(row), self.row_dir(row) / "evaluate.log"))
        return steps

    def dry_run(self) -> None:
        """Print every step, marking finished rows."""
        finished = {self.row_dir(row) for row in self.rows
                    if row_is_finished(self.row_dir(row), self.report_name)}
        for title, command, log in self.steps():
            skipped = " [finished: skipped unless --force]" if log.parent in finished else ""
            print(f"== {title} (log: {log}){skipped}\n$ {shlex.join(command)}")

    def run(self, force: bool = False) -> Path:
        """Run the rows (skipping finished ones unless ``force``), then write and return ``table.md``.
        Raises :class:`RowFailed` at the first failed run."""
        Path(self.out).mkdir(parents=True, exist_ok=True)
        rows = f"{len(self.rows)} row{'' if len(self.rows) == 1 else 's'}"
        print(f"== {self.command}: {rows} -> {self.out} (MLflow: {self.tracking_uri})", flush=True)
        self.before_rows(force)
        reports = [self._run_row(row, f"[{number}/{len(self.rows)}]", force)
                   for number, row in enumerate(self.rows, 1)]
        path = self.merge(reports)
        print(f"\n== {self.table_title} ({path})\n", flush=True)
        print(path.read_text(encoding="utf-8"), end="")
        print(f"\nMLflow: mlflow ui --backend-store-uri {self.tracking_uri}", flush=True)
        return path

    def _run_row(self, row: TableRow, number: str, force: bool) -> Path:
        folder = self.row_dir(row)
        report = folder / "evaluation" / self.report_name
        commands = {"train": self.train_command(row), "evaluate": self.evaluate_command(row)}
        if not force and row_is_finished(folder, self.report_name):
            print(f"\n== {number} {row.describe()}: skipped, {report} is newer than models/model.pt "
                  "(--force runs it again)", flush=True)
            self.note_changed_settings(folder / "row.json", commands)
            return report
        self.step(f"{number} {row.describe()}: training", commands["train"], folder / "train.log",
                  f"row {row.name!r}: training")
        report.unlink(missing_ok=True)  # a failed evaluation must not leave the previous model's report behind
        self.step(f"{number} {row.name}: evaluation", commands["evaluate"], folder / "evaluate.log",
                  f"row {row.name!r}: evaluation")
        if not report.is_file():
            raise RowFailed(f"row {row.name!r}: evaluation wrote no {report}; log: {folder / 'evaluate.log'}")
        write_stamp(folder / "row.json", {**dataclasses.asdict(row), **commands})
        return report

    def note_changed_settings(self, stamp: Path, commands: dict[str, list[str]]) -> None:
        """Say so where the commands recorded in ``stamp`` (a finished run's) differ from ``commands``."""
        try:
            recorded = json.loads(stamp.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return
        changed = [step for step, command in commands.items()
                   if step in recorded and recorded[step][1:] != command[1:]]  # [1:]: any interpreter
        if changed:
            print(f"   note: its {' and '.join(changed)} command(s), recorded in {stamp}, differ from this "
                  "invocation's; --force runs it with these settings", flush=True)

    def step(self, title: str, command: list[str], log_path: Path, what: str) -> None:
        """Run ``command`` with its output in ``log_path``; :class:`RowFailed` (``what`` failed, the log) and the
        log's last lines on stderr where it fails."""
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


# ----------------------------------------------------------------------------------------------------------
# command line


def add_table_arguments(parser: argparse.ArgumentParser, bundle_name: str, *,
                        rows: Callable[[argparse.ArgumentParser], None],
                        initialisation: Callable[[argparse.ArgumentParser], None],
                        force_help: str = "run finished rows again; their trainings resume from their checkpoints "
                                          "(add -- --resume false to train afresh)",
                        digits_help: str = "decimals in table.md (default 3)") -> None:
    """The options every table command has (``--dataset-dir``, ``--datalist``, ``--out``, ``--configs``,
    ``--force``, ``--bundle-dir``, ``--digits``, ``--dry-run``, the overrides after ``--``), with the command's own
    row options (``rows``) after ``--out`` and its initialisation options (``initialisation``) after ``--configs``."""
    parser.add_argument("--dataset-dir", required=True, type=Path, metavar="DIR",
                        help="the bundle's dataset_dir (entry paths are relative to it)")
    parser.add_argument("--datalist", type=Path, metavar="JSON", help="datalist (default: DIR/datalist.json)")
    parser.add_argument("--out", required=True, type=Path, metavar="OUT",
                        help="output folder: OUT/<row slug>/ per row, OUT/mlruns.db, OUT/table.md")
    rows(parser)
    parser.add_argument("--configs", action="extend", nargs="+", default=[], metavar="JSON",
                        help="extra config files after each row's overlay (name in the bundle's configs/, or a "
                             "path): small.json on a CPU")
    initialisation(parser)
    parser.add_argument("--force", action="store_true", help=force_help)
    parser.add_argument("--bundle-dir", type=Path, metavar="DIR",
                        help=f"{bundle_name} bundle (default: this checkout's)")
    parser.add_argument("--digits", type=int, default=3, help=digits_help)
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument("overrides", nargs="*", metavar="-- --KEY VALUE",
                        help="bundle overrides for every run, after '--' (-- --max_epochs 2 --image_size 128)")


def run_table(build: Callable[[argparse.Namespace], BundleTable], args: argparse.Namespace) -> int:
    """A table command's ``run``: build the table from ``args``, check it, then print its steps (``--dry-run``) or
    run it; an exit status (2: bad options or inputs, 1: a failed run)."""
    try:
        table = build(args)
        table.check()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        table.dry_run()
        return 0
    try:
        table.run(force=args.force)
    except (RowFailed, ValueError) as error:  # ValueError: rows' reports that do not merge
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
