"""Fixtures shared by the test modules: phantom data sets, the real data under ``../shared/data`` and bundle runs.

- ``bundle_phantoms`` (24 images at 256 px), ``classification_phantoms`` and ``pneumothorax_phantoms`` (24 images at
  256 px each) and ``phantom_datalist`` (4 images at 256 px) are generated once per session, whichever module asks
  first; tests must not write into them (copy them first, as the bad-image test does).
- ``shared_data`` / ``shared_path`` skip a test, with the path in the reason, where ``../shared/data`` (or the
  part of it a test reads) is absent: a user's checkout has no ``shared/``.
- ``bundle_command`` builds ``python -m monai.bundle <subcommand> ...`` arguments as a user types them, and
  ``run_bundle`` runs them with a timeout, failing with the tail of the output (``start_bundle`` starts one and
  returns the process). Each is a process of its own, forked from a server that has imported MONAI once
  (``warm_processes.py``; ``CXR_MONAI_TEST_FRESH_PROCESSES=1`` starts new interpreters instead).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import warm_processes

REPO = Path(__file__).resolve().parents[1]
BUNDLES_DIR = REPO / "bundles"
# as every module located it before: the folder next to the repository, absent from a user's checkout
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TAIL_LINES = 40


# ----------------------------------------------------------------------------------------------------------
# phantoms


@pytest.fixture(scope="session")
def bundle_phantoms(tmp_path_factory) -> Path:
    """24 phantoms at 256 px (seed 0, 30 % abnormal) with ``datalist.json`` and the bone pairs (soft-tissue image,
    bone image, rib mask): the data of the bundle runs."""
    from cxr_monai.data import generate_phantoms  # imported here: a conftest import error would stop every module

    out = tmp_path_factory.mktemp("bundle_phantoms")
    generate_phantoms(out, num_images=24, size=256, seed=0, abnormal_fraction=0.3, bone_pairs=True)
    return out


@pytest.fixture(scope="session")
def classification_phantoms(tmp_path_factory) -> Path:
    """24 phantoms at 256 px (seed 0) with multi-hot ``labels`` of 7 findings, laterals and the bone pairs: the
    classifier's data (``generate_phantoms(classification=True)``; abnormal images in every split)."""
    from cxr_monai.data import generate_phantoms

    out = tmp_path_factory.mktemp("classification_phantoms")
    generate_phantoms(out, num_images=24, size=256, seed=0, classification=True, bone_pairs=True)
    return out


@pytest.fixture(scope="session")
def pneumothorax_phantoms(tmp_path_factory) -> Path:
    """24 phantoms at 256 px (seed 0), half with one pneumothorax: ``label`` 1/0, a ``lesion_mask`` for every image
    (the pneumothorax region, blank when normal) and ``train-rle.csv``; the ClaSegNet data
    (``generate_phantoms(pneumothorax=True)``; both classes in training, validation and test + test_unhealthy)."""
    from cxr_monai.data import generate_phantoms

    out = tmp_path_factory.mktemp("pneumothorax_phantoms")
    generate_phantoms(out, num_images=24, size=256, seed=0, pneumothorax=True)
    return out


@pytest.fixture(scope="session")
def phantom_datalist(tmp_path_factory) -> Path:
    """``datalist.json`` of 4 phantoms at 256 px (seed 3): 2 healthy test images, 2 abnormal."""
    from cxr_monai.data import generate_phantoms

    root = tmp_path_factory.mktemp("phantom_datalist")
    generate_phantoms(root, num_images=4, size=256, seed=3, abnormal_fraction=0.5)
    return root / "datalist.json"


# ----------------------------------------------------------------------------------------------------------
# real data under ../shared/data


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; the test is skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not found (../shared/data is not part of a user checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_path() -> Callable[..., Path]:
    """``shared_path("real-samples", "siim")``: that path under ``../shared/data``, or a skip where it is absent."""

    def find(*parts: str) -> Path:
        path = SHARED_DATA.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"{path} not found (../shared/data is not part of a user checkout)")
        return path

    return find


