"""The two installs (README's Makefile and the Dockerfile) agree with setup.cfg and with MONAI's own requirements.

No Docker engine runs these tests, so what a build would trip over first is checked from the files: the base
image's torch must satisfy both setup.cfg and the installed MONAI (MONAI 1.6 needs torch >= 2.8, and an older
base image would make pip replace its CUDA torch), every path the Dockerfile copies must exist and must not be
excluded by .dockerignore, which keeps local state (.venv, runs, .git, caches, data) out of the build context,
the container runs as a non-root user, and the bundle's metadata.json states the versions the image installs.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import re
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
METADATA = REPO / "bundles" / "context_encoder" / "configs" / "metadata.json"


def _install_requires() -> dict[str, Requirement]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    lines = [line.split("#")[0].strip() for line in config["options"]["install_requires"].splitlines()]
    return {(req := Requirement(line)).name: req for line in lines if line}


def _monai_torch_requirement() -> Requirement:
    for line in importlib.metadata.requires("monai") or []:
        requirement = Requirement(line)
        if requirement.name == "torch" and requirement.marker is None:
            return requirement
    raise AssertionError("the installed monai declares no torch requirement")


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in (REPO / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.MULTILINE)]


def _base_image_torch() -> Version:
    dockerfile = (REPO / "Dockerfile").read_text()
    match = re.search(r"^FROM pytorch/pytorch:(\d+\.\d+\.\d+)-cuda[\d.]+-cudnn\d+-\w+\s*$", dockerfile, re.MULTILINE)
    assert match, "Dockerfile: expected FROM pytorch/pytorch:<torch>-cuda<x.y>-cudnn<n>-<runtime|devel>"
    return Version(match.group(1))


def _copy_sources() -> list[str]:
    """The build-context paths the Dockerfile copies (``--chown=...`` and other flags dropped)."""
    sources = []
    for instruction, arguments in _dockerfile_instructions():
        if instruction in ("COPY", "ADD"):
            paths = [token for token in arguments.split() if not token.startswith("--")]
            sources += paths[:-1]
    return sources


def _dockerignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker matches it (moby/patternmatcher): ``*`` and ``?`` stay inside one path
    element, ``**`` spans any number of them (none included), the path is relative to the context root."""
    pattern = pattern.strip("/")
    regex, i, in_class = "", 0, False
    while i < len(pattern):
        char = pattern[i]
        if in_class or char in "[]":  # a character class, [abc] or [a-z], passes through
            in_class = (in_class or char == "[") and char != "]"
            regex += char
        elif pattern.startswith("**", i):
            i += 2 + pattern.startswith("/", i + 2)
            regex += ".*" if i == len(pattern) else "(.*/)?"
            continue
        else:
            regex += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        i += 1
    return re.compile(f"^{regex}$")


def _dockerignore() -> list[tuple[bool, re.Pattern]]:
    """``(is_exception, regex)`` per pattern of .dockerignore, in order (the last match decides)."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _dockerignore_regex(line.lstrip("!").strip())))
    return rules


def _excluded_from_context(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether Docker leaves ``path`` (or a folder above it) out of the build context."""
    parts = path.split("/")
    excluded = False
    for is_exception, regex in rules:
        if any(regex.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not is_exception
    return excluded


def test_docker_base_image_torch_satisfies_setup_cfg_and_monai():
    base_torch = _base_image_torch()
    assert base_torch in _install_requires()["torch"].specifier, f"setup.cfg's torch range excludes {base_torch}"
    assert base_torch in _monai_torch_requirement().specifier, f"MONAI needs {_monai_torch_requirement()}"


def test_makefile_torch_satisfies_setup_cfg_and_monai():
    match = re.search(r"^TORCH \?= torch==(\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match, "Makefile: expected TORCH ?= torch==<version>"
    version = Version(match.group(1))
    assert version in _install_requires()["torch"].specifier
    assert version in _monai_torch_requirement().specifier


def test_dockerfile_copies_paths_that_exist():
    sources = _copy_sources()
    assert sources, "Dockerfile copies nothing"
    assert [source for source in sources if not (REPO / source).exists()] == []


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "runs/demo/mlruns.db",
        "bundles/context_encoder/runs/models/model.pt",
        "mlruns/0/meta.yaml",
        "mlflow.db",
        "data/ChestX-ray14/images/00000001_000.png",
        "cxr_monai/__pycache__/cli.cpython-311.pyc",
        "tests/__pycache__/test_cli.cpython-311-pytest-8.4.2.pyc",
        ".pytest_cache/v/cache/lastfailed",
        "cxr_monai.egg-info/PKG-INFO",
    ],
)
def test_dockerignore_keeps_local_state_out_of_the_build_context(path):
    assert _excluded_from_context(path, _dockerignore()), f".dockerignore lets {path} into the build context"


