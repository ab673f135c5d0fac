"""The outbox: every committed write is delivered to `after_write` once, failures retry with
back-off and end dead, plugin work commits with the `done` mark, and concurrent workers never
deliver one event twice (FOR UPDATE SKIP LOCKED on PostgreSQL)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from open_registry.core import Settings, enqueue_delivery, storage, timed_sender, utcnow
from open_registry.core.app import open_registry
from open_registry.core.hookspecs import hookimpl
from open_registry.core.outbox.deliveries import LEASE_GRACE, LEASE_SECONDS, Dispatcher
from open_registry.core.outbox.deliveries import counts as deliveries_counts
from open_registry.core.outbox.worker import Worker, backoff, counts, retry_dead
from tests.authn import admin_client
from tests.registry.test_api import demo_record


class Recorder:
    """Records every event it is given, and writes a row per event in the worker's transaction."""

    def __init__(self, fail_times: int = 0, fail_always: bool = False):
        self.seen: list[int] = []
        self.lock = threading.Lock()
        self.fail_times = fail_times
        self.fail_always = fail_always

    @hookimpl
    def after_write(self, event: dict[str, Any], connection: Any, registry: Any) -> None:
        connection.execute(sa.text("INSERT INTO delivered (seq) VALUES (:s)"), {"s": event["seq"]})
        with self.lock:
            self.seen.append(event["seq"])
            if self.fail_always or self.fail_times > 0:
                self.fail_times -= 1
                raise RuntimeError(f"gateway down for {event['event']}")


def open_with(settings: Settings, plugin: Recorder) -> Any:
    reg = open_registry(settings, plugins=[plugin])
    with reg.db.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS delivered (seq INTEGER)"))
    return reg


def delivered(reg: Any) -> list[int]:
    with reg.db.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text("SELECT seq FROM delivered ORDER BY seq"))]


def test_each_write_is_delivered_once_and_marked_done(settings: Settings):
    plugin = Recorder()
    reg = open_with(settings, plugin)
    svc = reg.services["vaccine"]
    rec = svc.create(demo_record("vaccine"), actor="t")
    svc.update(rec["id"], {"price": 5.0}, actor="t", patch=True)
    worker = Worker(reg)
    assert worker.run_once() == 2
    assert worker.run_once() == 0  # nothing left
    assert counts(reg) == {"done": 2}
    assert len(plugin.seen) == 2 and delivered(reg) == sorted(plugin.seen)
    reg.close()


def test_failures_retry_with_backoff_then_go_dead_and_roll_back_plugin_work(settings: Settings):
    plugin = Recorder(fail_always=True)
    reg = open_with(settings, plugin)
    reg.services["vaccine"].create(demo_record("vaccine"), actor="t")
    worker = Worker(reg, max_attempts=3, base_delay=0)
    worker.run_once()
    assert counts(reg) == {"dead": 1}
    assert len(plugin.seen) == 3  # tried three times
    assert delivered(reg) == []  # the plugin's own writes were rolled back each time
    t = reg.db.metadata.tables["registry_outbox"]
    with reg.db.engine.connect() as conn:
        row = conn.execute(sa.select(t)).mappings().one()
    assert row["attempts"] == 3 and "gateway down for vaccine.created" in row["last_error"]
    assert retry_dead(reg) == 1 and counts(reg) == {"pending": 1}
    plugin.fail_always = False
    worker.run_once()
    assert counts(reg) == {"done": 1} and len(delivered(reg)) == 1
    reg.close()


def test_a_failed_event_waits_for_its_backoff(settings: Settings):
    plugin = Recorder(fail_times=1)
    reg = open_with(settings, plugin)
    reg.services["vaccine"].create(demo_record("vaccine"), actor="t")
    worker = Worker(reg, base_delay=30)
    assert worker.run_once() == 1
    assert worker.run_once() == 0  # not due for 30 s
    assert counts(reg) == {"pending": 1}
    assert backoff(1, 30) == 30 and backoff(3, 30) == 120 and backoff(30, 30) == 3600
    reg.close()


