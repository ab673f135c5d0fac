"""Heavy requests' concurrency limit (registry/heavy.py) and the connection time limits
(registry/serving.py): a request head or body sent too slowly to a loopback uvicorn is answered
408 and the connection closed; an idle connection is closed."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import orjson
import pytest
import uvicorn

from open_registry.core import Settings, create_app
from open_registry.core.app import open_registry
from open_registry.core.errors import StartupError
from open_registry.core.heavy import HeavyRequests, Slots, heavy_kind
from open_registry.core.serving import BodyTimeout, protocol_factory
from tests.authn import admin_client


def scope(method: str, path: str, query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}


def test_which_requests_are_heavy():
    assert heavy_kind(scope("GET", "/api/v1/recipient/export"), 200) == "export"
    assert heavy_kind(scope("POST", "/api/v1/recipient/imports"), 200) == "import"
    assert heavy_kind(scope("GET", "/api/v1/recipient", b"limit=500"), 200) == "search"
    assert heavy_kind(scope("GET", "/api/v1/recipient", b"count=true"), 200) == "search"
    assert heavy_kind(scope("GET", "/api/v1/recipient", b"limit=50"), 200) is None
    assert heavy_kind(scope("GET", "/api/v1/recipient"), 200) is None
    assert heavy_kind(scope("GET", "/api/v1/recipient/imports"), 200) is None
    assert heavy_kind(scope("POST", "/api/v1/recipient"), 200) is None
    assert heavy_kind(scope("GET", "/api/v1/recipient/export-x/1"), 200) is None
    assert heavy_kind(scope("GET", "/ui/recipient", b"limit=900"), 200) is None


async def call(app: Any, s: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(s, receive, send)
    return sent


def test_past_the_limit_a_heavy_request_gets_503_and_an_ordinary_one_goes_through():
    release = anyio.Event()
    running = anyio.Event()

    async def app(s: Any, receive: Any, send: Any) -> None:
        if s["path"].endswith("/export"):
            running.set()
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    slots = Slots(1)
    heavy = HeavyRequests(app, slots=slots, wait_seconds=0, page_size=200)
    results: dict[str, list[dict[str, Any]]] = {}

    async def first() -> None:
        results["first"] = await call(heavy, scope("GET", "/api/v1/recipient/export"))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await running.wait()
            results["second"] = await call(heavy, scope("GET", "/api/v1/facility/export"))
            results["list"] = await call(heavy, scope("GET", "/api/v1/facility"))
            release.set()
        results["after"] = await call(heavy, scope("GET", "/api/v1/facility/export"))

    anyio.run(main)
    start, body = results["second"]
    assert start["status"] == 503
    headers = dict(start["headers"])
    assert headers[b"retry-after"] == b"1"
    problem = orjson.loads(body["body"])
    assert problem["setting"] == "heavy_request_limit" and problem["limit"] == 1
    assert "heavy_request_limit" in problem["detail"] and problem["kind"] == "export"
    assert results["list"][0]["status"] == 200  # ordinary requests never wait for a slot
    assert results["first"][0]["status"] == results["after"][0]["status"] == 200
    assert slots.in_use == 0 and slots.refused["export"] == 1


def test_a_waiting_heavy_request_takes_a_slot_that_comes_free():
    async def main() -> bool:
        slots = Slots(1)
        assert slots.try_take()

        async def free_soon() -> None:
            await anyio.sleep(0.05)
            slots.give_back()

        async with anyio.create_task_group() as tg:
            tg.start_soon(free_soon)
            took = await slots.take(5)
        return took

    assert anyio.run(main)


@pytest.fixture
def busy_client(settings: Settings) -> Iterator[Any]:
    reg = open_registry(settings.with_(heavy_request_limit=2, heavy_request_wait_seconds=0))
    app = create_app(registry=reg)
    with admin_client(app) as c:
        yield c
    reg.close()


def test_the_app_refuses_an_export_past_the_limit_and_serves_reads(busy_client: Any):
    slots = busy_client.app.state.heavy_slots
    slots.in_use = slots.limit  # two exports running
    try:
        r = busy_client.get("/api/v1/facility/export")
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert "Retry-After" in r.headers and "heavy_request_limit" in r.json()["detail"]
        assert busy_client.get("/api/v1/facility").status_code == 200
        assert busy_client.get("/api/v1/facility?limit=500").status_code == 503
    finally:
        slots.in_use = 0
    assert busy_client.get("/api/v1/facility/export").status_code == 200


def test_unusable_limits_and_timeouts_stop_the_start(settings: Settings):
    for bad in ({"heavy_request_limit": -1}, {"body_timeout_seconds": 0}):
        reg = open_registry(settings.with_(**bad))
        try:
            with pytest.raises(StartupError, match=next(iter(bad))):
                create_app(registry=reg)
        finally:
            reg.close()


# -- time limits on a loopback server ---------------------------------------------------------


async def echo(s: Any, receive: Any, send: Any) -> None:
    """Reads the whole body and answers its length."""
    if s["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise OSError("client went away")
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """uvicorn on loopback as `registry serve` runs it: the timed protocol (0.5 s for a head),
    BodyTimeout (0.5 s for a body), 1 s keep-alive."""
    config = uvicorn.Config(
        BodyTimeout(echo, seconds=0.5),
        host="127.0.0.1",
        port=0,
        http=protocol_factory(0.5),
        timeout_keep_alive=1,
        lifespan="off",
        log_level="warning",
    )
    srv = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(srv.serve(),), daemon=True)
    thread.start()
    while not srv.started:
        threading.Event().wait(0.01)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield port
    srv.should_exit = True
    thread.join(timeout=10)
    loop.close()


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (at most 5 s)."""
    sock.settimeout(5)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_complete_request_is_answered(server: int):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        )
        assert read_all(sock).endswith(b"\r\n\r\n3")


