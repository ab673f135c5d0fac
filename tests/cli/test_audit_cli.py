"""`registry audit verify|list` and `registry data-key init|status|rotate`: exit codes and
output, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from open_registry.cli.main import app
from open_registry.core import Settings
from open_registry.core.app import open_registry
from tests.registry.test_privacy import SECRETS, person

runner = CliRunner()


@pytest.fixture
def db(database_url: str, tmp_path: Path) -> list[str]:
    return ["--database-url", database_url, "--data-dir", str(tmp_path / "data")]


@pytest.fixture
def filled(settings: Settings) -> Settings:
    reg = open_registry(settings)
    try:
        svc = reg.services["recipient"]
        for n in range(6):
            rec = svc.create(person(n), actor="alice" if n % 2 else "bob")
        svc.update(rec["id"], {"name": "Renamed"}, actor="carol", patch=True)
    finally:
        reg.close()
    return settings


def run(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def test_verify_exits_0_on_an_intact_chain_and_1_naming_the_broken_seq(
    filled: Settings, db: list[str]
):
    ok = run("audit", "verify", *db)
    assert ok.exit_code == 0, ok.output
    assert "audit chain intact: 7 entries, last hash " in ok.output
    engine = sa.create_engine(filled.sqlalchemy_url)
    with engine.begin() as conn:
        third = conn.execute(
            sa.text("SELECT seq FROM registry_audit ORDER BY seq LIMIT 1 OFFSET 2")
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE registry_audit SET actor = 'mallory' WHERE seq = :s"), {"s": third}
        )
    engine.dispose()
    broken = run("audit", "verify", *db)
    assert broken.exit_code == 1
    assert f"audit chain BROKEN at seq {third}" in broken.output


def test_list_filters_and_shows_fields_never_values(filled: Settings, db: list[str]):
    out = run("audit", "list", "--actor", "carol", *db)
    assert out.exit_code == 0, out.output
    header, line = out.output.strip().splitlines()
    assert header.split() == ["SEQ", "AT", "ACTOR", "ACTION", "RECORD", "FIELDS"]
    assert "carol" in line and "update" in line and "recipient" in line and "name" in line
    every = run("audit", "list", "--json", "--oldest-first", *db)
    entries = [orjson.loads(x) for x in every.output.splitlines()]
    assert [e["seq"] for e in entries] == sorted(e["seq"] for e in entries) and len(entries) == 7
    assert entries[0]["fields"] == sorted(person(0))
    for secret in SECRETS:
        assert secret not in every.output
    assert run("audit", "list", "--from", "2000-01-01", "--to", "2000-02-01", *db).output == ""
    bad = run("audit", "list", "--from", "last tuesday", *db)
    assert bad.exit_code == 2 and "--from" in bad.output


def test_data_key_init_status_and_rotate(filled: Settings, db: list[str], tmp_path: Path):
    path = filled.data_key_path
    first = run("data-key", "init", "--data-dir", filled.data_dir)
    assert first.exit_code == 0 and "already exists" in first.output
    old = orjson.loads(path.read_bytes())["current"]
    status = run("data-key", "status", *db)
    assert status.exit_code == 0, status.output
    assert f"current key: {old}" in status.output
    assert f"recipient.identity: {old}: 6" in status.output
    key_text = orjson.loads(path.read_bytes())["keys"][old]
    rotated = run("data-key", "rotate", "--grace-seconds", "0", "--batch-size", "4", *db)
    assert rotated.exit_code == 0, rotated.output
    assert "recipient: 4/6 rows re-encrypted" in rotated.output
    assert "6 rows re-encrypted" in rotated.output and "removed keys" in rotated.output
    new = orjson.loads(path.read_bytes())["current"]
    assert new != old and f"new current key: {new}" in rotated.output
    after = run("data-key", "status", *db)
    assert f"recipient.phone: {new}: 6" in after.output
    for output in (first.output, status.output, rotated.output, after.output):
        assert key_text not in output  # no command prints a key
    assert run("audit", "verify", *db).exit_code == 0
    fresh = tmp_path / "elsewhere"
    made = run("data-key", "init", "--data-dir", fresh)
    assert made.exit_code == 0 and "created" in made.output
    assert (fresh / "data-keys.json").stat().st_mode & 0o777 == 0o600
