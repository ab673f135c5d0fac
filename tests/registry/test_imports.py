"""The import engine, on SQLite and PostgreSQL: formats, header conventions, mappings, DIVOC's
own CSVs, error reports, skip/abort, dry runs, upserts, crash and re-run, the fast path."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from open_registry.core.imports.fast import Unsupported, compile_row_function
from open_registry.core.imports.importer import (
    ImportInterrupted,
    ImportUsageError,
    import_file,
    load_mapping,
)
from open_registry.core.imports.prepare import _Preparer, column_values
from open_registry.core.imports.rows import ImportMapping, RecordBuilder, plan_columns
from open_registry.core.schemas.loading import default_schema_dir, load_schemas
from open_registry.generators.schema import parse_entity_schema
from open_registry.generators.validators import RecordValidator
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS = ROOT / "examples" / "divoc-mappings"
DIVOC = FIXTURES / "divoc"

RECIPIENT_HEADER = (
    "identity,name,dob,gender,phone,address.district,address.state,address.pincode,"
    "enrollmentCode,comorbidities"
)


def recipient_row(i: int, **change: str) -> dict[str, str]:
    row = {
        "identity": f"did:example:national-id:{1000 + i}",
        "name": f"Person {i}",
        "dob": f"19{50 + i % 50:02d}-0{1 + i % 9}-1{i % 10}",
        "gender": ["Male", "Female", "Other"][i % 3],
        "phone": f"+99 90000 {10000 + i}",
        "address.district": "Riverside",
        "address.state": "Northland",
        "address.pincode": f"{560000 + i}",
        "enrollmentCode": f"E{i:05d}",
        "comorbidities": "Diabetes|Hypertension" if i % 4 == 0 else "",
    }
    row.update(change)
    return row


def write_csv(path: Path, rows: list[dict[str, str]], header: str = RECIPIENT_HEADER) -> Path:
    names = header.split(",")
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        for r in rows:
            w.writerow([r.get(n, "") for n in names])
    return path


def count(registry: Any, table: str, where: str = "") -> int:
    with registry.db.engine.connect() as conn:
        sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
        return conn.execute(sa.text(sql)).scalar_one()


def records(registry: Any, entity: str) -> list[dict[str, Any]]:
    svc = registry.services[entity]
    return svc.search(svc.parser.from_params([("limit", "1000")])).items


def data(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_") and k != "id"}


# -- formats and header conventions ------------------------------------------------------------
def test_csv_rows_become_nested_records(registry: Any, tmp_path: Path):
    path = write_csv(tmp_path / "r.csv", [recipient_row(i) for i in range(8)])
    result = import_file(registry.services["recipient"], path)
    assert result.summary().startswith("8 rows: 8 inserted, 0 updated, 0 unchanged, 0 failed")
    got = {r["identity"]: r for r in records(registry, "recipient")}
    first = got["did:example:national-id:1000"]
    assert first["address"] == {"district": "Riverside", "state": "Northland", "pincode": "560000"}
    assert first["comorbidities"] == ["Diabetes", "Hypertension"]
    assert "comorbidities" not in got["did:example:national-id:1001"]  # empty cell = absent
    assert first["_version"] == 1
    assert count(registry, "registry_audit", "action = 'create'") == 8
    assert count(registry, "registry_outbox", "event = 'recipient.created'") == 8
    with registry.db.engine.connect() as conn:
        fields = conn.execute(
            sa.text("SELECT fields FROM registry_audit ORDER BY seq LIMIT 1")
        ).scalar_one()
    fields = json.loads(fields) if isinstance(fields, str) else fields
    assert fields == sorted(data(first))


def test_indexed_and_dotted_headers_and_typed_cells(registry: Any, tmp_path: Path):
    import_file(registry.services["program"], _programs(tmp_path))
    header = (
        "code,name,category,type,status,address.addressLine1,address.district,address.state,"
        "address.pincode,geoLocation.lat,geoLocation.lon,averageRating,admins.0.name,"
        "admins.0.mobile,admins.1.name,admins.1.mobile,programs.0.programId,programs.0.rate,"
        "programs.0.schedule.days"
    )
    row = {
        "code": "F-001",
        "name": "Riverside Clinic",
        "category": "GOVT",
        "type": "Fixed location",
        "status": "Active",
        "address.addressLine1": "1 Main Road",
        "address.district": "Riverside",
        "address.state": "Northland",
        "address.pincode": "560001",
        "geoLocation.lat": "12.5",
        "geoLocation.lon": "77",
        "averageRating": "4.5",
        "admins.0.name": "Asha",
        "admins.0.mobile": "+99 91111 11111",
        "admins.1.name": "Ravi",
        "admins.1.mobile": "+99 92222 22222",
        "programs.0.programId": "P-ONE",
        "programs.0.rate": "100",
        "programs.0.schedule.days": "Mon|Tue",
    }
    result = import_file(
        registry.services["facility"], write_csv(tmp_path / "f.csv", [row], header)
    )
    assert result.ok, result.errors
    (rec,) = records(registry, "facility")
    assert rec["geoLocation"] == {"lat": 12.5, "lon": 77}
    assert rec["averageRating"] == 4.5
    assert rec["admins"] == [
        {"name": "Asha", "mobile": "+99 91111 11111"},
        {"name": "Ravi", "mobile": "+99 92222 22222"},
    ]
    assert rec["programs"] == [
        {"programId": "P-ONE", "rate": 100, "schedule": {"days": ["Mon", "Tue"]}}
    ]


def _programs(tmp_path: Path) -> Path:
    path = tmp_path / "programs.jsonl"
    lines = [
        {"code": "P-ONE", "name": "Programme one", "startDate": "2026-01-01", "status": "Active"},
        {"code": "P-TWO", "name": "Programme two", "startDate": "2026-01-01", "status": "Active"},
    ]
    path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    return path


def test_jsonl_and_gzip_import(registry: Any, tmp_path: Path):
    recs = [
        {
            "identity": f"did:x:{i}",
            "name": f"P{i}",
            "dob": "1990-01-01",
            "gender": "Female",
            "address": {"district": "D", "state": "S"},
            "_version": 7,  # system fields other than id are not imported
        }
        for i in range(5)
    ]
    path = tmp_path / "r.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(orjson.dumps(r) for r in recs) + b"\n\n")
    result = import_file(registry.services["recipient"], path)
    assert result.ok and result.inserted == 5, result.errors
    assert all(r["_version"] == 1 for r in records(registry, "recipient"))


def test_gzip_is_recognised_by_its_magic_bytes(registry: Any, tmp_path: Path):
    plain = write_csv(tmp_path / "plain.csv", [recipient_row(i) for i in range(3)])
    disguised = tmp_path / "upload.csv"  # gzip content, no .gz suffix
    disguised.write_bytes(gzip.compress(plain.read_bytes()))
    assert import_file(registry.services["recipient"], disguised).inserted == 3


def test_csv_with_a_byte_order_mark_and_semicolons(registry: Any, tmp_path: Path):
    path = tmp_path / "r.csv"
    text = "name;identity;dob;gender\nAsha;did:x:1;1990-01-01;Female\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    result = import_file(registry.services["recipient"], path, mapping=ImportMapping(delimiter=";"))
    assert result.inserted == 1, result.errors


# -- bad rows -------------------------------------------------------------------------------------
def _bad_file(tmp_path: Path) -> Path:
    rows = [recipient_row(i) for i in range(6)]
    rows[1]["dob"] = "1990-02-30"
    rows[3]["gender"] = "F"
    rows[3]["name"] = ""
    rows[4]["enrollmentCode"] = rows[0]["enrollmentCode"]  # same unique key, second row
    return write_csv(tmp_path / "bad.csv", rows)


def test_bad_rows_are_skipped_with_an_exact_report(registry: Any, tmp_path: Path):
    report = tmp_path / "errors.csv"
    result = import_file(registry.services["recipient"], _bad_file(tmp_path), errors_path=report)
    assert (result.rows, result.inserted, result.failed) == (6, 3, 3)
    with report.open(newline="") as fh:
        lines = list(csv.DictReader(fh))
    got = [(int(x["row"]), x["field"], x["message"]) for x in lines]
    assert got == [
        (2, "/dob", "'1990-02-30' is not a 'date'"),
        (4, "/gender", "'F' is not one of ['Male', 'Female', 'Other']"),
        (4, "/name", "'name' is a required property"),
        (5, "/enrollmentCode", "another row of this file has the same enrollmentCode"),
    ]
    assert json.loads(lines[0]["data"])["dob"] == "1990-02-30"  # the original row
    assert json.loads(lines[3]["data"])["identity"] == "did:example:national-id:1004"
    assert count(registry, "recipient") == 3


def test_abort_writes_nothing_when_a_row_is_bad(registry: Any, tmp_path: Path):
    result = import_file(registry.services["recipient"], _bad_file(tmp_path), on_error="abort")
    assert result.aborted and result.failed == 3 and result.inserted == 0
    assert {e.row for e in result.errors} == {2, 4, 5}
    assert count(registry, "recipient") == 0 and count(registry, "registry_audit") == 0


def test_abort_writes_everything_when_all_rows_are_good(registry: Any, tmp_path: Path):
    path = write_csv(tmp_path / "r.csv", [recipient_row(i) for i in range(25)])
    result = import_file(registry.services["recipient"], path, on_error="abort", chunk_size=10)
    assert result.ok and result.inserted == 25 and count(registry, "recipient") == 25


def test_dry_run_checks_everything_and_writes_nothing(registry: Any, tmp_path: Path):
    svc = registry.services["recipient"]
    svc.create(
        {
            "name": "Taken",
            "identity": "x:taken",
            "dob": "1990-01-01",
            "gender": "Male",
            "enrollmentCode": "E00002",
        },
        actor=None,
    )
    path = write_csv(tmp_path / "r.csv", [recipient_row(i) for i in range(4)])
    result = import_file(svc, path, dry_run=True)
    assert (result.inserted, result.failed) == (3, 1)
    assert [(e.row, e.pointer) for e in result.errors] == [(3, "/enrollmentCode")]
    assert count(registry, "recipient") == 1 and count(registry, "registry_audit") == 1


def test_conflict_with_a_stored_record_is_reported_and_the_rest_written(
    registry: Any, tmp_path: Path
):
    svc = registry.services["recipient"]
    svc.create(
        {
            "name": "Taken",
            "identity": "did:example:national-id:1002",
            "dob": "1990-01-01",
            "gender": "Male",
        },
        actor=None,
    )
    path = write_csv(tmp_path / "r.csv", [recipient_row(i) for i in range(5)])
    result = import_file(svc, path)
    assert (result.inserted, result.failed) == (4, 1)
    (err,) = result.errors
    assert (err.row, err.pointer, err.keyword) == (3, "/identity", "unique")
    assert err.message == "already used by another recipient"
    assert err.data["identity"] == "did:example:national-id:1002"  # found again for the report
    assert count(registry, "recipient") == 5


def test_a_failed_conversion_names_the_field(registry: Any, tmp_path: Path):
    header = "name,identity,dob,gender,yob"
    path = write_csv(
        tmp_path / "r.csv",
        [
            {
                "name": "A",
                "identity": "did:x:1",
                "dob": "1990-01-01",
                "gender": "Male",
                "yob": "nineteen",
            }
        ],
        header,
    )
    result = import_file(registry.services["recipient"], path)
    assert [(e.row, e.pointer, e.message) for e in result.errors] == [
        (1, "/yob", "'nineteen' is not an integer")
    ]


def test_references_are_checked(registry: Any, tmp_path: Path):
    import_file(
        registry.services["facility"],
        DIVOC / "e2e" / "facilities.csv",
        mapping=load_mapping(MAPPINGS / "facilities.toml"),
    )
    header = "code,name,nationalIdentifier,mobileNumber,status,facilityIds"
    rows = [
        {
            "code": "V1",
            "name": "A",
            "nationalIdentifier": "N1",
            "mobileNumber": "2111111111",
            "status": "Active",
            "facilityIds": "DEL010|BLR311",
        },
        {
            "code": "V2",
            "name": "B",
            "nationalIdentifier": "N2",
            "mobileNumber": "2111111112",
            "status": "Active",
            "facilityIds": "DEL010|NOPE01",
        },
    ]
    result = import_file(
        registry.services["vaccinator"], write_csv(tmp_path / "v.csv", rows, header)
    )
    assert [(e.row, e.pointer, e.keyword) for e in result.errors] == [
        (2, "/facilityIds/1", "reference")
    ]
    assert result.errors[0].message == "no facility with code 'NOPE01'"
    assert result.errors[0].data["code"] == "V2"
    assert [r["code"] for r in records(registry, "vaccinator")] == ["V1"]


# -- usage errors ---------------------------------------------------------------------------------
def test_unknown_header_is_a_usage_error_and_nothing_is_written(registry: Any, tmp_path: Path):
    path = tmp_path / "r.csv"
    path.write_text("name,identity,dob,gender,shoeSize\nA,did:x:1,1990-01-01,Male,42\n")
    with pytest.raises(ImportUsageError, match="no field 'shoeSize'"):
        import_file(registry.services["recipient"], path)
    assert count(registry, "recipient") == 0


def test_upsert_on_must_be_a_unique_field(registry: Any, tmp_path: Path):
    path = write_csv(tmp_path / "r.csv", [recipient_row(1)])
    with pytest.raises(ImportUsageError, match="unique fields: enrollmentCode, identity"):
        import_file(registry.services["recipient"], path, upsert_on="name")


def test_bad_mapping_files_are_usage_errors(tmp_path: Path):
    bad = tmp_path / "m.toml"
    bad.write_text('colums = {a = "b"}\n')
    with pytest.raises(ImportUsageError, match="unknown key"):
        load_mapping(bad)
    bad.write_text('[transforms]\nname = ["shout"]\n')
    with pytest.raises(ImportUsageError, match="unknown transform 'shout'"):
        load_mapping(bad)
    bad.write_text("not toml [")
    with pytest.raises(ImportUsageError, match="not valid"):
        load_mapping(bad)


def test_json_and_toml_mappings_mean_the_same(tmp_path: Path):
    toml = load_mapping(MAPPINGS / "enrollments.toml")
    as_json = tmp_path / "enrollments.json"
    as_json.write_text(
        json.dumps(
            {k: v for k, v in toml.__dict__.items() if k != "ignore"}
            | {
                "ignore": sorted(toml.ignore),
                "transforms": {k: list(v) for k, v in toml.transforms.items()},
            }
        )
    )
    assert load_mapping(as_json) == toml


# -- DIVOC's CSV files, unchanged ---------------------------------------------------------------
@pytest.mark.parametrize("folder", ["interfaces", "e2e"])
def test_divoc_csvs_import_unchanged_with_the_shipped_mappings(
    registry: Any, folder: str, tmp_path: Path
):
    expected = {"interfaces": (0, 0, 0), "e2e": (5, 3, 3)}[folder]
    got = []
    for entity, name in (
        ("facility", "facilities"),
        ("vaccinator", "vaccinators"),
        ("recipient", "enrollments"),
    ):
        result = import_file(
            registry.services[entity],
            DIVOC / folder / f"{name}.csv",
            mapping=load_mapping(MAPPINGS / f"{name}.toml"),
            errors_path=tmp_path / f"{name}-errors.csv",
        )
        assert result.ok, result.errors
        got.append(result.inserted)
    assert tuple(got) == expected
    if folder == "e2e":
        facilities = {r["code"]: r for r in records(registry, "facility")}
        pune = facilities["PUN001"]
        assert pune["address"]["state"] == "Maharashtra"  # control characters cleaned
        assert "geoLocation" not in pune  # both cells empty
        assert facilities["DEL010"]["operatingHourStart"] == "09:00"
        assert facilities["DEL010"]["websiteUrl"] == "https://www.awesome.com"
        assert facilities["HYD111"]["name"] == "St. Mary\u2019s Medical Center"
        assert facilities["DEL010"]["admins"] == [{"name": "Suresh", "mobile": "1111111111"}]
        vaccinators = {r["code"]: r for r in records(registry, "vaccinator")}
        assert vaccinators["A1"]["facilityIds"] == ["DEL010", "BLR311"]
        people = records(registry, "recipient")
        assert {p["enrollmentType"] for p in people} == {"PRE_ENROLLMENT"}
        assert people[0]["address"]["pincode"] == "600036"


def test_divoc_vaccinators_need_their_facilities_first(registry: Any):
    result = import_file(
        registry.services["vaccinator"],
        DIVOC / "e2e" / "vaccinators.csv",
        mapping=load_mapping(MAPPINGS / "vaccinators.toml"),
    )
    assert result.failed == 3 and {e.keyword for e in result.errors} == {"reference"}
    assert result.errors[0].pointer == "/facilityIds/0"


# -- upserts, crashes and re-runs ---------------------------------------------------------------
def test_upsert_rerun_gives_one_copy_and_updates_changed_rows(registry: Any, tmp_path: Path):
    svc = registry.services["recipient"]
    rows = [recipient_row(i) for i in range(12)]
    path = write_csv(tmp_path / "r.csv", rows)
    first = import_file(svc, path, upsert_on="identity", chunk_size=5)
    assert (first.inserted, first.updated, first.unchanged) == (12, 0, 0)
    again = import_file(svc, path, upsert_on="identity", chunk_size=5)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 12)
    assert count(registry, "registry_audit") == 12  # unchanged rows are not re-written
    rows[3]["name"] = "Renamed"
    rows[4]["comorbidities"] = ""
    changed = import_file(svc, write_csv(tmp_path / "r2.csv", rows), upsert_on="identity")
    assert (changed.inserted, changed.updated, changed.unchanged) == (0, 2, 10)
    got = {r["identity"]: r for r in records(registry, "recipient")}
    assert len(got) == 12
    renamed = got["did:example:national-id:1003"]
    assert renamed["name"] == "Renamed" and renamed["_version"] == 2
    assert "comorbidities" not in got["did:example:national-id:1004"]
    assert count(registry, "registry_audit", "action = 'update'") == 2
    assert count(registry, "registry_outbox", "event = 'recipient.updated'") == 2


def test_a_crash_half_way_keeps_committed_chunks_and_a_rerun_completes(
    registry: Any, tmp_path: Path
):
    svc = registry.services["recipient"]
    path = write_csv(tmp_path / "r.csv", [recipient_row(i) for i in range(50)])
    seen = []

    def crash(progress: Any) -> None:
        seen.append(progress.rows)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(ImportInterrupted) as info:
        import_file(svc, path, chunk_size=10, progress=crash)
    assert seen == [10, 20] and info.value.result.inserted == 20
    assert count(registry, "recipient") == 20 and count(registry, "registry_audit") == 20
    rerun = import_file(svc, path, chunk_size=10, upsert_on="identity")
    assert (rerun.inserted, rerun.unchanged, rerun.failed) == (30, 20, 0)
    assert count(registry, "recipient") == 50 and count(registry, "registry_outbox") == 50


def test_a_crash_in_a_worker_process_run_keeps_committed_chunks(registry: Any, tmp_path: Path):
    svc = registry.services["recipient"]
    path = write_csv(tmp_path / "r.csv", [recipient_row(i) for i in range(40)])

    def crash(progress: Any) -> None:
        if progress.rows >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_file(svc, path, chunk_size=10, progress=crash, workers=1)
    assert count(registry, "recipient") == 20
    assert import_file(svc, path, upsert_on="enrollmentCode", workers=1).inserted == 20


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_forked_or_spawned_worker_writes_the_same_rows(
    registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
):
    """The worker is forked when the importing process runs one thread (the CLI), spawned
    otherwise; either way each chunk is made ready ahead by the reader thread and written in
    order, its audit entries chained."""
    from open_registry.core.audit import chain
    from open_registry.core.imports import importer

    monkeypatch.setattr(importer, "_start_method", lambda: method)
    svc = registry.services["recipient"]
    rows = [recipient_row(i) for i in range(45)]
    rows[3]["dob"] = "2001-02-30"
    rows[30]["identity"] = rows[29]["identity"]
    seen = []
    result = import_file(
        svc, write_csv(tmp_path / "r.csv", rows), chunk_size=7, workers=1, progress=seen.append
    )
    assert (result.inserted, result.failed) == (43, 2)
    assert [p.rows for p in seen] == [7, 14, 21, 28, 35, 42, 45]
    assert [e.row for e in result.errors] == [4, 31]
    assert count(registry, "recipient") == count(registry, "registry_audit") == 43
    assert count(registry, "registry_outbox") == 43
    assert chain.verify(registry.db.engine).ok  # the entries' times read back as hashed
    with registry.db.engine.connect() as conn:
        times = conn.execute(
            sa.text(
                "SELECT r._created_at, r._updated_at, a.at, o.created_at, o.available_at "
                "FROM recipient r JOIN registry_audit a ON a.record_id = r.id "
                "JOIN registry_outbox o ON o.record_id = r.id"
            )
        ).all()
    assert len(times) == 43 and all(len(set(row)) == 1 for row in times)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=3000))
def test_fingerprints_hold_what_a_set_holds(keys: list[int]) -> None:
    """The worker's compact set of key fingerprints (`Fingerprints`) answers as a set of them,
    through its growth, for any 64-bit value (0, which marks its empty slots, included: it is
    kept as 1, as `hash` never gives -1)."""
    from open_registry.core.imports.prepare import Fingerprints

    found = Fingerprints(size=8)
    seen: set[int] = set()
    for k in [*keys, 0, 1, -(2**63), 2**63 - 1][: len(keys) // 2 + 4]:
        found.add(k)
        seen.add(k or 1)
    assert len(found) == len(seen)
    for k in [*keys, 0, 1, 2, -1, -(2**63), 2**63 - 1]:
        assert (k in found) == ((k or 1) in seen)


@pytest.mark.parametrize("workers", [0, 1])
def test_unique_integer_keys_minus_one_and_minus_two_are_different_keys(
    database_url: str, tmp_path: Path, workers: int
):
    """`hash(-1) == hash(-2)` in Python: the in-file duplicate check fingerprints values by
    their text, so a file's keys -1 and -2 (or 0 and 1) are not taken for one another, while a
    key repeated still is."""
    from open_registry.core.app import open_registry
    from open_registry.core.settings import Settings

    folder = tmp_path / "schemas"
    folder.mkdir()
    token = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Token",
        "type": "object",
        "properties": {"code": {"type": "integer"}, "label": {"type": "string"}},
        "required": ["code"],
        "x-registry": {"unique": ["code", ["label", "code"]]},
    }
    (folder / "token.json").write_text(json.dumps(token))
    settings_ = Settings(
        database_url=database_url, data_dir=tmp_path / "data", load_entrypoints=False,
        inline_worker=False, sqlite_synchronous="NORMAL", schema_dirs=(folder,),
    )  # fmt: skip
    reg = open_registry(settings_)
    try:
        path = tmp_path / "t.csv"
        path.write_text("code,label\n-1,a\n-2,a\n0,b\n1,b\n7,c\n7,d\n")
        result = import_file(reg.services["token"], path, workers=workers)
        assert (result.inserted, result.failed) == (5, 1)
        assert [(e.row, e.pointer, e.keyword) for e in result.errors] == [(6, "/code", "unique")]
    finally:
        reg.close()


def test_only_a_process_of_one_thread_forks_its_worker() -> None:
    import threading

    from open_registry.core.imports import importer

    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert importer._start_method() == "spawn"
    finally:
        release.set()
        other.join()
    if threading.active_count() == 1:  # pytest-xdist may run threads of its own
        assert importer._start_method() == "fork"


def _dies_after_one_chunk(conn: Any, plan: Any) -> None:  # runs in the forked worker
    import os
    import pickle

    from open_registry.core.imports.prepare import prepare_chunks

    chunk = next(iter(prepare_chunks(plan)))
    conn.send_bytes(pickle.dumps(("chunk", chunk)))
    conn.close()
    os._exit(3)


def test_a_worker_that_dies_fails_the_import_and_keeps_what_was_committed(
    registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from open_registry.core.imports import importer

    monkeypatch.setattr(importer, "_start_method", lambda: "fork")
    monkeypatch.setattr(importer, "_worker", _dies_after_one_chunk)
    svc = registry.services["recipient"]
    path = write_csv(tmp_path / "r.csv", [recipient_row(i) for i in range(30)])
    with pytest.raises(RuntimeError, match="the import worker process stopped unexpectedly"):
        import_file(svc, path, chunk_size=10, workers=1)
    assert count(registry, "recipient") == count(registry, "registry_audit") == 10


def test_a_forked_worker_is_stopped_whatever_this_process_does_on_sigterm(
    registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """An import stopped early terminates its worker (SIGTERM). A forked worker inherits this
    process's signal handlers (e.g. a CLI command's own SIGTERM handler): it restores the
    default, so it is gone by the time the import has returned."""
    import multiprocessing
    import signal

    from open_registry.core.imports import importer

    monkeypatch.setattr(importer, "_start_method", lambda: "fork")
    svc = registry.services["recipient"]
    path = write_csv(tmp_path / "r.csv", [recipient_row(i) for i in range(3000)])

    def stop(progress: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt):
            import_file(svc, path, chunk_size=10, progress=stop, workers=1)
        assert [p for p in multiprocessing.active_children() if p.name == "registry-import"] == []
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert count(registry, "recipient") == 10


def test_a_failure_making_a_chunk_ready_reaches_the_caller(
    registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`_ready` runs in the reader thread; what it raises is raised by the import, after the
    chunks before were written, and the worker is stopped."""
    from open_registry.core.imports import importer

    made = importer.Importer._ready

    def ready(self: Any, chunk: Any) -> Any:
        if chunk.rows_read > 10:
            raise ValueError("no room")
        return made(self, chunk)

    monkeypatch.setattr(importer.Importer, "_ready", ready)
    svc = registry.services["recipient"]
    path = write_csv(tmp_path / "r.csv", [recipient_row(i) for i in range(30)])
    with pytest.raises(ValueError, match="no room"):
        import_file(svc, path, chunk_size=10, workers=1)
    assert count(registry, "recipient") == 10


