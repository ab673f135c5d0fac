"""Imports flow one way: cli | plugins -> registry -> generators (DESIGN.md)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
GENERATORS_MAY_IMPORT = {
    "generators",
    "jsonschema",
    "sqlalchemy",
    "jinja2",
    "fastjsonschema",
    "rfc3339_validator",
}
FORBIDDEN = {
    "generators": {"registry", "plugins", "cli", "fastapi", "starlette", "typer", "httpx"},
    "registry": {"plugins", "cli", "typer"},
    "plugins": {"cli"},
}


#: the folders as installed: `open_registry.<name>` (DESIGN.md); `core` is `registry/`
INSTALLED = {"core": "registry", "generators": "generators", "plugins": "plugins", "cli": "cli",
             "entity_schemas": "entity_schemas"}
OLD_NAMES = set(INSTALLED.values())


def _layer(module: str) -> str:
    """The layer (folder) or library a module belongs to: `open_registry.core.x` -> registry."""
    parts = module.split(".")
    if parts[0] == "open_registry" and len(parts) > 1:
        return INSTALLED.get(parts[1], parts[1])
    return parts[0]


def _raw_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def imports_of(package: str) -> dict[str, set[str]]:
    return {
        str(path.relative_to(ROOT)): {_layer(m) for m in _raw_imports(path)}
        for path in (ROOT / package).rglob("*.py")
    }


def test_nothing_imports_the_folders_by_their_uninstalled_names():
    """`import registry` would load a second copy of the package from the working folder."""
    bad = []
    for folder in ("registry", "generators", "plugins", "cli", "tests", "benchmarks", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            for m in _raw_imports(path):
                if m.split(".")[0] in OLD_NAMES:
                    bad.append(f"{path.relative_to(ROOT)} imports {m}")
    assert bad == []


def test_no_package_imports_against_the_layering():
    bad = []
    for package, forbidden in FORBIDDEN.items():
        for path, names in imports_of(package).items():
            for name in sorted(names & forbidden):
                bad.append(f"{path} imports {name}")
    assert bad == []


def test_generators_use_only_stdlib_and_their_libraries():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    extra = {
        f"{p}: {n}"
        for p, names in imports_of("generators").items()
        for n in names - stdlib - GENERATORS_MAY_IMPORT
    }
    assert extra == set()
