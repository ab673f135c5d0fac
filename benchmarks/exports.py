"""Memory of concurrent streamed exports: N clients export a large table at once from a loopback
`registry serve`; the server's resident memory (VmRSS) before, at its peak and after.

    .venv/bin/python benchmarks/exports.py                 # 200,000 recipients, 20 exports
    .venv/bin/python benchmarks/exports.py --quick         # 20,000 recipients
    .venv/bin/python benchmarks/exports.py --backends sqlite --rows 50000 --clients 10

The baseline, measured in the same run, is the size of one export's body: an export held in
memory whole (as the API did before it streamed) costs at least that per client, so the ratio
`peak growth / (clients x body)` says what share of that streaming still costs (near 0: flat).
The server runs with `heavy_request_limit` = the number of clients, so that all of them stream
at once (the default limit, 4, would queue the rest). Each client reads its whole answer,
counts its lines and checks that it got every record.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import harness

MB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    """The process's resident set (VmRSS of /proc/<pid>/status), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Sampler(threading.Thread):
    """VmRSS of `pid` every `every` seconds, keeping the highest."""

    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(self.every)


def fill(url: str, data_dir: Path, rows: int) -> None:
    """`rows` recipients through the importer's bulk path (the set-up, not measured)."""
    from open_registry.core.imports.importer import import_file
    from tests.registry.test_imports import RECIPIENT_HEADER, recipient_row

    path = data_dir / "recipients.csv"
    columns = RECIPIENT_HEADER.split(",")
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for i in range(rows):
            row = recipient_row(i)
            writer.writerow([row[c] for c in columns])
    reg = harness.open_bench_registry(url, data_dir, load_entrypoints=True)
    try:
        result = import_file(reg.services["recipient"], path)
        if not result.ok:
            raise SystemExit(f"the set-up import failed: {result.errors[:3]}")
        harness.skip_pending(reg)
    finally:
        reg.close()
    path.unlink()


def token(url: str, data_dir: Path) -> str:
    """A system-admin bearer token signed with the data folder's secret (the server's)."""
    from open_registry.core.auth import Principal
    from open_registry.core.auth.tokens import Tokens

    settings = harness.settings(url, data_dir, token_ttl_seconds=86_400, load_entrypoints=True)
    p = Principal("user", "benchmark", frozenset({"system-admin"}))
    return f"Bearer {Tokens(settings).issue(p).token}"


def export_once(port: int, auth: str, fmt: str, out: dict[str, Any]) -> None:
    """One client: GET the export, read it in 64 KiB pieces, count bytes and lines."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.perf_counter()
    try:
        conn.request(
            "GET", f"/api/v1/recipient/export?format={fmt}", headers={"Authorization": auth}
        )
        resp = conn.getresponse()
        out["status"] = resp.status
        size = lines = 0
        while piece := resp.read(65536):
            size += len(piece)
            lines += piece.count(b"\n")
        out.update(bytes=size, lines=lines, seconds=time.perf_counter() - started)
    except Exception as exc:  # reported with the figures
        out["error"] = repr(exc)
    finally:
        conn.close()


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    with harness.scratch_folder() as tmp:
        data_dir = tmp / "data"
        with harness.database(backend, data_dir, args.pg_url) as url:
            t0 = time.perf_counter()
            fill(url, data_dir, args.rows)
            fill_s = time.perf_counter() - t0
            env_cmd = [
                sys.executable, "-m", "open_registry.cli", "serve",
                "--database-url", url, "--data-dir", str(data_dir),
            ]  # fmt: skip
            os.environ["REGISTRY_HEAVY_REQUEST_LIMIT"] = str(args.clients)
            os.environ["REGISTRY_HEAVY_REQUEST_WAIT_SECONDS"] = "600"
            server = harness.ServerProcess(
                f"exports-{backend}", lambda port: [*env_cmd, "--port", str(port)], tmp
            )
            try:
                server.wait_ready(120)
                auth = token(url, data_dir)
                # one small request first, so that the imports made on first use are counted
                warm: dict[str, Any] = {}
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
                conn.request("GET", "/api/v1/recipient?limit=5", headers={"Authorization": auth})
                conn.getresponse().read()
                conn.close()
                time.sleep(1)
                before = rss_bytes(server.pid)
                sampler = Sampler(server.pid)
                sampler.start()
                results: list[dict[str, Any]] = [{} for _ in range(args.clients)]
                threads = [
                    threading.Thread(target=export_once, args=(server.port, auth, args.format, r))
                    for r in results
                ]
                t0 = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - t0
                time.sleep(2)
                after = rss_bytes(server.pid)
                sampler.stopped.set()
                sampler.join()
                del warm
            finally:
                server.stop()
    errors = [r for r in results if r.get("status") != 200 or "error" in r]
    expected_lines = args.rows + (1 if args.format == "csv" else 0)
    short = [r for r in results if r.get("lines") != expected_lines]
    body = max((r.get("bytes", 0) for r in results), default=0)
    peak = max(sampler.peak, before, after)
    return {
        "backend": backend,
        "fill_seconds": fill_s,
        "before": before,
        "peak": peak,
        "after": after,
        "body": body,
        "wall": wall,
        "errors": errors,
        "short": short,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default="")
    parser.add_argument("--quick", action="store_true", help="20,000 rows")
    args = parser.parse_args()
    if args.quick:
        args.rows = min(args.rows, 20_000)
    print(f"{args.clients} concurrent {args.format} exports of {args.rows:,} recipients")
    failed = False
    for backend in args.backends.split(","):
        if backend == "postgresql" and (
            problem := harness.pg_problem(args.pg_url or harness.pg_admin_url())
        ):
            print(f"postgresql: skipped ({problem})")
            continue
        r = run_backend(backend, args)
        growth = r["peak"] - r["before"]
        buffered = args.clients * r["body"]
        kept = r["after"] - r["before"]
        print(
            f"{backend:<10} RSS before {r['before'] / MB:7.1f} MB  peak {r['peak'] / MB:7.1f} MB "
            f"(+{growth / MB:.1f})  after {r['after'] / MB:7.1f} MB (+{kept / MB:.1f})"
        )
        print(
            f"{'':<10} one export {r['body'] / MB:.1f} MB; {args.clients} held whole would be "
            f"{buffered / MB:.0f} MB: peak growth / that = {harness.ratio(growth, buffered):.3f}; "
            f"all {args.clients} done in {r['wall']:.1f} s (set-up {r['fill_seconds']:.0f} s)"
        )
        if r["errors"] or r["short"]:
            failed = True
            print(f"{'':<10} FAILED: {len(r['errors'])} errors, {len(r['short'])} short answers: "
                  f"{(r['errors'] or r['short'])[:2]}")  # fmt: skip
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
