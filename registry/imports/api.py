"""The import engine behind the admin API: upload a file, the import runs as a background job.

`POST /api/v1/{entity}/imports` takes the file as the raw body (`text/csv`,
`application/x-ndjson`; gzip is recognised by its magic bytes) or as a multipart upload (a part
named `file`, optionally a part named `mapping` holding a JSON or TOML mapping), checks the
header and mapping at once (400 if they cannot be used), starts the import in a thread and
answers 202 with the job's `Location`. `GET /api/v1/{entity}/imports/{job_id}` reports its status,
counts, speed and errors. Jobs live in the `registry_import_job` table, so any worker process
of the app can answer for a job that another one runs.

A job is its starter's: only they and system-admins see it (anyone else gets 404, as for a job
that does not exist; no login, 401), and the `recipient` role never starts one. The upload is
refused with 413 once more than `import_max_upload_bytes` have arrived (it is never read
whole first), and a row longer than `import_max_line_bytes` is an error of that row. A job keeps
its errors as row number, pointer, keyword and a reason that quotes no value
(`RowError.stored`): never the row or a cell of it, nor in its message or the server's log.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from open_registry.core import storage
from open_registry.core.api import API_PREFIX, GuardedRoute, JSONResponse
from open_registry.core.auth import rules
from open_registry.core.auth.deps import principal_of
from open_registry.core.auth.principal import RECIPIENT, SYSTEM, SYSTEM_ADMIN, Principal
from open_registry.core.codec import camel, format_datetime, new_id, utcnow
from open_registry.core.errors import (
    PROBLEM_JSON,
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from open_registry.core.imports.importer import Importer, ImportOptions, Progress
from open_registry.core.imports.rows import ImportMapping, ImportUsageError, load_mapping
from open_registry.core.records import EntityService
from open_registry.core.settings import parse_flag
from open_registry.generators.tables import UTCDateTime, json_type

log = logging.getLogger("registry")

JOB_TABLE = "registry_import_job"
#: Errors stored with a job (the first ones, by row); the rest are counted.
MAX_JOB_ERRORS = 10_000
CONTENT_FORMATS = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
}
_COUNTS = ("rows", "inserted", "updated", "unchanged", "failed", "bytes_read", "bytes_total")
#: Where a job's starter (their audit name) is kept: in its `options` column (shown as the job's
#: `startedBy`), so the job table keeps its columns.
_STARTER = "startedBy"
#: The keys of a stored error (`RowError.stored`); anything else a job row holds (a quoted row,
#: kept by earlier versions) is never served.
_ERROR_KEYS = ("row", "pointer", "message", "keyword")


def import_tables(metadata: sa.MetaData) -> sa.Table:
    """Add the import job table to `metadata` (next to the audit log and the outbox)."""
    if JOB_TABLE in metadata.tables:
        return metadata.tables[JOB_TABLE]
    return sa.Table(
        JOB_TABLE,
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("entity", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),  # running | done | failed
        sa.Column("options", json_type()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        *(sa.Column(name, sa.BigInteger, nullable=False, default=0) for name in _COUNTS),
        sa.Column("rows_per_s", sa.Float, nullable=False, default=0.0),
        sa.Column("errors", json_type()),
        sa.Column("errors_dropped", sa.BigInteger, nullable=False, default=0),
        sa.Column("message", sa.Text),
    )


# -- multipart, streamed to files -----------------------------------------------------------
class _Stream:
    """A file read with a push-back buffer, for scanning multipart boundaries."""

    def __init__(self, fh: Any):
        self.fh = fh
        self.pending = b""

    def read(self, n: int = 1 << 16) -> bytes:
        if self.pending:
            data, self.pending = self.pending, b""
            return data
        return self.fh.read(n)

    def take(self, n: int) -> bytes:
        while len(self.pending) < n:
            block = self.fh.read(1 << 16)
            if not block:
                break
            self.pending += block
        data, self.pending = self.pending[:n], self.pending[n:]
        return data

    def copy_until(self, delim: bytes, sink: Any) -> bool:
        """Copy up to `delim` into `sink` (None: skip); False when the input ends first."""
        keep = len(delim) - 1
        buf = b""
        while True:
            block = self.read()
            buf += block
            i = buf.find(delim)
            if i >= 0:
                if sink is not None:
                    sink.write(buf[:i])
                self.pending = buf[i + len(delim) :]
                return True
            if not block:
                if sink is not None:
                    sink.write(buf)
                return False
            if len(buf) > keep:
                if sink is not None:
                    sink.write(buf[:-keep])
                buf = buf[-keep:]


def _part_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            headers[key.strip().lower()] = value.strip()
    return headers


def _disposition(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in value.split(";")[1:]:
        key, _, val = item.strip().partition("=")
        params[key.lower()] = val.strip().strip('"')
    return params


def parse_multipart(raw: Path, boundary: str, folder: Path) -> tuple[Path | None, bytes | None]:
    """(the `file` part saved in `folder`, the `mapping` part's bytes) of a multipart body."""
    delim = b"--" + boundary.encode("latin-1")
    file_path: Path | None = None
    mapping: bytes | None = None
    with raw.open("rb") as fh:
        stream = _Stream(fh)
        if not stream.copy_until(delim, None):
            raise BadRequest("the multipart body has no part")
        while True:
            head = stream.take(2)
            if head == b"--" or len(head) < 2:
                break  # the closing boundary
            if head != b"\r\n":
                stream.pending = head + stream.pending
            header_bytes = _Collector()
            if not stream.copy_until(b"\r\n\r\n", header_bytes):
                raise BadRequest("a multipart part has no end of headers")
            headers = _part_headers(header_bytes.data)
            params = _disposition(headers.get("content-disposition", ""))
            name = params.get("name", "")
            if name == "file" or (file_path is None and "filename" in params):
                suffix = Path(params.get("filename", "upload")).suffix or ".dat"
                target = folder / f"upload{suffix}"
                with target.open("wb") as out:
                    found = stream.copy_until(b"\r\n" + delim, out)
                file_path = target
            else:
                collector = _Collector()
                found = stream.copy_until(b"\r\n" + delim, collector)
                if name == "mapping":
                    mapping = collector.data
            if not found:
                raise BadRequest("the multipart body ends inside a part")
    return file_path, mapping


class _Collector:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


# -- jobs -------------------------------------------------------------------------------------
def _job_json(row: Any) -> dict[str, Any]:
    options = dict(row["options"] or {})
    out: dict[str, Any] = {
        "id": row["id"],
        "entity": row["entity"],
        "status": row["status"],
        "startedBy": options.pop(_STARTER, None),
        "options": options,
        "createdAt": format_datetime(row["created_at"]),
        "updatedAt": format_datetime(row["updated_at"]),
        "finishedAt": format_datetime(row["finished_at"]) if row["finished_at"] else None,
    }
    for name in _COUNTS:
        out[camel(name)] = row[name]
    out["rowsPerSecond"] = round(row["rows_per_s"], 1)
    read, total = row["bytes_read"], row["bytes_total"]
    out["progress"] = round(read / total, 4) if total else (1.0 if row["status"] == "done" else 0)
    out["message"] = row["message"]
    out["errors"] = [
        {k: e.get(k) for k in _ERROR_KEYS} for e in row["errors"] or () if isinstance(e, dict)
    ]
    out["errorsDropped"] = row["errors_dropped"]
    return out


class ImportJobs:
    """Starts import jobs in threads and keeps their state in the job table."""

    def __init__(self, registry: Any):
        self.registry = registry
        self.engine = registry.db.engine
        self.table = import_tables(registry.db.metadata)
        self.threads: dict[str, threading.Thread] = {}

    def _update(self, job_id: str, **values: Any) -> None:
        values["updated_at"] = utcnow()
        # progress comes from inside the import's own write transaction (an aborting import,
        # a checked dry run): on this thread it joins it (on SQLite another would wait for it)
        with storage.write(self.engine) as conn:
            conn.execute(self.table.update().where(self.table.c.id == job_id).values(**values))

    def get(self, entity: str, job_id: str, principal: Principal | None = None) -> dict[str, Any]:
        """The job as its API answers it. With `principal`, only for its starter and
        system-admins: for anyone else it does not exist (404)."""
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    sa.select(self.table).where(
                        self.table.c.id == job_id, self.table.c.entity == entity
                    )
                )
                .mappings()
                .first()
            )
        job = _job_json(row) if row is not None else None
        if job is None or (principal is not None and not _may_see(principal, job)):
            raise NotFound(f"no {entity} import job {job_id!r}")
        return job

    def start(
        self,
        service: EntityService,
        folder: Path,
        path: Path,
        options: ImportOptions,
        shown: dict[str, Any],
        started_by: str | None = None,
    ) -> dict[str, Any]:
        """Check the file (400 if unusable), record the job (`started_by`: the starter's audit
        name, who may see it besides system-admins), run it in a thread."""
        try:
            _, source = Importer(service, options).plan(path)
        except ImportUsageError as exc:
            raise BadRequest(str(exc)) from None
        job_id = new_id()
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                self.table.insert().values(
                    id=job_id,
                    entity=service.entity.name,
                    status="running",
                    options={**shown, _STARTER: started_by},
                    created_at=now,
                    updated_at=now,
                    bytes_total=source.total,
                    **{n: 0 for n in _COUNTS if n != "bytes_total"},
                    rows_per_s=0.0,
                    errors=[],
                    errors_dropped=0,
                )
            )
        thread = threading.Thread(
            target=self._run,
            args=(job_id, service, folder, path, options),
            name=f"import-{job_id}",
            daemon=True,
        )
        self.threads[job_id] = thread
        thread.start()
        return self.get(service.entity.name, job_id)

    def _run(
        self,
        job_id: str,
        service: EntityService,
        folder: Path,
        path: Path,
        options: ImportOptions,
    ) -> None:
        last = [0.0]

        def progress(p: Progress) -> None:
            now = time.monotonic()
            if now - last[0] < 0.5:
                return
            last[0] = now
            self._update(
                job_id,
                **{n: getattr(p, n) for n in _COUNTS},
                rows_per_s=p.rows_per_s,
            )

        options.progress = progress
        try:
            result = Importer(service, options).run(path)
        except Exception as exc:
            if isinstance(exc, ImportUsageError):  # the file as a whole: rows and reasons only
                message = str(exc)
            else:
                # an exception's text may quote values of the rows (a driver's error quotes the
                # key it refused): neither the job nor the log keeps it, only where it arose
                kind = type(exc).__qualname__
                message = f"the import failed ({kind}); the server log has where (job {job_id})"
                log.error(
                    "import job %s failed: %s (its text is left out: it may quote row values)\n%s",
                    job_id,
                    kind,
                    "".join(traceback.format_tb(exc.__traceback__)),
                )
            self._update(job_id, status="failed", message=message, finished_at=utcnow())
            return
        finally:
            _remove(folder)
        errors = [e.stored() for e in result.errors[:MAX_JOB_ERRORS]]
        dropped = result.errors_dropped + max(0, len(result.errors) - MAX_JOB_ERRORS)
        self._update(
            job_id,
            status="done",
            finished_at=utcnow(),
            **{n: getattr(result, n) for n in _COUNTS},
            rows_per_s=result.rows_per_s,
            errors=orjson.loads(orjson.dumps(errors)),
            errors_dropped=dropped,
            message=result.summary(),
        )

    def wait(self, job_id: str, timeout: float = 60) -> None:
        """Block until a job started by this process ends (tests and scripts)."""
        thread = self.threads.get(job_id)
        if thread is not None:
            thread.join(timeout)

    def close(self, timeout: float = 60) -> None:
        """Wait for this process's running jobs (before the database is closed)."""
        for thread in list(self.threads.values()):
            thread.join(timeout)