def test_dockerignore_keeps_everything_the_dockerfile_copies():
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout: the project's file list is unknown")
    rules = _dockerignore()
    needed = [path for path in listed for source in _copy_sources()
              if (path == source or path.startswith(source.rstrip("/") + "/")) and (REPO / path).is_file()]
    assert any(path.startswith("cxr_monai/data/") for path in needed)  # the package, not the top-level data/
    assert [path for path in needed if _excluded_from_context(path, rules)] == []


def test_the_container_runs_as_a_non_root_user():
    instructions = _dockerfile_instructions()
    users = [(index, arguments) for index, (instruction, arguments) in enumerate(instructions) if instruction == "USER"]
    assert users, "Dockerfile: no USER line, the container would run as root"
    last_index, user = users[-1]
    assert user.split(":")[0] not in ("root", "0"), f"Dockerfile: USER {user}"
    assert all(instruction != "RUN" for instruction, _ in instructions[last_index:]), "RUN after the last USER"
    creates = [arguments for instruction, arguments in instructions if instruction == "RUN" and "useradd" in arguments]
    assert creates and re.search(rf"useradd\b.*\s{re.escape(user.split(':')[0])}(\s|$)", creates[0]), \
        f"Dockerfile: user {user} is never created"
    uid = re.search(r"^ARG USER_UID=(\d+)\s*$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert uid and int(uid.group(1)) != 0 and re.search(r'useradd\b.*--uid "\$\{USER_UID\}"', creates[0])
    # what a run writes must be the user's: the work tree (MLflow, a bundle's default output) and /workspace/runs
    assert re.search(r"install -d -o (\S+) .*/workspace/runs", creates[0])


@pytest.mark.parametrize("metadata", [*sorted((REPO / "bundles").glob("*/configs/metadata.json")),
                                      REPO / "cxr_monai" / "bundle_template" / "configs" / "metadata.json"],
                         ids=lambda path: path.parts[-3])
def test_metadata_versions_match_the_image_and_setup_cfg(metadata):
    meta = json.loads(metadata.read_text())
    assert Version(meta["pytorch_version"]) == _base_image_torch(), "metadata.json pytorch_version != image's torch"
    requires = _install_requires()
    pins = {"torch": meta["pytorch_version"], "monai": meta["monai_version"], "numpy": meta["numpy_version"],
            **meta["required_packages_version"]}
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    assert pins.pop("cxr-monai") == config["metadata"]["version"]
    for name, version in pins.items():
        requirement = requires.get(canonicalize_name(name)) or requires.get(name)
        assert requirement is not None, f"metadata.json pins {name}, which setup.cfg does not require"
        assert Version(version) in requirement.specifier, f"metadata.json {name} {version}, setup.cfg {requirement}"
    assert Version(meta["pytorch_version"]) in _monai_torch_requirement().specifier


def test_dockerfile_installs_the_versions_metadata_json_states():
    """The image pins what metadata.json says, so the two cannot drift: the Dockerfile reads every version field."""
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "bundles/context_encoder/configs/metadata.json" in _copy_sources()
    for key in ("pytorch_version", "monai_version", "numpy_version", "required_packages_version"):
        assert f"meta['{key}']" in dockerfile, f"Dockerfile does not use metadata.json's {key}"
    install = [arguments for instruction, arguments in _dockerfile_instructions()
               if instruction == "RUN" and "pip install" in arguments]
    assert len(install) == 1 and re.search(r"pip install -c (\S+constraints\.txt) ", install[0])