def test_the_first_chunk_is_small_so_writing_starts_early(registry: Any, tmp_path: Path):
    from open_registry.core.imports.prepare import FIRST_CHUNK_ROWS

    svc = registry.services["recipient"]
    path = write_csv(tmp_path / "r.csv", [recipient_row(i) for i in range(FIRST_CHUNK_ROWS + 3)])
    seen = []
    result = import_file(svc, path, chunk_size=5000, workers=0, progress=seen.append)
    assert result.inserted == FIRST_CHUNK_ROWS + 3
    assert [p.rows for p in seen] == [FIRST_CHUNK_ROWS, FIRST_CHUNK_ROWS + 3]


def test_a_worker_process_gives_the_same_result(registry: Any, tmp_path: Path):
    svc = registry.services["recipient"]
    path = _bad_file(tmp_path)
    inline = import_file(svc, path, dry_run=True, workers=0)
    worker = import_file(svc, path, dry_run=True, workers=1)
    assert inline.summary()[:60] == worker.summary()[:60]
    assert [e.as_dict() for e in inline.errors] == [e.as_dict() for e in worker.errors]


def test_the_worker_process_starts_without_sqlalchemy_or_the_web_app() -> None:
    """The worker imports only the preparing side (`imports.prepare`), not the database layer
    or the web app: they were about half of its start-up."""
    import subprocess
    import sys

    code = (
        "import sys, pickle; import open_registry.core.imports.prepare as p; "
        "assert pickle.loads(pickle.dumps(p._worker)) is p._worker; "
        "print(sorted(m for m in ('sqlalchemy', 'fastapi', 'starlette', "
        "'open_registry.core.storage', 'open_registry.core.records') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_timestamps_are_stored_as_the_column_type_binds_them(dialect: str) -> None:
    """The worker's timestamp conversion (`generators.columns.stored_datetime`, no SQLAlchemy)
    gives what the table's `UTCDateTime` column binds (on PostgreSQL: the same instant, as text
    for COPY), and refuses a naive timestamp too."""
    from datetime import UTC, datetime, timedelta, timezone

    from open_registry.generators.columns import stored_datetime
    from open_registry.generators.tables import UTCDateTime

    d = sa.dialects.sqlite.dialect() if dialect == "sqlite" else sa.dialects.postgresql.dialect()
    column = UTCDateTime().dialect_impl(d).bind_processor(d)
    ours = stored_datetime(dialect)
    for value in (
        datetime(2021, 9, 17, 10, 30, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=5.5))),
        datetime(2024, 2, 29, 0, 0, 0, 1, tzinfo=timezone(timedelta(hours=-8))),
        datetime(1, 1, 2, tzinfo=UTC),
    ):
        if dialect == "sqlite":
            assert ours(value) == column(value)
        else:
            text = ours(value)
            assert isinstance(text, str) and text.endswith("+00:00")
            assert datetime.fromisoformat(text) == column(value)
            assert datetime.fromisoformat(text).utcoffset() == timedelta(0)
    for convert in (ours, column):
        with pytest.raises(ValueError, match="naive"):
            convert(datetime(2021, 9, 17))


