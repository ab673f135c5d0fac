"""Examplia's country adapter for open-registry (an example to copy)."""
