"""Deliveries and webhooks against a receiver on loopback, on SQLite and PostgreSQL: signed
requests with idempotency keys, retries with back-off that survive a worker restart, a crash
between the send and the commit (sent again, dropped by the receiver), timeouts, dead deliveries
and events in the admin API, and a plugin's own sender (`register_senders`, `register_webhooks`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from open_registry.core import (
    Settings,
    create_app,
    delivery_key,
    enqueue_delivery,
    open_registry,
    utcnow,
)
from open_registry.core.app import Registry
from open_registry.core.hookspecs import hookimpl
from open_registry.core.outbox.deliveries import Dispatcher, counts
from open_registry.core.outbox.worker import Worker
from open_registry.plugins.adapters.http import verify_signature
from tests.authn import admin_client
from tests.plugins.adapters.servers import Loopback, Receiver, Reply, Request

SECRET = "whsec-test-only"
FACILITY = {
    "code": "WH-001",
    "name": "Webhook Clinic",
    "category": "GOVT",
    "type": "Fixed location",
    "status": "Active",
    "address": {"addressLine1": "1 Road", "district": "D", "state": "S", "pincode": "1234"},
}
RECIPIENT = {
    "identity": "did:example:national-id:1",
    "name": "Ada",
    "dob": "1990-01-01",
    "gender": "Female",
    "phone": "+99 90000 00001",
}


class Clock:
    """The workers' clock, moved by the test (a minute ahead: what was just written is due)."""

    def __init__(self) -> None:
        self.now = utcnow() + timedelta(minutes=1)

    def __call__(self) -> Any:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def receiver() -> Iterator[tuple[Loopback, Receiver]]:
    fake = Receiver()
    with Loopback(fake) as server:
        yield server, fake


def hooked(settings: Settings, url: str, **sub: Any) -> Settings:
    subscription = {
        "name": "his",
        "url": f"{url}/hooks",
        "events": ["facility.*", "recipient.created"],
        "secret_env": "TEST_WEBHOOK_SECRET",
        **sub,
    }
    return settings.with_(plugins={"webhooks": {"timeout": 2, "subscriptions": [subscription]}})


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)


def test_webhooks_are_signed_carry_an_idempotency_key_and_leave_private_fields_out(
    settings: Settings, receiver: tuple[Loopback, Receiver]
):
    server, fake = receiver
    reg = open_registry(hooked(settings, server.url))
    try:
        facility = reg.services["facility"].create(FACILITY, actor="t")
        reg.services["recipient"].create(RECIPIENT, actor="t")
        reg.services["vaccine"].create(
            {"code": "V1", "name": "V", "manufacturer": "M", "status": "Active"}, actor="t"
        )  # not subscribed
        worker = Worker(reg)
        assert worker.run_once() == 3
        assert counts(reg) == {"pending": 2}  # queued with the events, not sent in their commit
        assert worker.send_due() == 2
        assert counts(reg) == {"done": 2}
        assert len(server.requests) == 2
        for req in server.requests:
            assert verify_signature(SECRET, req.body, req.headers["x-registry-signature"])
            assert not verify_signature("other", req.body, req.headers["x-registry-signature"])
            assert req.headers["idempotency-key"].startswith("webhook:his:")
        first, second = (r.json() for r in server.requests)
        assert first["event"] == "facility.created" and first["recordId"] == facility["id"]
        assert first["record"]["name"] == "Webhook Clinic" and first["version"] == 1
        assert second["event"] == "recipient.created"
        assert "phone" not in second["record"] and "identity" not in second["record"]
        assert second["record"]["name"] == "Ada"
        assert fake.duplicates == []
    finally:
        reg.close()


def test_a_failing_receiver_is_retried_and_the_retries_survive_a_worker_restart(
    settings: Settings, receiver: tuple[Loopback, Receiver]
):
    server, fake = receiver
    server.failures = [Reply(500), Reply(503)]
    clock = Clock()
    reg = open_registry(hooked(settings, server.url))
    reg.services["facility"].create(FACILITY, actor="t")
    worker = Worker(reg, clock=clock)
    worker.run_once()
    assert worker.send_due() == 1  # 500
    assert worker.send_due() == 0  # waiting for its back-off
    worker.stop()
    reg.close()  # the worker process goes away

    reg = open_registry(hooked(settings, server.url))  # and a new one starts
    try:
        clock.advance(3)
        again = Worker(reg, clock=clock)
        assert again.send_due() == 1  # 503
        clock.advance(5)
        assert again.send_due() == 1  # accepted
        keys = {r.headers["idempotency-key"] for r in server.requests}
        assert len(server.requests) == 3 and len(keys) == 1  # the same key every time
        assert len(fake.accepted) == 1 and counts(reg) == {"done": 1}
    finally:
        reg.close()


