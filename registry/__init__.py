"""The registry runtime. This module's names are the public API that plugins and the CLI use.

Its names are loaded when first used (PEP 562), so that importing one submodule (the import
worker's `open_registry.core.imports.rows`, a CLI command's) does not import the web app and
everything it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from open_registry.core.app import Registry, StateKey, create_app, open_registry
    from open_registry.core.auth import Principal, principal_of
    from open_registry.core.auth.principal import system
    from open_registry.core.codec import new_id, utcnow
    from open_registry.core.errors import (
        BadRequest,
        Conflict,
        Forbidden,
        Invalid,
        LookupUnavailable,
        NotFound,
        PreconditionFailed,
        RegistryError,
        StartupError,
        Unauthorized,
    )
    from open_registry.core.gate import Gate, Records
    from open_registry.core.hookspecs import hookimpl
    from open_registry.core.outbox.deliveries import (
        DeliveryError,
        PermanentDeliveryError,
        delivery_key,
    )
    from open_registry.core.outbox.deliveries import enqueue as enqueue_delivery
    from open_registry.core.outbox.deliveries import timed as timed_sender
    from open_registry.core.settings import Settings
    from open_registry.core.version import __version__

#: public name -> (module, name in it)
_PUBLIC: dict[str, tuple[str, str]] = {
    "Registry": ("open_registry.core.app", "Registry"),
    "StateKey": ("open_registry.core.app", "StateKey"),
    "create_app": ("open_registry.core.app", "create_app"),
    "open_registry": ("open_registry.core.app", "open_registry"),
    "Principal": ("open_registry.core.auth", "Principal"),
    "principal_of": ("open_registry.core.auth", "principal_of"),
    "system": ("open_registry.core.auth.principal", "system"),
    "new_id": ("open_registry.core.codec", "new_id"),
    "utcnow": ("open_registry.core.codec", "utcnow"),
    "BadRequest": ("open_registry.core.errors", "BadRequest"),
    "Conflict": ("open_registry.core.errors", "Conflict"),
    "Forbidden": ("open_registry.core.errors", "Forbidden"),
    "Invalid": ("open_registry.core.errors", "Invalid"),
    "LookupUnavailable": ("open_registry.core.errors", "LookupUnavailable"),
    "NotFound": ("open_registry.core.errors", "NotFound"),
    "PreconditionFailed": ("open_registry.core.errors", "PreconditionFailed"),
    "RegistryError": ("open_registry.core.errors", "RegistryError"),
    "StartupError": ("open_registry.core.errors", "StartupError"),
    "Unauthorized": ("open_registry.core.errors", "Unauthorized"),
    "Gate": ("open_registry.core.gate", "Gate"),
    "Records": ("open_registry.core.gate", "Records"),
    "hookimpl": ("open_registry.core.hookspecs", "hookimpl"),
    "DeliveryError": ("open_registry.core.outbox.deliveries", "DeliveryError"),
    "PermanentDeliveryError": ("open_registry.core.outbox.deliveries", "PermanentDeliveryError"),
    "delivery_key": ("open_registry.core.outbox.deliveries", "delivery_key"),
    "enqueue_delivery": ("open_registry.core.outbox.deliveries", "enqueue"),
    "timed_sender": ("open_registry.core.outbox.deliveries", "timed"),
    "Settings": ("open_registry.core.settings", "Settings"),
    "__version__": ("open_registry.core.version", "__version__"),
}


def __getattr__(name: str) -> Any:
    found = _PUBLIC.get(name)
    if found is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(found[0]), found[1])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


__all__ = [
    "BadRequest",
    "Conflict",
    "DeliveryError",
    "Forbidden",
    "Gate",
    "Invalid",
    "LookupUnavailable",
    "NotFound",
    "PermanentDeliveryError",
    "PreconditionFailed",
    "Principal",
    "Records",
    "Registry",
    "RegistryError",
    "Settings",
    "StartupError",
    "StateKey",
    "Unauthorized",
    "__version__",
    "create_app",
    "delivery_key",
    "enqueue_delivery",
    "hookimpl",
    "new_id",
    "open_registry",
    "principal_of",
    "system",
    "timed_sender",
    "utcnow",
]
