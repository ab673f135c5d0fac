"""Closing idle and slow connections: the request head, the request body, keep-alive.

Three limits, each a setting (docs/operations.md, Timeouts):

- `header_timeout_seconds`: a connection must deliver a request's whole head (request line and
  headers) within this time of its first byte, and a new connection its first request's head
  within this time of opening. uvicorn has no such limit (it waits for a head for ever), so
  `registry serve` runs uvicorn with `TimedHttpToolsProtocol`, its httptools protocol with a
  timer: a head still incomplete when it rings is answered `408` naming the setting (a
  connection that sent nothing is closed without an answer) and the connection is closed.
- `body_timeout_seconds`: the request's body must have arrived in full within this time of its
  head (`BodyTimeout`, an ASGI middleware, so it also holds under another ASGI server): a body
  still arriving then is answered `408` naming the setting, and the connection is closed. A
  slow upload of a large import is the case to size it for: 100 MB at 2 MB/s takes 50 s.
- `keep_alive_timeout_seconds`: an idle kept-alive connection is closed this long after its
  last response (uvicorn's `timeout_keep_alive`).

A client that trickles a head or a body a byte at a time therefore holds a connection (and, for
a body, a request's task) for a bounded time, not for ever.

The same protocol sends what a response writes in one round of the event loop in one system
call (`CoalescingTransport`): uvicorn writes a response's head and body separately, and on
loopback and in virtual machines a send costs more than a small response's own work.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import anyio
import orjson

from open_registry.core.errors import PROBLEM_JSON, StartupError, problem_body

#: the settings of this module, with their smallest allowed value
TIMEOUT_SETTINGS = (
    "header_timeout_seconds",
    "body_timeout_seconds",
    "keep_alive_timeout_seconds",
)


def check_settings(settings: Any) -> None:
    """`StartupError` naming a timeout setting that is not a positive number of seconds."""
    for name in TIMEOUT_SETTINGS:
        value = getattr(settings, name)
        if value < 1:
            raise StartupError(f"setting {name} must be at least 1 second, got {value}")


def _head_timeout_response(seconds: float) -> bytes:
    body = orjson.dumps(
        problem_body(
            408,
            "Request Timeout",
            f"the request's head did not arrive within {seconds:g} s "
            "(setting header_timeout_seconds)",
            slug="request-timeout",
            setting="header_timeout_seconds",
        )
    )
    head = (
        "HTTP/1.1 408 Request Timeout\r\n"
        f"content-type: {PROBLEM_JSON}\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


#: a response's writes are held until the event loop's next round, up to this many bytes
COALESCE_BYTES = 65_536


class CoalescingTransport:
    """A socket transport whose writes made in one round of the event loop go out in one
    system call, at the end of the round. uvicorn writes a response's head and its body
    separately, each a `send` on the socket; on loopback and in virtual machines each send
    costs more than a small response's own work. Data waits at most until the loop's next
    round, or goes at once past `COALESCE_BYTES`. Everything else is the transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._held.append(bytes(data))
        self._size += len(data)
        if self._size >= COALESCE_BYTES:
            self.flush()
        elif len(self._held) == 1:
            self._loop.call_soon(self.flush)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send what is held now."""
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held, self._size = [], 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held, self._size = [], 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    HttpToolsProtocol = None  # type: ignore[assignment,misc]


if HttpToolsProtocol is not None:

    class TimedHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a time limit on each request head (see the
        module's doc), whose writes go out once per round of the event loop
        (`CoalescingTransport`). Make it with `protocol_factory(header_timeout)`; uvicorn adds
        its own arguments."""

        def __init__(self, *args: Any, header_timeout: float = 10.0, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.header_timeout = header_timeout
            self._head_timer: asyncio.TimerHandle | None = None
            self._head_started = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            # a response's head and body in one send (`CoalescingTransport`)
            super().connection_made(
                cast(asyncio.Transport, CoalescingTransport(transport, self.loop))
            )
            self._arm_head_timer()  # the first request's head, from the connection's opening

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_head_timer()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_started = True
            if self._head_timer is None:  # a kept-alive connection's next request
                self._arm_head_timer()

        def on_headers_complete(self) -> None:
            self._disarm_head_timer()
            self._head_started = False
            super().on_headers_complete()

        def _arm_head_timer(self) -> None:
            self._disarm_head_timer()
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

        def _disarm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.transport.is_closing():
                return
            if self._head_started:
                self.transport.write(_head_timeout_response(self.header_timeout))
            self.transport.close()


def protocol_factory(header_timeout: float) -> Any:
    """What to hand uvicorn as `http=`: the timed protocol with its limit (a picklable
    `functools.partial`, so `--workers N` processes get it too); `"auto"` without httptools."""
    import functools

    if HttpToolsProtocol is None:  # pragma: no cover
        return "auto"
    return functools.partial(TimedHttpToolsProtocol, header_timeout=header_timeout)


def has_body(scope: Any) -> bool:
    """Whether an HTTP request comes with a body (its head says so: a `Content-Length` other
    than 0, or a `Transfer-Encoding`); without one the server hands the app an empty body at
    once, so there is nothing to wait for."""
    for name, value in scope.get("headers") or ():
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class BodyTimeout:
    """Pure ASGI middleware: a request whose body has not fully arrived within `seconds` of
    the request's start is answered `408` (`application/problem+json`, naming the setting,
    `Connection: close`). The application sees the client as gone (`http.disconnect`), as if
    it had hung up, and whatever it answers to that is dropped."""

    def __init__(self, app: Any, *, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.seconds
        body_done = False
        timed_out = False
        started = False

        async def timed_receive() -> Any:
            nonlocal body_done, timed_out
            if body_done or timed_out:
                return await receive() if body_done else {"type": "http.disconnect"}
            message: Any = None
            with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
                message = await receive()
            if message is None:
                timed_out = True
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if timed_out and not started:
                return  # the app's answer to the "disconnect": the 408 goes out instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not timed_out or started:
                raise
        if timed_out and not started:
            await self._timed_out(send)

    async def _timed_out(self, send: Any) -> None:
        body = orjson.dumps(
            problem_body(
                408,
                "Request Timeout",
                f"the request's body did not arrive within {self.seconds:g} s "
                "(setting body_timeout_seconds)",
                slug="request-timeout",
                setting="body_timeout_seconds",
            )
        )
        await send(
            {
                "type": "http.response.start",
                "status": 408,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install(app: Any, settings: Any) -> None:
    """Add `BodyTimeout` to `app` with `body_timeout_seconds` (after checking the timeouts)."""
    check_settings(settings)
    app.add_middleware(BodyTimeout, seconds=float(settings.body_timeout_seconds))


def uvicorn_options(settings: Any) -> dict[str, Any]:
    """The keyword arguments of `uvicorn.run` for the head and keep-alive limits."""
    check_settings(settings)
    return {
        "http": protocol_factory(float(settings.header_timeout_seconds)),
        "timeout_keep_alive": int(settings.keep_alive_timeout_seconds),
    }
