"""constraints.txt: one exact pin for every package the image and CI install.

The Dockerfile and scripts/test install through it; a dependency added to pyproject.toml
without running scripts/constraints would install at whatever version is newest that day.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / "constraints.txt"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# The extras the image and CI install; bench and fuzz are tools of their own, and torch
# is pinned where its build (CPU or CUDA) is chosen.
PINNED_EXTRAS = ("test", "dev", "otel")
UNPINNED = {"torch"}
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;#]+)$")


def pins() -> dict[str, Version]:
    out: dict[str, Version] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"constraints.txt: not an exact pin: {line!r}"
        name = canonicalize_name(match["name"])
        assert name not in out, f"constraints.txt: {name} pinned twice"
        out[name] = Version(match["version"])
    return out


def declared() -> list[Requirement]:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    named = list(project["dependencies"]) + [r for e in PINNED_EXTRAS for r in extras[e]]
    named += PYPROJECT["build-system"]["requires"]
    return [Requirement(r) for r in named]


def test_every_line_is_an_exact_pin() -> None:
    assert len(pins()) > 20


@pytest.mark.parametrize("requirement", declared(), ids=str)
def test_every_declared_dependency_is_pinned_within_its_range(requirement: Requirement) -> None:
    name = canonicalize_name(requirement.name)
    pinned = pins()
    assert name in pinned, f"{name} is not in constraints.txt: run scripts/constraints"
    assert requirement.specifier.contains(pinned[name], prereleases=True), (
        f"constraints.txt pins {name}=={pinned[name]}, outside pyproject.toml's "
        f"{requirement.specifier}: run scripts/constraints"
    )


def test_torch_is_left_to_where_its_build_is_chosen() -> None:
    assert UNPINNED.isdisjoint(pins())
    torch_extra = PYPROJECT["project"]["optional-dependencies"]["torch"]
    assert {canonicalize_name(Requirement(r).name) for r in torch_extra} == UNPINNED
    # scripts/test and the Dockerfile pin the same torch.
    script = (REPO / "scripts" / "test").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    (version,) = set(re.findall(r"torch==([0-9.]+)\+cpu", script))
    assert f"ARG TORCH_VERSION={version}\n" in dockerfile


def test_installers_go_through_the_constraints() -> None:
    script = (REPO / "scripts" / "test").read_text()
    (install,) = [line for line in script.splitlines() if '-e ".[' in line]
    assert "-c constraints.txt" in install
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "PIP_CONSTRAINT=/src/constraints.txt" in dockerfile
    assert "pip install -c /wheels/constraints.txt" in dockerfile
