"""The workers' lag per event and per sink in `/metrics`, and `registry worker --processes`."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from open_registry.cli.main import app as cli
from open_registry.core import Settings, create_app, enqueue_delivery, open_registry, storage
from open_registry.core.outbox.worker import Worker
from tests.registry.test_observability import (
    Consumer,
    Senders,
    backdate_outbox,
    one,
    scrape,
    write_events,
)


def test_pending_events_and_deliveries_are_counted_and_aged_per_event_and_sink(settings: Settings):
    reg = open_registry(settings.with_(metrics_cache_seconds=0), plugins=[Consumer(), Senders()])
    try:
        write_events(reg, 3)  # vaccine.created, vaccine.updated x2
        backdate_outbox(reg, 90)
        with storage.write(reg.db.engine) as conn:
            enqueue_delivery(conn, reg, "ok-sink", "ok:1", None, {})
        with TestClient(create_app(registry=reg)) as c:
            pending = scrape(c, reg)
            assert Worker(reg).run_once() == 3
            assert Worker(reg).send_due() == 1
            after = scrape(c, reg)
    finally:
        reg.close()
    by_event = "registry_outbox_pending_by_event"
    assert one(pending, by_event, event="vaccine.created") == 1
    assert one(pending, by_event, event="vaccine.updated") == 2
    assert one(pending, f"{by_event}_oldest_age_seconds", event="vaccine.updated") >= 90
    assert one(pending, "registry_delivery_pending_by_sink", sink="ok-sink") == 1
    assert not after.get(by_event) and not after.get("registry_delivery_pending_by_sink")


def test_more_than_one_worker_process_needs_postgresql(tmp_path: Any):
    result = CliRunner().invoke(
        cli,
        ["worker", "--processes", "2", "--data-dir", str(tmp_path / "data")],
    )
    assert result.exit_code == 2
    assert "PostgreSQL" in result.output
