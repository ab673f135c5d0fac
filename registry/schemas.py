"""Loading entity schemas from folders: every `*.json` file, checked, or start-up stops."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from generators.errors import SchemaError, SchemaIssue
from generators.opensaber import is_definitions_only
from generators.schema import EntitySchema, check_schema_set, parse_entity_schema


def default_schema_dir() -> Path:
    """The folder of schemas shipped with the package."""
    return Path(str(resources.files("entity_schemas")))


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


def read_folder(folder: Path) -> tuple[list[EntitySchema], list[SchemaIssue]]:
    """Parse every `*.json` file of one folder; return the entities and every issue found."""
    issues: list[SchemaIssue] = []
    docs: dict[str, dict] = {}
    if not folder.is_dir():
        return [], [SchemaIssue(str(folder), "", "schema folder does not exist")]
    for path in sorted(folder.glob("*.json")):
        try:
            docs[path.name] = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            issues.append(
                SchemaIssue(
                    str(path),
                    "",
                    f"not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}",
                )
            )
        except (OSError, UnicodeDecodeError) as exc:
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


def load_schemas(folders: Iterable[Path]) -> SchemaSet:
    """Load the folders in order; raise `SchemaError` listing every issue in every file.

    An entity defined again in a later folder replaces the earlier one (an implementer's
    `facility.json` overrides the shipped one).
    """
    entities: dict[str, EntitySchema] = {}
    issues: list[SchemaIssue] = []
    for folder in folders:
        found, problems = read_folder(Path(folder))
        issues.extend(problems)
        for e in found:
            entities[e.name] = e
    issues.extend(check_schema_set(entities.values()))
    if issues:
        raise SchemaError(issues)
    warnings = tuple(w for e in entities.values() for w in e.warnings)
    return SchemaSet(entities=entities, warnings=warnings)


def schema_folders(plugin_dirs: Iterable[Path] | bool, extra: Iterable[Path]) -> list[Path]:
    """The folders an app loads: the plugins' (the shipped schemas come from a built-in plugin)
    first, then the implementer's. `True`/`False` stand for "the shipped folder" / none."""
    if isinstance(plugin_dirs, bool):
        plugin_dirs = [default_schema_dir()] if plugin_dirs else []
    folders = [Path(p) for p in plugin_dirs]
    folders.extend(Path(p) for p in extra)
    return folders