def test_a_crash_between_send_and_commit_sends_again_and_the_receiver_drops_it(
    settings: Settings, receiver: tuple[Loopback, Receiver]
):
    server, fake = receiver
    clock = Clock()
    reg = open_registry(hooked(settings, server.url))
    try:
        reg.services["facility"].create(FACILITY, actor="t")
        Worker(reg, clock=clock).run_once()
        crashing = Dispatcher(reg, clock=clock, lease_seconds=60)
        [delivery] = crashing.claim()
        ok, _, _ = crashing.send(delivery)
        assert ok and len(fake.accepted) == 1
        # ... and the worker dies before it records the success: the row stays `sending`
        assert counts(reg) == {"sending": 1}
        assert Dispatcher(reg, clock=clock).run_once() == 0  # leased: nobody else takes it
        clock.advance(61)
        assert Dispatcher(reg, clock=clock).run_once() == 1  # the lease ran out: sent again
        assert fake.duplicates == [delivery["key"]] and len(fake.accepted) == 1
        assert counts(reg) == {"done": 1}
        crashing.settle(delivery, True, "late")  # the old worker wakes up: changes nothing
        assert counts(reg) == {"done": 1}
    finally:
        reg.close()


def test_a_slow_receiver_times_out_and_the_retry_is_not_applied_twice(
    settings: Settings, receiver: tuple[Loopback, Receiver]
):
    server, fake = receiver
    clock = Clock()
    reg = open_registry(hooked(settings, server.url, timeout=0.3))
    try:
        original = server.handler

        def slow_once(req: Request) -> Reply:
            reply = original(req)  # the receiver takes the event ...
            if len(server.requests) == 1:
                reply.delay = 1.0  # ... but answers too late
            return reply

        server.handler = slow_once
        reg.services["facility"].create(FACILITY, actor="t")
        worker = Worker(reg, clock=clock)
        worker.run_once()
        assert worker.send_due() == 1
        t = reg.db.metadata.tables["registry_delivery"]
        with reg.db.engine.connect() as conn:
            row = conn.execute(t.select()).mappings().one()
        assert row["status"] == "pending" and "did not answer within 0.3 s" in row["last_error"]
        clock.advance(3)
        assert worker.send_due() == 1
        assert len(fake.accepted) == 1 and len(fake.duplicates) == 1
        assert counts(reg) == {"done": 1}
    finally:
        reg.close()


class Failing:
    """A plugin whose `after_write` fails for vaccines (to make dead events)."""

    @hookimpl
    def after_write(self, event: dict[str, Any], connection: Any, registry: Any) -> None:
        if event["entity"] == "vaccine":
            raise RuntimeError("the supply chain system is down")


