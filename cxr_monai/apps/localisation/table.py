"""Seed 002's Table 2 from one command: Pix2Pix and Pix2Pix-N trained and sampled, then a Faster R-CNN per protocol.

``python -m cxr_monai localisation-table --dataset-dir DIR --datalist nih_boxes.json --out OUT`` runs, as the
``python -m monai.bundle run`` commands a user would type (printed before each step, each with its log):

1. the ``pix2pix_augmentation`` bundle twice, into ``OUT/pix2pix`` (``use_healthy`` false: the training boxes only)
   and ``OUT/pix2pix-n`` (``use_healthy`` true: plus the datalist's ``healthy`` images with random boxes): its
   ``train.json``, then ``inference.json``, which writes ``synthetic/synthetic.json`` (688 synthetic images by
   default, the seed's count);
2. the ``localisation`` bundle once per protocol (rows ``Ori``, ``Ori+Pix2Pix``, ``Ori+Pix2Pix-N``): its
   ``train.json`` on the datalist's ``training`` images plus, for the augmented rows, that generator's
   ``synthetic.json`` (``extra_datalists``), evaluated on ``test`` every ``eval_every`` steps with CL@s as the best
   model within s +- ``window`` (the seed's rule), then ``evaluate.json`` on the last model;
3. ``OUT/table.md`` / ``OUT/table.json``: the rows' ``localisation/cl_table.json`` side by side, in Table 2's layout;
4. with the ``Ori`` row and a generator: the pix2pix bundle's ``evaluate.json`` into ``OUT/realism/``: the Fréchet
   distance of each synthetic set to the real test images on features of the Ori detector's backbone (a network
   trained here, on real images only), with bootstrap CIs, the real-vs-real reference and the seed's Fig. 2 grid.

Every run logs to ``OUT/mlruns.db``. Finished steps are skipped (a generator whose ``synthetic/summary.json`` is
newer than its model, a row whose ``evaluation/localisation.json`` is newer than its model, a realism report newer than
the models it used); ``--force`` runs them again. Bundle overrides after ``--`` go to the detector runs; ``--pix2pix-args`` to the generator runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxr_monai.apps.bundle_table import (
    MANAGED_OVERRIDES,
    BundleTable,
    Row,
    add_table_arguments,
    parse_overrides,
    run_table,
    write_stamp,
)

__all__ = ["GENERATORS", "LocalisationTable", "add_arguments", "merge_cl_tables", "run", "table_from_args"]

GENERATORS: Mapping[str, bool] = {"Pix2Pix": False, "Pix2Pix-N": True}
"""The seed's two generators and their ``use_healthy`` flag."""

_MANAGED = {**MANAGED_OVERRIDES,
            "extra_datalists": "each row sets its own (the augmented rows: their generator's synthetic.json)",
            "variant": "each row's tables are named after the row"}
_MANAGED_PIX2PIX = {**MANAGED_OVERRIDES,
                    "use_healthy": "the protocol sets it (Pix2Pix: false, Pix2Pix-N: true); use --protocol"}


