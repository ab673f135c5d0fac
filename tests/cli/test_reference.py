"""docs/cli.md is generated from --help and must be current."""

from __future__ import annotations

from pathlib import Path

from open_registry.cli.reference import render

DOC = Path(__file__).parents[2] / "docs" / "cli.md"


def test_cli_reference_is_current():
    assert DOC.read_text() == render(), "run: python -m open_registry.cli.reference > docs/cli.md"
