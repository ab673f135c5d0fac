"""Private fields encrypted at rest, on SQLite and PostgreSQL: no plaintext in the database
files or tables, blind-index search and unique keys, clear errors for tampered data or wrong
keys, and no private value in errors, audit rows or events."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from open_registry.core.crypto import DataKeys, DecryptError, write_key_file
from open_registry.core.exports import export
from open_registry.core.imports.api import add_import_routes
from open_registry.core.imports.importer import import_file
from tests.authn import admin_client
from tests.registry.test_api import assert_problem

IDENTITY = "did:example:national-id:48213377"
PHONE = "+91 98765 43210"
EMAIL = "megha.private@mail.example"
SECRETS = (IDENTITY, "48213377", "98765 43210", EMAIL)


def person(n: int = 0, **extra: Any) -> dict[str, Any]:
    body = {
        "identity": IDENTITY if n == 0 else f"did:example:national-id:7700{n:04d}",
        "name": f"Megha {n}",
        "dob": "1975-06-22",
        "gender": "Female",
        "phone": PHONE if n == 0 else f"+91 90000 {n:05d}",
        "email": EMAIL if n == 0 else f"p{n}@mail.example",
    }
    body.update(extra)
    return body


def raw_database_text(registry: Any) -> bytes:
    """Every byte the database holds: the SQLite files (WAL too), or PostgreSQL's rows as text."""
    engine = registry.db.engine
    if registry.db.dialect == "sqlite":
        path = Path(engine.url.database)
        with engine.connect() as conn:  # nothing left only in the WAL either
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        files = sorted(path.parent.glob(path.name + "*"))
        assert files
        return b"".join(f.read_bytes() for f in files)
    out = []
    with engine.connect() as conn:
        for table in ("recipient", "registry_audit", "registry_outbox"):
            rows = conn.execute(sa.text(f"SELECT t::text FROM {table} t")).scalars().all()
            out.extend(r.encode() for r in rows)
    return b"\n".join(out)


def assert_no_plaintext(blob: bytes) -> None:
    for secret in SECRETS:
        assert secret.encode() not in blob, f"{secret!r} found in the database"


def test_private_values_are_not_stored_in_plaintext(client: TestClient, registry: Any):
    created = client.post("/api/v1/recipient", json=person())
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    for n in range(1, 30):
        assert client.post("/api/v1/recipient", json=person(n)).status_code == 201
    patched = client.patch(f"/api/v1/recipient/{rid}", json={"phone": PHONE, "name": "Megha D"})
    assert patched.status_code == 200
    blob = raw_database_text(registry)
    assert b"Megha D" in blob  # the check can see what is stored in plaintext
    assert_no_plaintext(blob)
    back = client.get(f"/api/v1/recipient/{rid}").json()
    assert (back["identity"], back["phone"], back["email"]) == (IDENTITY, PHONE, EMAIL)
    with registry.db.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT identity, phone FROM recipient")).all()
    assert all(v.startswith("enc1:") for row in stored for v in row)
    assert len({row[0] for row in stored}) == 30  # a fresh nonce each time


def test_the_same_value_never_encrypts_the_same_twice(registry: Any):
    svc = registry.services["recipient"]
    a = svc.create(person(1, email=EMAIL), actor="t")
    b = svc.create(person(2, email=EMAIL), actor="t")
    with registry.db.engine.connect() as conn:
        emails = conn.execute(
            sa.text("SELECT email FROM recipient WHERE id IN (:a, :b)"),
            {"a": a["id"], "b": b["id"]},
        ).scalars()
        assert len(set(emails)) == 2


def test_values_sealed_together_are_sealed_as_one_by_one() -> None:
    """`FieldCipher.seal_many` (the import's): each value opens as `seal`'s do, for its own
    field and record only; every nonce differs, the same value twice included."""
    from open_registry.core.crypto import FieldCipher, Keyring

    cipher = FieldCipher(Keyring(DataKeys.generate()), "recipient")
    items = [("email", f"r{i}", EMAIL) for i in range(50)] + [("phone", "r0", "+99 1")]
    sealed = cipher.seal_many(items)
    assert cipher.seal_many([]) == []
    assert [cipher.open(n, r, s) for (n, r, _), s in zip(items, sealed, strict=True)] == [
        v for _, _, v in items
    ]
    assert sealed[0].rsplit(":", 1)[0] == cipher.seal("email", "r0", EMAIL).rsplit(":", 1)[0]
    assert len(set(sealed)) == len(sealed)  # fresh nonces: no two alike
    with pytest.raises(DecryptError):
        cipher.open("email", "r1", sealed[0])  # bound to its record


