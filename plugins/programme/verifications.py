"""Counting verifications: an ASGI middleware sees every `POST /api/v1/verify` (and the VC-API's
`POST /credentials/verify`) and its answer's outcome, and adds it to the `verify` rollup. Counts
are kept in memory and written at most every `verify_flush_seconds` (and before the dashboard
reads them), so verifying stays a read-only request most of the time."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool

from open_registry.core import storage, utcnow
from open_registry.plugins.programme.runtime import Programme
from open_registry.plugins.programme.tables import add_to_rollups

log = logging.getLogger("registry.programme")

PATHS = {"/api/v1/verify": "status", "/credentials/verify": "verified"}
MAX_BODY = 64 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]


def outcome(path: str, status: int, body: bytes) -> str:
    """VALID, REVOKED, SUSPENDED, EXPIRED or INVALID from a verify answer; ERROR for a refused
    request (not a credential, too large...)."""
    if status >= 400:
        return "ERROR"
    try:
        data = json.loads(body)
    except ValueError:
        return "ERROR"
    if not isinstance(data, dict):
        return "ERROR"
    if PATHS[path] == "verified":
        return "VALID" if data.get("verified") is True else "INVALID"
    value = data.get("status")
    return str(value)[:40] if isinstance(value, str) else "ERROR"


def count(rt: Programme, result: str) -> bool:
    """Count one verification; True when the counts are due to be written."""
    day = rt.config.local_day(utcnow()).isoformat()
    with rt.verify_lock:
        key = (day, result)
        rt.verify_counts[key] = rt.verify_counts.get(key, 0) + 1
        due = time.monotonic() - rt.verify_flushed_at >= rt.config.verify_flush_seconds
    return due


def flush(rt: Programme) -> int:
    """Write the counts kept in memory; returns how many verifications they were."""
    with rt.verify_lock:
        pending, rt.verify_counts = rt.verify_counts, {}
        rt.verify_flushed_at = time.monotonic()
    if not pending:
        return 0
    deltas = {("verify", day, "", result, "", "", ""): n for (day, result), n in pending.items()}
    try:
        with storage.write(rt.registry.db.engine) as conn:
            rt.ensure(conn)
            add_to_rollups(conn, deltas)
    except Exception:
        with rt.verify_lock:  # put them back for the next flush
            for key, n in pending.items():
                rt.verify_counts[key] = rt.verify_counts.get(key, 0) + n
        raise
    return sum(pending.values())


class VerificationCounter:
    """ASGI middleware: counts verify requests by outcome."""

    def __init__(self, app: ASGIApp, rt: Programme):
        self.app = app
        self.rt = rt

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        path = scope.get("path")
        if scope["type"] != "http" or scope.get("method") != "POST" or path not in PATHS:
            await self.app(scope, receive, send)
            return
        status = 500
        chunks: list[bytes] = []
        size = 0

        async def watch(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and size <= MAX_BODY:
                body = message.get("body", b"")
                size += len(body)
                chunks.append(body)
            await send(message)

        await self.app(scope, receive, watch)
        result = outcome(path, status, b"".join(chunks) if size <= MAX_BODY else b"")
        if count(self.rt, result):
            try:
                await run_in_threadpool(flush, self.rt)
            except Exception:  # the answer is sent; the counts wait for the next flush
                log.exception("could not write the verification counts")
