"""``python -m cxr_monai``: help starts without torch and MONAI, commands dispatch, lazy packages keep their names.

Start-up is checked by what a fresh interpreter has imported after ``--help``, not by a timed assertion (shared
machines are too noisy for one): importing torch + MONAI is what takes the seconds.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_monai import cli

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "monai", "ignite", "mlflow", "matplotlib", "sklearn", "itk")

# runs `main(argv)` in a fresh interpreter; prints the exit status, the heavy modules imported, and the help text
_PROBE = """
import contextlib, io, json, sys
from cxr_monai.cli import main
text = io.StringIO()
with contextlib.redirect_stdout(text):
    try:
        status = main(sys.argv[1:])
    except SystemExit as exit:
        status = exit.code
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
print(json.dumps({{"status": status, "heavy": heavy, "text": text.getvalue()}}))
"""

_IMPORT_PROBE = """
import json, sys
import {modules}
print(json.dumps(sorted(name for name in {heavy!r} if name in sys.modules)))
"""


def _fresh(code: str, *argv: str) -> str:
    result = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def help_probe(*argv: str) -> dict:
    return json.loads(_fresh(_PROBE.format(heavy=HEAVY), *argv))


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["preview", "--help"],
        ["demo", "--help"],
        ["datalist", "--help"],
        ["datalist", "folder", "--help"],
        ["phantom", "--help"],
    ],
    ids=" ".join,
)
def test_help_does_not_import_torch_or_monai(argv):
    probe = help_probe(*argv)
    assert probe["status"] == 0 and probe["text"].startswith("usage: python -m cxr_monai")
    assert probe["heavy"] == []


def test_top_level_help_lists_every_command():
    text = help_probe("--help")["text"]
    assert all(name in text for name in cli.COMMANDS)


@pytest.mark.parametrize("modules", ["cxr_monai", "cxr_monai.io", "cxr_monai.data", "cxr_monai.io.preview"])
def test_importing_the_light_packages_does_not_import_torch_or_monai(modules):
    assert json.loads(_fresh(_IMPORT_PROBE.format(modules=modules, heavy=HEAVY))) == []


@pytest.mark.parametrize("package", ["cxr_monai.io", "cxr_monai.data"])
def test_lazy_packages_keep_every_public_name(package):
    module = importlib.import_module(package)
    assert sorted(module._LAZY) == sorted(module.__all__)
    for name in module.__all__:
        defining = importlib.import_module(module._LAZY[name])
        assert getattr(module, name) is getattr(defining, name), f"{package}.{name}"
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018


def test_star_imports_and_submodules_still_work():
    namespace: dict = {}
    exec("from cxr_monai.io import *\nfrom cxr_monai.data import *", namespace)
    assert {"CXRReader", "read_cxr", "load_datalist", "generate_phantoms"} <= set(namespace)
    from cxr_monai.data import datalist, phantom  # submodules, as before
    from cxr_monai.io import preview, reader

    assert reader.CXRReader is namespace["CXRReader"] and datalist.load_datalist is namespace["load_datalist"]
    assert callable(phantom.make_phantom) and callable(preview.run)


def test_the_reader_resolves_by_dotted_name():
    from monai.transforms import LoadImage

    from cxr_monai.io import CXRReader

    assert isinstance(LoadImage(reader="cxr_monai.io.CXRReader").readers[-1], CXRReader)


def test_main_runs_preview_on_a_folder(tmp_path, capsys):
    for name, value in (("a.png", 0), ("b.png", 255)):
        Image.fromarray(np.full((12, 10), value, dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "c.png").write_text("not a png")
    out = tmp_path / "out"
    assert cli.main(["preview", str(tmp_path), "--out", str(out)]) == 2
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png"]
    assert f"error: {tmp_path / 'c.png'}: " in capsys.readouterr().err
