"""`Idempotency-Key` on writes (registry/idempotency.py, docs/api.md "Idempotent writes"): a
retried write replays its first answer, on SQLite and PostgreSQL, across processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio.to_thread
import orjson
import pytest
import sqlalchemy as sa
from fastapi import Depends, Request, Response
from fastapi.testclient import TestClient

from open_registry.core import idempotency
from open_registry.core.app import Registry, create_app, open_registry
from open_registry.core.auth import rules
from open_registry.core.auth.routes import AUTH
from open_registry.core.codec import utcnow
from open_registry.core.outbox.worker import Worker
from open_registry.core.settings import Settings
from open_registry.core.testing import TemplateDatabases, auth_headers
from tests.registry.test_api import assert_problem, demo_record
from tests.samples import unique_variant

KEY = "Idempotency-Key"
ADMIN = rules.roles("system-admin")


def vaccine(registry: Registry, n: int = 0) -> bytes:
    """A vaccine body (unique fields varied by `n`), as the exact bytes sent."""
    body = unique_variant(demo_record("vaccine"), registry.services["vaccine"].entity, n)
    return orjson.dumps(body)


def post(c: TestClient, body: bytes, key: str | None, path: str = "/api/v1/vaccine") -> Any:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers[KEY] = key
    return c.post(path, content=body, headers=headers)


def vaccines(c: TestClient) -> int:
    """How many vaccines there are, asked through the API."""
    resp = c.get("/api/v1/vaccine", params={"count": "true", "limit": 1})
    assert resp.status_code == 200, resp.text
    return int(resp.json()["total"])


def key_rows(registry: Registry) -> list[dict[str, Any]]:
    t = idempotency.IDEMPOTENCY
    with registry.db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(t).order_by(t.c.id)).mappings()]


# -- replay ---------------------------------------------------------------------------------


def test_a_retried_create_replays_its_first_answer_and_writes_once(
    registry: Registry, client: TestClient
):
    body = vaccine(registry)
    first = post(client, body, "offline-0001")
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = post(client, body, "offline-0001")
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    for header in ("location", "etag", "content-type"):
        assert again.headers[header] == first.headers[header]
    assert again.headers["x-content-type-options"] == "nosniff"  # the outer middlewares ran
    assert vaccines(client) == 1
    with registry.db.engine.connect() as conn:  # one write: one event, one audit entry
        assert conn.execute(sa.text("SELECT count(*) FROM registry_outbox")).scalar_one() == 1
    (row,) = key_rows(registry)
    assert row["state"] == "done" and row["status"] == 201 and row["scope"] == "user:test-admin"
    # the answer is sealed: nothing of the record reads in the table
    assert b"vaccine" not in row["response"] and first.json()["id"].encode() not in row["response"]


def test_updates_and_deletes_replay_too(registry: Registry, client: TestClient):
    created = post(client, vaccine(registry), None).json()
    url = f"/api/v1/vaccine/{created['id']}"
    patch = {"content-type": "application/merge-patch+json", "If-Match": '"1"', KEY: "p-1"}
    first = client.patch(url, content=b'{"price": 12.5}', headers=patch)
    assert first.status_code == 200 and first.headers["etag"] == '"2"'
    again = client.patch(url, content=b'{"price": 12.5}', headers=patch)  # a stale If-Match
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert client.get(url).json()["_version"] == 2
    gone = client.delete(url, headers={KEY: "d-1"})
    assert gone.status_code == 204
    replayed = client.delete(url, headers={KEY: "d-1"})  # not a 404
    assert replayed.status_code == 204 and replayed.headers["idempotent-replayed"] == "true"
    assert replayed.content == b""


def test_a_key_reused_for_another_request_is_refused_with_422(
    registry: Registry, client: TestClient
):
    body = vaccine(registry)
    created = post(client, body, "k-1")
    assert created.status_code == 201
    other_body = assert_problem(post(client, vaccine(registry, 7), "k-1"), 422)
    assert KEY in other_body["detail"] and other_body["header"] == KEY
    assert "another body" in other_body["detail"]
    other_path = assert_problem(post(client, body, "k-1", "/api/v1/facility"), 422)
    assert "POST /api/v1/vaccine" in other_path["detail"]
    url = f"/api/v1/vaccine/{created.json()['id']}"
    other_method = client.put(
        url, content=body, headers={"content-type": "application/json", KEY: "k-1"}
    )
    assert_problem(other_method, 422)
    query = client.delete(url + "?purge=true", headers={KEY: "k-1"})
    assert_problem(query, 422)
    assert vaccines(client) == 1
    assert post(client, body, "k-1").headers["idempotent-replayed"] == "true"  # still its own


def test_keys_belong_to_their_caller(registry: Registry):
    app = create_app(registry=registry)
    asha = auth_headers(registry, "system-admin", subject="asha")
    ravi = auth_headers(registry, "system-admin", subject="ravi")
    with TestClient(app, headers=asha) as a, TestClient(app, headers=ravi) as r:
        first = post(a, vaccine(registry, 1), "shared-key")
        other = post(r, vaccine(registry, 2), "shared-key")  # not a 422: another caller's key
        assert first.status_code == other.status_code == 201
        assert "idempotent-replayed" not in other.headers
        assert post(r, vaccine(registry, 2), "shared-key").json()["id"] == other.json()["id"]
        assert post(a, vaccine(registry, 1), "shared-key").json()["id"] == first.json()["id"]
        assert vaccines(a) == 2
    assert sorted(r["scope"] for r in key_rows(registry)) == ["user:asha", "user:ravi"]


def test_anonymous_callers_keys_are_refused_and_their_other_requests_untouched(
    make_registry: Any,
):
    registry = make_registry(load_entrypoints=False)
    with TestClient(create_app(registry=registry)) as anon:
        refused = assert_problem(post(anon, vaccine(registry), "anon-1"), 400)
        assert refused["header"] == KEY and "signed-in" in refused["detail"]
        assert_problem(post(anon, vaccine(registry), None), 401)  # as without the feature
        assert anon.get("/api/v1/vaccine", headers={KEY: "anon-1"}).status_code == 200  # a read
    assert key_rows(registry) == []


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"", "empty"),
        (b"x" * 256, "longer than 255"),
        (b"two words", "visible ASCII"),
        ("clé".encode(), "visible ASCII"),
        (b"tab\there", "visible ASCII"),
        (b'"quo"te"', "quotes"),
    ],
)
def test_malformed_keys_are_400_naming_the_header(make_registry: Any, value: bytes, why: str):
    registry = make_registry(load_entrypoints=False)
    with TestClient(create_app(registry=registry), headers=auth_headers(registry)) as c:
        resp = c.post(
            "/api/v1/vaccine",
            content=vaccine(registry),
            headers=[(b"content-type", b"application/json"), (KEY.encode(), value)],
        )
        body = assert_problem(resp, 400)
        assert KEY in body["detail"] and why in body["detail"] and body["header"] == KEY
        assert vaccines(c) == 0


def test_key_syntax_bounds(make_registry: Any):
    registry = make_registry(load_entrypoints=False)
    with TestClient(create_app(registry=registry), headers=auth_headers(registry)) as c:
        twice = c.post(
            "/api/v1/vaccine",
            content=vaccine(registry),
            headers=[
                (b"content-type", b"application/json"),
                (b"idempotency-key", b"a"),
                (b"idempotency-key", b"b"),
            ],
        )
        assert "one Idempotency-Key" in assert_problem(twice, 400)["detail"]
        longest = "k" * 255
        assert post(c, vaccine(registry, 1), longest).status_code == 201
        # the draft's structured-field string form is the same key
        quoted = post(c, vaccine(registry, 1), f'"{longest}"')
        assert quoted.headers["idempotent-replayed"] == "true"
        assert (
            post(c, vaccine(registry, 2), "!#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}~").status_code == 201
        )
        assert vaccines(c) == 2


def test_requests_without_a_key_and_sign_in_routes_store_nothing(
    registry: Registry, client: TestClient
):
    assert post(client, vaccine(registry), None).status_code == 201
    login = client.post(
        f"{AUTH}/login", json={"username": "nobody", "password": "x" * 12}, headers={KEY: "login-1"}
    )
    assert login.status_code in (400, 401, 422)  # whatever the route says: not the key's 400
    assert login.json().get("header") != KEY
    assert key_rows(registry) == []
    assert (f"{AUTH}/",) == idempotency.SKIPPED_PREFIXES


# -- which answers are kept ---------------------------------------------------------------------


def test_refusals_4xx_are_kept_even_those_given_before_the_body_was_read(
    registry: Registry, client: TestClient
):
    bad = orjson.dumps({"name": "no code"})
    first = post(client, bad, "bad-1")
    assert_problem(first, 422)
    again = post(client, bad, "bad-1")
    assert again.status_code == 422 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    # a role that may not create: 403 before the route reads the body; the key still
    # fingerprints the whole body (read after the answer)
    staff = auth_headers(registry, "recipient", recipient="r-1", subject="rec")
    with TestClient(client.app, headers=staff) as c:
        assert_problem(post(c, vaccine(registry), "staff-1"), 403)
        replay = post(c, vaccine(registry), "staff-1")
        assert replay.status_code == 403 and replay.headers["idempotent-replayed"] == "true"
        assert_problem(post(c, vaccine(registry, 3), "staff-1"), 422)  # another body


def _extra_routes(app: Any, calls: dict[str, int]) -> None:
    """Test routes: one failing on its first call (503 or an exception), one with a big answer."""

    async def flaky(request: Request) -> Response:
        await request.body()
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            return Response(b'{"detail": "busy"}', status_code=503, media_type="application/json")
        if calls["flaky"] == 2:
            raise RuntimeError("boom")
        return Response(b'{"ok": true}', status_code=201, media_type="application/json")

    async def big(request: Request) -> Response:
        await request.body()
        calls["big"] += 1
        return Response(b"x" * (idempotency.MAX_STORED_BYTES + 1), media_type="text/plain")

    for path, endpoint in (("/api/v1/test/flaky", flaky), ("/api/v1/test/big", big)):
        app.router.add_api_route(path, endpoint, methods=["POST"], dependencies=[Depends(ADMIN)])


def test_5xx_answers_and_raising_routes_release_the_key(make_registry: Any):
    registry = make_registry(load_entrypoints=False)
    app = create_app(registry=registry)
    calls = {"flaky": 0, "big": 0}
    _extra_routes(app, calls)
    headers = auth_headers(registry)
    with TestClient(app, headers=headers, raise_server_exceptions=False) as c:
        assert post(c, b"{}", "f-1", "/api/v1/test/flaky").status_code == 503
        assert key_rows(registry) == []
        assert post(c, b"{}", "f-1", "/api/v1/test/flaky").status_code == 500
        assert key_rows(registry) == []
        ok = post(c, b"{}", "f-1", "/api/v1/test/flaky")
        assert ok.status_code == 201 and "idempotent-replayed" not in ok.headers
        replay = post(c, b"{}", "f-1", "/api/v1/test/flaky")
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert calls["flaky"] == 3


def test_answers_too_large_to_keep_release_the_key(make_registry: Any):
    registry = make_registry(load_entrypoints=False)
    app = create_app(registry=registry)
    calls = {"flaky": 0, "big": 0}
    _extra_routes(app, calls)
    with TestClient(app, headers=auth_headers(registry)) as c:
        for _ in range(2):
            resp = post(c, b"{}", "big-1", "/api/v1/test/big")
            assert resp.status_code == 200 and len(resp.content) > idempotency.MAX_STORED_BYTES
            assert "idempotent-replayed" not in resp.headers
    assert calls["big"] == 2 and key_rows(registry) == []


# -- concurrency ------------------------------------------------------------------------------


def test_a_second_request_while_the_first_runs_gets_409_then_the_replay(registry: Registry):
    entered, go = threading.Event(), threading.Event()
    calls = []

    async def slow(request: Request) -> Response:
        await request.body()
        calls.append(1)
        entered.set()
        await anyio.to_thread.run_sync(go.wait, 10)
        return Response(b'{"ok": 1}', status_code=201, media_type="application/json")

    app = create_app(registry=registry)
    app.router.add_api_route(
        "/api/v1/test/slow", slow, methods=["POST"], dependencies=[Depends(ADMIN)]
    )
    with TestClient(app, headers=auth_headers(registry)) as c, ThreadPoolExecutor(1) as pool:
        first = pool.submit(post, c, b"{}", "slow-1", "/api/v1/test/slow")
        assert entered.wait(10)
        second = post(c, b"{}", "slow-1", "/api/v1/test/slow")
        body = assert_problem(second, 409)
        assert second.headers["retry-after"] == "1" and body["header"] == KEY
        assert "still being processed" in body["detail"]
        go.set()
        assert first.result(10).status_code == 201
        third = post(c, b"{}", "slow-1", "/api/v1/test/slow")
        assert third.status_code == 201 and third.headers["idempotent-replayed"] == "true"
    assert len(calls) == 1


def test_parallel_requests_with_one_key_write_one_record(registry: Registry, client: TestClient):
    body = vaccine(registry)
    start = threading.Barrier(8)

    def attempt(_: int) -> Any:
        start.wait(10)
        return post(client, body, "race-1")

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(attempt, range(8)))
    fresh = [a for a in answers if a.status_code == 201 and "idempotent-replayed" not in a.headers]
    assert len(fresh) == 1, [a.status_code for a in answers]
    for a in answers:
        if a.status_code == 201:
            assert a.json()["id"] == fresh[0].json()["id"]
        else:
            assert a.status_code == 409 and a.headers["retry-after"] == "1", a.text
    assert vaccines(client) == 1
    assert post(client, body, "race-1").headers["idempotent-replayed"] == "true"


_OTHER_PROCESS = """
import json, sys
from pathlib import Path
from fastapi.testclient import TestClient
from open_registry.core import Settings, create_app
from open_registry.core.app import open_registry
url, data_dir, token, key = sys.argv[1:5]
body = sys.stdin.buffer.read()
reg = open_registry(Settings(database_url=url, data_dir=Path(data_dir), load_entrypoints=False,
                             inline_worker=False))
