"""Reading a plugin's `[plugins.<name>]` settings: values come from the settings file (typed) or
from `REGISTRY_PLUGINS__<NAME>__<KEY>` environment variables (always text), so each is checked
and converted here, with an error naming the setting (`plugins.<name>.<key>`)."""

from __future__ import annotations

from typing import Any

from open_registry.core.settings import parse_flag


class PluginSettingError(ValueError):
    """A plugin setting that cannot be used; the message names it (never a secret value)."""


def setting_bool(where: str, value: Any) -> bool:
    """`true`/`false` (also 1/0, yes/no, on/off, any case)."""
    flag = parse_flag(value)
    if flag is not None:
        return flag
    raise PluginSettingError(f"{where} must be true or false, got {value!r}")


def setting_int(where: str, value: Any, minimum: int = 0) -> int:
    """A whole number of at least `minimum`."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PluginSettingError(f"{where} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise PluginSettingError(f"{where} must be at least {minimum}, got {number}")
    return number


def setting_list(value: Any) -> tuple[str, ...]:
    """A list, or a comma-separated text (an environment variable)."""
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(str(v) for v in value)
