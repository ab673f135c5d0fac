"""The distribution installs one import name, `open_registry`, with every subpackage and the
data files the code reads (templates, contexts, value sets, demo data)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.test_layers import INSTALLED

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_subpackage_is_listed_under_its_installed_name():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set()
    for name, folder in INSTALLED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join(["open_registry", name, *rel.parts]))
    assert found == listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel, built from a copy of the sources (setuptools writes `build/` beside them, and
    tests in parallel processes must not build in one folder)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for folder in INSTALLED.values():
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    # with this environment's setuptools (the `test` extra holds the build requirement): an
    # isolated build would install it into a new environment first, several seconds each time
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("open_registry-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_has_one_top_level_name(wheel: zipfile.ZipFile):
    tops = {n.split("/")[0] for n in wheel.namelist()}
    assert tops == {"open_registry", "open_registry-0.1.0.dist-info"}


def test_the_wheel_holds_the_data_files_and_entry_points(wheel: zipfile.ZipFile):
    names = set(wheel.namelist())
    for expected in (
        "open_registry/core/py.typed",
        "open_registry/core/demo/recipient.json",
        "open_registry/core/templates/base.html",
        "open_registry/entity_schemas/recipient.json",
        "open_registry/generators/x-registry.schema.json",
        "open_registry/plugins/certificates/codes/ICD.json",
        "open_registry/plugins/certificates/contexts/credentials-v2.jsonld",
        "open_registry/plugins/programme/schemas/schedule.json",
    ):
        assert expected in names, expected
    entry_points = wheel.read("open_registry-0.1.0.dist-info/entry_points.txt").decode()
    assert "registry = open_registry.cli.main:main" in entry_points
    assert "certificates = open_registry.plugins.certificates.plugin" in entry_points
    assert "open_registry = open_registry.core.testing" in entry_points


def test_the_public_names_load_when_first_used() -> None:
    """`open_registry.core` loads its names lazily: every name of `__all__` resolves (to what
    its module defines), and importing the import worker's modules in a fresh interpreter
    does not import the web app (it did, and the worker process took twice as long to start)."""
    import importlib

    import open_registry.core as core

    for name in core.__all__:
        module, attribute = core._PUBLIC[name]
        assert getattr(core, name) is getattr(importlib.import_module(module), attribute), name
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        core.nothing_here  # noqa: B018
    code = (
        "import sys, open_registry.core.imports.importer;"
        "print(sorted(m for m in ('fastapi', 'open_registry.core.app') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
