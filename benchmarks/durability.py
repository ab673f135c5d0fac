"""What SQLite's durability costs: record writes per second through the record service with
`sqlite_synchronous = "FULL"` (the default: every commit synced to disk) against `"NORMAL"`
(synced at checkpoints only), in the same run, on the same disk.

Two shapes of write, each on a fresh database per setting:

- single: `EntityService.create`, one recipient per transaction (what the API does per POST):
          one commit, so with FULL one sync of the write-ahead log, per record;
- batch:  `EntityService.create_many` of `--batch` recipients per transaction (imports, bulk
          API calls): one commit for many records.

The settings alternate from round to round (FULL first, then NORMAL first) and the best round of
each is kept. Wall-clock time (a sync is waiting, not CPU work). Prints records/s and the ratio
NORMAL/FULL, then a line of JSON; never asserts a timing. The figures depend on the disk under
the scratch folder (`--folder`, default the system's temporary folder): a tmpfs syncs for free.

    .venv/bin/python benchmarks/durability.py
    .venv/bin/python benchmarks/durability.py --quick
    .venv/bin/python benchmarks/durability.py --n 1000 --rounds 5 --folder /var/lib/registry
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import harness

MODES = ("FULL", "NORMAL")
_serial = itertools.count(1)


def recipient() -> dict[str, Any]:
    """A valid recipient with unique identity, phone and email (private fields: encrypted)."""
    n = next(_serial)
    return {
        "identity": f"did:example:bench:{n:09d}",
        "name": f"Bench Person {n}",
        "dob": "1980-01-01",
        "gender": "Female",
        "phone": f"+91 9{n:09d}",
        "email": f"bench{n}@mail.example",
    }


def rate(write: Callable[[], int], n: int) -> float:
    """Records per wall-clock second of `write()` calls (each returns how many it wrote) until
    `n` records are written."""
    done = 0
    start = time.perf_counter()
    while done < n:
        done += write()
    return done / max(time.perf_counter() - start, 1e-9)


def measure(folder: Path, mode: str, shape: str, n: int, batch: int) -> float:
    """Records/s of one round: a fresh database with `sqlite_synchronous = mode`."""
    work = Path(tempfile.mkdtemp(prefix=f"{mode.lower()}-{shape}-", dir=folder))
    reg = harness.open_bench_registry(
        harness.sqlite_url(work), work / "data", inline_worker=False, sqlite_synchronous=mode
    )
    try:
        svc = reg.services["recipient"]

        def single() -> int:
            svc.create(recipient(), actor="bench")
            return 1

        def many() -> int:
            return len(svc.create_many([(None, recipient()) for _ in range(batch)], actor="bench"))

        write = single if shape == "single" else many
        for _ in range(3):  # warm-up: pools, compiled statements, the key file
            write()
        return rate(write, n if shape == "single" else n * 10)
    finally:
        reg.close()


def rounds(args: argparse.Namespace, folder: Path) -> Iterator[tuple[str, str, float]]:
    for shape in ("single", "batch"):
        for r in range(args.rounds):
            order = MODES if r % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                figure = measure(folder, mode, shape, args.n, args.batch)
                print(
                    f"  round {r + 1}  {shape:<6} {mode:<6} {figure:>9,.0f} records/s", flush=True
                )
                yield shape, mode, figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n",
        type=int,
        default=400,
        help="single-record writes per round (the batch shape writes 10 times as many records)",
    )
    parser.add_argument("--batch", type=int, default=100, help="records per create_many")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per setting and shape")
    parser.add_argument("--folder", type=Path, default=None, help="where the databases go")
    parser.add_argument("--quick", action="store_true", help="smoke run: --n 60 --rounds 1")
    args = parser.parse_args()
    logging.getLogger("registry").setLevel(logging.ERROR)  # "created the data key file ..."
    if args.quick:
        args.n, args.rounds = 60, 1
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    best: dict[str, dict[str, float]] = {"single": {}, "batch": {}}
    with harness.scratch_folder("registry-bench-durability-") as tmp:
        folder = args.folder or tmp
        folder.mkdir(parents=True, exist_ok=True)
        print(f"databases in {folder}; {args.rounds} round(s), best kept")
        for shape, mode, figure in rounds(args, folder):
            best[shape][mode] = max(best[shape].get(mode, 0.0), figure)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    ratios = {}
    for shape, label in (
        ("single", "1 record per transaction"),
        ("batch", f"{args.batch} records per transaction"),
    ):
        full, normal = best[shape]["FULL"], best[shape]["NORMAL"]
        ratios[shape] = harness.ratio(normal, full)
        print(
            f"{shape:<6} ({label}):  FULL {full:>8,.0f}/s   NORMAL {normal:>8,.0f}/s   "
            f"ratio NORMAL/FULL {ratios[shape]:.2f}"
        )
    best = {shape: {m: round(v, 1) for m, v in figures.items()} for shape, figures in best.items()}
    ratios = {shape: round(v, 3) for shape, v in ratios.items()}
    print(
        json.dumps(
            {
                "records_per_second": best,
                "ratio_normal_over_full": ratios,
                "settings": {"n": args.n, "batch": args.batch, "rounds": args.rounds},
            }
        )
    )


if __name__ == "__main__":
    main()
