"""Tail latency of one client's filtered list requests against `registry serve` on SQLite, with
and without the garbage-collector freeze after start-up (`gc_freeze`, docs/operations.md).

A SQLite database in a scratch folder gets the demo data and `--rows` more facilities (random
status and state), with the shipped plugins loaded as `registry serve` loads them. Then the
same command serves it twice on a free loopback port, once with `REGISTRY_GC_FREEZE=false`
(the baseline: what every process did before the freeze) and once with the default (frozen);
`--repeat` rounds, the two arms alternating. In each, one client on one keep-alive connection
sends `--warmup` untimed requests, then `--requests` timed ones, each when the previous answer
is in:

    GET /api/v1/facility?status=Active&address.state=<state>&limit=50   (system-admin token)

Prints, per arm, p50/p90/p99/max over every timed request of its rounds (client side, ms), the
server process's CPU per request, and the ratios frozen/unfrozen; never asserts them. The last
line is JSON.

    .venv/bin/python benchmarks/latency.py --quick      # smoke run, ~30 s
    .venv/bin/python benchmarks/latency.py              # 5,000 rows, 3 x 2,000 requests per arm
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import harness

STATES = ["Northland", "Southland", "Eastmarch", "Westvale", "Lakeshore"]
ARMS = {"unfrozen": "false", "frozen": "true"}


def prepare(url: str, data_dir: Path, rows: int, seed: int) -> str:
    """The demo data plus `rows` facilities in the database of `url`; returns a system-admin
    bearer token signed with the data folder's secret (the server's)."""
    from open_registry.core.auth import Principal
    from open_registry.core.auth.tokens import Tokens

    reg = harness.open_bench_registry(url, data_dir, demo=True, load_entrypoints=True)
    try:
        service = reg.services["facility"]
        demo = resources.files("open_registry.core") / "demo" / "facility.json"
        template = json.loads(demo.read_text())[0]
        rng = random.Random(seed)
        records = []
        for i in range(rows):
            record = {k: v for k, v in template.items() if k != "id"}
            record["code"] = f"BENCH-{i:07d}"
            record["name"] = f"Bench facility {i}"
            record["status"] = rng.choice(["Active", "Active", "Inactive"])
            record["address"] = {**record["address"], "state": rng.choice(STATES)}
            records.append(record)
        harness.create_all(service, records)
        harness.skip_pending(reg)
        p = Principal("user", "benchmark", frozenset({"system-admin"}))
        return Tokens(reg.settings.with_(token_ttl_seconds=86_400)).issue(p).token
    finally:
        reg.close()


def serve_command(url: str, data_dir: Path) -> Any:
    """`registry serve` on SQLite database `url` and `data_dir`, at a given port."""
    script = shutil.which("registry", path=str(Path(sys.executable).parent))
    base = [script] if script else [sys.executable, "-m", "open_registry.cli"]
    data = str(data_dir)

    def command(port: int) -> list[str]:
        return [*base, "serve", "--port", str(port), "--database-url", url, "--data-dir", data]

    return command


def timed_requests(port: int, paths: list[str], token: str, warmup: int) -> list[float]:
    """Milliseconds per request of `paths` after `warmup` untimed ones, one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"authorization": f"Bearer {token}", "accept": "application/json"}

    def get(path: str) -> None:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise SystemExit(f"GET {path}: {resp.status} {body[:300]!r}")

    for path in paths[:warmup]:
        get(path)
    out = []
    for path in paths:
        start = time.perf_counter()
        get(path)
        out.append((time.perf_counter() - start) * 1000)
    conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (smoke test)")
    parser.add_argument("--rows", type=int, default=None, help="facilities added (5000)")
    parser.add_argument("--requests", type=int, default=None, help="timed requests per round")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests per round")
    parser.add_argument("--repeat", type=int, default=None, help="rounds per arm (3)")
    args = parser.parse_args()
    rows = args.rows if args.rows is not None else (1000 if args.quick else 5000)
    n = args.requests or (300 if args.quick else 2000)
    repeat = args.repeat or (1 if args.quick else 3)

    rng = random.Random(19)
    paths = [
        f"/api/v1/facility?status=Active&address.state={rng.choice(STATES)}&limit=50"
        for _ in range(n)
    ]
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")
    latencies: dict[str, list[float]] = {arm: [] for arm in ARMS}
    cpu: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with harness.scratch_folder() as workdir:
        data_dir = workdir / "data"
        with harness.database("sqlite", data_dir) as url:
            token = prepare(url, data_dir, rows, seed=19)
            print(f"SQLite, {rows} facilities + demo data; {n} requests x {repeat} per arm")
            for round_ in range(repeat):
                order = list(ARMS) if round_ % 2 == 0 else list(reversed(ARMS))
                for arm in order:
                    saved = os.environ.get("REGISTRY_GC_FREEZE")
                    os.environ["REGISTRY_GC_FREEZE"] = ARMS[arm]
                    try:
                        server = harness.ServerProcess(arm, serve_command(url, data_dir), workdir)
                    finally:
                        if saved is None:
                            os.environ.pop("REGISTRY_GC_FREEZE", None)
                        else:
                            os.environ["REGISTRY_GC_FREEZE"] = saved
                    try:
                        server.wait_ready()
                        before = server.cpu_seconds() or 0.0
                        ms = timed_requests(server.port, paths, token, args.warmup)
                        after = server.cpu_seconds() or 0.0
                    finally:
                        server.stop()
                    latencies[arm] += ms
                    cpu[arm].append((after - before) / (n + args.warmup) * 1e6)
                    ms.sort()
                    print(
                        f"  round {round_ + 1} {arm:<9} p50 {harness.percentile(ms, 50):6.2f}"
                        f"  p99 {harness.percentile(ms, 99):6.2f}  max {ms[-1]:7.2f} ms"
                    )
    figures: dict[str, dict[str, float]] = {}
    print("\nms per request, one client (every timed request of the arm's rounds)")
    for arm, values in latencies.items():
        values.sort()
        figures[arm] = {
            "p50": harness.percentile(values, 50),
            "p90": harness.percentile(values, 90),
            "p99": harness.percentile(values, 99),
            "max": values[-1],
            "server_cpu_us": sum(cpu[arm]) / len(cpu[arm]),
        }
        f = figures[arm]
        print(
            f"  {arm:<9} p50 {f['p50']:6.2f}  p90 {f['p90']:6.2f}  p99 {f['p99']:6.2f}"
            f"  max {f['max']:7.2f}   server cpu {f['server_cpu_us']:6.0f} us/req"
        )
    ratios = {
        k: harness.ratio(figures["frozen"][k], figures["unfrozen"][k]) for k in figures["frozen"]
    }
    print(
        f"  frozen/unfrozen: p50 {ratios['p50']:.2f}x  p99 {ratios['p99']:.2f}x"
        f"  cpu {ratios['server_cpu_us']:.2f}x"
    )
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(
        json.dumps({"rows": rows, "requests": n, "repeat": repeat, "ms": figures, "ratio": ratios})
    )


if __name__ == "__main__":
    main()