def test_concurrent_workers_deliver_every_event_exactly_once(settings: Settings):
    plugin = Recorder()
    reg = open_with(settings, plugin)
    svc = reg.services["vaccine"]
    base = demo_record("vaccine")
    svc.create_many(
        [(None, base | {"code": f"V{i}", "name": f"Vaccine {i}"}) for i in range(120)], actor="t"
    )
    workers = [Worker(reg, name=f"w{i}") for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        handled = list(pool.map(lambda w: w.run_once(limit=1000), workers))
    assert sum(handled) == 120
    assert sorted(plugin.seen) == delivered(reg) and len(set(plugin.seen)) == 120
    assert counts(reg) == {"done": 120}
    reg.close()


@pytest.mark.postgres
def test_skip_locked_lets_a_second_worker_take_the_next_event(settings: Settings):
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("FOR UPDATE SKIP LOCKED is PostgreSQL's")
    plugin = Recorder()
    reg = open_with(settings, plugin)
    svc = reg.services["vaccine"]
    base = demo_record("vaccine")
    svc.create_many(
        [(None, base | {"code": f"V{i}", "name": f"V {i}"}) for i in range(2)], actor="t"
    )
    gate, release = threading.Event(), threading.Event()

    class Slow:
        @hookimpl
        def after_write(self, event: dict[str, Any], connection: Any, registry: Any) -> None:
            if not gate.is_set():
                gate.set()
                release.wait(10)

    reg.pm.register(Slow())
    first = Worker(reg, name="first")
    thread = threading.Thread(target=first.deliver_one)
    thread.start()
    assert gate.wait(10)
    second = Worker(reg, name="second")
    assert second.deliver_one() is True  # took the other event while the first is locked
    release.set()
    thread.join(10)
    assert counts(reg) == {"done": 2}
    reg.close()


def test_the_inline_worker_runs_in_the_app(settings: Settings):

    from open_registry.core import create_app

    plugin = Recorder()
    reg = open_with(settings.with_(inline_worker=True), plugin)
    with admin_client(create_app(registry=reg)) as c:
        c.post("/api/v1/vaccine", json=demo_record("vaccine"))
        for _ in range(100):
            if plugin.seen:
                break
            threading.Event().wait(0.05)
    assert len(plugin.seen) == 1


class BatchRecorder:
    """Takes events a batch at a time; refuses any event of a vaccine coded `BAD`."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    @hookimpl
    def after_write_batch(
        self, events: list[dict[str, Any]], connection: Any, registry: Any
    ) -> None:
        self.batches.append([e["seq"] for e in events])
        for e in events:
            connection.execute(sa.text("INSERT INTO delivered (seq) VALUES (:s)"), {"s": e["seq"]})
            code = registry.services["vaccine"].get(e["record_id"])["code"]
            if code == "BAD":
                raise RuntimeError("cannot take BAD")


def test_after_write_batch_gets_batches_and_a_bad_event_is_isolated(settings: Settings):
    plugin = BatchRecorder()
    reg = open_registry(settings, plugins=[plugin])
    with reg.db.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS delivered (seq INTEGER)"))
    svc = reg.services["vaccine"]
    for i in range(5):
        code = "BAD" if i == 2 else f"V{i}"
        svc.create({**demo_record("vaccine"), "code": code, "name": f"n{i}"}, actor="t")
    worker = Worker(reg, max_attempts=1)
    assert worker.run_once(batch=10) == 5
    assert plugin.batches[0] == [1, 2, 3, 4, 5]  # all five at once, then one by one
    assert plugin.batches[1:] == [[1], [2], [3], [4], [5]]
    assert counts(reg) == {"done": 4, "dead": 1}
    assert delivered(reg) == [1, 2, 4, 5]  # the failed batch's and the bad event's work undone
    reg.close()


# -- delivery leases tied to the sender's declared time ------------------------------------------


class Senders:
    """A plugin with three sinks: `quick` declares 10 s, `slow` 200 s, `plain` nothing."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    @hookimpl
    def register_senders(self, registry: Any) -> dict[str, Any]:
        def send(delivery: dict[str, Any], reg: Any) -> str:
            self.sent.append(delivery["key"])
            return "ok"

        def send_slow(delivery: dict[str, Any], reg: Any) -> str:
            return send(delivery, reg)

        def send_plain(delivery: dict[str, Any], reg: Any) -> str:
            return send(delivery, reg)

        return {
            "quick": timed_sender(send, lambda d, r: 10.0),
            "slow": timed_sender(send_slow, 200.0),
            "plain": send_plain,
        }


def queue(reg: Any, sink: str, n: int) -> None:
    with storage.write(reg.db.engine) as conn:
        for i in range(n):
            enqueue_delivery(conn, reg, sink, f"{sink}:{i}", {"seq": i}, {})


def leases(reg: Any, rows: list[dict[str, Any]], now: Any) -> list[float]:
    return [(r["lease_until"] - now).total_seconds() for r in rows]


def test_a_claimed_delivery_is_leased_for_its_senders_declared_time(settings: Settings):
    plugin = Senders()
    reg = open_registry(settings, plugins=[plugin])
    try:
        queue(reg, "quick", 3)
        now = utcnow() + timedelta(minutes=1)
        dispatcher = Dispatcher(reg, clock=lambda: now)
        rows = dispatcher.claim(20)
        # sent one after the other: each lease covers the sends before it in the claim
        assert leases(reg, rows, now) == [10 + LEASE_GRACE, 20 + LEASE_GRACE, 30 + LEASE_GRACE]
        table = reg.db.metadata.tables["registry_delivery"]
        with reg.db.engine.connect() as conn:
            stored = conn.execute(sa.select(table.c.lease_until).order_by(table.c.id)).scalars()
            assert [(t - now).total_seconds() for t in stored] == leases(reg, rows, now)
        queue(reg, "plain", 1)
        (plain,) = dispatcher.claim(20)
        assert leases(reg, [plain], now) == [LEASE_SECONDS + LEASE_GRACE]  # nothing declared
    finally:
        reg.close()


def test_a_claim_takes_no_more_than_fits_in_the_lease_limit(settings: Settings):
    reg = open_registry(settings, plugins=[Senders()])
    try:
        queue(reg, "slow", 3)
        dispatcher = Dispatcher(reg, clock=lambda: utcnow() + timedelta(minutes=1))
        assert len(dispatcher.claim(20)) == 1  # 200 + 200 > 300: one at a time
        assert len(dispatcher.claim(20)) == 1
    finally:
        reg.close()


def test_a_crashed_send_is_retried_after_the_declared_time_not_five_minutes(settings: Settings):
    plugin = Senders()
    reg = open_registry(settings, plugins=[plugin])
    try:
        queue(reg, "quick", 1)
        clock = MovingClock()
        crashed = Dispatcher(reg, clock=clock)
        (taken,) = crashed.claim(20)  # the worker dies before sending or settling
        assert Dispatcher(reg, clock=clock).run_once() == 0  # still leased
        clock.advance(10 + LEASE_GRACE + 1)  # well before the old fixed 300 s hold
        assert Dispatcher(reg, clock=clock).run_once() == 1
        assert plugin.sent == ["quick:0"]
        crashed.settle(taken, False, "late answer from the dead worker")  # ignored: not its own
        assert deliveries_counts(reg) == {"done": 1}
        assert Dispatcher(reg, clock=clock).run_once() == 0  # sent once under its key
    finally:
        reg.close()


class MovingClock:
    def __init__(self) -> None:
        self.now = utcnow() + timedelta(minutes=1)

    def __call__(self) -> Any:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def test_adapters_declare_their_http_time():
    from open_registry.plugins.adapters import fhir, webhooks
    from open_registry.plugins.adapters.http import Http, config_seconds, request_seconds

    assert request_seconds(10) == 30 and request_seconds(10, oauth2=True) == 60
    assert config_seconds({"timeout": 4}, "plugins.x") == 12
    assert Http({"timeout": 5}, "x").longest_seconds == 15
    senders = webhooks.register_senders(registry=None)
    assert callable(senders["webhook"].delivery_timeout)
    assert callable(fhir.register_senders(registry=None)[fhir.SINK].delivery_timeout)
