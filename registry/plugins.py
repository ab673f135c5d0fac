"""The plugin host: one pluggy manager per app, built-ins and third-party plugins alike found
through the `open_registry` entry-point group."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

import pluggy

from open_registry.core import hookspecs
from open_registry.core.hookspecs import PROJECT

#: The entry-point group plugins register under (the built-in ones too).
GROUP = PROJECT
DISTRIBUTION = "open-registry"


def _scan_entry_points(third_party: bool) -> tuple[tuple[metadata.EntryPoint, str], ...]:
    """The group's entry points (with `third_party` off, this distribution's own) and where
    each comes from, "name version" of its distribution."""
    found = []
    for ep in metadata.entry_points(group=GROUP):
        if not third_party and (
            ep.dist is None
            or ep.dist.metadata["Name"].lower().replace("_", "-") != DISTRIBUTION
        ):
            continue
        found.append((ep, f"{ep.dist.name} {ep.dist.version}" if ep.dist else ep.value))
    return tuple(found)


_SCANNED: dict[bool, tuple[tuple[metadata.EntryPoint, str], ...]] = {}


def _entry_points(third_party: bool) -> tuple[tuple[metadata.EntryPoint, str], ...]:
    """`_scan_entry_points`, once per process: reading every installed distribution's metadata
    costs ~10 ms, paid by every registry opened (plugins are installed before a process starts;
    a plugin installed later is picked up at the next start, as before)."""
    if third_party not in _SCANNED:
        _SCANNED[third_party] = _scan_entry_points(third_party)
    return _SCANNED[third_party]


def plugin_manager(
    *, third_party: bool = True, extra: Iterable[Any] = (), trace: bool = False
) -> pluggy.PluginManager:
    """A manager with the hookspecs, the plugins from entry points and `extra` plugin objects.

    With `third_party` off (tests), only this distribution's own (built-in) plugins load.
    `check_pending` makes a misspelled hook fail loudly at start-up. With `trace` every hook
    call is logged (`trace_hook_calls`).
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    origins: dict[str, str] = {}
    for ep, origin in _entry_points(third_party):
        if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
            continue
        pm.register(ep.load(), name=ep.name)
        origins[ep.name] = origin
    for plugin in extra:
        name = pm.register(plugin)
        if name:
            origins[name] = "registered in code"
    pm.registry_origins = origins  # type: ignore[attr-defined]
    pm.check_pending()
    if trace:
        trace_hook_calls(pm)
    return pm


TRACE_LOG = logging.getLogger("registry.hooks")


def _brief(value: Any) -> str:
    """A short description of an argument or a result that never holds a record's values
    (they may be private): scalars up to 60 characters, containers by size, objects by type."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, Mapping):
        return f"{{{len(value)} keys}}"
    if isinstance(value, list | tuple | set | frozenset):
        return f"[{len(value)} items]"
    return type(value).__name__


def trace_hook_calls(pm: pluggy.PluginManager) -> None:
    """Log each hook call at INFO on `registry.hooks`: the hook, the plugins that implement it,
    the arguments (briefly: no record values), the result or the error, and the time taken."""
    local = threading.local()  # hooks run in many threads, and call other hooks

    def before(hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        local.started = [*getattr(local, "started", []), time.perf_counter()]
        args = ", ".join(f"{k}={_brief(v)}" for k, v in kwargs.items())
        names = ", ".join(i.plugin_name for i in hook_impls) or "no plugin"
        TRACE_LOG.info("hook %s(%s) -> %s", hook_name, args, names)

    def after(
        outcome: Any, hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        stack = getattr(local, "started", [])
        took = (time.perf_counter() - stack.pop()) * 1000 if stack else 0.0
        if outcome.exception is not None:
            TRACE_LOG.info(
                "hook %s raised %s (%.1f ms)", hook_name, type(outcome.exception).__name__, took
            )
        else:
            TRACE_LOG.info(
                "hook %s returned %s (%.1f ms)", hook_name, _brief(outcome.get_result()), took
            )

    pm.add_hookcall_monitoring(before, after)


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
