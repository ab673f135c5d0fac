"""Reading an adapter's `[plugins.<name>]` settings table: absent means the adapter is off."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from open_registry.core.plugin_settings import setting_int
from open_registry.plugins.adapters.http import ConfigError


def section(settings: Any, name: str) -> dict[str, Any]:
    """The `[plugins.<name>]` table ({} when the adapter is not configured)."""
    table = (getattr(settings, "plugins", None) or {}).get(name) or {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"plugins.{name} must be a table")
    if str(table.get("enabled", "true")).lower() in ("false", "0", "no", "off"):
        return {}
    return dict(table)


def need(table: Mapping[str, Any], key: str, where: str) -> Any:
    """A required setting; `ConfigError` naming it when it is missing."""
    value = table.get(key)
    if value in (None, ""):
        raise ConfigError(f"{where}.{key} is required")
    return value


def url_setting(table: Mapping[str, Any], key: str, where: str) -> str:
    """A required http(s) address, without a trailing slash."""
    value = str(need(table, key, where))
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{where}.{key} must be an http(s) address, got {value!r}")
    return value.rstrip("/")


def table_setting(table: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    """An optional sub-table ({} when absent)."""
    value = table.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.{key} must be a table")
    return dict(value)


def int_setting(table: Mapping[str, Any], key: str, where: str, default: int) -> int:
    return setting_int(f"{where}.{key}", table.get(key, default), minimum=1)


def dotted_defaults(table: Mapping[str, Any]) -> dict[str, Any]:
    """`{"address.pincode": "000000"}` -> `{"address": {"pincode": "000000"}}`."""
    record: dict[str, Any] = {}
    for dotted, value in table.items():
        node = record
        parts = str(dotted).split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return record