def _cell(value: Any, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{float(value):.{digits}f}"


def merge_cl_tables(tables: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, digits: int = 3) -> Path:
    """Table 2 of seed 002 from one ``cl_table.json`` per protocol (``{row name: table}``, in column order):
    ``path`` (markdown: the window rule's values, which step each chose, then the models at the report steps
    themselves) and the same as JSON next to it. The tables must share their classes, measure and threshold.

    Example::

        merge_cl_tables({"Ori": json.load(open("OUT/ori/localisation/cl_table.json")), ...}, "OUT/table.md")
    """
    if not tables:
        raise ValueError("merge_cl_tables: no table given")
    first_name, first = next(iter(tables.items()))
    for name, table in tables.items():
        for key in ("class_names", "measure", "threshold", "window"):
            if table[key] != first[key]:
                raise ValueError(f"row {name!r}: its {key} {table[key]!r} differs from {first_name!r}'s "
                                 f"{first[key]!r}; the rows do not make one table")
    names = [*first["class_names"], "Total"]
    measure = "IoU" if first["measure"] == "iou" else "IoBB"
    threshold = f"{first['threshold']:g}"

    def block(kind: str) -> list[str]:
        header = [f"{row} {column['label']}" for row, table in tables.items() for column in table["columns"].values()]
        lines = ["| Pathology | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
        for name in names:
            cells = [_cell((column[kind] or {}).get(name), digits)
                     for table in tables.values() for column in table["columns"].values()]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines

    chosen = []
    for row, table in tables.items():
        steps = ", ".join(
            f"{column['label']} step {column['selected_step'] if column['selected_step'] is not None else '-'}"
            + ("" if column["complete"] else " (window incomplete)") for column in table["columns"].values())
        chosen.append(f"- {row}: {steps}")
    lines = [f"# Disease localisation (seed 002, Table 2): CL at {measure} {threshold}", "",
             f"## CL@s: the best model within s +- {first['window']} steps (the seed's rule)", "", *block("best"), "",
             "Chosen models (selected on the test images themselves, as the seed does: optimistic):", *chosen, "",
             "## CL of the model at step s itself (no selection)", "", *block("at_step"), "",
             f"Total: the mean of the class rows. A test box counts as localised when a predicted box of its class "
             f"overlaps it by {measure} >= {threshold} (see each row's localisation/cl_table.md for the rule's "
             "settings); '-': no evaluation there.", ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps({"rows": dict(tables)}, indent=2) + "\n", encoding="utf-8")
    return path


@dataclass
class LocalisationTable(BundleTable):
    """The runs behind seed 002's Table 2 (module docstring): two generators, then one detector per protocol.

    Args:
        dataset_dir, datalist: the data (a ``datalist nih-boxes`` list: ``training``, ``test``, ``healthy``).
        out: the output folder.
        pix2pix_configs: extra configs of the generator runs (``small.json`` on a CPU).
        pix2pix_overrides: bundle overrides of the generator runs (``["--max_epochs", "20"]``).
        pix2pix_bundle_dir: the ``pix2pix_augmentation`` bundle (default: this checkout's).
        Others as :class:`~cxr_monai.apps.bundle_table.BundleTable` (``configs``/``overrides``: the detector runs;
        ``pretrained_path``: the detectors' initial weights).

    Example::

        table = LocalisationTable("/data/nih", "/data/nih/boxes.json", "runs/seed002")
        table.check()
        print(table.run().read_text())
    """

    pix2pix_configs: Sequence[str | os.PathLike] = ()
    pix2pix_overrides: Sequence[str] = ()
    pix2pix_bundle_dir: str | os.PathLike | None = None
    protocols: Sequence[str] = field(default=("Ori", *GENERATORS))

    command = "localisation-table"
    bundle_name = "localisation"
    table_title = "Table 2 (seed 002)"
    managed_overrides = _MANAGED
    # bundle_configs: BundleTable's (train, inference, evaluate, mlflow). A row's evaluation merges evaluate.json
    # alone: it runs the detector on the test boxes itself and reads nothing that inference.json writes.
    evaluation_configs = ("evaluate.json",)
    report_name = "localisation.json"

    def __post_init__(self) -> None:
        unknown = [name for name in self.protocols if name != "Ori" and name not in GENERATORS]
        if unknown:
            raise ValueError(f"unknown protocol(s) {', '.join(map(repr, unknown))}: choose from Ori, "
                             f"{', '.join(GENERATORS)}")
        self.pix2pix_bundle_dir = Path(self.pix2pix_bundle_dir or
                                       Path(__file__).resolve().parents[3] / "bundles" / "pix2pix_augmentation")
        self.pix2pix_overrides = parse_overrides(list(self.pix2pix_overrides), _MANAGED_PIX2PIX, self.command)
        super().__post_init__()

    # ------------------------------------------------------------------------------------------------------
    # rows and generators

    @property
    def generators(self) -> list[str]:
        """The generators the rows need, in the seed's order."""
        return [name for name in GENERATORS if name in self.protocols]

    def generator_dir(self, name: str) -> Path:
        return Path(self.out) / name.lower()

    def synthetic_datalist(self, name: str) -> Path:
        return self.generator_dir(name) / "synthetic" / "synthetic.json"

    def class_names(self) -> list[str] | None:
        """The datalist's ``box_label_names`` (what ``datalist nih-boxes --classes`` kept), unless the detector
        overrides name ``class_names`` themselves; ``None``: the bundle's default, the seed's six."""
        if "--class_names" in self.overrides:
            return None
        try:
            names = json.loads(Path(self.datalist).read_text(encoding="utf-8")).get("box_label_names")
        except (OSError, json.JSONDecodeError, AttributeError):
            return None  # check() reports an unreadable datalist
        return list(names) if names else None

    @property
    def rows(self) -> tuple[Row, ...]:
        rows = []
        for name in self.protocols:
            variant = "Ori" if name == "Ori" else f"Ori+{name}"
            extra = [str(self.synthetic_datalist(name))] if name in GENERATORS else []
            rows.append(Row(variant, overrides={"variant": variant, "extra_datalists": extra,
                                                "class_names": self.class_names()}))
        return tuple(rows)

    def reserved_slugs(self) -> dict[str, str]:
        return {**{self.generator_dir(name).name: f"the {name} generator's" for name in GENERATORS},
                "realism": "the realism report's"}

    def check_rows(self, training_keys: set[str]) -> None:
        """Training entries need boxes; Pix2Pix-N needs a ``healthy`` section."""
        if "boxes" not in training_keys:
            raise ValueError(f"--datalist {self.datalist}: no training entry has 'boxes' (build it with "
                             "`python -m cxr_monai datalist nih-boxes`)")
        document = json.loads(Path(self.datalist).read_text(encoding="utf-8"))
        if not any("boxes" in entry for entry in document.get("test") or []):
            raise ValueError(f"--datalist {self.datalist}: no test entry has 'boxes'; the detectors are evaluated "
                             "there")
        if "Pix2Pix-N" in self.protocols and not document.get("healthy"):
            raise ValueError(f"--datalist {self.datalist}: Pix2Pix-N needs healthy images (a 'healthy' section; "
                             "datalist nih-boxes --healthy N)")
        for name in ("train.json", "inference.json", "mlflow.json"):
            if self.generators and not (Path(self.pix2pix_bundle_dir) / "configs" / name).is_file():
                raise ValueError(f"{Path(self.pix2pix_bundle_dir) / 'configs' / name} not found: is "
                                 f"{self.pix2pix_bundle_dir} the pix2pix_augmentation bundle?")

    def run(self, force: bool = False) -> Path:
        """The generators, the rows and ``table.md`` (:meth:`BundleTable.run`), then the realism report."""
        path = super().run(force)
        self.realism(force)
        return path

    @property
    def realism_report(self) -> Path:
        return Path(self.out) / "realism" / "realism.md"

    def detector_settings(self) -> dict[str, Any]:
        """The Ori detector's network arguments, as its training resolved them (configs and overrides applied)."""
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config([str(self.config_path(name)) for name in ("train.json", *self.configs)])
        pairs = dict(zip(self.overrides[::2], self.overrides[1::2]))
        names = self.class_names()
        if names is not None:
            pairs["--class_names"] = json.dumps(names)
        for key, text in pairs.items():
            try:
                parser[key[2:]] = json.loads(text)
            except json.JSONDecodeError:
                parser[key[2:]] = text
        return {"_target_": "cxr_monai.networks.faster_rcnn_fpn",
                **{key: parser.get_parsed_content(key) for key in
                   ("class_names", "image_size", "backbone", "representation_size")}}

    def realism_command(self) -> list[str] | None:
        """The pix2pix bundle's ``evaluate.json`` on every generator's set, features of the Ori detector; ``None``
        without the Ori row or a generator."""
        if "Ori" not in self.protocols or not self.generators:
            return None
        configs_dir = Path(self.pix2pix_bundle_dir) / "configs"
        settings = self.detector_settings()
        files = [str(configs_dir / "train.json"), str(configs_dir / "evaluate.json")]
        return [self.python, "-m", "monai.bundle", "run", "--config_file", json.dumps(files),
                "--meta_file", str(configs_dir / "metadata.json"),
                "--logging_file", str(configs_dir / "logging.conf"), "--bundle_root", str(self.pix2pix_bundle_dir),
                "--dataset_dir", str(self.dataset_dir), "--datalist", str(self.datalist),
                "--output_dir", str(self.out), "--tracking_uri", self.tracking_uri,
                "--synthetic_datalists", json.dumps({name: str(self.synthetic_datalist(name))
                                                     for name in self.generators}),
                "--feature_model_path", str(self.row_dir(self.rows[self.protocols.index("Ori")]) / "models" / "model.pt"),
                "--feature_network_def", json.dumps(settings), "--feature_layer", "backbone.body.layer4",
                "--feature_image_size", json.dumps(settings["image_size"])]

    def realism(self, force: bool) -> None:
        """Run :meth:`realism_command` unless its report is newer than every model it reads (checked first: the
        command reads the detector's configs with MONAI, an import a finished table need not pay for)."""
        if "Ori" not in self.protocols or not self.generators:
            print("\n== realism: skipped (needs the Ori row, whose detector gives the features, and a generator)",
                  flush=True)
            return
        models = [self.row_dir(self.rows[self.protocols.index("Ori")]) / "models" / "model.pt",
                  *(self.generator_dir(name) / "models" / "model.pt" for name in self.generators)]
        report = self.realism_report
        if (not force and report.is_file()
                and all(report.stat().st_mtime_ns > model.stat().st_mtime_ns for model in models if model.is_file())):
            print(f"\n== realism: skipped, {report} is newer than the models it used (--force runs it again)",
                  flush=True)
            return
        command = self.realism_command()
        self.step("realism of the synthetic sets (FID on the Ori detector's features)", command,
                  Path(self.out) / "realism.log", "realism")
        print(report.read_text(encoding="utf-8"), end="", flush=True)

    def pre_steps(self) -> list[tuple[str, list[str], Path]]:
        steps = []
        for name in self.generators:
            folder = self.generator_dir(name)
            steps.append((f"{name}: training", self.pix2pix_command(name, ["train.json"]), folder / "train.log"))
            steps.append((f"{name}: {self.synthetic_datalist(name).name}",
                          self.pix2pix_command(name, ["train.json", "inference.json"]), folder / "inference.log"))
        return steps

    def steps(self) -> list[tuple[str, list[str], Path]]:
        steps = super().steps()
        command = self.realism_command()
        if command is not None:
            steps.append(("realism", command, Path(self.out) / "realism.log"))
        return steps

    def merge(self, reports: Sequence[Path]) -> Path:
        tables = {}
        for row, report in zip(self.rows, reports):
            path = report.parent.parent / "localisation" / "cl_table.json"
            if not path.is_file():
                raise ValueError(f"row {row.name!r}: its training wrote no {path}")
            tables[row.name] = json.loads(path.read_text(encoding="utf-8"))
        return merge_cl_tables(tables, self.table_path, digits=self.digits)

    # ------------------------------------------------------------------------------------------------------
    # the generator runs before the rows

    def pix2pix_command(self, name: str, configs: Sequence[str]) -> list[str]:
        configs_dir = Path(self.pix2pix_bundle_dir) / "configs"
        files = [str(configs_dir / config) for config in configs]
        files += [str(configs_dir / c if (configs_dir / c).is_file() else Path(c).resolve())
                  for c in self.pix2pix_configs]
        command = [self.python, "-m", "monai.bundle", "run", "--config_file", json.dumps(files),
                   "--meta_file", str(configs_dir / "metadata.json"),
                   "--logging_file", str(configs_dir / "logging.conf"),
                   "--bundle_root", str(self.pix2pix_bundle_dir),
                   "--dataset_dir", str(self.dataset_dir), "--datalist", str(self.datalist),
                   "--output_dir", str(self.generator_dir(name)), "--tracking_uri", self.tracking_uri,
                   "--use_healthy", json.dumps(GENERATORS[name])]
        if configs[-1] == "train.json":
            command += ["--run_name", name, "--tracking", str(configs_dir / "mlflow.json")]
        return command + list(self.pix2pix_overrides)

    def before_rows(self, force: bool) -> None:
        for name in self.generators:
            folder = self.generator_dir(name)
            summary = folder / "synthetic" / "summary.json"
            model = folder / "models" / "model.pt"
            stamp = folder / "generator.json"
            commands = {"train": self.pix2pix_command(name, ["train.json"]),
                        "generate": self.pix2pix_command(name, ["train.json", "inference.json"])}
            if (not force and summary.is_file() and model.is_file() and self.synthetic_datalist(name).is_file()
                    and summary.stat().st_mtime_ns > model.stat().st_mtime_ns):
                print(f"\n== {name}: skipped, {summary} is newer than {model} (--force runs it again)", flush=True)
                self.note_changed_settings(stamp, commands)
                continue
            self.step(f"{name}: training", commands["train"], folder / "train.log", f"generator {name!r}: training")
            summary.unlink(missing_ok=True)
            self.step(f"{name}: synthetic images", commands["generate"], folder / "inference.log",
                      f"generator {name!r}: generation")
            if not self.synthetic_datalist(name).is_file():
                raise ValueError(f"generator {name!r} wrote no {self.synthetic_datalist(name)}; log: "
                                 f"{folder / 'inference.log'}")
            write_stamp(stamp, commands)


# ----------------------------------------------------------------------------------------------------------
# command line


def _add_row_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", dest="protocols", action="append", choices=["Ori", *GENERATORS],
                        help="a column group of Table 2: Ori, Pix2Pix (Ori+Pix2Pix), Pix2Pix-N (Ori+Pix2Pix-N); "
                             "repeatable (default: all three)")


def _add_initialisation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pretrained-path", type=Path, metavar="FILE",
                        help="pretrained_path of every detector (torchvision Faster R-CNN or ResNet-50 weights)")
    parser.add_argument("--pix2pix-configs", action="extend", nargs="+", default=[], metavar="JSON",
                        help="extra configs of the generator runs (name in the pix2pix bundle's configs/, or a "
                             "path): small.json on a CPU")
    parser.add_argument("--pix2pix-args", default="", metavar="'--KEY VALUE ...'",
                        help="bundle overrides of the generator runs, one quoted string "
                             "(e.g. '--max_epochs 20 --synthetic_total 688')")
    parser.add_argument("--pix2pix-bundle-dir", type=Path, metavar="DIR",
                        help="pix2pix_augmentation bundle (default: this checkout's)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``python -m cxr_monai localisation-table --dataset-dir DIR --datalist JSON --out OUT [-- --key value ...]``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "Trains Pix2Pix and Pix2Pix-N (pix2pix_augmentation bundle) and samples their synthetic sets, then one\n"
        "Faster R-CNN (localisation bundle) per protocol, and merges the rows' CL tables into OUT/table.md.\n"
        "Overrides after -- go to the detector runs; --pix2pix-args to the generator runs.\n\n"
        "example:\n"
        "  python -m cxr_monai datalist nih-boxes --data-entry Data_Entry_2017_v2020.csv.gz \\\n"
        "      --bbox-list BBox_List_2017.csv.gz --image-dir /data/nih/images --out /data/nih/boxes.json\n"
        "  python -m cxr_monai localisation-table --dataset-dir /data/nih/images --datalist /data/nih/boxes.json \\\n"
        "      --out runs/seed002")
    add_table_arguments(parser, "localisation", rows=_add_row_arguments, initialisation=_add_initialisation_arguments,
                        digits_help="decimals of the CL values in table.md (default 3)")


def table_from_args(args: argparse.Namespace) -> LocalisationTable:
    """The :class:`LocalisationTable` of parsed arguments; ``ValueError`` for a bad combination."""
    return LocalisationTable(
        dataset_dir=args.dataset_dir, datalist=args.datalist or args.dataset_dir / "datalist.json", out=args.out,
        configs=args.configs, overrides=args.overrides, pretrained_path=args.pretrained_path,
        bundle_dir=args.bundle_dir, digits=args.digits,
        protocols=tuple(dict.fromkeys(args.protocols)) if args.protocols else ("Ori", *GENERATORS),
        pix2pix_configs=args.pix2pix_configs, pix2pix_overrides=shlex.split(args.pix2pix_args),
        pix2pix_bundle_dir=args.pix2pix_bundle_dir)


def run(args: argparse.Namespace) -> int:
    return run_table(table_from_args, args)
