"""Observing a registry (docs/operations.md): `/metrics` in Prometheus' format by route
template, the outbox's depth and lag read from the database, `/ready`, request ids in the
response and in every log line of the request, and who may read `/metrics`."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from open_registry.core import Settings, create_app, hookimpl, open_registry
from open_registry.core.auth.rules import rule_of
from open_registry.core.codec import utcnow
from open_registry.core.observability import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    logging_config,
    metrics_for,
)
from open_registry.core.outbox.worker import Worker
from tests.authn import auth_headers
from tests.registry.test_api import demo_record


class Consumer:
    """A plugin that handles outbox events (so the workers' lag counts for readiness)."""

    @hookimpl
    def after_write(self, event: dict[str, Any], connection: Any, registry: Any) -> None:
        pass


@pytest.fixture
def reg(settings: Settings) -> Any:
    """A registry whose database figures are never cached, with an outbox consumer."""
    r = open_registry(
        settings.with_(metrics_cache_seconds=0, ready_max_lag_seconds=60), plugins=[Consumer()]
    )
    yield r
    r.close()


def scrape(client: TestClient, registry: Any, *roles: str) -> dict[str, dict[Any, float]]:
    """`/metrics` as a caller with `roles` (monitoring by default): family -> {labels: value}."""
    resp = client.get("/metrics", headers=auth_headers(registry, *(roles or ("monitoring",))))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[Any, float]] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[key] = sample.value
    return out


def one(families: dict[str, dict[Any, float]], name: str, **labels: str) -> float:
    return families[name][tuple(sorted(labels.items()))]


def write_events(registry: Any, n: int) -> str:
    """A vaccine created and updated: `n` outbox events (n >= 1); returns its id."""
    svc = registry.services["vaccine"]
    rec = svc.create(demo_record("vaccine"), actor="t")
    for i in range(n - 1):
        svc.update(rec["id"], {"price": 5.0 + i}, actor="t", patch=True)
    return str(rec["id"])


def backdate_outbox(registry: Any, seconds: float) -> None:
    """Make every pending event due `seconds` ago (as if the workers had been stopped)."""
    t = registry.db.metadata.tables["registry_outbox"]
    with registry.db.engine.begin() as conn:
        conn.execute(
            t.update()
            .where(t.c.status == "pending")
            .values(available_at=utcnow() - timedelta(seconds=seconds))
        )


def test_metrics_have_the_families_and_label_requests_by_route_template(reg: Any):
    record_id = write_events(reg, 1)
    with TestClient(create_app(registry=reg)) as c:
        admin = auth_headers(reg)
        assert c.get(f"/api/v1/vaccine/{record_id}", headers=admin).status_code == 200
        assert c.get("/api/v1/vaccine/not-a-record", headers=admin).status_code == 404
        c.get("/nowhere/at/all")
        c.request("BREW", "/api/v1/vaccine")  # a made-up method is counted as OTHER
        text = c.get("/metrics", headers=auth_headers(reg, "monitoring")).text
        families = scrape(c, reg)
    for name in (
        "registry_http_requests_total",
        "registry_http_request_duration_seconds_bucket",
        "registry_outbox_queue_depth",
        "registry_outbox_oldest_pending_age_seconds",
        "registry_outbox_events_done_total",
        "registry_delivery_queue_depth",
        "registry_delivery_oldest_pending_age_seconds",
        "registry_import_jobs_running",
        "registry_db_pool_size",
        "registry_db_pool_checked_out",
        "registry_database_up",
        "registry_build_info",
    ):
        assert name in families, name
    requests = families["registry_http_requests_total"]
    template = "/api/v1/vaccine/{id}"
    assert one(families, "registry_http_requests_total", method="GET", route=template, status="200")
    assert one(families, "registry_http_requests_total", method="GET", route=template, status="404")
    assert one(families, "registry_http_requests_total", method="GET", route="unmatched",
               status="404")  # fmt: skip
    assert any(dict(k).get("method") == "OTHER" for k in requests)
    # labels are route templates, never the URL's values
    assert record_id not in text and "not-a-record" not in text and "nowhere" not in text
    routes = {dict(k)["route"] for k in requests}
    assert all(r == "unmatched" or r.startswith("/") for r in routes)
    assert one(families, "registry_database_up") == 1
    assert one(families, "registry_db_pool_size") == reg.settings.pool_size


