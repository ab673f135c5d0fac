"""`registry import` / `registry export` on SQLite and PostgreSQL: exit codes, summary, files."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from open_registry.cli.data import register
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "examples" / "divoc-mappings"
DIVOC = FIXTURES / "divoc" / "e2e"
runner = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def db(database_url: str, tmp_path: Path) -> list[str]:
    return ["--database-url", database_url, "--data-dir", str(tmp_path / "data")]


def run(app: typer.Typer, *args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def test_divoc_files_import_with_exit_0_and_export_back(app: typer.Typer, db: list[str]):
    for entity, name in (("facility", "facilities"), ("vaccinator", "vaccinators")):
        result = run(
            app, "import", entity, DIVOC / f"{name}.csv", "-m", MAPPINGS / f"{name}.toml", *db
        )
        assert result.exit_code == 0, result.output
    assert "3 rows: 3 inserted, 0 updated, 0 unchanged, 0 failed" in result.output
    exported = run(app, "export", "vaccinator", *db)
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [r["code"] for r in rows] == ["A1", "A2", "A3"]
    assert rows[0]["facilityIds"] == "DEL010|BLR311"


def test_bad_rows_exit_1_and_the_report_lists_them(app: typer.Typer, db: list[str], tmp_path: Path):
    src = tmp_path / "people.csv"
    src.write_text(
        "identity,name,dob,gender\n"
        "did:x:1,Asha,1990-01-01,Female\n"
        "did:x:2,Ravi,1990-13-01,Male\n"
        "did:x:1,Copy,1990-01-01,Female\n"
    )
    report = tmp_path / "errors.csv"
    result = run(app, "import", "recipient", src, "--errors", report, *db)
    assert result.exit_code == 1, result.output
    assert "3 rows: 1 inserted, 0 updated, 0 unchanged, 2 failed" in result.output
    assert "row 2: /dob:" in result.output
    with report.open(newline="") as fh:
        got = [(r["row"], r["field"]) for r in csv.DictReader(fh)]
    assert got == [("2", "/dob"), ("3", "/identity")]
    aborted = run(app, "import", "recipient", src, "--on-error", "abort", *db)
    assert aborted.exit_code == 1 and "aborted" in aborted.output


def test_dry_run_and_upsert(app: typer.Typer, db: list[str], tmp_path: Path):
    src = tmp_path / "people.jsonl"
    src.write_bytes(
        orjson.dumps({"identity": "did:x:1", "name": "A", "dob": "1990-01-01", "gender": "Male"})
        + b"\n"
    )
    dry = run(app, "import", "recipient", src, "--dry-run", *db)
    assert dry.exit_code == 0 and "1 would be inserted" in dry.output
    for expected in ("1 inserted", "1 unchanged"):
        result = run(app, "import", "recipient", src, "--upsert-on", "identity", *db)
        assert result.exit_code == 0 and expected in result.output, result.output


def test_usage_errors_exit_2(app: typer.Typer, db: list[str], tmp_path: Path):
    src = tmp_path / "x.csv"
    src.write_text("shoeSize\n42\n")
    bad_mapping = tmp_path / "m.toml"
    bad_mapping.write_text("colour = 1\n")
    cases = [
        ("import", "spaceship", src),
        ("import", "recipient", tmp_path / "missing.csv"),
        ("import", "recipient", src),
        ("import", "recipient", src, "--on-error", "sometimes"),
        ("import", "recipient", src, "-m", bad_mapping),
        ("export", "recipient", "--format", "xml"),
        ("export", "recipient", "-w", "shoeSize=42"),
    ]
    for case in cases:
        result = run(app, *case, *db)
        assert result.exit_code == 2, (case, result.output)
        assert "error:" in result.output


def test_export_to_a_gzip_file_imports_back_with_ids(
    app: typer.Typer, db: list[str], tmp_path: Path
):
    run(
        app, "import", "facility", DIVOC / "facilities.csv", "-m", MAPPINGS / "facilities.toml", *db
    )
    out = tmp_path / "f.jsonl.gz"
    result = run(
        app, "export", "facility", "--format", "jsonl", "-o", out, "-w", "category=GOVT", *db
    )
    assert result.exit_code == 0, result.output
    lines = gzip.decompress(out.read_bytes()).splitlines()
    assert {orjson.loads(x)["category"] for x in lines} == {"GOVT"} and len(lines) == 3


def test_help_shows_examples(app: typer.Typer):
    for command in ("import", "export"):
        result = run(app, command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.output
