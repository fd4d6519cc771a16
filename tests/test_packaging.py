"""Packaging: the lock files of the whole stack agree with pyproject.toml (every
dependency pinned, within its bounds, with hashes) and are what scripts/setup installs;
the licence is stated where an operator looks for it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)")


def lock_pins(name: str) -> dict[str, str]:
    """``{package: version}`` of a lock file written by scripts/lock."""
    pins: dict[str, str] = {}
    text = (ROOT / name).read_text()
    for block in re.split(r"\n(?=\S)", text):
        found = PIN.match(block)
        if found:
            assert "--hash=sha256:" in block, f"{name}: {found.group(1)} has no hash"
            pins[canonicalize_name(found.group(1))] = found.group(2)
    return pins


def test_the_lock_files_pin_every_dependency_within_its_bounds() -> None:
    runtime = [Requirement(r) for r in PYPROJECT["dependencies"]]
    test = [Requirement(r) for r in PYPROJECT["optional-dependencies"]["test"]]
    for lock, wanted in (
        ("requirements.lock", runtime),
        ("requirements-test.lock", runtime + test),
    ):
        pins = lock_pins(lock)
        for req in wanted:
            version = pins.get(canonicalize_name(req.name))
            assert version is not None, f"{lock}: {req.name} is not pinned: run scripts/lock"
            assert req.specifier.contains(version, prereleases=True), (
                f"{lock}: {req.name}=={version} is outside pyproject's {req.specifier}: "
                "run scripts/lock"
            )
    runtime_pins, test_pins = lock_pins("requirements.lock"), lock_pins("requirements-test.lock")
    # One runtime stack, tested and deployed alike.
    assert {k: test_pins.get(k) for k in runtime_pins} == runtime_pins


def test_setup_installs_the_lock_then_the_project_alone() -> None:
    setup = (ROOT / "scripts" / "setup").read_text()
    assert '--require-hashes -r "$lock"' in setup
    assert "--no-deps -e ." in setup
    assert "requirements.lock" in (ROOT / "deploy" / "README.md").read_text()


def test_the_licence() -> None:
    assert PYPROJECT["license"] == "GPL-3.0-or-later"
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("GNU GENERAL PUBLIC LICENSE")
    assert "Version 3, 29 June 2007" in (ROOT / "LICENSE").read_text()[:200]
    readme = (ROOT / "README.md").read_text()
    assert "## Licence" in readme and "x264" in readme
