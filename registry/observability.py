"""Observing a running registry: Prometheus metrics, a readiness check, logs with request ids.

- `Metrics`: one per `Registry` (`metrics_for`), in its own `CollectorRegistry`, never
  prometheus_client's global one, so the many registries of one process (tests) never collide.
  Request counts and latencies by route TEMPLATE (`/api/v1/facility/{id}`, never the raw URL:
  the label values are bounded by the routes the app has), outbox events handled, delivery
  attempts; and, read from the database when scraped (indexed queries, the answer kept
  `metrics_cache_seconds`), the outbox's and the deliveries' queues, the age of the oldest due
  event, running import jobs; the connection pool's use.
- `install(app, registry)` (`create_app` calls it): the request middleware (metrics, request
  id, one access log line) and the routes `GET /metrics` and `GET /ready`.
- Logs: `REQUEST_ID` (a context variable, set for each request), `RequestIdFilter` (puts it on
  every record a handler sees), `TextFormatter`/`JsonFormatter`, and `logging_config(format)`:
  what `registry serve` installs (`log_format = "text" | "json"`).

The outbox worker and the dispatcher (the data layer) record what they settle with
`events_done`, `event_failed` and `delivery_settled`; so this module imports nothing of the web
layer at its top (`install` imports FastAPI when an app is built). docs/operations.md lists
every metric.
"""

# (no `from __future__ import annotations`: `install`'s route handlers import FastAPI's types
# locally, and FastAPI reads their annotations as objects, not as names of this module)
import contextvars
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from open_registry.core import storage
from open_registry.core.codec import utcnow
from open_registry.core.version import __version__

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("registry.observability")
access_log = logging.getLogger("registry.access")

# -- request ids -----------------------------------------------------------------------------

#: the id of the request being handled (None outside a request)
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "registry_request_id", default=None
)
REQUEST_ID_HEADER = "x-request-id"
_HEADER_KEY = REQUEST_ID_HEADER.encode()
#: an incoming id is kept only when it is this: bounded, and nothing a log reader could trip on
_SAFE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The caller's `X-Request-ID` when it is sane (1-128 of `A-Z a-z 0-9 . _ : -`), else a
    new random one (32 hex digits)."""
    for name, value in headers:
        if name == _HEADER_KEY:
            if _SAFE_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()


# -- logs ------------------------------------------------------------------------------------

LOG_FORMATS = ("text", "json")


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record as `request_id` (None outside a
    request). Attach it to handlers: a logger's filter would miss its children's records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    """`LEVEL logger: message [request <id>]` (the id only inside a request)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        rid = getattr(record, "request_id", None)
        return f"{text} [request {rid}]" if rid else text


#: attributes every record has: not "extra" fields (uvicorn's `color_message` is its text again)
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC, RFC 3339), `level`, `logger`, `message`,
    `request_id` (inside a request), the fields passed with `extra=` and `exception`.

    It writes what the code logged and nothing else: the code logs no secret, token or private
    field value (docs/security.md), and neither does this."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