def test_a_head_sent_too_slowly_is_answered_408_and_closed(server: int):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ... and the rest never comes
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"header_timeout_seconds" in answer


def test_a_body_sent_too_slowly_is_answered_408_and_closed(server: int):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"body_timeout_seconds" in answer


def test_a_chunked_body_sent_too_slowly_is_answered_408_and_closed(server: int):
    """A body without a length (`Transfer-Encoding: chunked`) is waited for within the limit
    too (only a request whose head announces no body skips the wait)."""
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"body_timeout_seconds" in answer


def test_which_requests_have_a_body() -> None:
    from open_registry.core.serving import has_body

    def head(*headers: tuple[bytes, bytes]) -> dict:
        return {"headers": list(headers)}

    assert not has_body(head((b"host", b"x")))
    assert not has_body(head((b"content-length", b"0")))
    assert has_body(head((b"content-length", b"10")))
    assert has_body(head((b"transfer-encoding", b"chunked")))


def test_an_idle_connection_is_closed_without_an_answer(server: int):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        assert read_all(sock) == b""  # closed by the server, nothing said


def test_a_kept_alive_connection_is_closed_when_idle(server: int):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_all(sock)  # the answer, then the close after the keep-alive time
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"0")


# -- one send per response -------------------------------------------------------------------


class _Recording:
    """A transport that records what reaches it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_of_one_round_go_out_together() -> None:
    """`CoalescingTransport`: a response's head and body, written in one round of the event
    loop, reach the socket as one write at the end of the round; a write past
    `COALESCE_BYTES` goes at once; closing sends what is held first; aborting drops it; the
    rest is the transport's own."""
    from open_registry.core.serving import COALESCE_BYTES, CoalescingTransport

    async def scenario() -> tuple[_Recording, list[list[bytes]]]:
        real = _Recording()
        t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        seen: list[list[bytes]] = []
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        t.write(b"ok")
        assert real.writes == [] and t.get_write_buffer_size() == 40
        await asyncio.sleep(0)  # the loop's next round
        seen.append(list(real.writes))
        t.write(b"x" * COALESCE_BYTES)  # large: at once
        seen.append(list(real.writes))
        t.write(b"last")
        t.close()  # flushed before the close
        seen.append(list(real.writes))
        assert t.get_extra_info("peername") == "info:peername"
        return real, seen

    real, seen = asyncio.run(scenario())
    assert seen[0] == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]
    assert len(seen[1]) == 2 and len(seen[1][1]) == 65_536
    assert seen[2][-1] == b"last" and real.closed

    async def aborted() -> _Recording:
        real = _Recording()
        t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"never sent")
        t.abort()
        await asyncio.sleep(0)
        return real

    assert asyncio.run(aborted()).writes == []


def test_a_response_is_one_send_on_the_socket() -> None:
    """`registry serve`'s protocol on a recording transport: uvicorn writes each response's
    head and body separately, and each kept-alive response reaches the socket in one write."""
    from uvicorn.server import ServerState

    from open_registry.core.serving import TimedHttpToolsProtocol

    class Socket(_Recording):
        def get_extra_info(self, name: str) -> Any:
            return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5000)}.get(name)

        def pause_reading(self) -> None: ...

        def resume_reading(self) -> None: ...

    async def scenario() -> list[bytes]:
        config = uvicorn.Config(echo, lifespan="off", log_level="warning")
        config.load()
        proto = TimedHttpToolsProtocol(
            config=config, server_state=ServerState(), app_state={}, header_timeout=5
        )
        sock = Socket()
        proto.connection_made(sock)  # type: ignore[arg-type]
        for _ in range(3):
            proto.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            for _ in range(20):
                await asyncio.sleep(0)
        proto.connection_lost(None)
        return sock.writes

    writes = asyncio.run(scenario())
    assert len(writes) == 3, writes
    assert all(w.startswith(b"HTTP/1.1 200 ") and w.endswith(b"\r\n\r\n3") for w in writes)
