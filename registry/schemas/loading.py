"""Loading entity schemas from folders: every `*.json` file, checked, or start-up stops.

Precedence: folders load in order (plugins' and the shipped schemas, then `schema_dirs`, then the
folder of schemas edited in the web UI, `<data_dir>/ui-schemas`); an entity defined again in a
later folder replaces the earlier one. So a schema saved in the UI wins over every file of the
same name until its file in `ui-schemas/` is removed.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from open_registry.generators.errors import SchemaError, SchemaIssue
from open_registry.generators.opensaber import is_definitions_only
from open_registry.generators.schema import EntitySchema, check_schema_set, parse_entity_schema

#: the folder, inside the data folder, of schemas saved by the web UI's schema editor
EDITED_FOLDER = "ui-schemas"


def edited_schema_dir(data_dir: Path) -> Path:
    """Where the schema editor saves entity files: loaded after every other folder."""
    return Path(data_dir) / EDITED_FOLDER


def default_schema_dir() -> Path:
    """The folder of schemas shipped with the package."""
    return Path(str(resources.files("open_registry.entity_schemas")))


@dataclass(frozen=True)
class SchemaSet:
    """The entities an app serves, by name, in load order."""

    entities: Mapping[str, EntitySchema]
    warnings: tuple[SchemaIssue, ...] = field(default=())

    def __iter__(self) -> Iterator[EntitySchema]:
        return iter(self.entities.values())

    def __contains__(self, name: object) -> bool:
        return name in self.entities

    def __getitem__(self, name: str) -> EntitySchema:
        return self.entities[name]

    def __len__(self) -> int:
        return len(self.entities)


#: read_folder's results by folder and file contents, newest last (`_FOLDER_CACHE_SIZE` kept)
_FOLDER_CACHE: OrderedDict[tuple[Any, ...], tuple[list[EntitySchema], list[SchemaIssue]]] = (
    OrderedDict()
)
_FOLDER_CACHE_SIZE = 64
_folder_cache_lock = threading.Lock()


def read_folder(folder: Path) -> tuple[list[EntitySchema], list[SchemaIssue]]:
    """Parse every `*.json` file of one folder; return the entities and every issue found.

    Parsing is pure work on the files' bytes: a folder read again with the same files (another
    registry in the process, a reload after the schema editor saved another folder) gets the
    entities parsed the first time (frozen objects, shared) instead of parsing them again."""
    if not folder.is_dir():
        return [], [SchemaIssue(str(folder), "", "schema folder does not exist")]
    raw: dict[str, bytes] = {}
    issues: list[SchemaIssue] = []
    for path in sorted(folder.glob("*.json")):
        try:
            raw[path.name] = path.read_bytes()
        except OSError as exc:
            issues.append(SchemaIssue(str(path), "", f"cannot read: {exc}"))
    if issues:  # a file that cannot be read: nothing to remember
        entities, parse_issues = _parse_folder(folder, raw)
        return entities, issues + parse_issues
    key = (str(folder), tuple((n, hashlib.blake2b(b).digest()) for n, b in raw.items()))
    with _folder_cache_lock:
        hit = _FOLDER_CACHE.get(key)
        if hit is not None:
            _FOLDER_CACHE.move_to_end(key)
            return list(hit[0]), list(hit[1])
    entities, issues = _parse_folder(folder, raw)
    with _folder_cache_lock:
        _FOLDER_CACHE[key] = (entities, issues)
        while len(_FOLDER_CACHE) > _FOLDER_CACHE_SIZE:
            _FOLDER_CACHE.popitem(last=False)
    return list(entities), list(issues)


def _parse_folder(
    folder: Path, raw: Mapping[str, bytes]
) -> tuple[list[EntitySchema], list[SchemaIssue]]:
    issues: list[SchemaIssue] = []
    docs: dict[str, dict] = {}
    for name, data in raw.items():
        path = folder / name
        try:
            docs[name] = json.loads(data.decode("utf-8"))
        except json.JSONDecodeError as exc:
            issues.append(
                SchemaIssue(
                    str(path),
                    "",
                    f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}",
                )
            )
        except UnicodeDecodeError as exc:
            issues.append(SchemaIssue(str(path), "", f"cannot read: {exc}"))
    entities = []
    for fname, doc in docs.items():
        if isinstance(doc, dict) and is_definitions_only(doc):
            continue  # shared definitions such as DIVOC's Common.json
        try:
            entities.append(
                parse_entity_schema(doc, name=fname[:-5], source=str(folder / fname), siblings=docs)
            )
        except SchemaError as exc:
            issues.extend(exc.issues)
    return entities, issues


def load_schemas(folders: Iterable[Path], *, edited: Path | None = None) -> SchemaSet:
    """Load the folders in order; raise `SchemaError` listing every issue in every file.

    An entity defined again in a later folder replaces the earlier one (an implementer's
    `facility.json` overrides the shipped one). `edited`, the schema editor's folder, is loaded
    last when it exists, and each file of it that replaces another folder's gives a warning
    naming both, so an edit made in the UI never hides a file silently.
    """
    entities: dict[str, EntitySchema] = {}
    issues: list[SchemaIssue] = []
    notes: list[SchemaIssue] = []
    folders = [Path(f) for f in folders]
    if edited is not None and Path(edited).is_dir() and Path(edited) not in folders:
        folders.append(Path(edited))
    for folder in folders:
        found, problems = read_folder(folder)
        issues.extend(problems)
        for e in found:
            earlier = entities.get(e.name)
            if earlier is not None and edited is not None and folder == Path(edited):
                notes.append(
                    SchemaIssue(
                        e.source,
                        "",
                        f"edited in the web UI; replaces {earlier.source} (remove this file to "
                        "serve that one again)",
                    )
                )
            entities[e.name] = e
    issues.extend(check_schema_set(entities.values()))
    if issues:
        raise SchemaError(issues)
    warnings = tuple(w for e in entities.values() for w in e.warnings) + tuple(notes)
    return SchemaSet(entities=entities, warnings=warnings)


def schema_folders(plugin_dirs: Iterable[Path] | bool, extra: Iterable[Path]) -> list[Path]:
    """The folders an app loads: the plugins' (the shipped schemas come from a built-in plugin)
    first, then the implementer's. `True`/`False` stand for "the shipped folder" / none.
    (The schema editor's folder comes after these: `load_schemas(..., edited=...)`.)"""
    if isinstance(plugin_dirs, bool):
        plugin_dirs = [default_schema_dir()] if plugin_dirs else []
    folders = [Path(p) for p in plugin_dirs]
    folders.extend(Path(p) for p in extra)
    return folders


def with_entity(schemas: SchemaSet, entity: EntitySchema) -> SchemaSet:
    """`schemas` with `entity` added or replaced (same load order), checked across the set;
    raises `SchemaError` like `load_schemas`."""
    entities = dict(schemas.entities)
    entities[entity.name] = entity
    issues = check_schema_set(entities.values())
    if issues:
        raise SchemaError(issues)
    return SchemaSet(entities=entities, warnings=schemas.warnings)