@pytest.mark.parametrize("key_bytes", [0, 1, 32, 63, 64, 65, 200])
def test_blind_indexes_are_hmac_sha256_of_the_index_key(key_bytes: int) -> None:
    """Stored blind indexes must stay findable: `FieldCipher.blind` (over `hmac_pads`) is
    HMAC-SHA256 of the index key over `entity NUL field NUL` and the value's sorted JSON,
    whatever the key's length (a key longer than the block is hashed first)."""
    import hashlib
    import hmac

    import orjson

    from open_registry.core.crypto import FieldCipher, Keyring, hmac_pads

    key = bytes((7 * i + 3) % 256 for i in range(key_bytes))
    for prefix, message in ((b"", b""), (b"p\x00", b"x" * 100), (b"a" * 70, b"\xff\x00")):
        inner, outer = (h.copy() for h in hmac_pads(key, prefix))
        inner.update(message)
        outer.update(inner.digest())
        assert outer.hexdigest() == hmac.new(key, prefix + message, hashlib.sha256).hexdigest()
    if key_bytes == 32:  # data keys' index key
        keys = DataKeys.generate()
        cipher = FieldCipher(Keyring(keys), "recipient")
        for value in ("+99 1", {"b": 1, "a": ["é"]}, 5):
            expected = hmac.new(
                keys.index_key,
                b"recipient\x00phone\x00" + orjson.dumps(value, option=orjson.OPT_SORT_KEYS),
                hashlib.sha256,
            ).hexdigest()
            assert cipher.blind("phone", value) == expected


def test_unique_private_field_conflict_is_409_naming_the_field_not_the_value(
    client: TestClient, registry: Any
):
    assert client.post("/api/v1/recipient", json=person()).status_code == 201
    again = client.post("/api/v1/recipient", json=person(5, identity=IDENTITY))
    body = assert_problem(again, 409)
    assert [e["pointer"] for e in body["errors"]] == ["/identity"]
    assert "identity" in body["detail"]
    assert "48213377" not in again.text
    other = client.post("/api/v1/recipient", json=person(6)).json()
    clash = client.put(f"/api/v1/recipient/{other['id']}", json=person(6, identity=IDENTITY))
    assert assert_problem(clash, 409)["errors"][0]["pointer"] == "/identity"
    assert "48213377" not in clash.text
    # a deleted record frees its identity, as for any unique key
    first = client.get("/api/v1/recipient", params={"identity": IDENTITY}).json()["items"][0]
    assert client.delete(f"/api/v1/recipient/{first['id']}").status_code == 204
    assert client.post("/api/v1/recipient", json=person(7, identity=IDENTITY)).status_code == 201


def test_exact_search_by_a_private_field_goes_through_the_blind_index(client: TestClient):
    ids = [client.post("/api/v1/recipient", json=person(n)).json()["id"] for n in range(4)]
    found = client.get("/api/v1/recipient", params={"identity": IDENTITY}).json()["items"]
    assert [r["id"] for r in found] == [ids[0]]
    body = {"filters": {"identity": {"in": [IDENTITY, person(2)["identity"], "did:x:none"]}}}
    found = client.post("/api/v1/recipient/search", json=body).json()["items"]
    assert sorted(r["id"] for r in found) == sorted([ids[0], ids[2]])
    body = {"filters": {"identity": IDENTITY, "name": {"startsWith": "Megha"}}}
    assert [
        r["id"] for r in client.post("/api/v1/recipient/search", json=body).json()["items"]
    ] == [ids[0]]
    assert client.get("/api/v1/recipient", params={"identity": "did:x:none"}).json()["items"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"identity[startsWith]": "did:example"},
        {"identity[contains]": "48213377"},
        {"identity[neq]": IDENTITY},
        {"identity[gt]": "a"},
        {"phone": PHONE},  # private, but not indexed: no blind index to search
        {"sort": "identity"},
    ],
)
def test_other_searches_on_private_fields_are_refused_naming_the_field(
    client: TestClient, params: dict[str, str]
):
    client.post("/api/v1/recipient", json=person())
    resp = client.get("/api/v1/recipient", params=params)
    body = assert_problem(resp, 400)
    field = next(iter(params.values())) if "sort" in params else next(iter(params)).split("[")[0]
    assert field in body["errors"][0]["message"]
    for secret in SECRETS:
        assert secret not in resp.text