# ----------------------------------------------------------------------------------------------------------
# bundle commands


def _bundle_root(bundle: str | os.PathLike) -> Path:
    root = Path(bundle)
    return root if root.is_absolute() else BUNDLES_DIR / root


def _cli_value(value: Any) -> str:
    """An override as the command line carries it: paths as they are, everything else as JSON (Fire parses it)."""
    return str(value) if isinstance(value, os.PathLike) else json.dumps(value)


def _bundle_command(bundle: str | os.PathLike, configs: Sequence[str | os.PathLike], subcommand: str = "run",
                    **overrides: Any) -> list[str]:
    """``-m monai.bundle <subcommand> --config_file "[...]" --meta_file ... --bundle_root ... --key value ...``.

    ``bundle`` is a folder name under ``bundles/`` (or a path); ``configs`` are file names under its ``configs/``
    (or paths), merged in order. ``run`` also gets the bundle's ``logging.conf`` where it has one. Overrides
    whose value is ``None`` are left out. The list starts at ``-m``: prepend ``sys.executable`` or a launcher.
    """
    root = _bundle_root(bundle)
    files = [str(Path(name) if Path(name).is_absolute() else root / "configs" / name) for name in configs]
    command = ["-m", "monai.bundle", subcommand, "--config_file", json.dumps(files),
               "--meta_file", str(root / "configs" / "metadata.json")]
    if subcommand == "run" and (root / "configs" / "logging.conf").is_file():
        command += ["--logging_file", str(root / "configs" / "logging.conf")]
    command += ["--bundle_root", str(root)]
    for key, value in overrides.items():
        if value is not None:
            command += [f"--{key}", _cli_value(value)]
    return command


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` of ``text``, after the first traceback or C++ abort if that is earlier.

    Under ``torchrun`` the end of the output is the launcher's summary ("Root Cause ... SIGABRT"); what the worker
    said before it died is further up.
    """
    all_lines = text.splitlines()
    first = next((i for i, line in enumerate(all_lines)
                  if line.startswith("Traceback") or "terminate called" in line or "what():" in line), None)
    tail = all_lines[-lines:]
    if first is None or first >= len(all_lines) - lines:
        return "\n".join(tail)
    return "\n".join([*all_lines[first:first + lines], "...", *tail])


def _start_bundle(args: Sequence[str | os.PathLike], stdout: Path, stderr: Path | None = None, *,
                  launcher: Sequence[str] | None = None, env: dict[str, str] | None = None):
    """Start ``[launcher or sys.executable, *args]`` in the repository root in a new session, output to ``stdout``
    (and ``stderr``, or the same file); returns the process (``pid``, ``poll``, ``wait``, ``returncode``).

    ``python -m ...`` without a launcher or an environment of its own starts as a fork of a server that has
    imported MONAI already (:mod:`warm_processes`), ~10 s sooner; anything else starts a new interpreter.
    """
    args = [str(arg) for arg in args]
    if launcher is None and env is None and args[0] == "-m" and warm_processes.enabled():
        return warm_processes.start(args[1], args[2:], REPO, stdout, stderr)
    with open(stdout, "a") as out, open(stderr or stdout, "a") as err:
        return subprocess.Popen([*(launcher or [sys.executable]), *args], cwd=REPO, env=env, text=True,
                                start_new_session=True, stdout=out, stderr=err)


def _run_bundle(args: Sequence[str | os.PathLike], log: Path | None = None, *, launcher: Sequence[str] | None = None,
                timeout: float = 600, check: bool = True, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess:
    """Run ``[launcher or sys.executable, *args]`` in the repository root and return the CompletedProcess.

    With ``log``, stdout and stderr go to that file together (``stdout`` and ``stderr`` of the result are None);
    without, both are captured as text. ``check``: a non-zero exit fails the test with the last lines of the
    output (stderr, or the log), which are also printed. On ``timeout`` the whole process group is killed (the
    workers of ``torchrun`` included) and the test fails with the same tail.
    """
    command = [*(launcher or [sys.executable]), *map(str, args)]
    with contextlib.ExitStack() as stack:
        if log is None:
            captured = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="run_bundle_")))
            stdout_path, stderr_path = captured / "stdout", captured / "stderr"
        else:
            stdout_path, stderr_path = log, None
        for path in (stdout_path, stderr_path):
            if path is not None:
                path.write_text("")
        process = _start_bundle(args, stdout_path, stderr_path, launcher=launcher, env=env)
        try:
            process.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            timed_out = True
        stdout, stderr = (None, None) if log is not None else (stdout_path.read_text(errors="replace"),
                                                               stderr_path.read_text(errors="replace"))
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    if timed_out or (check and result.returncode != 0):
        output = log.read_text(errors="replace") if log is not None else (stderr or "") or (stdout or "")
        what = f"timed out after {timeout:g} s" if timed_out else f"exited with {result.returncode}"
        message = f"{' '.join(command[1:4])} ... {what}; last lines of its output:\n{_tail(output)}"
        print(message, file=sys.stderr)
        pytest.fail(message, pytrace=False)
    return result


@pytest.fixture(scope="session")
def bundle_command() -> Callable[..., list[str]]:
    """``bundle_command(bundle, configs, subcommand="run", **overrides)``: the arguments after the interpreter."""
    return _bundle_command


@pytest.fixture(scope="session")
def start_bundle() -> Callable[..., Any]:
    """``start_bundle(args, stdout, stderr=None, *, launcher=None, env=None)``: see ``_start_bundle``."""
    return _start_bundle


@pytest.fixture(scope="session")
def run_bundle() -> Callable[..., subprocess.CompletedProcess]:
    """``run_bundle(args, log=None, *, launcher=None, timeout=600, check=True)``: see ``_run_bundle``."""
    return _run_bundle


# ----------------------------------------------------------------------------------------------------------
# observer studies


def _hand_made_study(folder: Path, design: str = "2afc", trials: int = 6, repeats: int = 1, size: int = 24,
                     seed: int = 3) -> Path:
    """A study folder laid out as ``study create`` lays it out, with random 16-bit images ``size x (size + 8)``:
    the app's tests need no generator. 2AFC trials are in group ``inpainted``; real-or-synthetic trials alternate
    real / ``Pix2Pix-N``, all labelled ``Effusion``."""
    import secrets

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    entries = []
    for number in range(1, trials + 1):
        names = {}
        for role in ("original", "inpainted") if design == "2afc" else ("image",):
            name = f"images/{secrets.token_hex(8)}.png"
            Image.fromarray(rng.integers(0, 65535, size=(size, size + 8), dtype=np.uint16)).save(folder / name)
            names[role] = name
        trial = {"id": f"t{number:04d}", "images": names, "group": "inpainted", "label": ""}
        if design != "2afc":
            truth = "real" if number % 2 else "synthetic"
            trial.update(truth=truth, group="real" if truth == "real" else "Pix2Pix-N", label="Effusion")
        entries.append(trial)
    manifest = {"format": 1, "design": design, "title": "Test study", "instructions": "Pick the original.",
                "seed": seed, "repeats": repeats, "created": "2026-12-03T20:00:00+00:00",
                "created_from": ["/nowhere"], "image_size": None, "trials": entries}
    (folder / "study.json").write_text(json.dumps(manifest, indent=2))
    (folder / "key.csv").write_text("trial,role,path,source\n")
    (folder / "admin_token").write_text("admin-secret-token\n")
    (folder / "secret_key").write_text(secrets.token_hex(32))
    return folder


@pytest.fixture(scope="session")
def hand_made_study() -> Callable[..., Path]:
    """``hand_made_study(folder, design="2afc", trials=6, repeats=1, size=24, seed=3)``: see ``_hand_made_study``;
    the admin token is ``admin-secret-token``."""
    return _hand_made_study