def test_outbox_depth_and_lag_rise_with_pending_events_and_fall_after_the_worker(reg: Any):
    with TestClient(create_app(registry=reg)) as c:
        before = scrape(c, reg)
        assert one(before, "registry_outbox_queue_depth", status="pending") == 0
        assert one(before, "registry_outbox_oldest_pending_age_seconds") == 0
        write_events(reg, 3)
        backdate_outbox(reg, 120)
        pending = scrape(c, reg)
        assert one(pending, "registry_outbox_queue_depth", status="pending") == 3
        assert one(pending, "registry_outbox_oldest_pending_age_seconds") >= 120
        assert Worker(reg).run_once() == 3
        after = scrape(c, reg)
    assert one(after, "registry_outbox_queue_depth", status="pending") == 0
    assert one(after, "registry_outbox_oldest_pending_age_seconds") == 0
    done = one(after, "registry_outbox_events_done_total")
    assert done - one(before, "registry_outbox_events_done_total") == 3


class Senders:
    """A sink that works and one that fails."""

    @hookimpl
    def register_senders(self, registry: Any) -> dict[str, Any]:
        def broken(delivery: dict[str, Any], registry: Any) -> None:
            raise RuntimeError("gateway down")

        return {"ok-sink": lambda delivery, registry: "sent", "broken-sink": broken}


def test_delivery_depth_and_attempts(settings: Settings):
    from open_registry.core import enqueue_delivery, storage

    reg = open_registry(settings.with_(metrics_cache_seconds=0), plugins=[Senders()])
    try:
        with storage.write(reg.db.engine) as conn:
            enqueue_delivery(conn, reg, "ok-sink", "ok:1", None, {})
            enqueue_delivery(conn, reg, "broken-sink", "broken:1", None, {})
        with TestClient(create_app(registry=reg)) as c:
            before = scrape(c, reg)
            assert one(before, "registry_delivery_queue_depth", status="pending") == 2
            assert Worker(reg).send_due() == 2
            after = scrape(c, reg)
    finally:
        reg.close()
    assert one(after, "registry_delivery_queue_depth", status="pending") == 1  # the retry
    attempts = "registry_delivery_attempts_total"
    assert one(after, attempts, sink="ok-sink", outcome="done") == 1
    assert one(after, attempts, sink="broken-sink", outcome="retry") == 1


def test_database_figures_are_cached_between_scrapes(settings: Settings):
    reg = open_registry(settings.with_(metrics_cache_seconds=60))
    try:
        collector = metrics_for(reg).database
        first = collector.snapshot()
        write_events(reg, 2)
        assert collector.snapshot() is first  # no new query within the cache's time
        assert first.outbox.get("pending", 0) == 0
        collector.cache_seconds = 0
        assert collector.snapshot().outbox["pending"] == 2
    finally:
        reg.close()


def test_each_registry_has_its_own_metrics(make_registry: Any):
    a, b = make_registry(load_entrypoints=False), make_registry(load_entrypoints=False)
    assert metrics_for(a) is metrics_for(a)
    assert metrics_for(a).collectors is not metrics_for(b).collectors
    with TestClient(create_app(registry=a)) as c:
        c.get("/api/v1")
    assert metrics_for(b).requests.labels("GET", "/api/v1", "200")._value.get() == 0


def test_ready_checks_the_database_migrations_and_the_workers_lag(reg: Any):
    with TestClient(create_app(registry=reg)) as c:
        resp = c.get("/ready")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "ready"
        assert set(body["checks"]) == {"database", "migrations", "worker_lag"}
        assert all(check["ok"] for check in body["checks"].values())

        write_events(reg, 2)
        backdate_outbox(reg, 3600)  # over ready_max_lag_seconds (60)
        resp = c.get("/ready")
        assert resp.status_code == 503
        assert resp.headers["content-type"].startswith("application/problem+json")
        problem = resp.json()
        assert problem["status"] == 503 and problem["failing"] == ["worker_lag"]
        assert "worker_lag" in problem["detail"]
        assert problem["checks"]["worker_lag"]["seconds"] >= 3600
        assert problem["checks"]["database"]["ok"] and problem["checks"]["migrations"]["ok"]

        Worker(reg).run_once()
        assert c.get("/ready").status_code == 200


