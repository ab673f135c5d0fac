"""Limits under concurrency, on PostgreSQL (SQLite has one writer): 50 parallel bookings for 10
places give exactly 10; 50 parallel vaccinations against a rate of 20 record exactly 20; 50
against a batch of 15 doses consume exactly 15. Each request runs in its own thread with its
own database connection, through the HTTP API, released together from a barrier."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from open_registry.core import Settings
from tests.plugins.programme.conftest import FACILITY, PROGRAM, Ops, make_ops, next_weekday

pytestmark = pytest.mark.postgres
N = 50


@pytest.fixture
def pg_ops(pg_database: str, tmp_path: Any, many_pg_connections: None) -> Iterator[Ops]:
    from tests.conftest import reset_pg

    reset_pg(pg_database)
    settings = Settings(
        database_url=pg_database,
        data_dir=tmp_path / "data",
        load_entrypoints=False,
        inline_worker=False,
        pool_size=60,
    )
    yield from make_ops(settings)


def in_parallel(n: int, call: Callable[[int], Any]) -> list[Any]:
    """`call(i)` for i in range(n), each in its own thread, all released at once."""
    barrier = threading.Barrier(n)

    def run(i: int) -> Any:
        barrier.wait()
        return call(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def count(ops: Ops, sql: str, **params: Any) -> int:
    with ops.registry.db.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def test_fifty_parallel_bookings_for_ten_places_give_exactly_ten(pg_ops: Ops):
    ops = pg_ops
    ops.activate(rate=1000)
    ops.schedule(capacity=10)
    day = next_weekday(0).isoformat()
    people = [p["id"] for p in ops.recipients(N)]
    assert len(people) == N

    def book(i: int) -> int:
        return ops.client.post(
            "/api/v1/programme/appointments",
            json={
                "recipient": people[i],
                "program": PROGRAM,
                "facility": FACILITY,
                "date": day,
                "slot": "09:30",
            },
        ).status_code

    statuses = Counter(in_parallel(N, book))
    assert statuses == {201: 10, 409: 40}
    assert count(ops, "SELECT count(*) FROM appointment WHERE status = 'Booked'") == 10
    slots = ops.client.get(
        "/api/v1/programme/slots", params={"facility": FACILITY, "program": PROGRAM, "day": day}
    ).json()["slots"]
    assert next(s for s in slots if s["time"] == "09:30") == {
        "time": "09:30",
        "capacity": 10,
        "booked": 10,
        "free": 0,
    }


def test_fifty_parallel_vaccinations_against_a_rate_of_twenty_record_exactly_twenty(pg_ops: Ops):
    ops = pg_ops
    ops.activate(rate=20)
    people = [p["id"] for p in ops.recipients(N)]

    def vaccinate(i: int) -> int:
        return ops.vaccinate(people[i]).status_code

    statuses = Counter(in_parallel(N, vaccinate))
    assert statuses == {201: 20, 409: 30}
    assert count(ops, "SELECT count(*) FROM vaccination") == 20
    assert count(ops, "SELECT used FROM programme_counter WHERE kind = 'rate'") == 20


def test_fifty_parallel_vaccinations_from_a_batch_of_fifteen_use_exactly_fifteen(pg_ops: Ops):
    ops = pg_ops
    ops.activate(rate=1000)
    ops.stock("LOT-15", quantity=15)
    people = [p["id"] for p in ops.recipients(N)]

    def vaccinate(i: int) -> int:
        return ops.vaccinate(people[i], batch="LOT-15").status_code

    statuses = Counter(in_parallel(N, vaccinate))
    assert statuses == {201: 15, 422: 35}
    assert count(ops, "SELECT count(*) FROM vaccination") == 15
    [level] = ops.client.get("/api/v1/programme/stock", params={"facility": FACILITY}).json()[
        "items"
    ]
    assert (level["received"], level["used"], level["usable"]) == (15, 15, 0)


def test_parallel_first_writes_of_a_registry_without_an_app_create_the_tables_once(
    pg_database: str, tmp_path: Any, many_pg_connections: None
):
    """A worker process or the CLI opens the registry without the app, so the plugin's tables
    are made on first use: parallel first vaccinations must not race on them."""
    from open_registry.core import Conflict, open_registry
    from open_registry.core.demo import load_demo_data
    from tests.conftest import reset_pg

    reset_pg(pg_database)
    reg = open_registry(
        Settings(
            database_url=pg_database,
            data_dir=tmp_path / "data",
            load_entrypoints=False,
            inline_worker=False,
            pool_size=30,
        )
    )
    try:
        load_demo_data(reg.services)
        reg.services["facility_programme"].create(
            {"facility": FACILITY, "program": PROGRAM, "status": "Active", "rate": 10}, actor="t"
        )
        people = (
            reg.services["recipient"]
            .search(reg.services["recipient"].parser.from_params([("limit", "20")]))
            .items
        )

        def vaccinate(i: int) -> str:
            try:
                reg.services["vaccination"].create(
                    {
                        "recipient": people[i]["id"],
                        "program": PROGRAM,
                        "vaccine": "CVX-AV",
                        "facility": FACILITY,
                        "dose": 1,
                        "totalDoses": 2,
                        "batch": "B-1",
                        "date": "2026-03-02T10:00:00Z",
                    },
                    actor="t",
                )
                return "ok"
            except Conflict:
                return "full"

        assert Counter(in_parallel(20, vaccinate)) == {"ok": 10, "full": 10}
    finally:
        reg.close()


def test_an_import_racing_parallel_vaccinations_keeps_the_rate(pg_ops: Ops, tmp_path: Any):
    """A CSV import of 25 vaccinations runs while 25 other people are vaccinated through the
    API, against a rate of 20: exactly 20 are recorded, whoever gets there first."""
    from open_registry.core.imports.importer import import_file
    from tests.plugins.programme.conftest import VACCINATOR, VACCINE, at, today

    ops = pg_ops
    ops.activate(rate=20)
    people = [p["id"] for p in ops.recipients(N)]
    path = tmp_path / "vaccinations.csv"
    path.write_text(
        "recipient,program,vaccine,facility,vaccinator,dose,totalDoses,batch,date\n"
        + "".join(
            f"{p},{PROGRAM},{VACCINE},{FACILITY},{VACCINATOR},1,2,B-1,{at(today())}\n"
            for p in people[:25]
        )
    )
    service = ops.registry.services["vaccination"]

    def work(i: int) -> Any:
        if i == 0:  # chunks of 5 rows: the import commits as it goes, racing the API
            return import_file(service, path, actor="user:agency", chunk_size=5)
        return ops.vaccinate(people[24 + i]).status_code

    results = in_parallel(26, work)
    imported = results[0]
    api = Counter(results[1:])
    assert imported.inserted + api[201] == 20, (imported.summary(), api)
    assert imported.failed == 25 - imported.inserted
    assert api[201] + api[409] == 25
    assert count(ops, "SELECT count(*) FROM vaccination") == 20
    assert count(ops, "SELECT used FROM programme_counter WHERE kind = 'rate'") == 20
