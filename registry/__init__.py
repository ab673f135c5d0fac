"""The registry runtime. This module's names are the public API that plugins and the CLI use."""

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
