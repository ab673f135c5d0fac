"""Built-in plugin: the shipped entity schemas (facility, vaccinator, vaccine, program,
recipient), unless the settings turn them off with `default_schemas = false`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from open_registry.core.hookspecs import hookimpl
from open_registry.core.schemas.loading import default_schema_dir


@hookimpl
def register_schema_dirs(settings: Any) -> list[Path]:
    return [default_schema_dir()] if settings.default_schemas else []
