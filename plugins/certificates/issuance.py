"""Issuance: committed vaccinations become signed certificates, in the outbox worker's transaction.

For a batch of vaccination events the issuer reads every record it needs with a handful of
`IN (...)` queries, fills in the programme's credential template, signs each credential (the
canonicalization shortcut, falling back to full JSON-LD processing for other shapes), and stores
the certificates with one multi-row insert through the certificate entity's service, so they are
validated, audited and announced on the outbox like any other record. A correction (the
vaccination changed) issues the next revision and revokes the one it replaces, linking both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from open_registry.core import Conflict, new_id
from open_registry.plugins.certificates import shortcut, suites
from open_registry.plugins.certificates.config import CertificatesConfig
from open_registry.plugins.certificates.keystore import KeyStore
from open_registry.plugins.certificates.status import PURPOSES, list_url, locate
from open_registry.plugins.certificates.template import CredentialTemplate, load_templates

ACTOR = "certificates"
VACCINATION = "vaccination"
CERTIFICATE = "certificate"
SEQUENCE = "certificate_status_index"

#: the `origin` of the issuer's writes: `before_write` refuses certificates written otherwise
ORIGIN = "certificates"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Job:
    """One certificate to issue: for a vaccination, possibly replacing an earlier certificate."""

    vaccination_id: str
    replaces: dict[str, Any] | None = None


def _partial_record(codec: Any, row: Any, names: set[str]) -> dict[str, Any]:
    """Some fields of a row as JSON (private ones decrypted), like `codec.to_record` would."""
    full = dict.fromkeys(codec.kinds)
    full.update(row)
    record = {k: v for k, v in codec.data(_Only(full, names)).items()}
    record["id"] = row["id"]
    return record


class _Only(dict):
    """A row that holds only `names`: the codec sees None (absent) for every other field."""

    def __init__(self, row: dict[str, Any], names: set[str]):
        super().__init__({k: (v if k in names or k == "id" else None) for k, v in row.items()})


class Issuer:
    """Builds, signs and stores certificates for one registry."""

    def __init__(self, registry: Any, config: CertificatesConfig, keys: KeyStore):
        self.registry = registry
        self.config = config
        self.keys = keys
        self.default_template, self.templates = load_templates(config.templates_dir)
        self._sequence_ready = False

    # -- reading what a certificate is made of ----------------------------------------------
    def _service(self, name: str) -> Any:
        return self.registry.services[name]

    def fields_read(self, entity: str) -> set[str] | None:
        """The fields of `entity` the templates read (None: all, e.g. a template reads the
        whole record); private ones are decrypted only when a template asks for them."""
        names: set[str] = set()
        for template in (self.default_template, *self.templates.values()):
            for path in template.paths:
                head, _, rest = path.partition(".")
                if head == entity:
                    if not rest:
                        return None
                    names.add(rest.split(".")[0])
        return names

    def _fetch(
        self, conn: Any, entity: str, field: str, values: Iterable[Any], *, whole: bool = False
    ) -> dict[Any, Any]:
        """Live records of `entity` whose `field` is one of `values`, by that value: `whole`, or
        with just the fields the templates read (and `id`, `field`)."""
        wanted = sorted({v for v in values if v is not None})
        if not wanted or entity not in self.registry.services:
            return {}
        service = self._service(entity)
        table, codec = service.table, service.codec
        names = None if whole else self.fields_read(entity)
        if names is not None:
            names = {n for n in names if n in codec.kinds} | ({field} - {"id"})
        out: dict[Any, Any] = {}
        for i in range(0, len(wanted), 500):
            where = (table.c[field].in_(wanted[i : i + 500]), table.c._deleted_at.is_(None))
            if names is None:
                for row in conn.execute(sa.select(table).where(*where)).mappings():
                    out[row[field]] = codec.to_record(row)
                continue
            cols = [table.c.id, *(table.c[n] for n in sorted(names))]
            for row in conn.execute(sa.select(*cols).where(*where)).mappings():
                out[row[field]] = _partial_record(codec, row, names)
        return out

    def certificates_of(self, conn: Any, vaccination_ids: Iterable[str]) -> dict[str, list[Any]]:
        """Every live certificate of the given vaccinations, newest revision first."""
        service = self._service(CERTIFICATE)
        table = service.table
        ids = sorted(set(vaccination_ids))
        out: dict[str, list[Any]] = {}
        for i in range(0, len(ids), 500):
            stmt = (
                sa.select(table)
                .where(table.c.vaccination.in_(ids[i : i + 500]), table.c._deleted_at.is_(None))
                .order_by(table.c.revision.desc())
            )
            for row in conn.execute(stmt).mappings():
                out.setdefault(row["vaccination"], []).append(service.codec.to_record(row))
        return out

    # -- status list indices ----------------------------------------------------------------
    def allocate(self, conn: Any, n: int) -> list[int]:
        """`n` unused status list indices (a sequence on PostgreSQL; SQLite has one writer)."""
        table = self._service(CERTIFICATE).table
        if conn.dialect.name != "postgresql":
            top = conn.execute(sa.select(sa.func.max(table.c.statusIndex))).scalar()
            start = -1 if top is None else int(top)
            return list(range(start + 1, start + 1 + n))
        if not self._sequence_ready:
            self._create_sequence(table)
        rows = conn.execute(
            sa.text(f"SELECT nextval('{SEQUENCE}') FROM generate_series(1, :n)"), {"n": n}
        )
        return [int(r[0]) for r in rows]

    def _create_sequence(self, table: sa.Table) -> None:
        engine = self.registry.db.engine
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            exists = conn.execute(sa.text("SELECT to_regclass(:s)"), {"s": SEQUENCE}).scalar()
            if exists is None:
                top = conn.execute(sa.select(sa.func.max(table.c.statusIndex))).scalar()
                start = 0 if top is None else int(top) + 1
                # another worker may create it meanwhile: then theirs is used
                with contextlib.suppress(sa.exc.ProgrammingError):
                    conn.execute(sa.text(f"CREATE SEQUENCE {SEQUENCE} START {start} MINVALUE 0"))
        self._sequence_ready = True

    # -- building and signing ----------------------------------------------------------------
    def template_for(self, program: str | None) -> CredentialTemplate:
        return self.templates.get(program or "", self.default_template)

    def context(
        self,
        vaccination: Mapping[str, Any],
        related: Mapping[str, Mapping[Any, Any]],
        certificate_id: str,
        index: int,
        issued_at: str,
        issuer: str,
    ) -> dict[str, Any]:
        number, position = locate(index)
        base = self.config.api_base
        return {
            "issuer": issuer,
            "issuedAt": issued_at,
            "baseUrl": self.config.base_url,
            "certificate": {
                "id": certificate_id,
                "number": certificate_id,
                "url": f"{base}/certificates/{certificate_id}",
            },
            "status": {
                "index": position,
                **{p: list_url(base, p, number) for p in PURPOSES},
            },
            "vaccination": vaccination,
            "recipient": related["recipient"].get(vaccination.get("recipient"), {}),
            "facility": related["facility"].get(vaccination.get("facility"), {}),
            "vaccine": related["vaccine"].get(vaccination.get("vaccine"), {}),
            "program": related["program"].get(vaccination.get("program"), {}),
            "vaccinator": related["vaccinator"].get(vaccination.get("vaccinator"), {}),
        }

    def sign(self, unsigned: dict[str, Any], created: str) -> dict[str, Any]:
        key = self.keys.current()
        return suites.sign(
            unsigned,
            key.private_key,
            key.verification_method,
            suite=self.config.suite,
            created=created,
            canonicalizer=shortcut.canonicalize,
        )

    def issue(self, conn: Any, jobs: list[Job]) -> list[dict[str, Any]]:
        """Issue a certificate per job inside `conn`'s transaction; returns the stored records."""
        if not jobs:
            return []
        vaccinations = self._fetch(
            conn, VACCINATION, "id", (j.vaccination_id for j in jobs), whole=True
        )
        jobs = [j for j in jobs if j.vaccination_id in vaccinations]  # deleted meanwhile
        if not jobs:
            return []
        vs = [vaccinations[j.vaccination_id] for j in jobs]
        related = {
            "recipient": self._fetch(conn, "recipient", "id", (v.get("recipient") for v in vs)),
            "facility": self._fetch(conn, "facility", "code", (v.get("facility") for v in vs)),
            "vaccine": self._fetch(conn, "vaccine", "code", (v.get("vaccine") for v in vs)),
            "program": self._fetch(conn, "program", "code", (v.get("program") for v in vs)),
            "vaccinator": self._fetch(
                conn, "vaccinator", "code", (v.get("vaccinator") for v in vs)
            ),
        }
        key = self.keys.current()
        issued_at = now_iso()
        indices = self.allocate(conn, len(jobs))
        items: list[tuple[str, dict[str, Any]]] = []
        for job, vaccination, index in zip(jobs, vs, indices, strict=True):
            # the API refuses these (before_write); a bulk import does not call it
            if vaccination.get("dose", 0) > vaccination.get("totalDoses", 10**6):
                raise ValueError(
                    f"vaccination {vaccination['id']}: dose {vaccination['dose']} is beyond the "
                    f"schedule's {vaccination['totalDoses']} doses; correct the record"
                )
            cid = new_id()
            ctx = self.context(vaccination, related, cid, index, issued_at, key.issuer)
            unsigned = self.template_for(vaccination.get("program")).fill(ctx)
            body = {
                "vaccination": vaccination["id"],
                "recipient": vaccination["recipient"],
                "program": vaccination["program"],
                "facility": vaccination["facility"],
                "revision": job.replaces["revision"] + 1 if job.replaces else 1,
                "status": "active",
                "statusIndex": index,
                "issuer": key.issuer,
                "verificationMethod": key.verification_method,
                "issuedAt": issued_at,
                "credential": self.sign(unsigned, issued_at),
            }
            if job.replaces:
                body["replaces"] = job.replaces["id"]
            items.append((cid, body))
        created = self._service(CERTIFICATE).create_many(items, actor=ACTOR, origin=ORIGIN)
        for job, record in zip(jobs, created, strict=True):
            if job.replaces:
                self.set_status(
                    job.replaces["id"],
                    "revoked",
                    reason=f"corrected: replaced by certificate {record['id']}",
                    replaced_by=record["id"],
                )
        return created

    # -- lifecycle ------------------------------------------------------------------------------
    def set_status(
        self,
        certificate_id: str,
        status: str,
        *,
        reason: str | None = None,
        until: str | None = None,
        replaced_by: str | None = None,
        actor: str | None = ACTOR,
    ) -> dict[str, Any]:
        """Revoke, suspend or reinstate a certificate (revocation is final)."""
        service = self._service(CERTIFICATE)
        current = service.get(certificate_id)
        if current["status"] == "revoked":
            raise Conflict(
                f"certificate {certificate_id} is revoked ({current.get('reason', 'no reason')}); "
                "a revocation cannot be undone",
                fields=["status"],
            )
        patch: dict[str, Any] = {"status": status, "changedAt": now_iso()}
        patch["reason"] = reason
        patch["suspendedUntil"] = until if status == "suspended" else None
        if replaced_by:
            patch["replacedBy"] = replaced_by
        return service.update(
            certificate_id,
            patch,
            actor=actor,
            if_match=current["_version"],
            patch=True,
            origin=ORIGIN,
        )
