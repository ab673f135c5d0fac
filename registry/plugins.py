"""The plugin host: one pluggy manager per app, built-ins and third-party plugins alike found
through the `open_registry` entry-point group."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata
from typing import Any

import pluggy

from registry import hookspecs
from registry.hookspecs import PROJECT

#: The entry-point group plugins register under (the built-in ones too).
GROUP = PROJECT
DISTRIBUTION = "open-registry"


def _entry_points(third_party: bool) -> list[metadata.EntryPoint]:
    eps = list(metadata.entry_points(group=GROUP))
    if third_party:
        return eps
    return [
        ep
        for ep in eps
        if ep.dist is not None
        and ep.dist.metadata["Name"].lower().replace("_", "-") == DISTRIBUTION
    ]


def plugin_manager(*, third_party: bool = True, extra: Iterable[Any] = ()) -> pluggy.PluginManager:
    """A manager with the hookspecs, the plugins from entry points and `extra` plugin objects.

    With `third_party` off (tests), only this distribution's own (built-in) plugins load.
    `check_pending` makes a misspelled hook fail loudly at start-up.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    origins: dict[str, str] = {}
    for ep in _entry_points(third_party):
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        pm.register(ep.load(), name=ep.name)
        origins[ep.name] = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ep.value
    for plugin in extra:
        name = pm.register(plugin)
        if name:
            origins[name] = "registered in code"
    pm.registry_origins = origins  # type: ignore[attr-defined]
    pm.check_pending()
    return pm


def describe(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Name, hooks implemented and origin of every loaded plugin (for `registry plugins`)."""
    origins: dict[str, str] = getattr(pm, "registry_origins", {})
    out = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda p: str(p[0])):
        if plugin is None:
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "hooks": hooks, "origin": origins.get(name, "")})
    return out
