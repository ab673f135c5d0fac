"""A real server for browser tests: uvicorn in a subprocess on a free loopback port."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_healthy(
    base: str, proc: subprocess.Popen[Any], log: Path, timeout: float = 30
) -> httpx.Response:
    """Poll `base/health` until it answers (its response) while `proc` runs; the log is shown
    when it exits or `timeout` s pass. One client for the whole wait: `httpx.get` makes a client
    and loads the CA bundle each time, ~30 ms of CPU taken from the starting server per poll."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1, verify=False, trust_env=False) as client:
        while True:
            try:
                return client.get(f"{base}/health")
            except httpx.TransportError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"server did not start in {timeout:.0f} s"
                time.sleep(0.2)


@contextmanager
def serve(
    factory: str,
    cwd: Path,
    env: dict[str, str],
    *,
    timeout: float = 30,
    port: int | None = None,
) -> Iterator[str]:
    """Run the app factory `module:function` until the block ends; yields its base URL once
    `/health` answers (its log is `cwd/server.log`, appended to, shown if it dies while
    starting). `port`: a given one (a server started again where the page expects it), else
    a free one."""
    port = port or free_port()
    log = (cwd / "server.log").open("a")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, proc, cwd / "server.log", timeout)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
