"""The generated REST API over every shipped entity, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from importlib import resources
from typing import Any

import pytest
import sqlalchemy as sa

from tests.samples import unique_variant

SHIPPED = ["facility", "vaccinator", "vaccine", "program", "recipient"]


def demo_record(entity: str) -> dict[str, Any]:
    demo = resources.files("open_registry.core") / "demo"
    records = json.loads((demo / f"{entity}.json").read_text())
    return {k: v for k, v in records[0].items() if k != "id"}


def count(registry: Any, table: str) -> int:
    with registry.db.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()


def data_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "id" and not k.startswith("_")}


def assert_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    return body


@pytest.mark.parametrize("entity", SHIPPED)
def test_crud_roundtrip_for_every_shipped_entity(demo_client: Any, registry: Any, entity: str):
    c = demo_client
    service = registry.services[entity]
    body = unique_variant(demo_record(entity), service.entity, 1)

    created = c.post(f"/api/v1/{entity}", json=body)
    assert created.status_code == 201, created.text
    rec = created.json()
    assert created.headers["location"] == f"/api/v1/{entity}/{rec['id']}"
    assert created.headers["etag"] == '"1"'
    assert rec["_version"] == 1 and rec["_createdAt"].endswith("Z")
    assert data_fields(rec) == body

    got = c.get(created.headers["location"])
    assert got.status_code == 200 and got.json() == rec

    replaced_body = dict(body)
    text_field = next(
        f
        for f in service.entity.fields.values()
        if f.kind == "string"
        and f.name in body
        and not f.enum
        and "pattern" not in f.schema
        and "format" not in f.schema
        and not any(f.name in g for g in service.entity.uniques)
    )
    replaced_body[text_field.name] = "Replaced value"
    put = c.put(f"/api/v1/{entity}/{rec['id']}", json=replaced_body, headers={"If-Match": '"1"'})
    assert put.status_code == 200, put.text
    assert put.json()["_version"] == 2 and put.headers["etag"] == '"2"'
    assert put.json()[text_field.name] == "Replaced value"

    optional = next(
        f.name for f in service.entity.fields.values() if not f.required and f.name in body
    )
    patched = c.patch(
        f"/api/v1/{entity}/{rec['id']}",
        json={optional: None},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert optional not in patched.json() and patched.json()["_version"] == 3

    listed = c.get(f"/api/v1/{entity}", params={"limit": 1000}).json()["items"]
    assert rec["id"] in [r["id"] for r in listed]

    assert c.delete(f"/api/v1/{entity}/{rec['id']}").status_code == 204
    assert_problem(c.get(f"/api/v1/{entity}/{rec['id']}"), 404)
    listed = c.get(f"/api/v1/{entity}", params={"limit": 1000}).json()["items"]
    assert rec["id"] not in [r["id"] for r in listed]


def test_unique_violation_gets_409_naming_the_field(demo_client: Any, registry: Any):
    body = demo_record("facility")  # same code as the demo facility
    before = count(registry, "registry_audit")
    resp = demo_client.post("/api/v1/facility", json=body)
    problem = assert_problem(resp, 409)
    assert problem["fields"] == ["code"]
    assert problem["errors"][0]["pointer"] == "/code"
    assert "UNIQUE" not in resp.text and "duplicate key" not in resp.text  # no raw DB error
    assert count(registry, "registry_audit") == before


def test_soft_deleted_record_frees_its_unique_code(demo_client: Any):
    body = unique_variant(demo_record("facility"), type("E", (), {"uniques": [("code",)]}), 7)
    first = demo_client.post("/api/v1/facility", json=body).json()
    assert demo_client.delete(f"/api/v1/facility/{first['id']}").status_code == 204
    again = demo_client.post("/api/v1/facility", json=body)
    assert again.status_code == 201, again.text
    assert again.json()["id"] != first["id"]


def test_purge_removes_the_row(demo_client: Any, registry: Any):
    rid = demo_client.get("/api/v1/vaccinator", params={"limit": 1}).json()["items"][0]["id"]
    before = count(registry, "vaccinator")
    assert (
        demo_client.delete(f"/api/v1/vaccinator/{rid}", params={"purge": "true"}).status_code == 204
    )
    assert count(registry, "vaccinator") == before - 1


def test_stale_if_match_gets_412_and_changes_nothing(demo_client: Any):
    rec = demo_client.get("/api/v1/vaccine", params={"limit": 1}).json()["items"][0]
    url = f"/api/v1/vaccine/{rec['id']}"
    ok = demo_client.patch(url, json={"price": 12.5}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200
    stale = demo_client.patch(url, json={"price": 99.0}, headers={"If-Match": '"1"'})
    problem = assert_problem(stale, 412)
    assert problem["current_version"] == 2
    assert demo_client.get(url).json()["price"] == 12.5
    assert_problem(demo_client.delete(url, headers={"If-Match": '"1"'}), 412)
    assert_problem(
        demo_client.put(url, json=data_fields(rec), headers={"If-Match": "nonsense"}), 412
    )


def test_if_none_match_gets_304(demo_client: Any):
    rec = demo_client.get("/api/v1/program", params={"limit": 1}).json()["items"][0]
    resp = demo_client.get(f"/api/v1/program/{rec['id']}", headers={"If-None-Match": '"1"'})
    assert resp.status_code == 304 and resp.headers["etag"] == '"1"'


def test_system_fields_in_body_are_refused(client: Any):
    body = demo_record("vaccine") | {"id": "x", "_version": 9, "_createdBy": "me"}
    problem = assert_problem(client.post("/api/v1/vaccine", json=body), 422)
    pointers = {e["pointer"] for e in problem["errors"]}
    assert {"/id", "/_version", "/_createdBy"} <= pointers
    assert all(e["keyword"] == "readOnly" for e in problem["errors"])


def test_validation_lists_every_failing_field(client: Any):
    body = demo_record("vaccine") | {"status": "Maybe", "price": -1, "unknownField": 1}
    del body["name"]
    problem = assert_problem(client.post("/api/v1/vaccine", json=body), 422)
    found = {(e["pointer"], e["keyword"]) for e in problem["errors"]}
    assert found >= {
        ("/status", "enum"),
        ("/price", "minimum"),
        ("/name", "required"),
        ("/unknownField", "additionalProperties"),
    }
    assert problem["detail"].startswith(f"{len(problem['errors'])} fields")


def test_nested_format_error_points_into_the_array(demo_client: Any):
    body = unique_variant(demo_record("facility"), type("E", (), {"uniques": [("code",)]}), 3)
    body["admins"] = [{"name": "A", "mobile": "not a phone"}]
    problem = assert_problem(demo_client.post("/api/v1/facility", json=body), 422)
    assert [e["pointer"] for e in problem["errors"]] == ["/admins/0/mobile"]


def test_unknown_reference_gets_422_and_nothing_is_written(demo_client: Any, registry: Any):
    body = unique_variant(demo_record("facility"), type("E", (), {"uniques": [("code",)]}), 4)
    body["programs"] = [{"programId": "NO-SUCH-PROGRAM", "status": "Active", "rate": 10}]
    before = {t: count(registry, t) for t in ("facility", "registry_audit", "registry_outbox")}
    problem = assert_problem(demo_client.post("/api/v1/facility", json=body), 422)
    assert problem["errors"] == [
        {
            "pointer": "/programs/0/programId",
            "keyword": "reference",
            "message": "no program with code 'NO-SUCH-PROGRAM'",
        }
    ]
    assert {t: count(registry, t) for t in before} == before


def test_a_records_references_are_checked_in_one_statement(demo_client: Any, registry: Any):
    """A vaccinator names facilities and programmes: both references are looked up by ONE
    statement, and each unknown value is still reported at its own pointer."""
    service = registry.services["vaccinator"]
    body = unique_variant(demo_record("vaccinator"), service.entity, 5)
    facility = demo_client.get("/api/v1/facility?limit=1").json()["items"][0]["code"]
    program = demo_client.get("/api/v1/program?limit=1").json()["items"][0]["code"]
    body["facilityIds"] = [facility, "NO-SUCH-FACILITY"]
    body["programs"] = [{"programId": program}, {"programId": "NO-SUCH-PROGRAM"}]
    tables = {registry.services[e].table.name for e in ("facility", "program")}
    lookups: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        words = set(statement.replace('"', " ").replace(",", " ").split())
        if statement.lstrip().upper().startswith("SELECT") and words & tables:
            lookups.append(statement)

    sa.event.listen(registry.db.engine, "before_cursor_execute", seen)
    try:
        problem = assert_problem(demo_client.post("/api/v1/vaccinator", json=body), 422)
        assert len(lookups) == 1, lookups
        assert sorted(e["pointer"] for e in problem["errors"]) == [
            "/facilityIds/1",
            "/programs/1/programId",
        ]
        body["facilityIds"], body["programs"] = [facility], [{"programId": program}]
        assert demo_client.post("/api/v1/vaccinator", json=body).status_code == 201
    finally:
        sa.event.remove(registry.db.engine, "before_cursor_execute", seen)


def test_reference_to_deleted_record_is_refused(demo_client: Any):
    vaccines = demo_client.get("/api/v1/vaccine", params={"limit": 10}).json()["items"]
    unused = vaccines[-1]
    demo_client.delete(f"/api/v1/vaccine/{unused['id']}")
    body = {
        "code": "NEWPROG",
        "name": "New programme",
        "startDate": "2026-01-01",
        "status": "Active",
        "vaccineIds": [unused["code"]],
    }
    problem = assert_problem(demo_client.post("/api/v1/program", json=body), 422)
    assert problem["errors"][0]["pointer"] == "/vaccineIds/0"


def test_each_write_adds_one_audit_and_one_outbox_row(client: Any, registry: Any):
    rec = client.post("/api/v1/vaccine", json=demo_record("vaccine")).json()
    client.patch(f"/api/v1/vaccine/{rec['id']}", json={"price": 3})
    client.delete(f"/api/v1/vaccine/{rec['id']}")
    with registry.db.engine.connect() as conn:
        audit = conn.execute(
            sa.text("SELECT action, version, fields FROM registry_audit ORDER BY seq")
        ).all()
        outbox = conn.execute(
            sa.text("SELECT event, status FROM registry_outbox ORDER BY seq")
        ).all()
    assert [(a[0], a[1]) for a in audit] == [("create", 1), ("update", 2), ("delete", 3)]
    fields = audit[1][2] if isinstance(audit[1][2], list) else json.loads(audit[1][2])
    assert fields == ["price"]
    assert outbox == [
        ("vaccine.created", "pending"),
        ("vaccine.updated", "pending"),
        ("vaccine.deleted", "pending"),
    ]


def test_patch_with_no_change_keeps_the_version(client: Any):
    rec = client.post("/api/v1/vaccine", json=demo_record("vaccine")).json()
    same = client.patch(f"/api/v1/vaccine/{rec['id']}", json={"name": rec["name"]})
    assert same.status_code == 200 and same.json()["_version"] == 1


def test_patch_that_breaks_the_schema_is_refused(client: Any):
    rec = client.post("/api/v1/vaccine", json=demo_record("vaccine")).json()
    problem = assert_problem(client.patch(f"/api/v1/vaccine/{rec['id']}", json={"name": None}), 422)
    assert problem["errors"][0]["pointer"] == "/name"
    assert client.get(f"/api/v1/vaccine/{rec['id']}").json()["name"] == rec["name"]


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b"{not json", {"content-type": "application/json"}, 400),
        (b"[1, 2]", {"content-type": "application/json"}, 422),
        (b"name=x", {"content-type": "application/x-www-form-urlencoded"}, 415),
        (b'{"name": "' + b"x" * 1_100_000 + b'"}', {"content-type": "application/json"}, 413),
    ],
)
def test_bad_bodies_get_clear_errors(
    client: Any, registry: Any, content: bytes, headers: dict[str, str], status: int
):
    assert_problem(client.post("/api/v1/vaccine", content=content, headers=headers), status)
    assert count(registry, "vaccine") == 0


def test_dates_round_trip_and_times_come_back_in_utc(client: Any):
    body = {"code": "P1", "name": "Programme", "startDate": "2026-02-28", "status": "Active"}
    rec = client.post("/api/v1/program", json=body).json()
    assert rec["startDate"] == "2026-02-28"
    fac = demo_record("facility")
    fac["programs"] = [{"programId": "P1", "statusUpdatedAt": "2026-01-01T10:00:00+05:30"}]
    out = client.post("/api/v1/facility", json=fac)
    assert out.status_code == 201, out.text
    # nested values are stored as sent (JSON); top-level date-times are normalised to UTC
    assert out.json()["programs"][0]["statusUpdatedAt"] == "2026-01-01T10:00:00+05:30"


def test_unknown_entity_and_id_are_404(client: Any):
    assert_problem(client.get("/api/v1/spaceship"), 404)
    assert_problem(client.get("/api/v1/facility/00000000-0000-0000-0000-000000000000"), 404)
    assert_problem(client.patch("/api/v1/facility/nope", json={}), 404)


def test_index_lists_entities_and_health_answers(client: Any):
    names = [e["name"] for e in client.get("/api/v1").json()["entities"]]
    # the shipped entities, and those of the built-in certificates and programme plugins
    programme = ["facility_programme", "schedule", "appointment", "stock", "stock_threshold",
                 "side_effect"]
    assert sorted(names) == sorted([*SHIPPED, "vaccination", "certificate", *programme])
    assert client.get("/health").json()["status"] == "ok"


def test_create_many_is_all_or_nothing_with_indexed_pointers(registry: Any):
    from open_registry.core.errors import Invalid

    service = registry.services["vaccine"]
    good = demo_record("vaccine")
    bad = good | {"code": "V-2", "name": "Other", "status": "Sometimes"}
    with pytest.raises(Invalid) as err:
        service.create_many([(None, good), (None, bad)], actor="test")
    assert [e["pointer"] for e in err.value.errors] == ["/1/status"]
    assert count(registry, "vaccine") == 0 and count(registry, "registry_audit") == 0
    made = service.create_many([(None, good), (None, bad | {"status": "Active"})], actor="t")
    assert len(made) == 2 and count(registry, "registry_outbox") == 2


def test_a_read_by_id_runs_in_the_event_loop_on_sqlite_while_a_connection_is_free(
    demo_client: Any, registry: Any
):
    """SQLite: the read by id runs in the event loop (handing it to a thread and back costs more
    than the read), unless every pooled connection is taken (the loop would wait for one: the
    read waits in a thread). PostgreSQL: always in a thread, as every other database call."""
    import asyncio

    table = registry.services["facility"].table.name
    where: list[bool] = []  # for each read of the table: in the event loop?

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and table in statement:
            try:
                asyncio.get_running_loop()
                where.append(True)
            except RuntimeError:
                where.append(False)

    some = demo_client.get("/api/v1/facility?limit=1").json()["items"][0]["id"]
    sqlite = registry.db.dialect == "sqlite"
    sa.event.listen(registry.db.engine, "before_cursor_execute", seen)
    try:
        assert demo_client.get(f"/api/v1/facility/{some}").status_code == 200
        assert where == [sqlite]
        # every pooled connection taken; one given back a moment after the request starts
        pool = registry.db.engine.pool
        held = [registry.db.engine.connect() for _ in range(pool.size() - pool.checkedout())]
        later = threading.Timer(0.3, held.pop().close)
        try:
            where.clear()
            later.start()
            assert demo_client.get(f"/api/v1/facility/{some}").status_code == 200
            assert where == [False]
        finally:
            later.join()
            for conn in held:
                conn.close()
    finally:
        sa.event.remove(registry.db.engine, "before_cursor_execute", seen)


def test_a_read_by_id_checks_its_rule_without_fastapis_dependency_solving(
    registry: Any, demo_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Routes that take only the request and text path parameters, with `Rule`s for their
    dependencies (a read by id, a list), are handled by `api.RuleRoute`'s lean handler: the
    rule is still checked (anonymous: 401), FastAPI's dependency solving is not run; a route
    with a query parameter of its own (a delete's `purge`) goes through FastAPI as before."""
    import fastapi.routing
    from fastapi.testclient import TestClient

    from open_registry.core import create_app

    solved: list[object] = []
    real = fastapi.routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        solved.append(kwargs.get("dependant"))
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    some = demo_client.get("/api/v1/vaccinator?limit=1").json()["items"][0]
    read = demo_client.get(f"/api/v1/vaccinator/{some['id']}")
    assert read.status_code == 200 and read.json() == some
    with TestClient(create_app(registry=registry)) as anonymous:  # staff only
        assert_problem(anonymous.get(f"/api/v1/vaccinator/{some['id']}"), 401)
    assert solved == []  # the list reads its query itself: it takes only the request
    demo_client.delete(f"/api/v1/vaccine/{some['id']}", params={"purge": "false"})
    assert len(solved) == 1  # `purge` is a query parameter FastAPI parses