def test_post_search_with_an_operator_on_a_private_field_is_400(client: TestClient):
    body = {"filters": {"identity": {"endsWith": "3377"}}}
    resp = client.post("/api/v1/recipient/search", json=body)
    problem = assert_problem(resp, 400)
    assert problem["errors"][0]["pointer"] == "/filters/identity/endsWith"
    assert "3377" not in resp.text


def test_validation_errors_do_not_repeat_private_values(client: TestClient):
    resp = client.post(
        "/api/v1/recipient", json=person(identity="Q7", email="zz-not-a-mail-address")
    )
    body = assert_problem(resp, 422)
    pointers = {e["pointer"] for e in body["errors"]}
    assert {"/identity", "/email"} <= pointers
    assert "Q7" not in resp.text and "zz-not-a-mail-address" not in resp.text
    # non-private fields still say what was wrong with the value
    resp = client.post("/api/v1/recipient", json=person(gender="F"))
    assert "'F'" in resp.text


def test_audit_rows_and_events_hold_field_names_never_private_values(
    client: TestClient, registry: Any
):
    rid = client.post("/api/v1/recipient", json=person()).json()["id"]
    client.patch(f"/api/v1/recipient/{rid}", json={"email": "other@mail.example"})
    client.delete(f"/api/v1/recipient/{rid}")
    with registry.db.engine.connect() as conn:
        audit = conn.execute(sa.text("SELECT * FROM registry_audit")).all()
        events = conn.execute(sa.text("SELECT * FROM registry_outbox")).all()
    text = repr(audit) + repr(events)
    assert "identity" in text and "email" in text  # which fields: yes
    for secret in (*SECRETS, "other@mail.example"):
        assert secret not in text


def test_tampered_ciphertext_is_a_clear_error_not_garbage(client: TestClient, registry: Any):
    rid = client.post("/api/v1/recipient", json=person()).json()["id"]
    with registry.db.engine.begin() as conn:
        stored = conn.execute(
            sa.text("SELECT identity FROM recipient WHERE id = :id"), {"id": rid}
        ).scalar_one()
        flipped = stored[:-6] + ("A" if stored[-6] != "A" else "B") + stored[-5:]
        conn.execute(
            sa.text("UPDATE recipient SET identity = :v WHERE id = :id"), {"v": flipped, "id": rid}
        )
    resp = client.get(f"/api/v1/recipient/{rid}")
    body = assert_problem(resp, 500)
    assert f"recipient.identity of record {rid}" in body["detail"]
    assert "altered" in body["detail"]


def test_a_ciphertext_moved_to_another_record_does_not_decrypt(registry: Any):
    svc = registry.services["recipient"]
    a, b = svc.create(person(1), actor="t"), svc.create(person(2), actor="t")
    with registry.db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE recipient SET phone = (SELECT phone FROM recipient WHERE id = :a) "
                "WHERE id = :b"
            ),
            {"a": a["id"], "b": b["id"]},
        )
    with pytest.raises(DecryptError, match=f"recipient.phone of record {b['id']}"):
        svc.get(b["id"])
    assert svc.get(a["id"])["phone"] == person(1)["phone"]


