"""The hash-chained audit log on SQLite and PostgreSQL: intact after every kind of write (also
from parallel writers), and every kind of tampering found with the first broken seq named; the
`GET /api/v1/audit` listing."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from open_registry.core.audit.chain import verify
from open_registry.core.exports import export
from open_registry.core.imports.importer import import_file
from tests.registry.test_api import assert_problem, demo_record
from tests.registry.test_privacy import person

CONTENT = ("at", "actor", "action", "entity", "record_id", "version", "fields", "prev_hash", "hash")


def seqs(registry: Any) -> list[int]:
    with registry.db.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT seq FROM registry_audit ORDER BY seq")).scalars())


def many_writes(registry: Any, tmp_path: Path) -> None:
    """Every path that writes audit entries: create, create_many, update, delete, purge,
    both import paths and an export."""
    svc = registry.services["recipient"]
    made = [svc.create(person(n), actor=f"user{n % 3}") for n in range(1, 8)]
    svc.create_many([(None, person(n)) for n in range(20, 26)], actor="batch")
    for rec in made[:4]:
        svc.update(rec["id"], {"name": "Changed"}, actor="editor", patch=True)
    svc.delete(made[4]["id"], actor="admin")
    svc.delete(made[5]["id"], actor="admin", purge=True)
    csv_path = tmp_path / "more.csv"
    rows = ["identity,name,dob,gender"] + [
        f"did:example:imp:{n},Imported {n},1990-01-01,Male" for n in range(30)
    ]
    csv_path.write_text("\n".join(rows) + "\n")
    assert import_file(svc, csv_path, chunk_size=7).inserted == 30
    rows[1] = "did:example:imp:0,Renamed,1990-01-01,Male"
    csv_path.write_text("\n".join(rows) + "\n")
    again = import_file(svc, csv_path, upsert_on="identity", chunk_size=9)
    assert again.updated == 1
    export(svc, io.StringIO(), "jsonl", actor="auditor")


def test_the_chain_is_intact_after_every_kind_of_write(registry: Any, tmp_path: Path):
    many_writes(registry, tmp_path)
    verdict = verify(registry.db.engine, batch=16)  # several batches
    assert verdict.ok, verdict
    assert verdict.entries == len(seqs(registry)) == 7 + 6 + 4 + 2 + 30 + 1 + 1
    with registry.db.engine.connect() as conn:
        heads = conn.execute(sa.text("SELECT entries, hash FROM registry_audit_head")).all()
        last = conn.execute(sa.text("SELECT hash FROM registry_audit ORDER BY seq DESC")).first()
        actions = set(conn.execute(sa.text("SELECT action FROM registry_audit")).scalars())
    # one writer at a time: one chain holds every entry (PostgreSQL has other, empty, chains)
    (head,) = [tuple(h) for h in heads if h[0]]
    assert head == (verdict.entries, last[0]) and verdict.head_hash == last[0]
    assert actions == {"create", "update", "delete", "purge", "export"}


def _update(registry: Any, seq: int, **values: Any) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in values)
    with registry.db.engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE registry_audit SET {sets} WHERE seq = :seq"), {**values, "seq": seq}
        )


@pytest.mark.parametrize(
    "change",
    [{"actor": "someone-else"}, {"action": "update"}, {"record_id": "x"}, {"version": 9}],
)
def test_an_edited_entry_is_named(registry: Any, tmp_path: Path, change: dict[str, Any]):
    many_writes(registry, tmp_path)
    target = seqs(registry)[10]
    _update(registry, target, **change)
    verdict = verify(registry.db.engine)
    assert not verdict.ok and verdict.broken_seq == target
    assert "edited" in verdict.reason


def test_edited_fields_and_time_are_found(registry: Any, tmp_path: Path):
    many_writes(registry, tmp_path)
    first, second = seqs(registry)[3], seqs(registry)[12]
    with registry.db.engine.begin() as conn:
        table = registry.db.metadata.tables["registry_audit"]
        conn.execute(table.update().where(table.c.seq == second).values(fields=["name", "dob"]))
    assert verify(registry.db.engine).broken_seq == second
    with registry.db.engine.begin() as conn:
        at = conn.execute(sa.select(table.c.at).where(table.c.seq == first)).scalar_one()
        conn.execute(
            table.update().where(table.c.seq == first).values(at=at.replace(microsecond=1))
        )
    assert verify(registry.db.engine).broken_seq == first  # the first broken one is named


def test_an_entry_edited_with_its_hash_recomputed_breaks_the_next_link(
    registry: Any, tmp_path: Path
):
    from open_registry.core.audit.chain import at_text, entry_hash, fields_json

    many_writes(registry, tmp_path)
    all_seqs = seqs(registry)
    target = all_seqs[5]
    table = registry.db.metadata.tables["registry_audit"]
    with registry.db.engine.begin() as conn:
        row = conn.execute(sa.select(table).where(table.c.seq == target)).mappings().one()
        forged = entry_hash(
            row["prev_hash"],
            at_text(row["at"]),
            "forger",
            row["action"],
            row["entity"],
            row["record_id"],
            row["version"],
            fields_json(row["fields"]),
        )
        conn.execute(
            table.update().where(table.c.seq == target).values(actor="forger", hash=forged)
        )
    verdict = verify(registry.db.engine)
    assert verdict.broken_seq == all_seqs[6] and "deleted" in verdict.reason


def test_a_deleted_entry_is_found_at_the_entry_after_it(registry: Any, tmp_path: Path):
    many_writes(registry, tmp_path)
    all_seqs = seqs(registry)
    with registry.db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM registry_audit WHERE seq = :s"), {"s": all_seqs[20]})
    verdict = verify(registry.db.engine)
    assert verdict.broken_seq == all_seqs[21]
    assert f"seq {all_seqs[19]}" in verdict.reason


def test_swapped_entries_are_found(registry: Any, tmp_path: Path):
    many_writes(registry, tmp_path)
    all_seqs = seqs(registry)
    a, b = all_seqs[8], all_seqs[9]
    table = registry.db.metadata.tables["registry_audit"]
    with registry.db.engine.begin() as conn:
        rows = {
            r["seq"]: {c: r[c] for c in CONTENT}
            for r in conn.execute(sa.select(table).where(table.c.seq.in_([a, b]))).mappings()
        }
        conn.execute(table.update().where(table.c.seq == a).values(**rows[b]))
        conn.execute(table.update().where(table.c.seq == b).values(**rows[a]))
    verdict = verify(registry.db.engine)
    assert verdict.broken_seq == a and "reordered" in verdict.reason


def test_entries_cut_off_the_end_are_found(registry: Any, tmp_path: Path):
    many_writes(registry, tmp_path)
    all_seqs = seqs(registry)
    with registry.db.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM registry_audit WHERE seq >= :s"), {"s": all_seqs[-3]})
    verdict = verify(registry.db.engine)
    assert verdict.broken_seq == all_seqs[-4] + 1
    assert f"after seq {all_seqs[-4]}" in verdict.reason


def test_entries_from_before_the_chain_are_counted_not_failed(registry: Any):
    table = registry.db.metadata.tables["registry_audit"]
    from open_registry.core.codec import utcnow

    with registry.db.engine.begin() as conn:
        conn.execute(table.insert().values(at=utcnow(), action="create", entity="vaccine"))
    registry.services["vaccine"].create(demo_record("vaccine"), actor="t")
    verdict = verify(registry.db.engine)
    assert verdict.ok and (verdict.unchained, verdict.entries) == (1, 1)


def test_parallel_writers_never_fork_the_chain(registry: Any):
    """Eight threads, each its own connection, writing to several entities at once."""
    names = ["vaccine", "recipient"]

    def write(i: int) -> int:
        entity = names[i % len(names)]
        svc = registry.services[entity]
        done = 0
        for j in range(12):
            if entity == "recipient":
                body = person(i * 100 + j + 1)
            else:
                body = demo_record(entity)
                body.update(code=f"{body['code']}-{i}-{j}", name=f"{body['name']} {i}-{j}")
            rec = svc.create(body, actor=f"w{i}")
            svc.update(rec["id"], {"name": f"Renamed {i}-{j}"}, actor=f"w{i}", patch=True)
            svc.delete(rec["id"], actor=f"w{i}")
            done += 3
        return done

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    verdict = verify(registry.db.engine)
    assert verdict.ok, verdict
    assert verdict.entries == len(seqs(registry)) == 8 * 12 * 3
    with registry.db.engine.connect() as conn:
        forks = conn.execute(
            sa.text("SELECT prev_hash FROM registry_audit GROUP BY prev_hash HAVING count(*) > 1")
        ).all()
        chains = conn.execute(sa.text("SELECT count(*) FROM registry_audit_head")).scalar_one()
        starts = conn.execute(
            sa.text("SELECT count(*) FROM registry_audit WHERE prev_hash = :g"), {"g": "0" * 64}
        ).scalar_one()
    # no entry follows another twice; only chains start at the genesis value, one each
    assert [f for f in forks if f[0] != "0" * 64] == []
    assert 1 <= starts <= chains


# -- GET /api/v1/audit ---------------------------------------------------------------------------
def test_the_audit_api_filters_and_pages(client: TestClient, registry: Any):
    svc = registry.services["recipient"]
    recs = [svc.create(person(n), actor="alice" if n % 2 else "bob") for n in range(1, 7)]
    svc.update(recs[0]["id"], {"name": "New"}, actor="carol", patch=True)
    registry.services["vaccine"].create(demo_record("vaccine"), actor="bob")

    everything = client.get("/api/v1/audit").json()
    assert [e["seq"] for e in everything["items"]] == sorted(seqs(registry), reverse=True)
    assert everything["next"] is None
    first = everything["items"][-1]
    assert first["action"] == "create" and first["entity"] == "recipient"
    assert set(first) == {
        "seq", "at", "actor", "action", "entity", "recordId", "version", "fields", "hash"
    }  # fmt: skip
    assert "identity" in first["fields"] and person(1)["identity"] not in str(everything)

    def items(**params: Any) -> list[dict[str, Any]]:
        resp = client.get("/api/v1/audit", params=params)
        assert resp.status_code == 200, resp.text
        return resp.json()["items"]

    assert {e["entity"] for e in items(entity="vaccine")} == {"vaccine"}
    assert [e["action"] for e in items(recordId=recs[0]["id"])] == ["update", "create"]
    assert {e["actor"] for e in items(actor="bob")} == {"bob"} and len(items(actor="bob")) == 4
    assert [e["actor"] for e in items(action="update")] == ["carol"]
    assert items(**{"from": "2000-01-01", "to": "2001-01-01"}) == []
    assert len(items(**{"from": first["at"]})) == 8
    assert items(to=first["at"]) == []

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, "sort": "seq", **({"cursor": cursor} if cursor else {})}
        resp = client.get("/api/v1/audit", params=params)
        body = resp.json()
        seen += [e["seq"] for e in body["items"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
        assert 'rel="next"' in resp.headers["link"]
    assert seen == sorted(seqs(registry)) and pages == 3


@pytest.mark.parametrize(
    ("params", "pointer"),
    [
        ({"limit": "0"}, "/limit"),
        ({"limit": "lots"}, "/limit"),
        ({"from": "yesterday"}, "/from"),
        ({"to": "2026-13-01"}, "/to"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "/to"),
        ({"sort": "at"}, "/sort"),
        ({"cursor": "!!"}, "/cursor"),
        ({"recordid": "x"}, "/recordid"),
    ],
)
def test_bad_audit_queries_are_problems_naming_the_parameter(
    client: TestClient, params: dict[str, str], pointer: str
):
    body = assert_problem(client.get("/api/v1/audit", params=params), 400)
    assert body["errors"][0]["pointer"] == pointer


def test_a_cursor_of_the_other_order_is_refused(client: TestClient, registry: Any):
    for n in range(1, 4):
        registry.services["recipient"].create(person(n), actor="t")
    cursor = client.get("/api/v1/audit", params={"limit": 1}).json()["next"]
    resp = client.get("/api/v1/audit", params={"cursor": cursor, "sort": "seq"})
    assert assert_problem(resp, 400)["errors"][0]["pointer"] == "/cursor"


def test_schema_changes_and_exports_are_audit_entries(registry: Any):
    from open_registry.core.audit.chain import AuditQuery, list_entries
    from open_registry.core.schemas.editor import SchemaEditor

    editor = SchemaEditor(registry)
    doc = editor.document("vaccine")
    doc["properties"]["storage"] = {"type": "string", "title": "Storage", "maxLength": 40}
    editor.apply("vaccine", doc, editor.base("vaccine"), actor="asha")
    svc = registry.services["recipient"]
    svc.create(person(1), actor="t")
    export(svc, io.StringIO(), "csv", ["identity=" + person(1)["identity"]], actor="auditor")
    entries, _ = list_entries(registry.db.engine, AuditQuery(ascending=True))
    change, _, exported = entries
    assert (change["action"], change["entity"], change["actor"]) == (
        "schema.change",
        "vaccine",
        "asha",
    )
    assert change["fields"]["version"] >= 1
    assert (exported["action"], exported["actor"]) == ("export", "auditor")
    assert exported["fields"] == {"format": "csv", "filters": ["identity"], "count": 1}
    assert person(1)["identity"] not in str(entries)  # the filter's value is not kept
    assert verify(registry.db.engine).ok
