"""The registry runtime. This module's names are the public API that plugins and the CLI use."""

__version__ = "0.1.0"

from registry.app import Registry, StateKey, create_app, open_registry
from registry.auth import Principal, principal_of
from registry.codec import new_id, utcnow
from registry.deliveries import (
    DeliveryError,
    PermanentDeliveryError,
    delivery_key,
)
from registry.deliveries import enqueue as enqueue_delivery
from registry.errors import (
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
from registry.hookspecs import hookimpl
from registry.settings import Settings

__all__ = [
    "BadRequest",
    "Conflict",
    "DeliveryError",
    "Forbidden",
    "Invalid",
    "LookupUnavailable",
    "NotFound",
    "PermanentDeliveryError",
    "PreconditionFailed",
    "Principal",
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
    "utcnow",
]