def test_a_wrong_key_file_is_a_clear_error(settings: Any, tmp_path: Path):
    from open_registry.core.app import open_registry

    reg = open_registry(settings)
    rid = reg.services["recipient"].create(person(), actor="t")["id"]
    kid = reg.db.keyring().current
    reg.close()
    wrong = DataKeys.generate()
    wrong = DataKeys(kid, {kid: wrong.keys[wrong.current]}, wrong.index_key)
    write_key_file(settings.data_key_path, wrong, replace=True)
    reg = open_registry(settings)
    try:
        with pytest.raises(DecryptError, match="cannot be decrypted with data key"):
            reg.services["recipient"].get(rid)
    finally:
        reg.close()
    # a key file that lost the key names the key id it needs
    write_key_file(settings.data_key_path, DataKeys.generate(), replace=True)
    reg = open_registry(settings)
    try:
        with pytest.raises(DecryptError, match=f"data key '{kid}', which is not among"):
            reg.services["recipient"].get(rid)
    finally:
        reg.close()


def test_the_key_file_is_created_owner_only(registry: Any):
    path = registry.settings.data_key_path
    assert path.exists() and path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert "index_key" in text and registry.db.keyring().current in text


def test_keys_from_the_environment_setting_need_no_file(settings: Any):
    from open_registry.core.app import open_registry

    keys = DataKeys.generate()
    env_settings = settings.with_(data_keys=keys.to_json().decode())
    assert keys.to_json().decode() not in repr(env_settings)  # never printed
    reg = open_registry(env_settings)
    try:
        rid = reg.services["recipient"].create(person(), actor="t")["id"]
        assert reg.services["recipient"].get(rid)["identity"] == IDENTITY
        assert not settings.data_key_path.exists()
        assert reg.db.keyring().current == keys.current
    finally:
        reg.close()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_then_import_round_trip_keeps_private_values_encrypted(
    registry: Any, fmt: str, tmp_path: Path
):
    svc = registry.services["recipient"]
    originals = [svc.create(person(n), actor="t") for n in range(12)]
    out = io.StringIO()
    assert export(svc, out, fmt) == 12
    assert IDENTITY in out.getvalue()  # an export is for people allowed to see it
    with registry.db.engine.begin() as conn:
        conn.execute(svc.table.delete())
    path = tmp_path / f"recipients.{fmt}"
    path.write_text(out.getvalue())
    result = import_file(svc, path, keep_ids=True)
    assert (result.inserted, result.failed) == (12, 0), result.errors
    for rec in originals:
        back = svc.get(rec["id"])
        assert {k: back[k] for k in ("identity", "phone", "email")} == {
            k: rec[k] for k in ("identity", "phone", "email")
        }
    assert_no_plaintext(raw_database_text(registry))
    page = svc.search(svc.parser.from_params([("identity", IDENTITY)]))
    assert [r["id"] for r in page.items] == [originals[0]["id"]]
    # upserts on the private unique key find the stored records through the blind index
    again = import_file(svc, path, upsert_on="identity", keep_ids=True)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 12)
    duplicate = import_file(svc, path, keep_ids=False)
    assert duplicate.failed == 12
    assert {(e.pointer, e.keyword) for e in duplicate.errors} == {("/identity", "unique")}


def test_import_jobs_do_not_keep_private_values_of_bad_rows(registry: Any):
    from open_registry.core import create_app

    app = create_app(registry=registry)
    add_import_routes(app.router, registry)
    csv_text = (
        "identity,name,dob,gender,phone\n"
        f"{IDENTITY},Megha,1975-06-22,Female,{PHONE}\n"
        "did:example:national-id:55550001,Ravi,1990-02-30,Male,+91 90000 00001\n"
    )
    with admin_client(app) as api:
        resp = api.post(
            "/api/v1/recipient/imports", content=csv_text, headers={"content-type": "text/csv"}
        )
        assert resp.status_code == 202, resp.text
        location = resp.headers["location"]
        registry.import_jobs.wait(location.rsplit("/", 1)[1])
        for _ in range(50):
            job = api.get(location).json()
            if job["status"] != "running":
                break
            time.sleep(0.1)
    assert (job["inserted"], job["failed"]) == (1, 1), job
    (err,) = job["errors"]
    assert "data" not in err and "Ravi" not in repr(job)  # no value of its rows at all
    assert "55550001" not in repr(job) and "90000 00001" not in repr(job)
    assert_no_plaintext(raw_database_text(registry))
