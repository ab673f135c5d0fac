"""A real server for browser tests: uvicorn in a subprocess on a free loopback port."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.cli.test_serve import free_port


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
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (cwd / "server.log").read_text()
                assert time.monotonic() < deadline, f"server did not start in {timeout:.0f} s"
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
