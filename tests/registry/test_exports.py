"""Export, and export -> import round trips, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from open_registry.core.demo import _order, load_demo_data
from open_registry.core.errors import BadRequest
from open_registry.core.exports import cell, export
from open_registry.core.imports.importer import import_file

SHIPPED = ["program", "vaccine", "facility", "vaccinator", "recipient"]


def all_records(registry: Any, entity: str) -> list[dict[str, Any]]:
    svc = registry.services[entity]
    return svc.search(svc.parser.from_params([("limit", "1000")])).items


def without_times(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            k: v
            for k, v in r.items()
            if k not in ("_createdAt", "_updatedAt", "_createdBy", "_updatedBy")
        }
        for r in records
    ]


def empty_tables(registry: Any) -> None:
    with registry.db.engine.begin() as conn:
        for name in reversed(_order(registry.services)):
            conn.execute(registry.services[name].table.delete())
        conn.execute(sa.text("DELETE FROM registry_audit"))
        conn.execute(sa.text("DELETE FROM registry_outbox"))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_then_import_into_an_empty_database_gives_the_same_records(
    registry: Any, tmp_path: Path, fmt: str
):
    load_demo_data(registry.services)
    extra = registry.services["recipient"]
    extra.create(  # values that need the CSV conventions' escapes
        {
            "name": "Pipe | Person",
            "identity": "did:x:pipe",
            "dob": "1990-01-01",
            "gender": "Other",
            "comorbidities": ["a|b", "[c]"],
            "yob": 1990,
            "address": {"district": "Line\nbreak", "state": 'S,"q"'},
        },
        actor=None,
    )
    before = {e: all_records(registry, e) for e in SHIPPED}
    files = {}
    for entity in SHIPPED:
        files[entity] = tmp_path / f"{entity}.{fmt}"
        with files[entity].open("w", newline="", encoding="utf-8") as fh:
            assert export(registry.services[entity], fh, fmt) == len(before[entity])
    empty_tables(registry)
    for entity in [e for e in _order(registry.services) if e in SHIPPED]:
        result = import_file(registry.services[entity], files[entity], keep_ids=True)
        assert result.ok, (entity, result.errors)
    for entity in SHIPPED:
        assert without_times(all_records(registry, entity)) == without_times(before[entity])


def test_csv_export_uses_the_import_header_conventions(registry: Any):
    load_demo_data(registry.services)
    out = io.StringIO()
    export(registry.services["facility"], out, "csv")
    reader = csv.DictReader(io.StringIO(out.getvalue()))
    header = reader.fieldnames or []
    assert header[0] == "id" and header[-3:] == ["_version", "_createdAt", "_updatedAt"]
    assert {
        "address.district",
        "geoLocation.lat",
        "admins.0.name",
        "programs.0.programId",
        "programs.0.schedule.days",
    } <= set(header)
    row = next(reader)
    assert "|" in row["programs.0.schedule.days"]


def test_where_filters_like_the_api(registry: Any):
    load_demo_data(registry.services)
    svc = registry.services["recipient"]
    out = io.StringIO()
    n = export(svc, out, "jsonl", ["gender=Female", "dob[gte]=1960-01-01"])
    lines = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert n == len(lines) > 0
    assert all(r["gender"] == "Female" and r["dob"] >= "1960-01-01" for r in lines)
    expected = svc.search(
        svc.parser.from_params(
            [("gender", "Female"), ("dob[gte]", "1960-01-01"), ("limit", "1000")]
        )
    ).items
    assert [r["id"] for r in lines] == sorted(r["id"] for r in expected)
    with pytest.raises(BadRequest):
        export(svc, io.StringIO(), "csv", ["shoeSize=42"])


def test_export_streams_in_batches(registry: Any):
    load_demo_data(registry.services)
    svc = registry.services["recipient"]
    out = io.StringIO()
    total = export(svc, out, "jsonl", batch_size=3)
    ids = [orjson.loads(x)["id"] for x in out.getvalue().splitlines()]
    assert total == len(all_records(registry, "recipient")) and ids == sorted(set(ids))


def test_list_cells_fall_back_to_json_when_a_separator_would_be_ambiguous():
    assert cell(["a", "b"], "split") == "a|b"
    assert cell(["a|b"], "split") == '["a|b"]'
    assert cell([], "split") == "[]"
    assert cell(["[x]"], "split") == '["[x]"]'
    assert cell([1, 2.5], "split") == "1|2.5"
    assert cell(True, "scalar") == "true"
    assert cell("12", "any") == '"12"'


def export_entries(registry: Any) -> list[dict[str, Any]]:
    with registry.db.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT fields FROM registry_audit WHERE action = 'export' ORDER BY seq")
        ).all()
    return [orjson.loads(r[0]) if isinstance(r[0], str | bytes) else r[0] for r in rows]


def test_an_export_is_one_snapshot_and_writers_go_on_meanwhile(
    registry: Any, monkeypatch: pytest.MonkeyPatch
):
    from open_registry.core import exports

    monkeypatch.setattr(exports, "CHUNK_CHARS", 1)  # one chunk per record
    load_demo_data(registry.services)
    svc = registry.services["recipient"]
    before = len(all_records(registry, "recipient"))
    exporter = exports.Exporter(svc, batch_size=2)
    chunks = exporter.stream("jsonl")
    first = next(chunks)  # the snapshot is open now
    # a writer is not blocked by the open export (SQLite: WAL; PostgreSQL: MVCC) ...
    new = svc.create(
        {"name": "Late", "identity": "did:x:late", "dob": "1990-01-01", "gender": "Other"},
        actor=None,
    )
    rest = list(chunks)
    ids = [orjson.loads(line)["id"] for line in "".join([first, *rest]).splitlines()]
    # ... and the export neither sees it nor loses anything it started with
    assert len(ids) == before == exporter.count and new["id"] not in ids
    assert export_entries(registry)[-1]["count"] == before


def test_an_export_stopped_part_way_is_audited_as_incomplete(
    registry: Any, monkeypatch: pytest.MonkeyPatch
):
    from open_registry.core import exports

    monkeypatch.setattr(exports, "CHUNK_CHARS", 1)
    load_demo_data(registry.services)
    chunks = exports.Exporter(registry.services["recipient"]).stream("jsonl", where=[])
    next(chunks), next(chunks)
    chunks.close()  # the client went away
    last = export_entries(registry)[-1]
    assert last["complete"] is False and last["count"] == 2


def test_the_api_streams_the_export_in_chunks(demo_client: Any, monkeypatch: pytest.MonkeyPatch):
    from open_registry.core import exports

    monkeypatch.setattr(exports, "CHUNK_CHARS", 200)
    with demo_client.stream("GET", "/api/v1/recipient/export?format=jsonl") as r:
        assert r.status_code == 200 and "content-length" not in r.headers
        pieces = list(r.iter_raw())
    lines = b"".join(pieces).splitlines()
    assert len(pieces) > 1 and all(orjson.loads(line)["id"] for line in lines)
    assert [orjson.loads(x)["id"] for x in lines] == sorted(orjson.loads(x)["id"] for x in lines)
