"""The registry runtime. This module's names are the public API that plugins and the CLI use."""

__version__ = "0.1.0"

from registry.app import Registry, create_app, open_registry
from registry.codec import new_id, utcnow
from registry.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    RegistryError,
    StartupError,
)
from registry.settings import Settings

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "PreconditionFailed",
    "Registry",
    "RegistryError",
    "Settings",
    "StartupError",
    "__version__",
    "create_app",
    "new_id",
    "open_registry",
    "utcnow",
]
