"""Heavy requests take a slot: at most `heavy_request_limit` of them run at once per process.

An export streams a whole table, an import upload writes up to `import_max_upload_bytes` to disk
and starts a job, a list page of hundreds of records or one with `count=true` reads many rows:
each holds a database connection, a worker thread and the CPU for long. Without a limit, twenty
of them at once take the connection pool and the thread pool, and the ordinary reads and writes
(a vaccination recorded at a clinic) queue behind them. With it, a heavy request past the
limit waits up to `heavy_request_wait_seconds` for a slot, then gets `503` with `Retry-After`
naming the limit; everything else never waits for a slot.

Which requests are heavy is decided from the method and the path before the route runs
(`heavy_kind`), so one middleware covers every entity, including those a schema reload adds:

| request | kind |
| --- | --- |
| `GET /api/v1/{entity}/export` | `export` |
| `POST /api/v1/{entity}/imports` | `import` |
| `GET /api/v1/{entity}?limit=N` with N over `heavy_page_size`, or with `count=true` | `search` |

A `POST /api/v1/{entity}/search` body is not read here (the route reads it, within
`max_body_bytes`): its page is bounded by `max_page_size` like any list page.

The count is per process and shared by all the event loops of the process (a plain counter
under a lock, polled while waiting: waiting only happens past the limit, so the ordinary path
costs one lock). A slot is held until the response has been sent to its end, which for an
export is the whole stream.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any
from urllib.parse import parse_qsl

import anyio
import orjson

from open_registry.core.errors import PROBLEM_JSON, StartupError, problem_body
from open_registry.core.settings import parse_flag

API_PREFIX = "/api/v1/"
#: how often a waiting heavy request looks for a free slot, in seconds
POLL_SECONDS = 0.05
KINDS = ("export", "import", "search")


def heavy_kind(scope: dict[str, Any], page_size: int) -> str | None:
    """`export`, `import` or `search` for a heavy request (see the module's table), else None."""
    path: str = scope.get("path", "")
    if not path.startswith(API_PREFIX):
        return None
    parts = path[len(API_PREFIX) :].split("/")
    method = scope.get("method")
    if len(parts) == 2 and parts[0]:
        if method == "GET" and parts[1] == "export":
            return "export"
        if method == "POST" and parts[1] == "imports":
            return "import"
        return None
    if len(parts) == 1 and parts[0] and method == "GET":
        query = scope.get("query_string", b"")
        if b"limit" not in query and b"count" not in query:
            return None  # the common list page: no parsing
        for key, value in parse_qsl(query.decode("latin-1")):
            # a limit of many digits is refused later (400); it is not converted here, where
            # Python would refuse past 4,300 digits
            if key == "limit" and value.isdigit() and (len(value) > 9 or int(value) > page_size):
                return "search"
            if key == "count" and parse_flag(value):
                return "search"
    return None


class Slots:
    """A counting limit shared by the threads and event loops of one process."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0
        #: heavy requests refused since start, by kind
        self.refused = dict.fromkeys(KINDS, 0)
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        with self._lock:
            if self.in_use >= self.limit:
                return False
            self.in_use += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.in_use -= 1

    async def take(self, wait_seconds: float) -> bool:
        """A slot, waiting up to `wait_seconds` for one; False when none came free."""
        if self.try_take():
            return True
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            await anyio.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            if self.try_take():
                return True
        return False


class HeavyRequests:
    """Pure ASGI middleware: heavy requests (`heavy_kind`) run within `Slots`; past the limit
    and the wait, `503` (`application/problem+json`, slug `busy`) with `Retry-After`."""

    def __init__(self, app: Any, *, slots: Slots, wait_seconds: float, page_size: int):
        self.app = app
        self.slots = slots
        self.wait_seconds = wait_seconds
        self.page_size = page_size

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.slots.limit <= 0:
            await self.app(scope, receive, send)
            return
        kind = heavy_kind(scope, self.page_size)
        if kind is None:
            await self.app(scope, receive, send)
            return
        if not await self.slots.take(self.wait_seconds):
            self.slots.refused[kind] += 1
            await self._busy(kind, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.give_back()

    async def _busy(self, kind: str, send: Any) -> None:
        limit = self.slots.limit
        detail = (
            f"too many heavy requests (exports, imports, large list pages) at once: at most "
            f"{limit} run at a time (setting heavy_request_limit) and none came free within "
            f"{self.wait_seconds:g} s (heavy_request_wait_seconds); try again later"
        )
        body = orjson.dumps(
            problem_body(
                503,
                "Busy",
                detail,
                slug="busy",
                kind=kind,
                limit=limit,
                setting="heavy_request_limit",
            )
        )
        retry = str(max(1, math.ceil(self.wait_seconds)))
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", retry.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def check_settings(settings: Any) -> None:
    """`StartupError` naming a heavy-request setting that cannot be used."""
    for name, minimum in (
        ("heavy_request_limit", 0),
        ("heavy_request_wait_seconds", 0),
        ("heavy_page_size", 1),
    ):
        value = getattr(settings, name)
        if value < minimum:
            raise StartupError(f"setting {name} must be at least {minimum}, got {value}")


def install(app: Any, settings: Any) -> Slots:
    """Add the middleware to `app` (add it before the observability middleware, so that it
    runs inside it and refused requests are counted and logged like any other); the slots are
    also `app.state.heavy_slots`. `heavy_request_limit = 0` turns the limit off."""
    check_settings(settings)
    slots = Slots(settings.heavy_request_limit)
    app.state.heavy_slots = slots
    app.add_middleware(
        HeavyRequests,
        slots=slots,
        wait_seconds=float(settings.heavy_request_wait_seconds),
        page_size=settings.heavy_page_size,
    )
    return slots