def test_keep_ids_takes_the_id_column(registry: Any, tmp_path: Path):
    ids = ["0190a000-0000-7000-8000-00000000000" + str(i) for i in range(3)]
    rows = [recipient_row(i) | {"id": rid} for i, rid in enumerate(ids)]
    rows.append(recipient_row(9) | {"id": "not-a-uuid"})
    path = write_csv(tmp_path / "r.csv", rows, "id," + RECIPIENT_HEADER)
    result = import_file(registry.services["recipient"], path, keep_ids=True)
    assert result.inserted == 3 and [e.pointer for e in result.errors] == ["/id"]
    assert sorted(r["id"] for r in records(registry, "recipient")) == ids
    again = import_file(registry.services["recipient"], path, keep_ids=True)
    assert {e.message for e in again.errors} >= {"a recipient with this id already exists"}


# -- the fast path accepts exactly what RecordValidator accepts -------------------------------
FAST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["code", "count"],
    "additionalProperties": False,
    "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]{2,4}$", "maxLength": 4},
        "count": {"type": "integer", "minimum": 0, "exclusiveMaximum": 100},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1.5},
        "flag": {"type": "boolean"},
        "level": {"type": "integer", "enum": [1, 2, 3]},
        "kind": {"const": "x"},
        "when": {"type": "string", "format": "date-time"},
        "tags": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "format": "email"},
            "uniqueItems": True,
            "maxItems": 2,
        },
        "nums": {"type": "array", "items": {"type": "number", "minimum": -1}, "minItems": 1},
        "place": {
            "type": "object",
            "required": ["lat"],
            "additionalProperties": False,
            "properties": {
                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                "name": {"type": "string", "minLength": 2},
                "open": {"type": "string", "format": "time"},
            },
        },
    },
}
CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "AB",
            "ABCD",
            "ABCDE",
            "ab",
            "0",
            "-0",
            "00",
            "1",
            "99",
            "100",
            "-1",
            "1.5",
            "1.50",
            "0.0",
            "1e0",
            "2E-1",
            "1e400",
            "nan",
            "12\n",
            "true",
            "false",
            "TRUE",
            "yes",
            "no",
            "x",
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05+05:30",
            "2026-02-30T00:00:00Z",
            "a@b.cd",
            "a@b.cd|e@f.gh",
            "a@b.cd|a@b.cd",
            "|",
            "a@b.cd|",
            "[1]",
            '["a@b.cd"]',
            "1|2|-1",
            "-2",
            "09:30",
            "25:00",
            "N\u00e9",
            "\u00e9\u00e9",
        ]
    ),
    st.text(max_size=6),
)
FAST_HEADERS = [
    "code",
    "count",
    "ratio",
    "flag",
    "level",
    "kind",
    "when",
    "tags",
    "nums",
    "place.lat",
    "place.name",
    "place.open",
]


