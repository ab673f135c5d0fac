"""The import API's security rules, through the real ASGI app on SQLite and PostgreSQL: a job is
seen by its starter and system-admins only, recipients never import, a job keeps no value of
the rows it read (nor does the log), and the size limits of an upload and of a row."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
import tracemalloc
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from open_registry.cli.data import register
from open_registry.core import Settings, create_app
from open_registry.core.app import Registry, open_registry
from open_registry.core.errors import PROBLEM_JSON, Invalid
from open_registry.core.hookspecs import hookimpl
from open_registry.core.imports import api as imports_api
from open_registry.core.imports.importer import Importer, import_file
from open_registry.core.imports.rows import ImportUsageError, LongRow, Source
from open_registry.core.testing import auth_headers

CSV_TYPE = {"content-type": "text/csv"}
GOOD = "identity,name,dob,gender\ndid:x:1,Asha,1990-01-01,Female\ndid:x:2,Ravi,1990-02-30,Male\n"


def open_with(settings: Settings, **changes: Any) -> Iterator[Registry]:
    reg = open_registry(settings.with_(**changes))
    try:
        yield reg
    finally:
        reg.close()


@pytest.fixture
def small_limits(settings: Settings) -> Iterator[Registry]:
    """A registry whose imports take at most 64 KiB per upload and 300 bytes per row."""
    yield from open_with(settings, import_max_upload_bytes=65_536, import_max_line_bytes=300)


def client(app: Any, registry: Registry, *roles: str, **kw: Any) -> TestClient:
    return TestClient(app, headers=auth_headers(registry, *roles, **kw))


def finished(registry: Registry, c: TestClient, location: str) -> dict[str, Any]:
    """The job once it has ended, as `c` (its starter or an admin) sees it."""
    registry.import_jobs.wait(location.rsplit("/", 1)[1])
    for _ in range(100):
        job = c.get(location).json()
        if job["status"] != "running":
            return dict(job)
        time.sleep(0.05)
    raise AssertionError("the job did not end")


def is_problem(resp: Any, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)


# -- 1. who sees a job, who may start one --------------------------------------------------------
def test_a_job_is_seen_by_its_starter_and_system_admins_only(registry: Registry):
    app = create_app(registry=registry)
    asha = client(app, registry, "facility-staff", subject="asha")
    ravi = client(app, registry, "facility-staff", subject="ravi")  # may import recipients too
    monitor = client(app, registry, "monitoring", subject="mo")
    admin = client(app, registry, "system-admin", subject="root")
    anonymous = TestClient(app)
    with asha, ravi, monitor, admin, anonymous:
        started = asha.post("/api/v1/recipient/imports", content=GOOD, headers=CSV_TYPE)
        assert started.status_code == 202, started.text
        location = started.headers["location"]
        job = finished(registry, asha, location)
        assert job["status"] == "done" and job["startedBy"] == "user:asha"
        assert admin.get(location).json()["id"] == job["id"]

        missing = ravi.get(f"/api/v1/recipient/imports/{uuid.uuid4()}")
        is_problem(missing, 404)
        for other in (ravi, monitor):
            resp = other.get(location)
            is_problem(resp, 404)  # exactly as a job that does not exist
            assert resp.json()["detail"] == f"no recipient import job {job['id']!r}"
        is_problem(anonymous.get(location), 401)
        is_problem(anonymous.post("/api/v1/recipient/imports", content=GOOD, headers=CSV_TYPE), 401)
        # another entity's route does not show it either
        is_problem(asha.get(location.replace("/recipient/", "/facility/")), 404)


DIARY = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"recipient": {"type": "string"}, "note": {"type": "string"}},
    "required": ["recipient", "note"],
    "x-registry": {
        "access": {
            "create": ["system-admin", "recipient"],
            "read": ["system-admin", "owner"],
        },
        "owner": {"recipient": "recipient"},
    },
}


def test_the_recipient_role_never_starts_an_import(settings: Settings, tmp_path: Path):
    folder = tmp_path / "schemas"
    folder.mkdir()
    (folder / "diary.json").write_text(json.dumps(DIARY))
    for registry in open_with(settings, schema_dirs=(folder,)):
        app = create_app(registry=registry)
        body = "recipient,note\nr-1,felt fine\n"
        with client(app, registry, "recipient", recipient="r-1", subject="r1") as person:
            assert person.post("/api/v1/diary", json={"recipient": "r-1", "note": "ok"}).is_success
            resp = person.post("/api/v1/diary/imports", content=body, headers=CSV_TYPE)
            is_problem(resp, 403)
            assert "recipient" in resp.json()["detail"]
        with client(app, registry, "system-admin") as admin:
            started = admin.post("/api/v1/diary/imports", content=body, headers=CSV_TYPE)
            assert started.status_code == 202, started.text
            assert finished(registry, admin, started.headers["location"])["inserted"] == 1


# -- 2. a job keeps no value of its rows -------------------------------------------------------
#: every value below that must never be kept holds "secret" (or "hidden")
LEAKY_CSV = (
    "identity,name,dob,gender,yob,email,enrollmentCode\n"
    "did:secret:0001,Asha Secretname,1990-01-01,Female,,asha@mail.example,\n"
    "did:secret:0002,Ravi Hidden,1990-02-30,Male,,,\n"  # a bad date in a row with private cells
    "did:secret:0003,Mira,1991-03-03,Other,did:secret:0003x,,\n"  # a shifted private value
    "did:secret:0004,Kiran,1991-03-03,Other,,not-an-email-secret0004,\n"  # a bad private value
    "did:secret:0001,Dup Hidden,1991-03-03,Other,,,\n"  # a private unique value used twice
    "did:secret:0006,Zed,1991-03-03,Other,,,,extra-secret-0006\n"  # a cell too many
    "did:secret:0007,Long " + "secret " * 60 + ",1991-03-03,Other,,,\n"  # over 300 bytes
    "did:secret:0008,Pat,1991-03-03,Other,,,bad code secret0008\n"  # a pattern, not private
)
LEAKY_JSONL = (
    b'{"identity": "did:secret:j1", "name": broken-secret-j1}\n'
    b'["did:secret:j2", "hidden"]\n'
    b'{"identity": "did:secret:j3", "name": "' + b"secret " * 60 + b'"}\n'
    b'{"identity": "did:secret:j4", "name": "Hidden J", "dob": "1990-01-01", "gender": "Female"}\n'
)


def leaks(text: str) -> bool:
    low = text.lower()
    return "secret" in low or "hidden" in low


def stored_jobs(registry: Registry) -> str:
    table = imports_api.import_tables(registry.db.metadata)
    with registry.db.engine.connect() as conn:
        rows = conn.execute(sa.select(table)).mappings().all()
    return json.dumps([dict(r) for r in rows], default=str)


def test_a_job_keeps_no_value_of_its_rows(small_limits: Registry, caplog: pytest.LogCaptureFixture):
    registry = small_limits
    caplog.set_level(logging.DEBUG)
    app = create_app(registry=registry)
    with client(app, registry, "facility-admin", subject="asha") as c:
        jobs = []
        for body, ctype in (
            (LEAKY_CSV.encode(), "text/csv"),
            (LEAKY_JSONL, "application/x-ndjson"),
        ):
            resp = c.post(
                "/api/v1/recipient/imports", content=body, headers={"content-type": ctype}
            )
            assert resp.status_code == 202, resp.text
            jobs.append(finished(registry, c, resp.headers["location"]))
    csv_job, jsonl_job = jobs
    assert (csv_job["inserted"], csv_job["failed"]) == (1, 7), csv_job
    assert (jsonl_job["inserted"], jsonl_job["failed"]) == (1, 3), jsonl_job
    found = {(e["row"], e["pointer"], e["keyword"]) for e in csv_job["errors"]}
    assert found == {
        (2, "/dob", "format"),
        (3, "/yob", "type"),
        (4, "/email", "format"),
        (5, "/identity", "unique"),
        (6, "", "columns"),
        (7, "", "limit"),
        (8, "/enrollmentCode", "pattern"),
    }
    found = {(e["row"], e["keyword"]) for e in jsonl_job["errors"]}
    assert found == {(1, "json"), (2, "type"), (3, "limit")}
    for job in jobs:
        for e in job["errors"]:
            assert set(e) == {"row", "pointer", "message", "keyword"}, e  # no row, no cells
            assert e["message"]
        (limit,) = [e for e in job["errors"] if e["keyword"] == "limit"]
        assert "300 bytes" in limit["message"] and "import_max_line_bytes" in limit["message"]
        assert not leaks(json.dumps(job)), job
    assert not leaks(stored_jobs(registry))
    assert not leaks(caplog.text)


class NoSecrets:
    """A plugin write rule (run on imports too) whose refusal quotes the row's values."""

    @hookimpl
    def register_write_checks(self, registry: Any) -> list[str]:
        return ["recipient"]

    @hookimpl
    def before_write(self, entity: str, record: dict[str, Any], **_: Any) -> None:
        if record.get("nationality") == "Nowhere":
            raise Invalid(
                "refused",
                errors=[
                    {
                        "pointer": "/nationality",
                        "message": f"{record['name']} ({record['identity']}) may not be "
                        f"enrolled from {record['nationality']} before 2030",
                        "keyword": "nationalityRule",
                    }
                ],
            )


