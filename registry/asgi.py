"""ASGI entry point for servers (`uvicorn registry.asgi:app`): settings from the environment."""

from registry.app import create_app
from registry.settings import Settings

app = create_app(Settings.load())
