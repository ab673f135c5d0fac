"""A tiny SMTP server on loopback for tests: accepts one conversation at a time and keeps the
messages (no TLS, no auth)."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any


class LoopbackSMTP:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> LoopbackSMTP:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        # close() alone does not wake a thread blocked in accept(); shutdown() does
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as f:
                self._talk(f)

    def _talk(self, f: Any) -> None:
        def say(line: str) -> None:
            f.write(line.encode() + b"\r\n")
            f.flush()

        say("220 loopback")
        msg: dict[str, Any] = {"rcpt": []}
        while True:
            line = f.readline().decode().rstrip("\r\n")
            cmd = line[:4].upper()
            if not line or cmd == "QUIT":
                say("221 bye")
                return
            if cmd in ("EHLO", "HELO"):
                say("250 loopback")
            elif cmd == "MAIL":
                msg = {"from": line.split(":", 1)[1].strip("<> "), "rcpt": []}
                say("250 ok")
            elif cmd == "RCPT":
                msg["rcpt"].append(line.split(":", 1)[1].strip("<> "))
                say("250 ok")
            elif cmd == "DATA":
                say("354 go on")
                lines = []
                while (data := f.readline().decode()) not in (".\r\n", ""):
                    lines.append(data)
                msg["data"] = "".join(lines)
                self.messages.append(msg)
                say("250 queued")
            else:
                say("250 ok")