def test_a_write_rules_reason_is_kept_without_the_rows_values(settings: Settings):
    body = (
        "identity,name,dob,gender,nationality\n"
        "did:secret:r1,Hidden Person,1990-01-01,Female,Nowhere\n"
        "did:x:r2,Fine,1990-01-01,Male,Somewhere\n"
    )
    registry = open_registry(settings, plugins=[NoSecrets()])
    try:
        app = create_app(registry=registry)
        with client(app, registry) as admin:
            resp = admin.post("/api/v1/recipient/imports", content=body, headers=CSV_TYPE)
            job = finished(registry, admin, resp.headers["location"])
        assert (job["inserted"], job["failed"]) == (1, 1), job
        (err,) = job["errors"]
        assert (err["row"], err["pointer"], err["keyword"]) == (
            1,
            "/nationality",
            "nationalityRule",
        )
        assert err["message"] == "(value) ((value)) may not be enrolled from (value) before 2030"
        assert not leaks(stored_jobs(registry))
    finally:
        registry.close()


def test_a_failed_job_keeps_no_exception_text(
    registry: Registry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    value = "did:secret:9999"  # the traceback's lines are code: only the raise line shows

    def fail(self: Importer, path: Any) -> Any:
        raise ValueError(f"duplicate key value (identity)=({value})")

    monkeypatch.setattr(Importer, "run", fail)
    caplog.set_level(logging.DEBUG)
    app = create_app(registry=registry)
    with client(app, registry) as admin:
        resp = admin.post("/api/v1/recipient/imports", content=GOOD, headers=CSV_TYPE)
        job = finished(registry, admin, resp.headers["location"])
    assert job["status"] == "failed" and "ValueError" in job["message"], job
    assert not leaks(json.dumps(job)) and not leaks(stored_jobs(registry))
    assert "ValueError" in caplog.text and not leaks(caplog.text)


def test_the_cli_report_still_quotes_the_operators_own_rows(registry: Registry, tmp_path: Path):
    """`registry import --errors` is the operator's own report of their own file: unchanged."""
    src = tmp_path / "people.csv"
    src.write_text(GOOD)
    result = import_file(registry.services["recipient"], src, errors_path=tmp_path / "bad.csv")
    (err,) = result.errors
    assert err.data["name"] == "Ravi" and "1990-02-30" in err.message
    assert err.stored() == {
        "row": 2,
        "pointer": "/dob",
        "message": "is not in the required format",
        "keyword": "format",
    }


# -- 3. limits ---------------------------------------------------------------------------------
def asgi_post(
    app: Any, path: str, headers: dict[str, str], chunks: Iterable[bytes]
) -> tuple[int, dict[str, Any], int]:
    """POST through the ASGI interface itself, the body arriving in `chunks` as a server hands
    them over: (status, JSON body, how many chunks the app asked for)."""
    source = iter(chunks)
    asked = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal asked
        chunk = next(source, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        asked += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    resp_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert resp_headers["content-type"].startswith(PROBLEM_JSON) or start["status"] < 300
    return start["status"], json.loads(body), asked


def test_an_upload_over_the_limit_is_refused_as_it_arrives(small_limits: Registry):
    registry = small_limits
    app = create_app(registry=registry)
    headers = {**auth_headers(registry), **CSV_TYPE}
    row = b"did:x:9,Asha,1990-01-01,Female\n"
    chunks = [b"identity,name,dob,gender\n"] + [row * 512] * 200  # 16 KiB each, 3.2 MB in all
    status, problem, asked = asgi_post(app, "/api/v1/recipient/imports", headers, chunks)
    assert status == 413, problem
    assert "65536 bytes" in problem["detail"] and "import_max_upload_bytes" in problem["detail"]
    assert asked <= 6  # refused once past 64 KiB, not after reading 3.2 MB
    # a declared length over the limit is refused before any of the body is read
    declared = {**headers, "content-length": str(10**9)}
    status, problem, asked = asgi_post(app, "/api/v1/recipient/imports", declared, chunks)
    assert (status, asked) == (413, 0)
    # the same upload within the limit is taken
    status, job, _ = asgi_post(app, "/api/v1/recipient/imports", headers, chunks[:2])
    assert status == 202, job
    registry.import_jobs.wait(job["id"])


def test_the_upload_limit_counts_a_multipart_body_as_sent(small_limits: Registry):
    app = create_app(registry=small_limits)
    with client(app, small_limits) as admin:
        big = gzip.compress(b"identity,name,dob,gender\n" + b"x" * 10) + b"\0" * 70_000
        resp = admin.post("/api/v1/recipient/imports", files={"file": ("a.csv.gz", big)})
        is_problem(resp, 413)
        assert "import_max_upload_bytes" in resp.json()["detail"]


def test_a_row_over_the_line_limit_is_an_error_of_that_row(small_limits: Registry):
    app = create_app(registry=small_limits)
    body = (
        "identity,name,dob,gender,comorbidities\n"
        "did:x:1,Asha,1990-01-01,Female,a\n"
        'did:x:2,Ravi,1990-01-01,Male,"' + "b|" * 200 + 'b"\n'  # 400+ bytes, quoted
        "did:x:3,Mira,1990-01-01,Other,c\n"
    )
    with client(app, small_limits) as admin:
        resp = admin.post("/api/v1/recipient/imports", content=body, headers=CSV_TYPE)
        job = finished(small_limits, admin, resp.headers["location"])
    assert (job["rows"], job["inserted"], job["failed"]) == (3, 2, 1), job
    (err,) = job["errors"]
    assert (err["row"], err["pointer"], err["keyword"]) == (2, "", "limit")
    assert err["message"] == "the row is longer than 300 bytes, the limit (import_max_line_bytes)"


def rows_of(source: Source) -> list[tuple[int, Any]]:
    try:
        _, rows = source.csv_rows()
        return [(n, "long" if isinstance(r, LongRow) else r) for n, r in rows]
    finally:
        source.close()


def test_a_long_row_is_read_past_and_the_next_rows_are_read_as_usual(tmp_path: Path):
    path = tmp_path / "f.csv"
    long_line = "x," + "y" * 500
    for newline in ("\n", "\r\n"):
        text = newline.join(["a,b", "1,2", long_line, '"3\nthree",4', long_line + "é", "5,6", ""])
        path.write_bytes(text.encode())
        assert rows_of(Source(path, max_line_bytes=100)) == [
            (1, ["1", "2"]),
            (2, "long"),
            (3, ["3\nthree", "4"]),
            (4, "long"),
            (5, ["5", "6"]),
        ], newline
    # bytes, not characters: 40 two-byte characters are 80 bytes
    path.write_text("a\n" + "é" * 40 + "\n" + "é" * 60 + "\n", encoding="utf-8")
    assert rows_of(Source(path, max_line_bytes=100)) == [(1, ["é" * 40]), (2, "long")]
    # a quoted cell over several lines counts as its whole record
    path.write_text('a,b\n"' + "z\n" * 80 + '",1\n')
    assert rows_of(Source(path, max_line_bytes=100))[0] == (1, "long")
    path.write_text("a" * 200 + "\n1\n")
    with pytest.raises(ImportUsageError, match="header row is longer than 100 bytes"):
        rows_of(Source(path, max_line_bytes=100))


def test_a_long_json_line_is_an_error_of_that_line(tmp_path: Path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "' + b"y" * 500 + b'"}\n\n{"a": 3}\n')
    source = Source(path, max_line_bytes=100)
    got = [(n, "long" if isinstance(x, LongRow) else x) for n, x in source.json_lines()]
    source.close()
    assert got == [(1, b'{"a": 1}\n'), (2, "long"), (4, b'{"a": 3}\n')]


def test_a_huge_line_is_never_held_in_memory(tmp_path: Path):
    path = tmp_path / "one-line.csv"
    with path.open("w") as fh:
        fh.write("a,b\n")
        for _ in range(256):
            fh.write("z" * 65_536)  # one 16 MiB line
        fh.write("\n1,2\n")
    tracemalloc.start()
    try:
        rows = rows_of(Source(path, max_line_bytes=65_536))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == [(1, "long"), (2, ["1", "2"])]
    assert peak < 4 * 1024 * 1024, peak  # the line is 16 MiB


def test_registry_import_takes_the_line_limit_from_the_settings(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    app = typer.Typer()
    register(app)
    src = tmp_path / "people.csv"
    src.write_text(GOOD.replace("Asha", "A" * 300))
    monkeypatch.setenv("REGISTRY_IMPORT_MAX_LINE_BYTES", "200")
    db = ["--database-url", database_url, "--data-dir", str(tmp_path / "data")]
    result = CliRunner().invoke(app, ["import", "recipient", str(src), *db])
    assert result.exit_code == 1, result.output
    assert "row 1: /: the row is longer than 200 bytes" in result.output
