"""``python -m cxr_monai new-bundle NAME``: a new bundle folder from the template every bundle shares.

A bundle is self-contained (model-zoo layout: a user copies one folder), so the pieces all bundles share are copied
into each, not imported: ``LICENSE``, ``configs/logging.conf``, the MLflow wiring ``configs/mlflow.json``, the
multi-GPU set-up ``configs/multi_gpu_train.json``, and the skeletons of ``configs/metadata.json`` and
``docs/README.md``. Their one source is ``cxr_monai/bundle_template/``; ``{{bundle}}`` in it becomes the folder
name, and ``<fill in: ...>`` marks what the author must write (tests/test_bundle_conventions.py fails while a
bundle under ``bundles/`` still holds one, and checks that the shared pieces have not drifted from the template).

Example::

    python -m cxr_monai new-bundle bone_suppression --bundles-dir bundles
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

__all__ = ["FILL_IN", "TEMPLATE_DIR", "new_bundle", "render_template"]

TEMPLATE_DIR = Path(__file__).resolve().parent / "bundle_template"
#: what marks an unfinished part of a scaffolded bundle
FILL_IN = "<fill in"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def render_template(name: str) -> dict[str, str]:
    """``{relative path: text}`` of the template with ``{{bundle}}`` replaced by ``name``.

    >>> sorted(render_template("demo_bundle"))[:2]
    ['LICENSE', 'configs/logging.conf']
    >>> '"experiment_name": "demo_bundle"' in render_template("demo_bundle")["configs/mlflow.json"]
    True
    """
    if not _NAME.match(name):
        raise ValueError(f"bundle name {name!r}: use lower-case letters, digits and underscores (a Python-style "
                         "identifier such as lung_segmentation), as the folder and the MLflow experiment are named")
    return {path.relative_to(TEMPLATE_DIR).as_posix(): path.read_text().replace("{{bundle}}", name)
            for path in sorted(TEMPLATE_DIR.rglob("*")) if path.is_file()}


def new_bundle(name: str, bundles_dir: str | os.PathLike = "bundles") -> Path:
    """Write the template into ``bundles_dir/name`` and return that folder; an existing folder is left untouched."""
    files = render_template(name)
    root = Path(bundles_dir) / name
    if root.exists():
        raise FileExistsError(f"{root}: already exists; new-bundle writes only new folders")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the bundle's folder name, e.g. bone_suppression")
    parser.add_argument("--bundles-dir", default="bundles", help="where bundle folders live (default: bundles)")


def run(args: argparse.Namespace) -> int:
    root = new_bundle(args.name, args.bundles_dir)
    print(f"wrote {root} from {TEMPLATE_DIR}. Next:\n"
          f"  - replace every '{FILL_IN}' in {root}/configs/metadata.json and {root}/docs/README.md;\n"
          f"  - write configs/train.json (ids network_def, train#trainer, train#handlers, validate#evaluator, "
          "validate#handlers, as the mlflow.json and multi_gpu_train.json here expect), small.json and inference.json;\n"
          "  - add the bundle to BUNDLES in tests/test_bundle_conventions.py.")
    return 0
