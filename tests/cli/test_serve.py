"""`registry serve --demo` as a real server on loopback: the Quick start path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.uvicorn_server import free_port, wait_until_healthy


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
        resp = wait_until_healthy(f"http://127.0.0.1:{port}", proc, tmp_path / "serve.log")
        assert resp.json()["status"] == "ok"
        page = httpx.get(f"http://127.0.0.1:{port}/api/v1/facility", params={"limit": 3}).json()
        assert len(page["items"]) == 3
        assert httpx.get(f"http://127.0.0.1:{port}/docs").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    assert (tmp_path / "data" / "registry.db").exists()