def test_ready_fails_while_a_migration_is_not_applied(reg: Any):
    versions = reg.settings.migrations_path / "versions"
    (current,) = {p.name.split("_")[0] for p in versions.glob("*.py")}
    (versions / "9999_pending.py").write_text(
        f'revision = "9999"\ndown_revision = "{current}"\nbranch_labels = None\n'
        "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
    )
    with TestClient(create_app(registry=reg)) as c:
        resp = c.get("/ready")
    assert resp.status_code == 503
    problem = resp.json()
    assert problem["failing"] == ["migrations"]
    assert problem["checks"]["migrations"]["head"] == "9999"
    assert problem["checks"]["migrations"]["revision"] == current


def test_the_lag_is_no_check_when_no_plugin_handles_events(registry: Any):
    hook = registry.pm.hook
    for impl in [*hook.after_write.get_hookimpls(), *hook.after_write_batch.get_hookimpls()]:
        if registry.pm.is_registered(impl.plugin):
            registry.pm.unregister(impl.plugin)
    write_events(registry, 1)
    backdate_outbox(registry, 86_400)  # waits forever: nothing would ever take it
    with TestClient(create_app(registry=registry)) as c:
        resp = c.get("/ready")
    assert resp.status_code == 200
    assert resp.json()["checks"]["worker_lag"] == {
        "ok": True,
        "skipped": "no plugin handles outbox events",
    }


def test_who_may_read_metrics_and_ready(registry: Any):
    app = create_app(registry=registry)
    rules = {r.path: rule_of(r) for r in app.routes if getattr(r, "path", "") in ("/metrics",
             "/ready")}  # fmt: skip
    assert rules["/metrics"] is not None and rules["/metrics"].roles == (
        "monitoring",
        "system-admin",
    )
    assert rules["/ready"] is not None and rules["/ready"].who == "public"
    with TestClient(app) as c:
        assert c.get("/metrics").status_code == 401
        for role in ("facility-staff", "api-client", "recipient", "controller"):
            assert c.get("/metrics", headers=auth_headers(registry, role)).status_code == 403
        for role in ("monitoring", "system-admin"):
            assert c.get("/metrics", headers=auth_headers(registry, role)).status_code == 200
        assert c.get("/ready").status_code == 200
        assert c.get("/health").status_code == 200


def test_metrics_public_opens_metrics_to_anyone(make_registry: Any):
    reg = make_registry(load_entrypoints=False, metrics_public=True)
    with TestClient(create_app(registry=reg)) as c:
        resp = c.get("/metrics")
    assert resp.status_code == 200 and "registry_http_requests_total" in resp.text


def test_a_sane_request_id_is_echoed_and_any_other_replaced(registry: Any):
    with TestClient(create_app(registry=registry)) as c:
        assert c.get("/api/v1", headers={"x-request-id": "abc-123.X:9"}).headers[
            "x-request-id"
        ] == "abc-123.X:9"
        for bad in ("has space", "x" * 129, "semi;colon", "<script>", ""):
            got = c.get("/api/v1", headers={"x-request-id": bad}).headers["x-request-id"]
            assert got != bad and re.fullmatch(r"[0-9a-f]{32}", got), bad
        a, b = (c.get("/api/v1").headers["x-request-id"] for _ in range(2))
        assert a != b  # a new one per request
        # errors carry it too
        assert c.get("/api/v1/facility/none", headers={"x-request-id": "r-404"}).headers[
            "x-request-id"
        ] == "r-404"