try:
    with TestClient(create_app(registry=reg)) as c:
        r = c.post("/api/v1/vaccine", content=body, headers={
            "Authorization": "Bearer " + token, "Idempotency-Key": key,
            "content-type": "application/json"})
        print(json.dumps({"status": r.status_code, "body": r.json(),
                          "replayed": r.headers.get("idempotent-replayed"),
                          "location": r.headers.get("location")}))
finally:
    reg.close()
"""


@pytest.mark.postgres
def test_keys_hold_across_processes_on_postgresql(
    pg_database: str, template_databases: TemplateDatabases, tmp_path: Path
):
    template_databases.inherit(pg_database)
    settings = Settings(
        database_url=pg_database,
        data_dir=tmp_path / "data",
        load_entrypoints=False,
        inline_worker=False,
    )
    first, second = open_registry(settings), open_registry(settings)  # two engines, one database
    try:
        token = auth_headers(first)["Authorization"].removeprefix("Bearer ")
        with (
            TestClient(create_app(registry=first), headers=auth_headers(first)) as a,
            TestClient(create_app(registry=second), headers=auth_headers(second)) as b,
        ):
            body = vaccine(first)
            created = post(a, body, "pg-1")
            assert created.status_code == 201
            replay = post(b, body, "pg-1")
            assert replay.headers["idempotent-replayed"] == "true"
            assert replay.content == created.content
            # a real second process
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _OTHER_PROCESS,
                    pg_database,
                    str(tmp_path / "data"),
                    token,
                    "pg-1",
                ],
                input=body,
                capture_output=True,
                timeout=120,
            )
            assert out.returncode == 0, out.stderr.decode()[-3000:]
            other = json.loads(out.stdout.decode().strip().splitlines()[-1])
            assert other["status"] == 201 and other["replayed"] == "true"
            assert other["body"] == created.json()
            assert other["location"] == created.headers["location"]
            # racing through both apps at once: one record
            racing = vaccine(first, 5)
            start = threading.Barrier(8)

            def attempt(i: int) -> Any:
                start.wait(10)
                return post(a if i % 2 else b, racing, "pg-race")

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(attempt, range(8)))
            assert {x.status_code for x in answers} <= {201, 409}
            ids = {x.json()["id"] for x in answers if x.status_code == 201}
            assert len(ids) == 1
            assert vaccines(a) == 2
    finally:
        first.close()
        second.close()


# -- expiry -----------------------------------------------------------------------------------


def test_expired_keys_are_new_keys_and_the_worker_deletes_them(
    registry: Registry, client: TestClient
):
    assert registry.settings.idempotency_ttl_seconds == 86_400
    assert post(client, vaccine(registry, 1), "old-1").status_code == 201
    (row,) = key_rows(registry)
    assert row["expires_at"] - row["created_at"] == timedelta(seconds=86_400)
    t = idempotency.IDEMPOTENCY
    past = utcnow() - timedelta(seconds=1)
    with registry.db.engine.begin() as conn:
        conn.execute(t.update().values(expires_at=past))
    # expired: the key is free again (another body is not a 422, and it is not a replay)
    reused = post(client, vaccine(registry, 2), "old-1")
    assert reused.status_code == 201 and "idempotent-replayed" not in reused.headers
    assert vaccines(client) == 2
    assert post(client, vaccine(registry, 3), "old-2").status_code == 201
    with registry.db.engine.begin() as conn:
        conn.execute(t.update().where(t.c.key == "old-2").values(expires_at=past))
    worker = Worker(registry, name="test-worker")
    thread = worker.start_thread(0.05)
    try:
        deadline = time.monotonic() + 10
        while [r["key"] for r in key_rows(registry)] != ["old-1"]:
            assert time.monotonic() < deadline, key_rows(registry)
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(10)
    # at most once a minute per database; `every=0` forces it
    assert idempotency.purge_expired(registry) == 0
    later = utcnow() + timedelta(days=2)
    assert idempotency.purge_expired(registry, now=later, every=0) == 1
    assert key_rows(registry) == []


def test_a_request_outliving_its_key_leaves_the_next_claim_alone(registry: Registry):
    engine, now = registry.db.engine, utcnow()
    old = idempotency.claim(engine, "user:a", "k", "POST", "/x", 1, now - timedelta(seconds=5))
    assert old.id is not None
    # expired while its request still ran: a new request takes the key over
    new = idempotency.claim(engine, "user:a", "k", "POST", "/x", 60, now)
    assert new.id is not None
    idempotency.finish(engine, old, fingerprint="f", body_bytes=0, status=201, response=b"x")
    idempotency.release(engine, old)
    (row,) = key_rows(registry)
    assert row["state"] == "in-progress" and row["created_at"] == now
    held = idempotency.claim(engine, "user:a", "k", "POST", "/x", 60, now)
    assert held.id is None and held.row is not None and held.row["state"] == "in-progress"
    idempotency.release(engine, new)
    assert key_rows(registry) == []


def test_a_short_ttl_setting(make_registry: Any):
    registry = make_registry(load_entrypoints=False, idempotency_ttl_seconds=60)
    with TestClient(create_app(registry=registry), headers=auth_headers(registry)) as c:
        assert post(c, vaccine(registry), "short").status_code == 201
    (row,) = key_rows(registry)
    assert row["expires_at"] - row["created_at"] == timedelta(seconds=60)


# -- the OpenAPI document -----------------------------------------------------------------------


def test_openapi_declares_the_optional_header_on_writes(client: TestClient):
    spec = client.get("/openapi.json").json()
    parameter = spec["components"]["parameters"]["IdempotencyKey"]
    assert parameter["name"] == KEY and parameter["in"] == "header"
    assert parameter["required"] is False
    ref = {"$ref": "#/components/parameters/IdempotencyKey"}
    paths = spec["paths"]
    assert ref in paths["/api/v1/vaccine"]["post"]["parameters"]
    for method in ("put", "patch", "delete"):
        assert ref in paths["/api/v1/vaccine/{id}"][method]["parameters"]
    assert ref not in paths["/api/v1/vaccine/{id}"]["get"].get("parameters", [])
    assert ref not in paths[f"{AUTH}/login"]["post"].get("parameters", [])
