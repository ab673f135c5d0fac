"""The `registry` command: schema check, version, serve refusing broken schemas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from open_registry.cli.main import app
from open_registry.core import __version__
from tests.conftest import FIXTURES

runner = CliRunner()


def test_version_prints_the_version():
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_schema_check_passes_divoc_files_with_warnings():
    result = runner.invoke(app, ["schema", "check", str(FIXTURES / "divoc" / "registry")])
    assert result.exit_code == 0, result.output
    assert "13 entities, no problems" in result.output
    assert "recipientMobileNumber" in result.output  # the warning is shown


def test_schema_check_reports_every_problem_and_exits_1(tmp_path: Path):
    doc = json.loads(
        (FIXTURES / "schemas" / "cold_chain" / "cold_chain_equipment.json").read_text()
    )
    doc["x-registry"]["colour"] = "blue"
    doc["properties"]["installedOn"]["format"] = 7
    (tmp_path / "cold_chain_equipment.json").write_text(json.dumps(doc))
    result = runner.invoke(app, ["schema", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert "/properties/installedOn/format" in result.output
    assert "2 problem(s) found" in result.output or "problem(s) found" in result.output


def test_schema_check_with_defaults_resolves_references_to_shipped_entities(tmp_path: Path):
    shutil.copy(FIXTURES / "schemas" / "cold_chain" / "cold_chain_equipment.json", tmp_path)
    alone = runner.invoke(app, ["schema", "check", str(tmp_path)])
    assert alone.exit_code == 1 and "unknown entity 'facility'" in alone.output
    together = runner.invoke(app, ["schema", "check", str(tmp_path), "--with-defaults"])
    assert together.exit_code == 0, together.output


def test_serve_refuses_to_start_with_a_broken_schema(tmp_path: Path):
    (tmp_path / "thing.json").write_text('{"type": "object", "properties": {"id": {}}}')
    result = runner.invoke(
        app, ["serve", "--data-dir", str(tmp_path / "data"), "-s", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "thing.json: /properties/id" in result.output


def test_serve_refuses_several_workers_on_sqlite(tmp_path: Path):
    result = runner.invoke(app, ["serve", "--workers", "2", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "PostgreSQL" in result.output


def test_schema_show_lists_fields_indexes_and_references():
    result = runner.invoke(app, ["schema", "show", "facility"])
    assert result.exit_code == 0, result.output
    assert "code" in result.output and "unique: (code)" in result.output
    assert "reference: programs.programId -> program.code" in result.output
    missing = runner.invoke(app, ["schema", "show", "spaceship"])
    assert missing.exit_code == 1 and "no entity 'spaceship'" in missing.output
