"""Fixtures for the generator tests: the shipped schemas, read with nothing but `json` and
`generators` (no `registry`), so these tests check the pure layer on its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from open_registry.generators.schema import EntitySchema, parse_entity_schema

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DIR = ROOT / "entity_schemas"
DIVOC_DIR = ROOT / "tests" / "fixtures" / "divoc" / "registry"


def read_docs(folder: Path) -> dict[str, dict[str, Any]]:
    """Every `*.json` document of a folder by file name (`siblings` of `parse_entity_schema`)."""
    return {
        p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))
    }


@pytest.fixture(scope="session")
def shipped_docs() -> dict[str, dict[str, Any]]:
    return read_docs(SHIPPED_DIR)


@pytest.fixture(scope="session")
def divoc_docs() -> dict[str, dict[str, Any]]:
    """DIVOC's opensaber schema files (verbatim copies), by file name."""
    return read_docs(DIVOC_DIR)


@pytest.fixture(scope="session")
def shipped(shipped_docs: dict[str, dict[str, Any]]) -> dict[str, EntitySchema]:
    """The shipped entities by name, parsed."""
    return {
        fname[:-5]: parse_entity_schema(
            doc, name=fname[:-5], source=str(SHIPPED_DIR / fname), siblings=shipped_docs
        )
        for fname, doc in shipped_docs.items()
    }