def _fast_and_reference(schema: dict[str, Any], headers: list[str], dialect: str = "sqlite"):
    """(fast row function, validator, record builder, general-path values) for a layout."""
    entity = parse_entity_schema(schema, name="thing", source="thing.json")
    layout = plan_columns(
        headers, entity.json_schema, ImportMapping(), keep_ids=False, entity="thing"
    )
    fields = tuple((n, f.kind) for n, f in entity.fields.items())
    fast = compile_row_function(layout, entity.json_schema, fields, column_values(dialect))
    preparer = _Preparer.__new__(_Preparer)  # only its value conversion is used
    preparer.value_convs = [(n, column_values(dialect).get(k)) for n, k in fields]
    return fast, RecordValidator(entity.json_schema), RecordBuilder(layout), preparer._values


def _agree(fast: Any, validator: Any, builder: Any, values: Any, cells: list[str], lists: Any):
    record, problems = builder.build(cells)
    valid = not problems and validator.is_valid(record)
    got = fast(cells)
    if got is None:
        assert not valid or any(cells[i].startswith("[") for i in lists)  # JSON: general path
    else:
        assert valid
        assert got == values(record)  # the very values the general path stores


FAST = _fast_and_reference(FAST_SCHEMA, FAST_HEADERS)
SHIPPED = load_schemas([default_schema_dir()])
RECIPIENT_FAST = _fast_and_reference(
    dict(SHIPPED["recipient"].json_schema), RECIPIENT_HEADER.split(",")
)