def _may_see(p: Principal, job: dict[str, Any]) -> bool:
    """A job is seen by its starter and by system-admins."""
    if p.kind == SYSTEM or p.has(SYSTEM_ADMIN):
        return True
    return p.authenticated and job["startedBy"] is not None and job["startedBy"] == p.actor


def _remove(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink(missing_ok=True)
    folder.rmdir()


def _flag(request: Request, name: str) -> bool:
    flag = parse_flag(request.query_params.get(name, "false"), empty=False)
    if flag is not None:
        return flag
    raise BadRequest(
        f"{name} must be true or false",
        errors=[{"pointer": f"/{name}", "message": "must be true or false", "keyword": "type"}],
    )


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the upload is larger than {max_bytes} bytes, the limit (import_max_upload_bytes)"
    )


async def _save_body(
    request: Request, folder: Path, max_bytes: int
) -> tuple[Path, ImportMapping | None]:
    """The upload saved in `folder` as it arrives; 413 once it passes `max_bytes` (or when its
    `Content-Length` says it will), without reading the rest."""
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";")[0].strip().lower()
    raw = folder / "body"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            yield chunk

    size = 0
    with raw.open("wb") as out:
        async for chunk in chunks():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            out.write(chunk)
    if media == "multipart/form-data":
        params = dict(p.strip().split("=", 1) for p in ctype.split(";")[1:] if "=" in p)
        boundary = params.get("boundary", "").strip('"')
        if not boundary:
            raise BadRequest("multipart/form-data needs a boundary")
        file_path, mapping_bytes = await run_in_threadpool(parse_multipart, raw, boundary, folder)
        raw.unlink()
        if file_path is None:
            raise BadRequest("send the file in a part named 'file'")
        mapping = None
        if mapping_bytes is not None:
            mfile = folder / ("mapping.json" if mapping_bytes.lstrip()[:1] == b"{" else "m.toml")
            mfile.write_bytes(mapping_bytes)
            try:
                mapping = load_mapping(mfile)
            except ImportUsageError as exc:
                raise BadRequest(str(exc)) from None
        return file_path, mapping
    target = folder / "upload"
    raw.rename(target)
    return target, None


