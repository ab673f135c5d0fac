"""Demo data for the shipped schemas: a fictional country's programmes, vaccines, facilities,
vaccinators and recipients, loaded into an empty database (`registry serve --demo`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from importlib import resources
from typing import Any

import sqlalchemy as sa

from open_registry.core import storage

log = logging.getLogger("registry")


def _order(services: Mapping[str, Any]) -> list[str]:
    """Entities in an order where every referenced entity comes first."""
    done: list[str] = []

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in done or name in stack or name not in services:
            return
        for ref in services[name].entity.references:
            visit(ref.entity, (*stack, name))
        done.append(name)

    for name in services:
        visit(name, ())
    return done


def load_demo_data(services: Mapping[str, Any]) -> int:
    """Load the demo records of every shipped entity that is loaded and still empty."""
    folder = resources.files("open_registry.core") / "demo"
    loaded = 0
    for name in _order(services):
        path = folder / f"{name}.json"
        if not path.is_file():
            continue
        service = services[name]
        with storage.read(service.db.engine) as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(service.table)).scalar_one():
                continue
        records: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        items = [(r["id"], {k: v for k, v in r.items() if k != "id"}) for r in records]
        service.create_many(items, actor="demo")
        loaded += len(items)
        log.info("demo data: %d %s records", len(records), name)
    return loaded
