"""Master-data sync speed: N DHIS2 organisation units from a loopback server into the facility
registry (first run: creates), then the same again (a re-run: nothing changes), then with 10% of
the units renamed. Prints rows/s and each run's time as a ratio of the first run in this process.

    .venv/bin/python benchmarks/sync.py [--units 2000] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import time

import harness

from open_registry.plugins.adapters import sync
from tests.plugins.adapters.servers import Loopback, Reply, Request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    units = [
        {
            "id": f"uid{i:08d}",
            "code": f"OU-{i:06d}",
            "name": f"Clinic {i}",
            "level": 4,
            "parent": {"id": "p", "name": "Riverside", "parent": {"id": "q", "name": "North"}},
        }
        for i in range(args.units)
    ]

    def dhis2(req: Request) -> Reply:
        size, page = int(req.arg("pageSize", "100")), int(req.arg("page", "1"))
        count = max(1, -(-len(units) // size))
        return Reply(
            200,
            {
                "pager": {"page": page, "pageCount": count},
                "organisationUnits": units[(page - 1) * size : page * size],
            },
        )

    with harness.scratch_folder() as tmp, Loopback(dhis2) as server:
        reg = harness.open_bench_registry(
            args.database_url or harness.sqlite_url(tmp),
            tmp / "data",
            inline_worker=False,
            plugins={
                "dhis2": {
                    "base_url": server.url,
                    "page_size": 500,
                    "defaults": {
                        "category": "GOVT",
                        "type": "Fixed location",
                        "address.addressLine1": "-",
                        "address.pincode": "0000",
                    },
                }
            },
        )
        try:
            timings = []
            for label, change in (("first run", False), ("re-run", False), ("10% renamed", True)):
                if change:
                    for u in units[::10]:
                        u["name"] += " (renamed)"
                start = time.perf_counter()
                report = sync.run(reg, "dhis2")
                took = time.perf_counter() - start
                timings.append(took)
                print(
                    f"{label:<12} {took:7.2f} s  {report.pulled / took:8.0f} rows/s  "
                    f"x{took / timings[0]:.2f} of the first run   {report.summary()}"
                )
        finally:
            reg.close()


if __name__ == "__main__":
    main()