@settings(max_examples=400, deadline=None, database=None)
@given(cells=st.lists(CELLS, min_size=len(FAST_HEADERS), max_size=len(FAST_HEADERS)))
def test_fast_path_accepts_exactly_what_record_validator_accepts(cells: list[str]):
    _agree(*FAST, cells, [FAST_HEADERS.index("tags"), FAST_HEADERS.index("nums")])


RECIPIENT_CELLS = st.one_of(
    CELLS,
    st.sampled_from(
        [
            "did:x:1",
            "Asha",
            "1990-01-01",
            "Male",
            "Female",
            "+99 90000 12345",
            "560001",
            "Northland",
            "E0001",
            "Diabetes|Hypertension",
            "Diabetes|Diabetes",
            "A|",
        ]
    ),
)


@settings(max_examples=300, deadline=None, database=None)
@given(cells=st.lists(RECIPIENT_CELLS, min_size=10, max_size=10))
def test_fast_path_agrees_on_the_recipient_schema(cells: list[str]):
    _agree(*RECIPIENT_FAST, cells, [9])


def test_shipped_flat_layouts_take_the_fast_path():
    facility = SHIPPED["facility"]
    headers = [
        "code",
        "name",
        "category",
        "type",
        "status",
        "address.addressLine1",
        "address.district",
        "address.state",
        "address.pincode",
        "geoLocation.lat",
        "geoLocation.lon",
        "operatingHourStart",
        "websiteUrl",
    ]
    fields = tuple((n, f.kind) for n, f in facility.fields.items())

    def compile_for(names: list[str]) -> Any:
        layout = plan_columns(
            names, facility.json_schema, ImportMapping(), keep_ids=False, entity="facility"
        )
        return compile_row_function(layout, facility.json_schema, fields, column_values("sqlite"))

    assert callable(compile_for(headers))
    assert callable(RECIPIENT_FAST[0])
    with pytest.raises(Unsupported):  # list items by index take the general path
        compile_for([*headers, "programs.0.programId"])