def add_import_routes(router: APIRouter, registry: Any) -> None:
    """`POST /api/v1/{entity}/imports` and `GET /api/v1/{entity}/imports/{job_id}` for every
    entity of `registry` (whose `import_jobs` the routes use)."""
    registry.import_jobs = ImportJobs(registry)
    for name, service in registry.services.items():
        add_entity_import_routes(router, name, service.entity.title)


#: the import routes of an entity, by its name and title: they hold no registry (each request
#: uses `request.app.state.registry`), so every app of the process shares them
_ROUTES: dict[tuple[str, str], tuple[BaseRoute, ...]] = {}


def add_entity_import_routes(router: APIRouter, name: str, title: str) -> None:
    """The import routes of one entity (also after a schema change)."""
    key = (name, title)
    if key not in _ROUTES:
        fresh = APIRouter(  # as the app's own router
            default_response_class=JSONResponse, route_class=GuardedRoute
        )
        _add_routes(fresh, name, title)
        _ROUTES[key] = tuple(fresh.routes)
    router.routes.extend(_ROUTES[key])


def _check_writable(name: str, unwritable: tuple[str, ...]) -> None:
    """Refuse an import by a caller who may not set some `x-registry.writableBy` fields: the
    file could set them on any row."""
    if unwritable:
        raise Forbidden(
            f"your roles may not set {name} fields {', '.join(unwritable)} "
            f"(x-registry.writableBy): imports of {name} records are for the roles that may",
            errors=[
                {
                    "pointer": f"/{f}",
                    "message": "your roles may not set it",
                    "keyword": "writableBy",
                }
                for f in unwritable
            ],
        )


