"""Data key rotation on SQLite and PostgreSQL: everything re-encrypted, reads working all along
(also in another process that still holds the old keys), old keys retired, plaintext from
before encryption encrypted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from open_registry.core import crypto
from open_registry.core.app import open_registry
from open_registry.core.audit.chain import verify
from open_registry.core.crypto import DataKeyError, DataKeys, DecryptError, read_key_file
from open_registry.core.errors import Conflict
from open_registry.core.rekey import PLAINTEXT, key_usage, rotate
from tests.registry.test_privacy import assert_no_plaintext, person, raw_database_text


def stored_key_ids(
    registry: Any,
    table: str = "recipient",
    cols: tuple[str, ...] | list[str] = ("identity", "phone", "email"),
) -> set[str]:
    with registry.db.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT {', '.join(cols)} FROM {table}")).all()
    return {crypto.key_id_of(v) or "?" for row in rows for v in row if v is not None}


def test_rotation_reencrypts_everything_and_reads_work_throughout(
    registry: Any, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(crypto, "RELOAD_SECONDS", 0.0)
    svc = registry.services["recipient"]
    records = {r["id"]: r for r in (svc.create(person(n), actor="t") for n in range(25))}
    svc.delete(next(iter(records)), actor="t")  # deleted rows are re-encrypted too
    old = registry.db.keyring().current
    other = open_registry(registry.settings)  # another process, holding the old keys
    seen: list[tuple[str, int, int]] = []

    def progress(entity: str, done: int, total: int) -> None:
        seen.append((entity, done, total))
        for rid, rec in records.items():  # between batches: old and new keys side by side
            if rid != next(iter(records)):
                assert other.services["recipient"].get(rid)["identity"] == rec["identity"]

    try:
        report = rotate(registry.services, batch_size=7, grace_seconds=0, progress=progress)
        assert report.new_key and report.new_key != old
        assert report.rewritten == {"recipient": 25, "vaccinator": 0}
        assert report.retired == [old] and report.still_used == {}
        assert [s[1] for s in seen if s[0] == "recipient"] == [0, 7, 14, 21, 25]
        assert stored_key_ids(registry) == {report.new_key}
        assert set(read_key_file(registry.settings.data_key_path).keys) == {report.new_key}
        for rid, rec in records.items():
            if rid == next(iter(records)):
                continue
            assert svc.get(rid)["phone"] == rec["phone"]
            assert other.services["recipient"].get(rid)["email"] == rec["email"]
        # the other process writes with the new key once it has seen the file
        new = other.services["recipient"].create(person(99), actor="t")
        assert crypto.key_id_of(_stored(registry, new["id"])) == report.new_key
    finally:
        other.close()
    found = svc.search(svc.parser.from_params([("identity", person(3)["identity"])])).items
    assert [r["name"] for r in found] == [person(3)["name"]]  # the index key did not change
    assert_no_plaintext(raw_database_text(registry))
    assert verify(registry.db.engine).ok
    with registry.db.engine.connect() as conn:
        actions = conn.execute(sa.text("SELECT action FROM registry_audit")).scalars().all()
    assert actions.count("data-key.rotate") == 1


def _stored(registry: Any, rid: str) -> str:
    with registry.db.engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT identity FROM recipient WHERE id = :id"), {"id": rid}
        ).scalar_one()


def test_keep_old_keeps_the_old_key(registry: Any):
    registry.services["recipient"].create(person(), actor="t")
    old = registry.db.keyring().current
    report = rotate(registry.services, keep_old=True, grace_seconds=0)
    assert report.retired == [] and report.rewritten["recipient"] == 1
    assert set(read_key_file(registry.settings.data_key_path).keys) == {old, report.new_key}
    usage = key_usage(registry.services)["recipient"]["identity"]
    assert usage == {report.new_key: 1}


def test_plaintext_from_before_encryption_is_encrypted_by_a_pass_without_new_key(
    registry: Any,
):
    svc = registry.services["recipient"]
    rid = svc.create(person(), actor="t")["id"]
    with registry.db.engine.begin() as conn:  # as a migrated database holds it
        conn.execute(
            sa.text(
                "UPDATE recipient SET identity = :i, phone = :p, _bi_identity = NULL WHERE id = :id"
            ),
            {"i": "did:legacy:123", "p": "+91 11111 22222", "id": rid},
        )
    with pytest.raises(DecryptError, match="is not encrypted"):
        svc.get(rid)
    assert key_usage(registry.services)["recipient"]["identity"] == {PLAINTEXT: 1}
    current = registry.db.keyring().current
    report = rotate(registry.services, new_key=False, grace_seconds=0)
    assert report.new_key is None and report.rewritten["recipient"] == 1
    assert registry.db.keyring().current == current
    back = svc.get(rid)
    assert (back["identity"], back["phone"]) == ("did:legacy:123", "+91 11111 22222")
    found = svc.search(svc.parser.from_params([("identity", "did:legacy:123")])).items
    assert [r["id"] for r in found] == [rid]


def test_keys_from_the_environment_cannot_be_rotated_in_place(settings: Any):
    keys = DataKeys.generate()
    reg = open_registry(settings.with_(data_keys=keys.to_json().decode()))
    try:
        reg.services["recipient"].create(person(), actor="t")
        with pytest.raises(DataKeyError, match="REGISTRY_DATA_KEYS"):
            rotate(reg.services, grace_seconds=0)
        assert rotate(reg.services, new_key=False, grace_seconds=0).rewritten["recipient"] == 0
    finally:
        reg.close()


def test_a_changed_index_key_is_refused(registry: Any, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(crypto, "RELOAD_SECONDS", 0.0)
    keyring = registry.db.keyring()
    changed = DataKeys(keyring.current, dict(keyring.keys.keys), DataKeys.generate().index_key)
    crypto.write_key_file(registry.settings.data_key_path, changed, replace=True)
    with pytest.raises(DataKeyError, match="index key"):
        registry.services["recipient"].create(person(), actor="t")


def test_an_existing_database_is_migrated_then_encrypted(settings: Any, tmp_path: Path):
    """A database written before `private`: migrate (the columns become text, the unique key
    moves to the blind index), then `rotate --no-new-key` encrypts what is stored."""
    from open_registry.core import migrations
    from open_registry.core.errors import StartupError

    folder = tmp_path / "schemas"
    folder.mkdir()
    doc = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "identity": {"type": "string", "maxLength": 40},
            "name": {"type": "string", "maxLength": 40},
        },
        "required": ["identity", "name"],
        "x-registry": {"unique": ["identity"]},
    }
    (folder / "person.json").write_text(json.dumps(doc))
    plain = settings.with_(schema_dirs=(folder,), default_schemas=False)
    reg = open_registry(plain)
    try:
        rid = reg.services["person"].create({"identity": "NID-1", "name": "Asha"}, actor="t")["id"]
    finally:
        reg.close()
    doc["x-registry"]["private"] = ["identity"]
    (folder / "person.json").write_text(json.dumps(doc))
    with pytest.raises(StartupError, match="registry migrate"):
        open_registry(plain)
    reg = open_registry(plain, create_tables=False)
    try:
        plan = migrations.plan(reg.db, reg.schemas, plain.migrations_path)
        changes = {(c.action, c.detail) for c in plan.changes}
        assert ("add unique key", "(_bi_identity)") in changes
        assert ("add column", "_bi_identity (VARCHAR(64))") in changes
        migrations.write_revision(reg.db, plain.migrations_path, "private identity")
        migrations.apply_pending(reg.db, plain.migrations_path)
    finally:
        reg.close()
    reg = open_registry(plain)
    try:
        svc = reg.services["person"]
        with pytest.raises(DecryptError, match="rotate --no-new-key"):
            svc.get(rid)
        assert rotate(reg.services, new_key=False, grace_seconds=0).rewritten == {"person": 1}
        assert svc.get(rid)["identity"] == "NID-1"
        assert [
            r["id"] for r in svc.search(svc.parser.from_params([("identity", "NID-1")])).items
        ] == [rid]
        with pytest.raises(Conflict):
            svc.create({"identity": "NID-1", "name": "Other"}, actor="t")
        assert stored_key_ids(reg, "person", ["identity"]) == {reg.db.keyring().current}
    finally:
        reg.close()
