"""`registry serve --demo` as a real server on loopback: the Quick start path."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_demo_answers_over_http(tmp_path: Path):
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "open_registry.cli",
            "serve",
            "--demo",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        # the demo's 60 days of history are loaded by the README's Quick start test
        env={**os.environ, "REGISTRY_DEMO_HISTORY": "false"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "server did not start in 30 s"
                time.sleep(0.2)
        assert resp.json()["status"] == "ok"
        page = httpx.get(f"http://127.0.0.1:{port}/api/v1/facility", params={"limit": 3}).json()
        assert len(page["items"]) == 3
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    assert (tmp_path / "data" / "registry.db").exists()
