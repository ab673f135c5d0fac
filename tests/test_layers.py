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
    "re2",  # google-re2: schema patterns in linear time
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


#: inside registry/: the data layer (storage, records, audit chain, outbox, imports' readers and
#: writer, settings, ...) never imports the web layer (FastAPI, pages, the routes' modules)
DATA_LAYER = (
    "storage.py", "records.py", "codec.py", "crypto.py", "query.py", "migrations.py",
    "settings.py", "errors.py", "plugin_settings.py", "rekey.py", "exports.py", "demo.py",
    "audit/chain.py", "outbox/worker.py", "outbox/deliveries.py", "imports/importer.py",
    "imports/rows.py", "imports/fast.py", "schemas/loading.py", "schemas/history.py",
)
WEB = ("fastapi", "starlette", "jinja2")
WEB_MODULES = (
    "open_registry.core.api", "open_registry.core.app", "open_registry.core.ui",
    "open_registry.core.auth", "open_registry.core.asgi", "open_registry.core.imports.api",
    "open_registry.core.outbox.api", "open_registry.core.audit.api",
    "open_registry.core.schemas.editor",
)


def _core_imports(path: Path, tree: ast.AST | None = None) -> set[str]:
    """Modules `path` imports; `from open_registry.core import x` as `open_registry.core.x`
    when x is a submodule, else as `open_registry.core` (the package's API: the app)."""
    tree = tree or ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module != "open_registry.core":
                out.add(node.module)
                continue
            for a in node.names:
                sub = ROOT / "registry" / a.name
                is_module = sub.is_dir() or sub.with_suffix(".py").exists()
                out.add(f"open_registry.core.{a.name}" if is_module else "open_registry.core")
    return out


def test_the_data_layer_never_imports_the_web_layer():
    bad = []
    for rel in DATA_LAYER:
        path = ROOT / "registry" / rel
        assert path.exists(), rel
        for m in _core_imports(path):
            if m.split(".")[0] in WEB or m == "open_registry.core" or m.startswith(WEB_MODULES):
                bad.append(f"registry/{rel} imports {m}")
    assert bad == []


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT / "registry").with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["open_registry", "core", *parts])


def _runtime_imports(path: Path) -> set[str]:
    """`_core_imports` without what only type checkers read (`if TYPE_CHECKING:` blocks)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = [ast.Pass()]
    return _core_imports(path, tree)


def test_registry_has_no_import_cycles():
    """Not even through imports inside functions: a cycle hidden that way still ties the two
    modules together (DESIGN.md: the data layer never needs the web layer)."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "registry").rglob("*.py"):
        me = _module_of(path)
        graph[me] = {
            m for m in _runtime_imports(path) if m.startswith("open_registry.core") and m != me
        }
    modules = set(graph)
    for me, deps in graph.items():  # an import of a module's name means that module
        graph[me] = {d if d in modules else d.rsplit(".", 1)[0] for d in deps} & modules
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []
