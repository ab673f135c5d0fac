"""`registry backup` and `registry restore`, on SQLite (online backup API) and PostgreSQL
(pg_dump/pg_restore): a restored copy serves the same records, its audit chain verifies and it
keeps issuing certificates; a copy taken while writers write is consistent; a database that
holds tables is not overwritten without --force; the keys are never in a backup."""

from __future__ import annotations

import base64
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from open_registry.core import Settings, open_registry
from open_registry.core.app import Registry
from open_registry.core.audit.chain import verify
from open_registry.core.demo import load_demo_data
from open_registry.core.outbox.worker import Worker
from open_registry.core.query import Search
from tests.cli.test_audit_cli import run
from tests.conftest import _throwaway_pg_database
from tests.registry.test_privacy import person

runner = CliRunner()
HAS_PG_TOOLS = bool(shutil.which("pg_dump") and shutil.which("pg_restore"))


def options(settings: Settings) -> list[str]:
    return ["--database-url", settings.sqlalchemy_url, "--data-dir", str(settings.data_dir)]


@pytest.fixture
def backend(settings: Settings) -> str:
    name = sa.engine.make_url(settings.sqlalchemy_url).get_backend_name()
    if name == "postgresql" and not HAS_PG_TOOLS:
        pytest.skip("pg_dump/pg_restore are not on PATH")
    return name


@pytest.fixture
def elsewhere(backend: str, tmp_path: Path) -> Iterator[Settings]:
    """An empty database of the same kind, and a data folder of its own (nothing in it)."""
    data_dir = tmp_path / "restored"
    if backend == "sqlite":
        url = f"sqlite:///{data_dir / 'registry.db'}"
        yield Settings(
            database_url=url, data_dir=data_dir, load_entrypoints=False, inline_worker=False
        )
        return
    with _throwaway_pg_database() as url:
        yield Settings(
            database_url=url, data_dir=data_dir, load_entrypoints=False, inline_worker=False
        )


def copy_outside_files(source: Settings, target: Settings) -> None:
    """What docs/operations.md says to back up besides the database, put in place."""
    target.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copy2(source.data_key_path, target.data_key_path)
    if source.auth_secret_path.exists():
        shutil.copy2(source.auth_secret_path, target.auth_secret_path)
    shutil.copytree(source.data_dir / "keys", target.data_dir / "keys")
    shutil.copytree(source.migrations_path, target.migrations_path)


def everything(reg: Registry, entity: str) -> list[dict[str, Any]]:
    items = reg.services[entity].search(Search(limit=1000)).items
    return sorted(items, key=lambda r: r["id"])


def first(reg: Registry, entity: str, n: int = 0) -> dict[str, Any]:
    return everything(reg, entity)[n]


def vaccinate(reg: Registry, recipient: int) -> dict[str, Any]:
    body = {
        "recipient": first(reg, "recipient", recipient)["id"],
        "program": first(reg, "program")["code"],
        "vaccine": first(reg, "vaccine")["code"],
        "vaccinator": first(reg, "vaccinator")["code"],
        "facility": first(reg, "facility")["code"],
        "dose": 1,
        "totalDoses": 2,
        "batch": "4121Z005",
        "date": "2026-03-01T10:30:00+05:30",
    }
    return reg.services["vaccination"].create(body, actor="nurse")


def certificates_of(reg: Registry, vaccination_id: str) -> list[dict[str, Any]]:
    return [c for c in everything(reg, "certificate") if c["vaccination"] == vaccination_id]


def issue(reg: Registry) -> None:
    while Worker(reg).run_once(limit=10**6):
        pass


def test_a_restored_copy_serves_the_same_records_verifies_and_keeps_issuing(
    settings: Settings, backend: str, elsewhere: Settings, tmp_path: Path
):
    reg = open_registry(settings)
    try:
        load_demo_data(reg.services)
        issue(reg)
        vac = vaccinate(reg, 0)
        issue(reg)
        [cert] = certificates_of(reg, vac["id"])
        before = {e: everything(reg, e) for e in ("recipient", "vaccination", "certificate")}
        chain_before = verify(reg.db.engine)
    finally:
        reg.close()
    assert chain_before.ok and before["recipient"][0]["phone"]  # a private field, decrypted

    file = tmp_path / ("backup.db" if backend == "sqlite" else "backup.dump")
    made = run("backup", file, *options(settings))
    assert made.exit_code == 0, made.output
    assert f"written to {file}" in made.output and "Not in the backup" in made.output
    assert str(settings.data_key_path) in made.output
    assert file.stat().st_mode & 0o777 == 0o600

    restored = run("restore", file, *options(elsewhere))
    assert restored.exit_code == 0, restored.output
    assert (
        f"audit chain intact: {chain_before.entries} entries, last hash {chain_before.head_hash}"
        in restored.output
    )
    assert "data keys: " in restored.output and "(MISSING here)" in restored.output

    copy_outside_files(settings, elsewhere)
    reg = open_registry(elsewhere)
    try:
        for entity, records in before.items():
            assert everything(reg, entity) == records, entity
        assert verify(reg.db.engine) == chain_before
        again = vaccinate(reg, 1)  # the restored copy goes on working
        issue(reg)
        [new_cert] = certificates_of(reg, again["id"])
        assert new_cert["status"] == "active"
        old_proof, new_proof = cert["credential"]["proof"], new_cert["credential"]["proof"]
        assert new_proof["verificationMethod"] == old_proof["verificationMethod"]  # same key
        after = verify(reg.db.engine)
        assert after.ok and after.entries > chain_before.entries
    finally:
        reg.close()


def test_a_backup_taken_while_writers_write_is_one_consistent_moment(
    settings: Settings, backend: str, elsewhere: Settings, tmp_path: Path
):
    reg = open_registry(settings)
    svc = reg.services["recipient"]
    stop = threading.Event()
    failures: list[BaseException] = []
    written = [0, 0]

    def writer(i: int) -> None:
        try:
            for j in range(1, 2000):
                if stop.is_set():
                    return
                svc.create(person(10_000 * (i + 1) + j), actor=f"writer{i}")
                written[i] += 1
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    file = tmp_path / "during.backup"
    try:
        for t in threads:
            t.start()
        while sum(written) < 5 and not failures:
            stop.wait(0.01)
        made = run("backup", file, *options(settings))
        at_backup_end = sum(written)
        while sum(written) < at_backup_end + 3 and not failures:  # writes went on after it
            stop.wait(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        reg.close()
    assert not failures, failures
    assert made.exit_code == 0, made.output
    restored = run("restore", file, *options(elsewhere))
    assert restored.exit_code == 0, restored.output
    assert "audit chain intact" in restored.output
    engine = sa.create_engine(elsewhere.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            recipients = conn.execute(sa.text("SELECT count(*) FROM recipient")).scalar_one()
            entries = conn.execute(
                sa.text("SELECT count(*) FROM registry_audit WHERE entity = 'recipient'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert 5 <= recipients < sum(written) and entries == recipients  # one entry per create


def test_restore_refuses_a_database_that_holds_tables_unless_forced(
    settings: Settings, backend: str, tmp_path: Path
):
    reg = open_registry(settings)
    try:
        reg.services["recipient"].create(person(1), actor="t")
    finally:
        reg.close()
    file = tmp_path / "one.backup"
    assert run("backup", file, *options(settings)).exit_code == 0
    again = run("backup", file, *options(settings))
    assert again.exit_code == 1 and "pass --force to overwrite" in again.output
    assert run("backup", file, "--force", *options(settings)).exit_code == 0

    reg = open_registry(settings)
    try:
        reg.services["recipient"].create(person(2), actor="t")  # after the backup
    finally:
        reg.close()
    refused = run("restore", file, *options(settings))
    assert refused.exit_code == 1
    assert "is not empty" in refused.output and "--force" in refused.output
    forced = run("restore", file, "--force", *options(settings))
    assert forced.exit_code == 0, forced.output
    assert "audit chain intact: 1 entries" in forced.output
    reg = open_registry(settings)
    try:
        assert [r["name"] for r in everything(reg, "recipient")] == [person(1)["name"]]
    finally:
        reg.close()


def test_restore_refuses_what_is_not_a_backup_of_this_kind(
    settings: Settings, backend: str, tmp_path: Path
):
    text = tmp_path / "notes.txt"
    text.write_text("not a backup\n")
    out = run("restore", text, *options(settings))
    assert out.exit_code == 1 and "neither a SQLite database nor a pg_dump" in out.output
    other = tmp_path / "other.backup"
    other.write_bytes(b"PGDMP" if backend == "sqlite" else b"SQLite format 3\x00")
    out = run("restore", other, *options(settings))
    assert out.exit_code == 1 and f"the database {settings.sqlalchemy_url}"[:20] in out.output
    assert f"is {backend}" in out.output


@pytest.mark.postgres
def test_a_missing_pg_dump_is_a_clear_error(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import open_registry.cli.backup as backup

    monkeypatch.setattr(backup.shutil, "which", lambda name: None)
    out = run(
        "backup",
        tmp_path / "x.dump",
        "--database-url",
        pg_database,
        "--data-dir",
        tmp_path / "data",
    )
    assert out.exit_code == 1
    assert "pg_dump is not on PATH" in out.output and "postgresql-client" in out.output
    assert not (tmp_path / "x.dump").exists()


def backup_text(file: Path, backend: str) -> bytes:
    """Every byte a backup holds, uncompressed (a pg_dump archive is compressed: its SQL)."""
    if backend == "sqlite":
        return file.read_bytes()
    done = subprocess.run(
        [shutil.which("pg_restore") or "pg_restore", "--file=-", str(file)],
        capture_output=True,
        check=True,
    )
    return done.stdout


def test_no_key_is_in_a_backup_nor_in_what_the_commands_print(
    settings: Settings, backend: str, elsewhere: Settings, tmp_path: Path
):
    reg = open_registry(settings)
    try:
        load_demo_data(reg.services)
        vaccinate(reg, 0)
        issue(reg)  # the first certificate makes the signing key
    finally:
        reg.close()
    keyfile = orjson.loads(settings.data_key_path.read_bytes())
    texts = [*keyfile["keys"].values(), keyfile["index_key"]]
    raw = [base64.b64decode(t) for t in texts]  # the data keys' 32 bytes
    signing = [p.read_text().strip() for p in (settings.data_dir / "keys").glob("*.key")]
    assert len(texts) >= 2 and signing
    texts += signing
    file = tmp_path / "k.backup"
    made = run("backup", file, *options(settings))
    restored = run("restore", file, *options(elsewhere))
    assert made.exit_code == restored.exit_code == 0
    content = backup_text(file, backend)
    assert b"registry_audit" in content  # what is searched is the backup's content
    for text in texts:
        assert text.encode() not in content
        assert text not in made.output and text not in restored.output
    for key in raw:
        assert key not in content and key.hex().encode() not in content
