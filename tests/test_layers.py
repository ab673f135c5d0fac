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


def imports_of(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


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
