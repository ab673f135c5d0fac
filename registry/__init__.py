"""The registry runtime. This module's names are the public API that plugins and the CLI use."""

__version__ = "0.1.0"

from registry.app import Registry, create_app, open_registry
from registry.auth import Principal, principal_of
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
    Unauthorized,
)
from registry.settings import Settings

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "PreconditionFailed",
    "Principal",
    "Registry",
    "RegistryError",
    "Settings",
    "StartupError",
    "Unauthorized",
    "__version__",
    "create_app",
    "new_id",
    "open_registry",
    "principal_of",
    "utcnow",
]
