"""The two installs (README's Makefile and the Dockerfile) agree with setup.cfg and with MONAI's own requirements.

No Docker engine runs these tests, so what a build would trip over first is checked from the files: the base
image's torch must satisfy both setup.cfg and the installed MONAI (MONAI 1.6 needs torch >= 2.8, and an older
base image would make pip replace its CUDA torch), and every path the Dockerfile copies must exist.
"""

from __future__ import annotations

import configparser
import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


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


def test_docker_base_image_torch_satisfies_setup_cfg_and_monai():
    dockerfile = (REPO / "Dockerfile").read_text()
    match = re.search(r"^FROM pytorch/pytorch:(\d+\.\d+\.\d+)-cuda[\d.]+-cudnn\d+-\w+\s*$", dockerfile, re.MULTILINE)
    assert match, "Dockerfile: expected FROM pytorch/pytorch:<torch>-cuda<x.y>-cudnn<n>-<runtime|devel>"
    base_torch = Version(match.group(1))
    assert base_torch in _install_requires()["torch"].specifier, f"setup.cfg's torch range excludes {base_torch}"
    assert base_torch in _monai_torch_requirement().specifier, f"MONAI needs {_monai_torch_requirement()}"


def test_makefile_torch_satisfies_setup_cfg_and_monai():
    match = re.search(r"^TORCH \?= torch==(\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match, "Makefile: expected TORCH ?= torch==<version>"
    version = Version(match.group(1))
    assert version in _install_requires()["torch"].specifier
    assert version in _monai_torch_requirement().specifier


def test_dockerfile_copies_paths_that_exist():
    copies = re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    sources = [source for line in copies for source in line.split()]
    assert sources, "Dockerfile copies nothing"
    assert [source for source in sources if not (REPO / source).exists()] == []