@pytest.mark.parametrize("root_path", ["", "/registry"])
def test_entity_routes_refuse_other_paths_cheaply_and_match_as_before(
    registry: Any, root_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`api.GuardedRoute.matches` (the app router's route class, and the entity routes'
    `RuleRoute`) refuses a path that does not start with the route's literal part without its
    regular expression: every route's own path (also behind a root path, and with each method)
    still finds the route it found with FastAPI's matching alone."""
    from fastapi.routing import APIRoute
    from starlette.routing import Match

    from open_registry.core import api, create_app

    app = create_app(registry=registry)
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    assert sum(isinstance(r, api.RuleRoute) for r in routes) > 50
    # pages, import routes, the plugins' pages moved into the app's router
    others = [r for r in routes if not isinstance(r, api.RuleRoute)]
    assert others and all(isinstance(r, api.GuardedRoute) for r in others), others

    def found() -> list[Any]:
        chosen = []
        for route in routes:
            path = route.path_format.replace("{", "x").replace("}", "")
            for method in sorted(route.methods):
                scope = {"type": "http", "method": method, "path": root_path + path,
                         "root_path": root_path, "headers": []}  # fmt: skip
                full = [r for r in app.routes if r.matches(dict(scope))[0] == Match.FULL]
                chosen.append((method, path, full[0] if full else None))
        return chosen

    fast = found()
    monkeypatch.setattr(api.GuardedRoute, "matches", APIRoute.matches)
    assert found() == fast
    assert all(route is not None for _, _, route in fast)