def test_every_log_line_of_a_request_has_its_id_in_json(
    registry: Any, caplog: pytest.LogCaptureFixture
):
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO)
    secret = "not-a-real-token.but-secret"
    with TestClient(create_app(registry=registry)) as c:
        # a refused token: the auth middleware logs (in a worker thread), then the access line
        resp = c.get(
            "/api/v1/facility?code=PRIVATE-VALUE",
            headers={"x-request-id": "req-json-1", "authorization": f"Bearer {secret}"},
        )
        assert resp.status_code == 401
        c.get("/api/v1", headers={"x-request-id": "req-json-2"})
    formatter = JsonFormatter()
    lines = [orjson.loads(formatter.format(r)) for r in caplog.records]
    first = [line for line in lines if line.get("request_id") == "req-json-1"]
    loggers = {line["logger"] for line in first}
    assert {"registry.auth", "registry.access"} <= loggers, lines
    access = next(line for line in first if line["logger"] == "registry.access")
    assert access["status"] == 401 and access["method"] == "GET"
    assert access["level"] == "INFO" and access["time"].endswith("+00:00")
    second = [line for line in lines if line.get("request_id") == "req-json-2"]
    assert [line["route"] for line in second if line["logger"] == "registry.access"] == ["/api/v1"]
    # what the server logged (the test client logs its own URLs)
    server = [r for r in caplog.records if r.name.startswith("registry")]
    everything = "\n".join(formatter.format(r) for r in server)
    assert secret not in everything and "PRIVATE-VALUE" not in everything
    # outside a request there is no id
    record = logging.LogRecord("registry", logging.INFO, __file__, 1, "idle", None, None)
    RequestIdFilter().filter(record)
    assert "request_id" not in orjson.loads(formatter.format(record))


def test_an_unexpected_error_is_counted_and_logged_with_the_request_id(
    registry: Any, caplog: pytest.LogCaptureFixture
):
    from fastapi import Depends

    from open_registry.core.auth import rules

    def boom() -> None:
        raise RuntimeError("boom")

    app = create_app(registry=registry)
    app.add_api_route("/boom/{x}", boom, dependencies=[Depends(rules.public("a test route"))])
    caplog.handler.addFilter(RequestIdFilter())
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/boom/1", headers={"x-request-id": "req-500"}).status_code == 500
        families = scrape(c, registry)
    (error,) = [r for r in caplog.records if r.getMessage() == "unexpected error"]
    assert getattr(error, "request_id", None) == "req-500"
    assert one(families, "registry_http_requests_total", method="GET", route="/boom/{x}",
               status="500") == 1  # fmt: skip


def test_text_lines_name_the_request_and_the_config_refuses_unknown_formats():
    record = logging.LogRecord("registry.x", logging.WARNING, __file__, 1, "hello %s", ("a",), None)
    record.request_id = "r1"
    assert TextFormatter().format(record) == "WARNING registry.x: hello a [request r1]"
    assert logging_config("json")["handlers"]["console"]["formatter"] == "json"
    with pytest.raises(ValueError, match="log_format"):
        logging_config("xml")


def test_an_unknown_log_format_stops_the_app(make_registry: Any):
    from open_registry.core.errors import StartupError

    reg = make_registry(load_entrypoints=False, log_format="yaml")
    with pytest.raises(StartupError, match="log_format"):
        create_app(registry=reg)


def test_the_metrics_queries_use_the_status_indexes(registry: Any):
    """What keeps a scrape cheap on a large outbox (SQLite's plan; PostgreSQL has the same
    indexes)."""
    if registry.db.dialect != "sqlite":
        pytest.skip("SQLite's query plan")
    with registry.db.engine.connect() as conn:
        for sql in (
            "SELECT status, count(*) FROM registry_outbox WHERE status IN ('pending', 'dead') "
            "GROUP BY status",
            "SELECT available_at FROM registry_outbox WHERE status = 'pending' "
            "ORDER BY available_at LIMIT 1",
            "SELECT available_at FROM registry_delivery WHERE status = 'pending' "
            "ORDER BY available_at LIMIT 1",
        ):
            plan = " ".join(str(r[-1]) for r in conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql)))
            assert "USING" in plan and "INDEX" in plan and "TEMP B-TREE" not in plan, (sql, plan)
