"""ASGI entry point for servers (`uvicorn open_registry.core.asgi:app`): settings from the
environment."""

from open_registry.core.app import create_app
from open_registry.core.settings import Settings

app = create_app(Settings.load())
