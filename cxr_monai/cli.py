"""cxr-monai: chest X-ray data, phantoms and the context-encoder main job (``python -m cxr_monai COMMAND``).

Each command lives in the module that owns its logic; the module exposes ``add_arguments(parser)``
and ``run(args) -> int``. This file only registers them, so adding a command touches one line here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "phantom": ("cxr_monai.data.phantom", "generate synthetic chest radiographs with ground truth"),
    "datalist": ("cxr_monai.data.datalist", "build a MONAI datalist JSON: NIH, CheXpert and ChestX-ray14 labels, SIIM pneumothorax, folders, lung masks, bone pairs"),
    "preview": ("cxr_monai.io.preview", "write images or folders as the chest X-ray reader sees them (8-bit PNGs)"),
    "demo": ("cxr_monai.demo", "the main job on phantoms: train the context encoder, inpaint, evaluate"),
    "auroc-table": ("cxr_monai.apps.classification.evaluation",
                    "one Table 1 (per-class AUROC rows) from several classifier evaluations' report.json"),
    "classifier-table": ("cxr_monai.apps.classification.variants",
                         "train and evaluate the classifier per input variant and merge them into one Table 1"),
    "clasegnet-table": ("cxr_monai.apps.pneumothorax.compare", "train and evaluate ResNet-50 and ClaSegNet and merge them into seed 004's comparison table"),
    "localisation-table": ("cxr_monai.apps.localisation.table",
                           "train Pix2Pix and Pix2Pix-N, sample them, train a Faster R-CNN per protocol: seed 002's Table 2"),
    "study": ("cxr_monai.apps.study.cli", "observer studies: make a 2AFC or real-or-synthetic study, serve it to readers, "
              "report it"),
    "new-bundle": ("cxr_monai.scaffold", "start a bundle folder from the template every bundle shares"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (to add its arguments), so ``--help`` and light
    commands such as ``phantom`` do not pay for importing torch and MONAI."""
    parser = argparse.ArgumentParser(prog="python -m cxr_monai", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