def test_dead_events_and_deliveries_are_listed_and_retried_by_the_admin_api(
    settings: Settings, receiver: tuple[Loopback, Receiver]
):
    server, fake = receiver
    server.failures = [Reply(410, {"error": "gone"})]
    reg = open_registry(hooked(settings, server.url), plugins=[Failing()])
    try:
        with admin_client(create_app(registry=reg)) as client:
            reg.services["facility"].create(FACILITY, actor="t")
            reg.services["vaccine"].create(
                {"code": "V1", "name": "V", "manufacturer": "M", "status": "Active"}, actor="t"
            )
            worker = Worker(reg, max_attempts=1)
            worker.run_once()
            worker.send_due()
            events = client.get("/api/v1/outbox?status=dead").json()
            [dead] = events["items"]
            assert dead["entity"] == "vaccine" and "supply chain" in dead["lastError"]
            assert events["counts"] == {"dead": 1, "done": 1}
            sends = client.get("/api/v1/outbox/deliveries?status=dead").json()
            [gone] = sends["items"]  # a 4xx is dead at once, no retry
            assert (
                gone["sink"] == "webhook" and "410" in gone["lastError"] and gone["attempts"] == 1
            )
            assert "payload" not in gone

            assert (
                client.post(f"/api/v1/outbox/deliveries/{gone['id']}/retry").json()["status"]
                == "pending"
            )
            assert client.post(f"/api/v1/outbox/deliveries/{gone['id']}/retry").status_code == 409
            assert worker.send_due() == 1 and len(fake.accepted) == 1

            again = client.post(f"/api/v1/outbox/{dead['seq']}/retry")
            assert again.status_code == 200 and again.json()["status"] == "pending"
            conflict = client.post(f"/api/v1/outbox/{dead['seq']}/retry")
            assert conflict.status_code == 409
            assert conflict.headers["content-type"] == "application/problem+json"
            assert client.post("/api/v1/outbox/999999/retry").status_code == 404
            bad = client.get("/api/v1/outbox?status=lost")
            assert bad.status_code == 400 and bad.json()["errors"][0]["pointer"] == "/status"
            assert client.get("/api/v1/outbox?limit=0").status_code == 400
            assert client.get("/api/v1/outbox?colour=red").status_code == 400
            assert client.post("/api/v1/outbox/retry-dead").json() == {"queued": 0}
            by_sink = client.post("/api/v1/outbox/deliveries/retry-dead", json={"sink": "sms"})
            assert by_sink.json() == {"queued": 0}
            wrong = client.post("/api/v1/outbox/deliveries/retry-dead", json={"sinks": "x"})
            assert wrong.status_code == 400 and wrong.json()["errors"][0]["pointer"] == "/sinks"
            page = client.get("/api/v1/outbox?limit=1").json()
            assert len(page["items"]) == 1 and page["next"] == page["items"][0]["seq"]
    finally:
        reg.close()


class SupplyChain:
    """A country plugin with its own sender and a webhook subscription of its own."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent: list[dict[str, Any]] = []

    @hookimpl
    def after_write(self, event: dict[str, Any], connection: Any, registry: Any) -> None:
        if event["event"] == "vaccine.created":
            key = delivery_key("supply", "stock", event)
            enqueue_delivery(connection, registry, "supply", key, event, {"what": "stock"})

    @hookimpl
    def register_senders(self, registry: Any) -> dict[str, Any]:
        def send(delivery: dict[str, Any], reg: Any) -> str:
            self.sent.append(delivery)
            return "stock-updated"

        return {"supply": send}

    @hookimpl
    def register_webhooks(self, registry: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": "supply-hook",
                "url": f"{self.url}/supply",
                "events": ["vaccine.*"],
                "secret": "plugin-secret",
            }
        ]


def test_a_plugin_adds_its_own_sender_and_webhook(
    settings: Settings, receiver: tuple[Loopback, Receiver]
):
    server, _ = receiver
    plugin = SupplyChain(server.url)
    reg: Registry = open_registry(settings, plugins=[plugin])
    try:
        reg.services["vaccine"].create(
            {"code": "V1", "name": "V", "manufacturer": "M", "status": "Active"}, actor="t"
        )
        worker = Worker(reg)
        worker.run_once()
        assert worker.send_due() == 2
        [mine] = plugin.sent
        assert mine["payload"] == {"what": "stock"} and mine["key"].startswith("supply:stock:")
        [req] = server.requests
        assert req.path == "/supply"
        assert verify_signature("plugin-secret", req.body, req.headers["x-registry-signature"])
        assert json.loads(req.body)["event"] == "vaccine.created"
        t = reg.db.metadata.tables["registry_delivery"]
        with reg.db.engine.connect() as conn:
            results = {r.sink: r.result for r in conn.execute(t.select())}
        assert results == {"supply": "stock-updated", "webhook": "201"}
    finally:
        reg.close()


def test_a_subscription_without_a_secret_stops_the_server(settings: Settings):
    from open_registry.core import StartupError

    bad = settings.with_(
        plugins={"webhooks": {"subscriptions": [{"name": "x", "url": "http://127.0.0.1:9/h"}]}}
    )
    reg = open_registry(bad)
    try:
        with pytest.raises(StartupError, match=r"subscriptions\[0\] needs a secret"):
            create_app(registry=reg)
    finally:
        reg.close()
