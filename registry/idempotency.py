"""`Idempotency-Key` on writes: a retried write replays its first answer instead of writing again.

The models are the IETF httpapi draft "The Idempotency-Key HTTP Header Field" and Stripe's API.
`IdempotencyKeys` is a pure ASGI middleware, installed inside `AuthMiddleware` (it needs the
caller) and `CrossSiteGuard`; a request without the header costs one scan of its headers.

For a POST, PUT, PATCH or DELETE carrying `Idempotency-Key: <key>` (1-255 visible ASCII
characters, or the same as a structured-field string: `"<key>"`) from a signed-in caller:

- the first request with the key claims it: a row of `registry_idempotency`, unique per (caller,
  key), is inserted `in-progress`, and the request goes on. Its body is hashed as the route reads
  it (never buffered: an import upload streams through), and its answer is kept (sealed with the
  data key, like a private field: a record's private values are in it) once it has been sent:
  status, the headers a client needs (`Content-Type`, `Location`, `ETag`, ...) and body;
- the same key again, with the same method, path, query and body: the kept answer is replayed,
  marked `Idempotent-Replayed: true`, and the route does not run;
- the same key with another method, path, query or body: 422 problem+json naming the header;
- the same key while its first request still runs (another thread, process or machine): 409
  problem+json with `Retry-After: 1`, at once (no waiting);
- answers that say "try again" are not kept and the key is released, so a retry runs the write
  again: 5xx, 408, 425 and 429; also answers larger than `MAX_STORED_BYTES`, requests cut off
  before their body was read, and a route that raised. Other 4xx are kept (as Stripe does): the
  same request would get the same refusal, so a client fixes it and sends it with a new key.

Keys are kept `idempotency_ttl_seconds` (default a day) from their first request; an expired key
is as good as new, and the outbox worker deletes expired rows (`purge_expired`, once a minute).
Keys of anonymous callers are refused (400): a key is scoped to its caller (`principal.actor`,
the same whether signed in by token or by the pages' session), and there is no caller to scope
an anonymous one to. The sign-in routes (`SKIPPED_PREFIXES`) ignore the header: their answers
carry tokens, which are never stored. GET, HEAD, OPTIONS ignore it too (they write nothing).

A server killed while a keyed request ran leaves its key `in-progress`: it answers 409 until it
expires (whether the write committed is unknown, so it is never run again under that key).

This module is part of the data layer (the worker calls `purge_expired`): it imports neither
FastAPI nor Starlette, and speaks ASGI itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.to_thread
import orjson
import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from open_registry.core import storage
from open_registry.core.codec import utcnow
from open_registry.core.crypto import NONCE_BYTES, Keyring
from open_registry.core.errors import PROBLEM_JSON, problem_body

log = logging.getLogger("registry.idempotency")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
TABLE = "registry_idempotency"
#: the methods whose requests take a key (the others ignore it)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: paths whose requests ignore the header: the sign-in routes (`registry.auth.routes.AUTH`),
#: whose answers are tokens
SKIPPED_PREFIXES = ("/api/v1/auth/",)
MAX_KEY_LENGTH = 255
#: the largest answer kept for replay, in bytes (a larger one releases its key)
MAX_STORED_BYTES = 1_048_576
#: a route that answered without reading the whole body: at most this much more is read to
#: finish the request's fingerprint (beyond it the key is released, e.g. an upload refused 413)
MAX_DRAIN_BYTES = 1_048_576
#: answers that say "try again later": never kept (besides every 5xx)
TRANSIENT = frozenset({408, 425, 429})
#: response headers kept and replayed (lower case); the outer middlewares add their own again
KEPT_HEADERS = frozenset(
    {
        b"content-type",
        b"content-location",
        b"content-disposition",
        b"location",
        b"etag",
        b"last-modified",
        b"link",
        b"preference-applied",
    }
)
#: how often `purge_expired` really deletes (per database), in seconds
PURGE_EVERY_SECONDS = 60.0
#: rows deleted per statement by `purge_expired`
PURGE_BATCH = 1000

IN_PROGRESS = "in-progress"
DONE = "done"

_HEADER_KEY = HEADER.lower().encode()
_AAD = TABLE.encode() + b"\x00"


_MD = sa.MetaData()
storage.system_tables(_MD)
#: the table (declared with the other system tables: `registry.storage.system_tables`)
IDEMPOTENCY = _MD.tables[TABLE]


# -- the key ---------------------------------------------------------------------------------


class BadKey(ValueError):
    """The header is not a usable key (the message says why)."""


def parse_key(values: list[bytes]) -> str:
    """The key of the `Idempotency-Key` header values of a request; `BadKey` when it is not
    one header of 1-255 visible ASCII characters (a structured-field string `"..."` is read as
    its content: no quote or backslash inside)."""
    if len(values) != 1:
        raise BadKey(f"send one {HEADER} header, not {len(values)}")
    raw = values[0].strip(b" \t")
    if len(raw) >= 2 and raw[:1] == b'"' and raw[-1:] == b'"':
        raw = raw[1:-1]
        if b'"' in raw or b"\\" in raw:
            raise BadKey(f"{HEADER} as a quoted string may not hold quotes or backslashes")
    if not raw:
        raise BadKey(f"{HEADER} is empty")
    if len(raw) > MAX_KEY_LENGTH:
        raise BadKey(f"{HEADER} is longer than {MAX_KEY_LENGTH} characters")
    if any(b < 0x21 or b > 0x7E for b in raw):
        raise BadKey(f"{HEADER} may hold visible ASCII characters only (no spaces)")
    return raw.decode("ascii")


def scope_of(actor: str) -> str:
    """The stored scope of a caller: the actor, or its SHA-256 when longer than the column."""
    if len(actor) <= 255:
        return actor
    return "sha256:" + hashlib.sha256(actor.encode()).hexdigest()


# -- sealing answers ---------------------------------------------------------------------------


def _associated(scope: str, key: str) -> bytes:
    return _AAD + scope.encode() + b"\x00" + key.encode()


def seal(keyring: Keyring, scope: str, key: str, plain: bytes) -> bytes:
    """`plain` encrypted with the current data key, bound to (scope, key): `<kid>:<nonce|ct>`."""
    kid, aead = keyring.current_aead()
    nonce = os.urandom(NONCE_BYTES)
    return kid.encode() + b":" + nonce + aead.encrypt(nonce, plain, _associated(scope, key))


def unseal(keyring: Keyring, scope: str, key: str, sealed: bytes) -> bytes | None:
    """What `seal` sealed; None when it cannot be opened (a retired key, altered data)."""
    kid, sep, rest = bytes(sealed).partition(b":")
    aead = keyring.aead(kid.decode("ascii", "replace")) if sep else None
    if aead is None or len(rest) < NONCE_BYTES + 16:
        return None
    try:
        return aead.decrypt(rest[:NONCE_BYTES], rest[NONCE_BYTES:], _associated(scope, key))
    except InvalidTag:
        return None


def _pack(headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    head = orjson.dumps([[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers])
    return head + b"\n" + body  # orjson never writes a raw newline


def _unpack(plain: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    head, _, body = plain.partition(b"\n")
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in orjson.loads(head)], body


# -- the rows ----------------------------------------------------------------------------------


@dataclass
class Claim:
    """The outcome of claiming a key: `id` set when this request holds it (its row, claimed at
    `at`); else the row found."""

    id: int | None
    at: datetime
    row: dict[str, Any] | None = None


def _upsert(engine: Engine) -> Any:
    """INSERT, or take over the row of an expired key; RETURNING the id (none: a live row)."""
    t = IDEMPOTENCY
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(t)
    fresh = {c: stmt.excluded[c] for c in ("method", "path", "state", "created_at", "expires_at")}
    cleared: dict[str, Any] = {
        "fingerprint": None,
        "body_bytes": None,
        "status": None,
        "response": None,
    }
    return stmt.on_conflict_do_update(
        index_elements=[t.c.scope, t.c.key],
        set_={**fresh, **cleared},
        where=t.c.expires_at <= stmt.excluded.created_at,
    ).returning(t.c.id)


_ROW = (
    IDEMPOTENCY.c.id,
    IDEMPOTENCY.c.method,
    IDEMPOTENCY.c.path,
    IDEMPOTENCY.c.state,
    IDEMPOTENCY.c.fingerprint,
    IDEMPOTENCY.c.body_bytes,
    IDEMPOTENCY.c.status,
    IDEMPOTENCY.c.response,
)


def claim(
    engine: Engine, scope: str, key: str, method: str, path: str, ttl: float, now: datetime
) -> Claim:
    """Claim (scope, key) for a request, or find who holds it (one write transaction)."""
    t = IDEMPOTENCY
    values = {
        "scope": scope,
        "key": key,
        "method": method,
        "path": path,
        "state": IN_PROGRESS,
        "created_at": now,
        "expires_at": now + timedelta(seconds=ttl),
    }
    with storage.write(engine) as conn:
        got = conn.execute(_upsert(engine), values).scalar()
        if got is not None:
            return Claim(int(got), now)
        row = conn.execute(sa.select(*_ROW).where(t.c.scope == scope, t.c.key == key)).first()
    return Claim(None, now, dict(row._mapping) if row is not None else None)


def _ours(held: Claim) -> Any:
    """The row `held` claimed, unless it expired meanwhile and another request took it over."""
    t = IDEMPOTENCY
    return sa.and_(t.c.id == held.id, t.c.created_at == held.at)


def finish(
    engine: Engine,
    held: Claim,
    *,
    fingerprint: str,
    body_bytes: int,
    status: int,
    response: bytes,
) -> None:
    """Keep the answer of the request holding the key."""
    t = IDEMPOTENCY
    with storage.write(engine) as conn:
        conn.execute(
            t.update()
            .where(_ours(held))
            .values(
                state=DONE,
                fingerprint=fingerprint,
                body_bytes=body_bytes,
                status=status,
                response=response,
            )
        )


def release(engine: Engine, held: Claim) -> None:
    """Forget a key whose request gave no answer worth keeping (a retry runs it again)."""
    with storage.write(engine) as conn:
        conn.execute(IDEMPOTENCY.delete().where(_ours(held)))


_LAST_PURGE: weakref.WeakKeyDictionary[Engine, float] = weakref.WeakKeyDictionary()
_PURGE_LOCK = threading.Lock()


def purge_expired(
    registry: Any, *, now: datetime | None = None, every: float = PURGE_EVERY_SECONDS
) -> int:
    """Delete the expired keys (in batches); returns how many. Called by the outbox worker on
    every pass, it works at most once per `every` seconds per database (0: now). Never raises:
    a failure is logged and tried again at the next turn."""
    engine: Engine = registry.db.engine
    clock = time.monotonic()
    with _PURGE_LOCK:
        last = _LAST_PURGE.get(engine)
        if every and last is not None and clock - last < every:
            return 0
        _LAST_PURGE[engine] = clock
    t = IDEMPOTENCY
    cutoff = now or utcnow()
    deleted = 0
    try:
        while True:
            with storage.write(engine) as conn:
                batch = (
                    sa.select(t.c.id).where(t.c.expires_at <= cutoff).limit(PURGE_BATCH)
                ).scalar_subquery()
                n = int(conn.execute(t.delete().where(t.c.id.in_(batch))).rowcount or 0)
            deleted += n
            if n < PURGE_BATCH:
                break
    except Exception as exc:
        log.warning("deleting expired idempotency keys failed: %s", exc)
    if deleted:
        log.info("deleted %d expired idempotency key(s)", deleted)
    return deleted


# -- the middleware ----------------------------------------------------------------------------


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


def _problem(
    status: int, title: str, detail: str, slug: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> Answer:
    """A problem+json answer naming the header (`"header": "Idempotency-Key"`)."""
    body = orjson.dumps(problem_body(status, title, detail, slug=slug, header=HEADER))
    return status, [(b"content-type", PROBLEM_JSON.encode()), *headers], body


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _offload(fn: Callable[..., Any], *args: Any, **kw: Any) -> Awaitable[Any]:
    return anyio.to_thread.run_sync(lambda: fn(*args, **kw))


@dataclass
class _Exchange:
    """What one keyed request sent and answered, as it streams through."""

    digest: Any  # an hmac object
    body_bytes: int = 0
    body_done: bool = False
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    keep: bool = True  # False: the answer cannot be kept (too large, not a plain body)
    complete: bool = False  # the answer's last byte was sent

    def took(self, message: Message) -> None:
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            self.digest.update(chunk)
            self.body_bytes += len(chunk)
            if not message.get("more_body", False):
                self.body_done = True


class IdempotencyKeys:
    """The `Idempotency-Key` middleware (see the module's docstring). Install it inside
    `AuthMiddleware` (added before it: `app.add_middleware` makes the last one outermost)."""

    def __init__(self, app: ASGIApp, registry: Any):
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            await self.app(scope, receive, send)
            return
        values = [v for n, v in scope["headers"] if n == _HEADER_KEY]
        if not values or scope["path"].startswith(SKIPPED_PREFIXES):
            await self.app(scope, receive, send)
            return
        await self._keyed(scope, receive, send, values)

    # -- a request with a key ------------------------------------------------------------------

    def _keyring(self) -> Keyring:
        keyring: Keyring = self.registry.db.keyring()
        return keyring

    def _fingerprint_start(self, scope: Scope) -> Any:
        mac = hmac.new(self._keyring().index_key, digestmod=hashlib.sha256)
        mac.update(_AAD + scope["method"].encode() + b"\x00" + scope.get("raw_path", b""))
        mac.update(b"\x00" + scope.get("query_string", b"") + b"\x00")
        return mac

    async def _keyed(self, scope: Scope, receive: Receive, send: Send, values: list[bytes]) -> None:
        try:
            key = parse_key(values)
        except BadKey as exc:
            await _respond(send, *_problem(400, "Bad request", str(exc), "bad-request"))
            return
        principal = (scope.get("state") or {}).get("principal")
        actor = getattr(principal, "actor", None)
        if not actor:
            detail = (
                f"{HEADER} needs a signed-in caller: keys are kept per caller (send the request "
                "without it, or sign in)"
            )
            await _respond(send, *_problem(400, "Bad request", detail, "bad-request"))
            return
        owner = scope_of(str(actor))
        method = scope["method"]
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope["path"] + (f"?{query}" if query else "")
        ttl = max(1, int(getattr(self.registry.settings, "idempotency_ttl_seconds", 86400)))
        engine = self.registry.db.engine
        try:
            got = await _offload(claim, engine, owner, key, method, path, ttl, utcnow())
        except sa.exc.OperationalError as exc:
            log.error("idempotency key claim failed: %s", exc.orig)
            detail = "the database is busy or unreachable; try again shortly"
            await _respond(
                send,
                *_problem(
                    503, "Service unavailable", detail, "unavailable", [(b"retry-after", b"1")]
                ),
            )
            return
        if got.id is None:
            await self._answer_held(scope, receive, send, owner, key, got.row or {})
            return
        await self._first(scope, receive, send, owner, key, got)

    async def _answer_held(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        owner: str,
        key: str,
        row: dict[str, Any],
    ) -> None:
        """The key is held by an earlier request: 409 while it runs, else replay or 422."""
        method = scope["method"]
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope["path"] + (f"?{query}" if query else "")
        if row.get("method") != method or row.get("path") != path:
            await _respond(send, *_reused(row))
            return
        if row.get("state") != DONE:
            detail = (
                f"a request with this {HEADER} is still being processed; retry after it has "
                "been answered"
            )
            await _respond(
                send,
                *_problem(
                    409, "Conflict", detail, "idempotency-in-progress", [(b"retry-after", b"1")]
                ),
            )
            return
        # the same body? read it (never kept), stopping as soon as it is longer than the first
        digest = self._fingerprint_start(scope)
        size, limit = 0, int(row.get("body_bytes") or 0)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                break
            digest.update(chunk)
            if not message.get("more_body", False):
                break
        if size != limit or not hmac.compare_digest(
            digest.hexdigest(), row.get("fingerprint") or ""
        ):
            await _respond(send, *_reused(row, other_body=True))
            return
        plain = unseal(self._keyring(), owner, key, row.get("response") or b"")
        if plain is None:
            detail = (
                f"this {HEADER} was used, but its first answer can no longer be read (its data "
                "key was retired); look up whether the write happened, then use a new key"
            )
            await _respond(send, *_problem(409, "Conflict", detail, "idempotency-unreadable"))
            return
        headers, body = _unpack(plain)
        await _respond(
            send, int(row["status"]), [*headers, (b"idempotent-replayed", b"true")], body
        )

    async def _first(
        self, scope: Scope, receive: Receive, send: Send, owner: str, key: str, held: Claim
    ) -> None:
        """This request holds the key: run it, then keep its answer or release the key."""
        engine = self.registry.db.engine
        ex = _Exchange(self._fingerprint_start(scope))

        async def receive_hashed() -> Message:
            message = await receive()
            ex.took(message)
            return message

        async def drain() -> None:
            """Read what the route left of the body (a refusal before reading it)."""
            left = MAX_DRAIN_BYTES
            while not ex.body_done:
                message = await receive()
                if message["type"] != "http.request":
                    return
                ex.took(message)
                left -= len(message.get("body", b""))
                if left < 0:
                    return

        async def send_kept(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                ex.status = int(message["status"])
                ex.headers = [
                    (bytes(n).lower(), bytes(v))
                    for n, v in message.get("headers", ())
                    if bytes(n).lower() in KEPT_HEADERS
                ]
            elif kind == "http.response.body":
                chunk = message.get("body", b"")
                if ex.keep:
                    ex.size += len(chunk)
                    if ex.size > MAX_STORED_BYTES:
                        ex.keep, ex.chunks = False, []
                    else:
                        ex.chunks.append(bytes(chunk))
                if not message.get("more_body", False):
                    if not ex.body_done:
                        await drain()
                    ex.complete = True
            else:
                ex.keep = False  # e.g. a file sent by the server itself: not ours to keep
            await send(message)

        try:
            await self.app(scope, receive_hashed, send_kept)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _offload(_quietly, release, engine, held)
            raise
        with anyio.CancelScope(shield=True):
            if (
                ex.keep
                and ex.complete
                and ex.body_done
                and ex.status < 500
                and ex.status not in TRANSIENT
            ):
                sealed = seal(self._keyring(), owner, key, _pack(ex.headers, b"".join(ex.chunks)))
                await _offload(
                    _quietly,
                    finish,
                    engine,
                    held,
                    fingerprint=ex.digest.hexdigest(),
                    body_bytes=ex.body_bytes,
                    status=ex.status,
                    response=sealed,
                )
            else:
                await _offload(_quietly, release, engine, held)


def _reused(row: dict[str, Any], *, other_body: bool = False) -> Answer:
    """422: the key was used for another request (another target, or the same with another
    body)."""
    target = f"{row.get('method')} {row.get('path')}"
    what = f"{target} with another body" if other_body else target
    detail = (
        f"this {HEADER} was already used for another request ({what}): a key stands for one "
        "request; send a new key for a new request"
    )
    return _problem(422, "Unprocessable content", detail, "idempotency-key-reused")


def _quietly(fn: Callable[..., Any], *args: Any, **kw: Any) -> None:
    """Keeping or releasing a key after the answer was sent: a failure is logged, not raised
    (the client has its answer; the key then stays in progress until it expires)."""
    try:
        fn(*args, **kw)
    except Exception:
        log.exception("idempotency key bookkeeping failed")


# -- the OpenAPI document ---------------------------------------------------------------------

PARAMETER: dict[str, Any] = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "description": (
        "Makes the write safe to retry (docs/api.md, Idempotent writes): the same key with the "
        "same request replays the first answer (`Idempotent-Replayed: true`) instead of writing "
        "again; with another request: 422; while the first still runs: 409 (`Retry-After`). "
        "Kept per caller for `idempotency_ttl_seconds`; signed-in callers only."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH + 2},
    "example": "8e03978e-40d5-43e8-bc93-6894a57f9324",
}


def document(spec: dict[str, Any]) -> None:
    """Declare the optional `Idempotency-Key` header on every write operation of `spec`."""
    components = spec.setdefault("components", {}).setdefault("parameters", {})
    components["IdempotencyKey"] = PARAMETER
    ref = {"$ref": "#/components/parameters/IdempotencyKey"}
    for path, operations in (spec.get("paths") or {}).items():
        if path.startswith(SKIPPED_PREFIXES):
            continue
        for method, operation in operations.items():
            if method.upper() in WRITE_METHODS and isinstance(operation, dict):
                params = operation.setdefault("parameters", [])
                if ref not in params:
                    params.append(ref)


__all__ = [
    "HEADER",
    "IDEMPOTENCY",
    "REPLAYED",
    "IdempotencyKeys",
    "document",
    "purge_expired",
]
