"""Real HTTP servers on loopback that behave like the external systems (DHIS2, a FHIR server, a
national ID service, an SMS gateway, a document vault, a webhook receiver), including their
failures: 500s, slow answers, malformed JSON, duplicate deliveries."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[0]


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list -> JSON; str/bytes as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a slow server)


Handler = Callable[[Request], Reply]


class Loopback:
    """`with Loopback(handler) as server:` a threaded server on 127.0.0.1; `server.requests`
    lists what it received; `server.failures` queues replies served before the handler's."""

    def __init__(self, handler: Handler):
        self.handler = handler
        self.requests: list[Request] = []
        self.failures: list[Reply] = []
        self.lock = threading.Lock()
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                req = Request(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                with outer.lock:
                    outer.requests.append(req)
                    queued = outer.failures.pop(0) if outer.failures else None
                reply = queued or outer.handler(req)
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body
                ctype = "application/json"
                if isinstance(body, dict | list):
                    data = json.dumps(body).encode()
                elif isinstance(body, str):
                    data = body.encode()
                else:
                    data = body or b""
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.headers.get("Content-Type", ctype))
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        if k != "Content-Type":
                            self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout): as a real server would see it

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Loopback:
        self.thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Receiver:
    """A receiver that honours `Idempotency-Key`: a key seen before is acknowledged and dropped
    (as the SMS gateway, vault and webhook receivers we integrate with promise to do)."""

    def __init__(self) -> None:
        self.accepted: dict[str, Request] = {}
        self.duplicates: list[str] = []

    def __call__(self, req: Request) -> Reply:
        key = req.headers.get("idempotency-key", "")
        if key in self.accepted:
            self.duplicates.append(key)
            return Reply(200, {"id": key, "duplicate": True})
        self.accepted[key] = req
        return Reply(201, {"id": f"msg-{len(self.accepted)}"})
