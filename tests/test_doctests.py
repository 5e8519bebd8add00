"""The examples in the package's docstrings run and print what they show (issue #10).

One test per module of ``cxr_monai`` with a ``>>>`` in its source, imported the normal way (so nothing is imported
twice, as ``--doctest-modules`` over the source tree can), run in a temporary folder. Examples marked
``# doctest: +SKIP`` stay skipped; a module whose examples are all skipped is reported as skipped. A module that
fails to import fails its own test only, not the collection of the whole suite.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cxr_monai"
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py" or ">>>" not in path.read_text(encoding="utf-8", errors="replace"):
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_the_package_has_examples():
    assert len(MODULES) >= 10, MODULES  # the search above found the package


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    from cxr_monai.utils import MissingOptionalDependency

    monkeypatch.chdir(tmp_path)  # an example that writes a relative path writes it here
    try:
        module = importlib.import_module(name)
    except MissingOptionalDependency as error:  # e.g. the Faster R-CNN without a usable torchvision
        pytest.skip(str(error))
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test, out=report.append)
    failed, attempted = runner.failures, runner.tries
    assert failed == 0, f"{failed} of {attempted} examples in {name} failed:\n" + "".join(report)
    if attempted == 0:
        pytest.skip(f"every example in {name} is marked +SKIP")