def logging_config(log_format: str = "text", level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` of one console handler (stderr) in `log_format`, with the
    request id on every line, uvicorn's loggers sent to it too; uvicorn's own access line is
    left out (`registry.access` says the same with the route template and the request id, and
    never the query string). `registry serve` installs it, in uvicorn's workers too."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {
            "text": {"()": f"{__name__}.TextFormatter"},
            "json": {"()": f"{__name__}.JsonFormatter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": log_format,
                "filters": ["request_id"],
            }
        },
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
        },
    }


# -- metrics ---------------------------------------------------------------------------------

#: request latency buckets, in seconds
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: methods counted by name; any other (a client may send any token) counts as OTHER
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: the route label of a request no route answered (an unknown path, a refused token)
UNMATCHED = "unmatched"
#: routes probed often (load balancers, Prometheus): their access lines are DEBUG, not INFO
_PROBES = frozenset({"/health", "/ready", "/metrics"})
#: the tables read at scrape time (by name: their modules import this one)
_OUTBOX, _DELIVERIES, _IMPORT_JOBS = "registry_outbox", "registry_delivery", "registry_import_job"
_OUTBOX_QUEUED = ("pending", "dead")
_DELIVERIES_QUEUED = ("pending", "sending", "dead")


@dataclass
class Snapshot:
    """What the database said at one scrape (kept `metrics_cache_seconds`)."""

    taken: float  # time.monotonic()
    ok: bool
    outbox: dict[str, int] = field(default_factory=dict)
    outbox_age: float = 0.0
    deliveries: dict[str, int] = field(default_factory=dict)
    delivery_age: float = 0.0
    imports_running: int = 0
    seconds: float = 0.0
    #: pending outbox events by event name (`vaccination.created`): (count, first due)
    outbox_by_event: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: pending deliveries by sink: (count, first due)
    deliveries_by_sink: dict[str, tuple[int, float]] = field(default_factory=dict)


def _age(first_due: datetime | None, now: datetime) -> float:
    """Seconds since `first_due` (0 when nothing is due yet)."""
    return max(0.0, (now - first_due).total_seconds()) if first_due is not None else 0.0


class DatabaseCollector(Collector):
    """The gauges read from the database, computed when scraped and kept `cache_seconds`
    so that scrapes (and `/ready`) cannot load the database: each refresh is a few queries on
    the `(status, available_at)` indexes of the outbox and the deliveries, plus a count of
    the (small) import job table."""

    def __init__(self, registry: Any, cache_seconds: float):
        self.registry = registry
        self.cache_seconds = cache_seconds
        self._last: Snapshot | None = None
        self._lock = threading.Lock()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # computed at scrape time only

    def snapshot(self) -> Snapshot:
        """The database's figures, at most `cache_seconds` old (one refresh at a time)."""
        last = self._last
        if last is not None and time.monotonic() - last.taken < self.cache_seconds:
            return last
        with self._lock:
            last = self._last
            if last is not None and time.monotonic() - last.taken < self.cache_seconds:
                return last
            self._last = self._query()
            return self._last

    def _query(self) -> Snapshot:
        started = time.perf_counter()
        tables = self.registry.db.metadata.tables
        try:
            with storage.read(self.registry.db.engine) as conn:
                now = utcnow()
                snap = Snapshot(taken=0.0, ok=True)
                outbox = tables[_OUTBOX]
                snap.outbox = _counts(conn, outbox, _OUTBOX_QUEUED)
                snap.outbox_age = _age(_first_due(conn, outbox), now)
                snap.outbox_by_event = _pending_by(conn, outbox, outbox.c.event, now)
                deliveries = tables.get(_DELIVERIES)
                if deliveries is not None:
                    snap.deliveries = _counts(conn, deliveries, _DELIVERIES_QUEUED)
                    snap.delivery_age = _age(_first_due(conn, deliveries), now)
                    snap.deliveries_by_sink = _pending_by(conn, deliveries, deliveries.c.sink, now)
                jobs = tables.get(_IMPORT_JOBS)
                if jobs is not None:
                    snap.imports_running = int(
                        conn.execute(
                            sa.select(sa.func.count()).where(jobs.c.status == "running")
                        ).scalar_one()
                    )
        except sa.exc.SQLAlchemyError as exc:
            log.warning(
                "metrics: the database did not answer: %s", getattr(exc, "orig", None) or exc
            )
            snap = Snapshot(taken=0.0, ok=False)
        snap.seconds = time.perf_counter() - started
        snap.taken = time.monotonic()
        return snap

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        yield _gauge(
            "registry_database_up",
            "1 when the database answered the last look of the metrics (cached), else 0",
            1 if snap.ok else 0,
        )
        yield _gauge(
            "registry_metrics_database_seconds",
            "How long the last refresh of the database-derived gauges took",
            snap.seconds,
        )
        if snap.ok:
            yield _by_status(
                "registry_outbox_queue_depth",
                "Outbox events waiting (pending, due or in back-off) or parked (dead)",
                snap.outbox,
                _OUTBOX_QUEUED,
            )
            yield _gauge(
                "registry_outbox_oldest_pending_age_seconds",
                "Seconds the earliest due pending outbox event has waited since it became due "
                "(its write, or the end of its back-off); 0 when none is due: the workers' lag",
                snap.outbox_age,
            )
            yield _by_status(
                "registry_delivery_queue_depth",
                "Deliveries (SMS, email, webhooks, ...) pending, being sent or dead",
                snap.deliveries,
                _DELIVERIES_QUEUED,
            )
            yield _gauge(
                "registry_delivery_oldest_pending_age_seconds",
                "Seconds the earliest due pending delivery has waited; 0 when none is due",
                snap.delivery_age,
            )
            yield from _per_key(
                "registry_outbox_pending_by_event",
                "Pending outbox events by event (entity.operation): what each plugin hook has "
                "still to handle, and how long the earliest has waited since it became due",
                "event",
                snap.outbox_by_event,
            )
            yield from _per_key(
                "registry_delivery_pending_by_sink",
                "Pending deliveries by sink (sms, email, webhook, fhir, ...), and how long the "
                "earliest has waited since it became due",
                "sink",
                snap.deliveries_by_sink,
            )
            yield _gauge(
                "registry_import_jobs_running",
                "Import jobs running (any process of this database)",
                snap.imports_running,
            )
        pool = self.registry.db.engine.pool
        size, checked_out = getattr(pool, "size", None), getattr(pool, "checkedout", None)
        if callable(size) and callable(checked_out):
            yield _gauge(
                "registry_db_pool_size", "Database connections this process may hold", size()
            )
            yield _gauge(
                "registry_db_pool_checked_out",
                "Database connections of this process in use now",
                checked_out(),
            )


def _counts(conn: Any, table: sa.Table, statuses: tuple[str, ...]) -> dict[str, int]:
    rows = conn.execute(
        sa.select(table.c.status, sa.func.count())
        .where(table.c.status.in_(statuses))
        .group_by(table.c.status)
    ).all()
    return {str(status): int(n) for status, n in rows}


def _first_due(conn: Any, table: sa.Table) -> datetime | None:
    """The `available_at` of the earliest pending row (the status index's first entry)."""
    return conn.execute(
        sa.select(table.c.available_at)
        .where(table.c.status == "pending")
        .order_by(table.c.available_at)
        .limit(1)
    ).scalar()


def _pending_by(
    conn: Any, table: sa.Table, key: Any, now: datetime
) -> dict[str, tuple[int, float]]:
    """Pending rows grouped by `key`: (count, seconds the earliest due one has waited)."""
    rows = conn.execute(
        sa.select(key, sa.func.count(), sa.func.min(table.c.available_at))
        .where(table.c.status == "pending")
        .group_by(key)
    ).all()
    return {str(k): (int(n), _age(_utc(first), now)) for k, n, first in rows}


def _utc(value: Any) -> datetime | None:
    """A time from an aggregate (SQLite's `min()` gives the stored text, not a datetime)."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _per_key(
    name: str, doc: str, label: str, values: dict[str, tuple[int, float]]
) -> Iterator[GaugeMetricFamily]:
    """Two gauge families: `<name>` (the counts) and `<name>_oldest_age_seconds`."""
    depth = GaugeMetricFamily(name, doc, labels=[label])
    age = GaugeMetricFamily(f"{name}_oldest_age_seconds", doc, labels=[label])
    for key in sorted(values):
        n, seconds = values[key]
        depth.add_metric([key], n)
        age.add_metric([key], seconds)
    yield depth
    yield age


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _by_status(
    name: str, doc: str, counts: dict[str, int], statuses: tuple[str, ...]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=["status"])
    for status in statuses:
        family.add_metric([status], counts.get(status, 0))
    return family


class Metrics:
    """A registry's metrics (`metrics_for(registry)`): `collectors` is what `/metrics` shows."""

    def __init__(self, registry: Any):
        self.collectors = reg = CollectorRegistry()
        labels = ("method", "route", "status")
        self.requests = Counter(
            "registry_http_requests",
            "HTTP requests answered, by method, route template and status",
            labels,
            registry=reg,
        )
        self.latency = Histogram(
            "registry_http_request_duration_seconds",
            "Time to answer an HTTP request (to the end of its body), by route template",
            labels,
            buckets=BUCKETS,
            registry=reg,
        )
        self.events = Counter(
            "registry_outbox_events_done",
            "Outbox events handled and marked done by this process's workers (certificates "
            "issued, rollups, ...): its rate is the issuance rate",
            registry=reg,
        )
        self.event_failures = Counter(
            "registry_outbox_event_failures",
            "Outbox event hand-overs that failed: retry (back-off) or dead (parked)",
            ("outcome",),
            registry=reg,
        )
        self.deliveries = Counter(
            "registry_delivery_attempts",
            "Delivery attempts settled by this process: done, retry or dead, by sink",
            ("sink", "outcome"),
            registry=reg,
        )
        info = GaugeMetricFamily(
            "registry_build_info", "The registry's version", labels=["version"]
        )
        info.add_metric([__version__], 1)
        reg.register(_Constant([info]))
        cache = float(getattr(registry.settings, "metrics_cache_seconds", 2))
        self.database = DatabaseCollector(registry, cache)
        reg.register(self.database)
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        #: (method, route, status) -> the two label children, so a request does no label lookup
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            code = str(status)
            children = (
                self.requests.labels(method, route, code),
                self.latency.labels(method, route, code),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The text `/metrics` answers for an `Accept` header, and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.collectors), content_type


class _Constant(Collector):
    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class _StateKey:
    """The key of this module's state on a `Registry` (`Registry.state`): `registry.app`'s
    `StateKey` cannot be imported here, since `registry.app` imports this module."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


_METRICS = _StateKey("observability")


def metrics_for(registry: Any) -> Metrics:
    """The metrics of `registry`, made on first use."""
    metrics: Metrics = registry.state(_METRICS, lambda: Metrics(registry))
    return metrics


def _metrics_or_none(registry: Any) -> Metrics | None:
    return metrics_for(registry) if hasattr(registry, "state") else None


def events_done(registry: Any, n: int) -> None:
    """`n` outbox events were marked done, in the worker's transaction (counted when marked:
    a transaction that then fails to commit, which is rare, is counted all the same)."""
    m = _metrics_or_none(registry)
    if m is not None and n:
        m.events.inc(n)


def event_failed(registry: Any, dead: bool) -> None:
    """An outbox event's hand-over failed: retried later, or parked as dead."""
    m = _metrics_or_none(registry)
    if m is not None:
        m.event_failures.labels("dead" if dead else "retry").inc()


def delivery_settled(registry: Any, sink: str, outcome: str) -> None:
    """A delivery attempt ended: `done`, `retry` or `dead`."""
    m = _metrics_or_none(registry)
    if m is not None:
        m.deliveries.labels(sink, outcome).inc()


# -- readiness -------------------------------------------------------------------------------


class Readiness:
    """`/ready`'s checks: the database answers, its migrations are the folder's newest, and
    the outbox workers keep up (the oldest due event waited at most `ready_max_lag_seconds`)."""

    def __init__(self, registry: Any, metrics: Metrics):
        self.registry = registry
        self.metrics = metrics
        self._heads: tuple[tuple[str, int], tuple[str, ...]] | None = None

    def heads(self, folder: Path) -> tuple[str, ...]:
        """The newest revision(s) of the migrations folder, read again only when its
        `versions/` folder changes."""
        from alembic.config import Config
        from alembic.script import ScriptDirectory

        mtime = (folder / "versions").stat().st_mtime_ns
        cached = self._heads
        if cached is not None and cached[0] == (str(folder), mtime):
            return cached[1]
        cfg = Config()
        cfg.set_main_option("script_location", str(folder))
        heads = tuple(sorted(ScriptDirectory.from_config(cfg).get_heads()))
        self._heads = ((str(folder), mtime), heads)
        return heads

    def check(self) -> dict[str, dict[str, Any]]:
        """Each check by name: `{"ok": bool, ...}`."""
        from open_registry.core.migrations import VERSION_TABLE

        reg = self.registry
        checks: dict[str, dict[str, Any]] = {}
        current: tuple[str, ...] | None = None
        try:
            with storage.read(reg.db.engine) as conn:
                conn.execute(sa.text("SELECT 1"))
                # Alembic's version table read as it is (its MigrationContext logs two INFO
                # lines each time: one probe every few seconds would fill the log)
                current = ()
                if sa.inspect(conn).has_table(VERSION_TABLE):
                    versions = sa.table(VERSION_TABLE, sa.column("version_num"))
                    found = conn.execute(sa.select(versions.c.version_num)).scalars()
                    current = tuple(sorted(str(v) for v in found))
            checks["database"] = {"ok": True}
        except sa.exc.SQLAlchemyError as exc:
            log.warning("ready: the database did not answer: %s", getattr(exc, "orig", None) or exc)
            checks["database"] = {"ok": False, "error": "the database did not answer"}
        checks["migrations"] = self._migrations(current)
        checks["worker_lag"] = self._lag()
        return checks

    def _migrations(self, current: tuple[str, ...] | None) -> dict[str, Any]:
        if current is None:
            return {"ok": False, "error": "the database did not answer"}
        try:
            heads = self.heads(self.registry.settings.migrations_path)
        except Exception as exc:  # a missing or unreadable folder: not ready, and say why
            log.warning("ready: cannot read the migrations: %s", exc)
            return {"ok": False, "error": "cannot read the migrations folder"}
        out: dict[str, Any] = {
            "ok": bool(heads) and current == heads,
            "revision": ",".join(current) or None,
            "head": ",".join(heads) or None,
        }
        if not out["ok"]:
            out["error"] = "the database is not at the newest revision: run `registry migrate`"
        return out

    def _lag(self) -> dict[str, Any]:
        reg = self.registry
        hook = reg.pm.hook
        if not (hook.after_write.get_hookimpls() or hook.after_write_batch.get_hookimpls()):
            return {"ok": True, "skipped": "no plugin handles outbox events"}
        limit = reg.settings.ready_max_lag_seconds
        if limit <= 0:
            return {"ok": True, "skipped": "ready_max_lag_seconds is 0"}
        snap = self.metrics.database.snapshot()
        if not snap.ok:
            return {"ok": False, "error": "the database did not answer"}
        out: dict[str, Any] = {
            "ok": snap.outbox_age <= limit,
            "seconds": round(snap.outbox_age, 3),
            "max_seconds": limit,
        }
        if not out["ok"]:
            out["error"] = "the outbox workers are behind: the oldest due event waits too long"
        return out


# -- the web part ----------------------------------------------------------------------------


class RouteNames:
    """The route label of a handled request: its route's path template (FastAPI routes put
    themselves in the scope), or the template of the mount or plain route whose endpoint
    answered; `UNMATCHED` when none did. Always one of a bounded set of strings."""

    def __init__(self, app: Any, mount_type: type[Any]):
        self.app = app
        self.mount_type = mount_type
        self._by_endpoint: dict[int, str] = {}
        self._built_for = -1

    def _build(self) -> None:
        found: dict[int, str] = {}
        for route in self.app.routes:
            if isinstance(route, self.mount_type):  # its template ends in `/{path}`
                found[id(route.app)] = route.path_format
            elif getattr(route, "endpoint", None) is not None and hasattr(route, "path_format"):
                found[id(route.endpoint)] = route.path_format
        self._by_endpoint = found
        self._built_for = len(self.app.routes)

    def of(self, scope: dict[str, Any]) -> str:
        route = scope.get("route")
        if route is not None:
            path = getattr(route, "path_format", None)
            if isinstance(path, str):
                return path
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED
        name = self._by_endpoint.get(id(endpoint))
        if name is None and self._built_for != len(self.app.routes):
            self._build()
            name = self._by_endpoint.get(id(endpoint))
        return name or UNMATCHED


class ObservabilityMiddleware:
    """Pure ASGI (cheap per request): gives each request an id (`REQUEST_ID`, the response's
    `X-Request-ID`), counts and times it by route template, and logs one access line
    (`registry.access`: method, route template, status, milliseconds; never the query string,
    headers or body)."""

    def __init__(self, app: Any, metrics: Metrics, names: RouteNames):
        self.app = app
        self.metrics = metrics
        self.names = names

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_of(scope["headers"])
        token = REQUEST_ID.set(rid)
        header = (_HEADER_KEY, rid.encode("ascii"))
        status = 0

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # the error handler outside this middleware logs it: the id stays set for it (the
            # request's task, and with it this context, ends right after)
            self._observe(scope, status or 500, started)
            raise
        self._observe(scope, status or 500, started)
        REQUEST_ID.reset(token)

    def _observe(self, scope: Any, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        route = self.names.of(scope)
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        self.metrics.observe_request(method, route, status, seconds)
        level = logging.DEBUG if route in _PROBES else logging.INFO
        if access_log.isEnabledFor(level):
            ms = round(seconds * 1000, 2)
            access_log.log(
                level,
                "%s %s %d %.1fms",
                method,
                route,
                status,
                ms,
                extra={"method": method, "route": route, "status": status, "duration_ms": ms},
            )


def install(app: "FastAPI", registry: Any) -> Metrics:
    """The middleware and the routes `/metrics` and `/ready` on `app` (call it after the other
    middleware, so this one is outermost and sees every response). `/metrics` is for the
    `monitoring` and `system-admin` roles, or public with `metrics_public = true` (then keep
    it on a network only the scraper reaches); `/ready` is public, as `/health` is."""
    from fastapi import Depends, Request
    from fastapi.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Mount

    from open_registry.core.auth import rules
    from open_registry.core.auth.principal import MONITORING, SYSTEM_ADMIN
    from open_registry.core.errors import PROBLEM_JSON, StartupError, problem_body
    from open_registry.core.responses import JSONResponse

    settings = registry.settings
    if settings.log_format not in LOG_FORMATS:
        raise StartupError(
            f"setting log_format must be one of {', '.join(LOG_FORMATS)}, "
            f"got {settings.log_format!r}"
        )
    metrics = metrics_for(registry)
    readiness = Readiness(registry, metrics)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, names=RouteNames(app, Mount))

    who = (
        rules.public("metrics_public is on: the operator serves it to the scraper's network only")
        if settings.metrics_public
        else rules.roles(MONITORING, SYSTEM_ADMIN)
    )

    @app.get(
        "/metrics",
        tags=["registry"],
        summary="Prometheus metrics (requests, outbox, deliveries, database pool, imports)",
        response_class=Response,
        dependencies=[Depends(who)],
    )
    async def prometheus_metrics(request: Request) -> Response:
        body, content_type = await run_in_threadpool(
            metrics.exposition, request.headers.get("accept")
        )
        return Response(body, headers={"content-type": content_type})

    @app.get(
        "/ready",
        tags=["registry"],
        summary="Readiness: database, migrations, outbox workers' lag (503 names what fails)",
        dependencies=[
            Depends(rules.public("orchestrators probe it; it names the failing check only"))
        ],
    )
    async def ready() -> JSONResponse:
        checks = await run_in_threadpool(readiness.check)
        failing = [name for name, c in checks.items() if not c["ok"]]
        if not failing:
            return JSONResponse({"status": "ready", "checks": checks})
        resp = JSONResponse(
            problem_body(
                503,
                "Not ready",
                "failing: " + ", ".join(failing),
                slug="not-ready",
                failing=failing,
                checks=checks,
            ),
            status_code=503,
            headers={"Retry-After": "5"},
        )
        resp.headers["content-type"] = PROBLEM_JSON
        return resp

    return metrics


__all__ = [
    "LOG_FORMATS",
    "REQUEST_ID",
    "JsonFormatter",
    "Metrics",
    "RequestIdFilter",
    "TextFormatter",
    "delivery_settled",
    "event_failed",
    "events_done",
    "install",
    "logging_config",
    "metrics_for",
]
