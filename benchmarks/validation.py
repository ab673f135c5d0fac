"""Validation cost per record: jsonschema (reference) against the compiled fast path.

    python benchmarks/validation.py [--rows N]

Prints microseconds per record for valid and invalid rows of every shipped entity and the
speed-up. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from importlib import resources

import harness

from open_registry.core.schemas.loading import default_schema_dir, load_schemas
from open_registry.generators.validators import RecordValidator


def per_record(func, records, repeat: int) -> float:
    """Mean wall-clock microseconds per record over `repeat` passes."""
    return (
        statistics.fmean(harness.seconds_per_item(func, records, repeat, time.perf_counter)) * 1e6
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="records validated per figure")
    args = parser.parse_args()
    schemas = load_schemas([default_schema_dir()])
    print(
        f"{'entity':<12} {'jsonschema us':>14} {'fast us':>9} {'speed-up':>9} "
        f"{'invalid: detail us':>19}"
    )
    for entity in schemas:
        path = resources.files("open_registry.core") / "demo" / f"{entity.name}.json"
        records = [{k: v for k, v in r.items() if k != "id"} for r in json.loads(path.read_text())]
        repeat = max(1, args.rows // len(records))
        v = RecordValidator(entity.json_schema)
        ref = v._reference  # the jsonschema validator, format checks on
        slow = per_record(ref.is_valid, records, repeat)
        fast = per_record(v.is_valid, records, repeat)
        bad = [dict(r, **{next(iter(entity.required)): 12345}) for r in records]
        detail = per_record(v.errors, bad, max(1, repeat // 10))
        print(f"{entity.name:<12} {slow:>14.1f} {fast:>9.1f} {slow / fast:>8.1f}x {detail:>19.1f}")


if __name__ == "__main__":
    main()
