"""`registry serve` with `REGISTRY_LOG_FORMAT=json`: the server's log lines are JSON objects,
and a request's lines carry its request id (docs/operations.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.uvicorn_server import free_port, wait_until_healthy


def test_serve_writes_json_lines_with_the_request_id(tmp_path: Path):
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "REGISTRY_LOG_FORMAT": "json"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "open_registry.cli", "serve", "--port", str(port),
             "--data-dir", str(tmp_path / "data")],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_healthy(base, proc, log_path)
            resp = httpx.get(f"{base}/api/v1/facility", headers={"X-Request-ID": "serve-json-1"})
            assert resp.headers["x-request-id"] == "serve-json-1"
            assert httpx.get(f"{base}/ready").status_code == 200
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    # the banner is printed, not logged; every logged line is one JSON object
    logged = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    lines = [json.loads(line) for line in logged]
    assert any(line["logger"].startswith("uvicorn") for line in lines), lines
    access = [line for line in lines if line.get("request_id") == "serve-json-1"]
    assert [(a["logger"], a["route"], a["status"]) for a in access] == [
        ("registry.access", "/api/v1/facility", 200)
    ]
    # uvicorn's own access line (the raw URL) is replaced by ours
    assert not any(line["logger"] == "uvicorn.access" for line in lines)