def _add_routes(router: APIRouter, name: str, title: str) -> None:  # noqa: C901
    base = f"{API_PREFIX}/{name}/imports"

    def jobs_of(request: Request) -> ImportJobs:
        jobs: ImportJobs = request.app.state.registry.import_jobs
        return jobs

    problem = {"content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}

    def allowed(request: Request, upsert: bool) -> tuple[str | None, Any]:
        """(the caller's audit name, the rows they may write: None for all). Rows outside it
        are refused one by one; an upsert also needs update, on the same rows, and (for an
        entity with private fields) the private grant everywhere, since it replaces values.
        Imports need a login and are never a recipient's (even where they may create)."""
        p = principal_of(request)
        if not p.authenticated:
            raise Unauthorized(
                f"sign in to import {name} records", headers={"WWW-Authenticate": "Bearer"}
            )
        if p.has(RECIPIENT) or p.recipient is not None:
            raise Forbidden("the recipient role may not import records")
        access = request.app.state.registry.auth.access(name)
        scope = access.require(p, "create")
        _check_writable(name, access.unwritable(p))
        if upsert:
            if access.require(p, "update") != scope:
                raise Forbidden(f"your roles may not update the same {name} records they create")
            if access.private and not access.private_grant(p).everywhere:
                raise Forbidden(
                    f"upserts replace private fields of {name} records: your roles may not"
                )
        return p.actor, scope

    async def create(request: Request) -> Response:
        actor, scope = allowed(request, bool(request.query_params.get("upsert_on")))
        on_error = request.query_params.get("on_error", "skip")
        if on_error not in ("skip", "abort"):
            raise BadRequest("on_error must be skip or abort")
        fmt = request.query_params.get("format")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if fmt is None and media != "multipart/form-data" and media not in CONTENT_FORMATS:
            raise UnsupportedMediaType(
                f"send the file as text/csv, application/x-ndjson or multipart/form-data, or "
                f"say ?format=csv|jsonl (got {media or 'no content type'})"
            )
        fmt = fmt or CONTENT_FORMATS.get(media)
        if fmt is not None and fmt not in ("csv", "jsonl"):
            raise BadRequest("format must be csv or jsonl")
        upsert_on = request.query_params.get("upsert_on") or None
        dry_run = _flag(request, "dry_run")
        keep_ids = _flag(request, "keep_ids")
        jobs = jobs_of(request)
        service = jobs.registry.services.get(name)
        if service is None:
            raise NotFound(f"no entity {name!r}")
        settings = jobs.registry.settings
        folder = Path(tempfile.mkdtemp(prefix="registry-import-"))
        try:
            path, mapping = await _save_body(request, folder, settings.import_max_upload_bytes)
            if os.path.getsize(path) == 0:
                raise BadRequest("the upload is empty")
            options = ImportOptions(
                format=fmt,
                mapping=mapping,
                dry_run=dry_run,
                upsert_on=upsert_on,
                on_error=on_error,
                keep_ids=keep_ids,
                quote_rows=False,  # a job keeps `RowError.stored()`: no row, no value
                max_line_bytes=settings.import_max_line_bytes,
                actor=actor,
                scope=scope,
            )
            shown = {
                "format": fmt,
                "dry_run": dry_run,
                "upsert_on": upsert_on,
                "on_error": on_error,
                "keep_ids": keep_ids,
                "mapping": mapping is not None,
            }
            job = await run_in_threadpool(jobs.start, service, folder, path, options, shown, actor)
        except Exception:
            _remove(folder)
            raise
        return JSONResponse(job, status_code=202, headers={"Location": f"{base}/{job['id']}"})

    async def status(request: Request, job_id: str) -> Response:
        p = principal_of(request)
        if not p.authenticated:
            raise Unauthorized(
                f"sign in to see {name} import jobs", headers={"WWW-Authenticate": "Bearer"}
            )
        return JSONResponse(await run_in_threadpool(jobs_of(request).get, name, job_id, p))

    router.add_api_route(
        base,
        create,
        methods=["POST"],
        dependencies=[Depends(rules.entity(name, "create"))],
        tags=[name],
        status_code=202,
        name=f"import_{name}",
        summary=f"Import a CSV or JSON Lines file of {title} (background job)",
        response_class=JSONResponse,
        openapi_extra={
            "parameters": [
                {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}},
                {"name": "upsert_on", "in": "query", "schema": {"type": "string"}},
                {"name": "on_error", "in": "query", "schema": {"enum": ["skip", "abort"]}},
                {"name": "format", "in": "query", "schema": {"enum": ["csv", "jsonl"]}},
                {"name": "keep_ids", "in": "query", "schema": {"type": "boolean"}},
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "mapping": {"type": "string", "format": "binary"},
                            },
                            "required": ["file"],
                        }
                    },
                },
            },
            "responses": {"202": {"description": "Started; Location names the job"}},
        },
        responses={
            400: {"description": "Unusable file, header, mapping or option", **problem},
            401: {"description": "Not signed in", **problem},
            403: {"description": "Your roles may not import these records", **problem},
            413: {"description": "The upload is larger than import_max_upload_bytes", **problem},
        },
    )
    router.add_api_route(
        f"{base}/{{job_id}}",
        status,
        methods=["GET"],
        # a job is its starter's and system-admins' (`ImportJobs.get`: others get 404)
        dependencies=[Depends(rules.SIGNED_IN)],
        tags=[name],
        name=f"import_status_{name}",
        summary=f"Status, counts and errors of a {title} import (its starter's)",
        response_class=JSONResponse,
        responses={
            401: {"description": "Not signed in", **problem},
            404: {"description": "No such job, or not one you started", **problem},
        },
    )
