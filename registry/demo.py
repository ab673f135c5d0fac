"""Demo data for the shipped schemas: a fictional country's programmes, vaccines, facilities,
vaccinators and recipients, loaded into an empty database (`registry serve --demo`)."""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import sqlalchemy as sa

from open_registry.core import storage
from open_registry.core.codec import new_id, utcnow

log = logging.getLogger("registry")


def _order(services: Mapping[str, Any]) -> list[str]:
    """Entities in an order where every referenced entity comes first."""
    done: list[str] = []

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in done or name in stack or name not in services:
            return
        for ref in services[name].entity.references:
            visit(ref.entity, (*stack, name))
        done.append(name)

    for name in services:
        visit(name, ())
    return done


def load_demo_data(services: Mapping[str, Any]) -> int:
    """Load the demo records of every shipped entity that is loaded and still empty."""
    folder = resources.files("open_registry.core") / "demo"
    loaded = 0
    for name in _order(services):
        path = folder / f"{name}.json"
        if not path.is_file():
            continue
        service = services[name]
        with storage.read(service.db.engine) as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(service.table)).scalar_one():
                continue
        records: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        items = [(r["id"], {k: v for k, v in r.items() if k != "id"}) for r in records]
        service.create_many(items, actor="demo")
        loaded += len(items)
        log.info("demo data: %d %s records", len(records), name)
    return loaded


# -- the demo history ---------------------------------------------------------------------------
#: entities the history writes and reads (the shipped ones and the certificates plugin's)
VACCINATION, RECIPIENT, CERTIFICATE, SIDE_EFFECT = (
    "vaccination", "recipient", "certificate", "side_effect",
)  # fmt: skip
#: what the history needs loaded, with its demo records
NEEDED = ("facility", "program", "vaccine", RECIPIENT, VACCINATION)
#: the `origin` of the certificates plugin's writes: its `before_write` refuses certificate
#: writes from any other (the demo's revocations stand for what a controller did on the page)
ISSUER_ORIGIN = "certificates"
ACTOR = "demo"
SYMPTOMS = (
    "Fever", "Headache", "Fatigue", "Pain at the injection site", "Muscle ache", "Chills",
    "Nausea", "Swelling at the injection site", "Rash", "Dizziness",
)  # fmt: skip
REVOKE_REASONS = (
    "recorded for the wrong person",
    "issued in error: the dose was not given",
    "duplicate record of the same dose",
)
SUSPEND_REASONS = ("under review: batch recall", "identity being checked")


@dataclass(frozen=True)
class HistorySize:
    """How much history `load_demo_history` writes (the counts are approximate: second doses
    fall in the window only when their interval allows)."""

    #: people vaccinated in the window (new recipients, on top of the demo's own)
    people: int = 1500
    #: days back from today the first doses spread over
    days: int = 60
    #: vaccinations corrected afterwards (a new certificate revision each)
    corrections: int = 30
    #: certificates revoked, and suspended, by a controller
    revocations: int = 25
    suspensions: int = 8
    #: side-effect reports (a few of them serious)
    side_effects: int = 60
    #: the random generator's seed: the same seed and day give the same history
    seed: int = 2026


def load_demo_history(registry: Any, size: HistorySize | None = None) -> dict[str, int]:
    """A realistic recent past on top of the demo records (`load_demo_data` first): people
    vaccinated over the last `size.days` days at the active facilities, first and second doses
    by the vaccines' intervals, then corrections, revocations, suspensions and side-effect
    reports, so that lists and the dashboard show something on first start.

    The records go through the write pipeline in a few transactions (`write_batch`: rows,
    audit entries, outbox events; the programme's per-dose checks are not run, as for an
    import of ready rows); the outbox is then worked through here, so the certificates of
    every vaccination are issued and the rollups counted before the server answers. Nothing is
    written when vaccinations are already there, or an entity it needs is not loaded.
    Returns the records written, by entity."""
    size = size or HistorySize()
    services = registry.services
    if any(name not in services for name in NEEDED) or _has_rows(services[VACCINATION]):
        return {}
    started = time.perf_counter()
    rng = random.Random(size.seed)
    now = utcnow().replace(microsecond=0)
    plan = _History(services, rng, now, size)
    people, doses = plan.people_and_doses()
    written = {RECIPIENT: len(people), VACCINATION: len(doses)}
    engine = services[VACCINATION].db.engine
    with storage.write(engine) as conn:
        _create(services[RECIPIENT], conn, people, now)
        _create(services[VACCINATION], conn, doses, now)
    _work_through_outbox(registry)  # certificates, rollups, next-dose suggestions
    with storage.write(engine) as conn:
        written.update(plan.afterwards(conn, [d[0] for d in doses]))
    _work_through_outbox(registry)  # corrected certificates, side-effect rollups
    log.info(
        "demo history: %s in %.1f s",
        ", ".join(f"{n} {name}" for name, n in written.items()),
        time.perf_counter() - started,
    )
    return written


def _has_rows(service: Any) -> bool:
    with storage.read(service.db.engine) as conn:
        return conn.execute(sa.select(service.table.c.id).limit(1)).first() is not None


def _work_through_outbox(registry: Any) -> None:
    """Hand every due event to the plugins now (what the outbox worker does after start-up)."""
    from open_registry.core.outbox.worker import Worker

    worker = Worker(registry, name="demo")
    while worker.deliver_batch(500):
        pass


def _create(service: Any, conn: Any, items: list[tuple[str, dict[str, Any]]], at: Any) -> None:
    """Ready records (schema defaults filled, checked) written as one batch."""
    if not items:
        return
    items = [(rid, service.defaults.apply(body)) for rid, body in items]
    for rid, body in items:
        errors = service.check_body(body)
        if errors:  # a mistake of this module, not of the data a user gave
            raise ValueError(f"demo {service.entity.name} {rid}: {errors[0]}")
    service.write_batch(conn, creates=items, actor=ACTOR, at=at, checks=False)


def _records(service: Any, conn: Any) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(service.table).where(service.table.c._deleted_at.is_(None)))
    return [service.codec.to_record(r) for r in rows.mappings()]


class _History:
    """Draws the history from the demo's facilities, vaccinators, vaccines and programmes."""

    def __init__(self, services: Mapping[str, Any], rng: random.Random, now: datetime,
                 size: HistorySize):  # fmt: skip
        self.services, self.rng, self.now, self.size = services, rng, now, size
        with storage.read(services[VACCINATION].db.engine) as conn:
            read = {n: _records(services[n], conn) for n in (*NEEDED[:4], "vaccinator")
                    if n in services}  # fmt: skip
        vaccines = {v["code"]: v for v in read["vaccine"] if v.get("status", "Active") == "Active"}
        self.vaccines_of = {
            p["code"]: [vaccines[c] for c in p.get("vaccineIds", []) if c in vaccines]
            for p in read["program"]
            if p.get("status", "Active") == "Active"
        }
        self.facilities = [
            f for f in read["facility"]
            if f.get("status", "Active") == "Active" and self._programs(f)
        ]  # fmt: skip
        self.vaccinators: dict[str, list[str]] = {}
        for v in read.get("vaccinator", []):
            if v.get("status", "Active") == "Active":
                for code in v.get("facilityIds", []):
                    self.vaccinators.setdefault(code, []).append(v["code"])
        people = read[RECIPIENT]
        names = [p["name"].split(" ", 1) for p in people if " " in p.get("name", "")]
        self.first_names = sorted({n[0] for n in names}) or ["Asha"]
        self.last_names = sorted({n[1] for n in names}) or ["Rao"]
        self.taken_identities = {p.get("identity") for p in people}
        self.taken_codes = {p.get("enrollmentCode") for p in people}

    def _programs(self, facility: Mapping[str, Any]) -> list[str]:
        listed = [p.get("programId") for p in facility.get("programs", [])]
        return [p for p in listed if self.vaccines_of.get(p)]

    def people_and_doses(self) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
        """New recipients and their vaccinations, oldest first."""
        rng, size = self.rng, self.size
        people: list[tuple[str, dict[str, Any]]] = []
        doses: list[tuple[str, dict[str, Any]]] = []
        if not self.facilities:
            return people, doses
        # busier facilities first: a few take most of the people
        weights = [1.0 / (i + 1) ** 0.5 for i in range(len(self.facilities))]
        for _ in range(size.people):
            facility = rng.choices(self.facilities, weights)[0]
            programs = self._programs(facility)
            program = programs[0] if len(programs) == 1 or rng.random() < 0.8 else programs[1]
            vaccine = rng.choice(self.vaccines_of[program])
            person_id = self._person_id()
            person = self._person(facility, child=program != programs[0])
            people.append((person_id, person))
            intervals = vaccine.get("doseIntervals") or []
            total = len(intervals) + 1
            day = self._day()
            for dose in range(1, total + 1):
                if dose > 1:  # the next dose within its interval, if that day has come
                    gap = intervals[dose - 2]
                    low = int(gap.get("min", 28))
                    high = max(low, min(low + 14, int(gap.get("max", low))))
                    day += timedelta(days=rng.randint(low, high))
                    if day.date() > self.now.date() or rng.random() < 0.15:
                        break
                doses.append((new_id(), self._dose(person_id, program, vaccine, facility, dose,
                                                    total, day)))  # fmt: skip
        doses.sort(key=lambda d: d[1]["date"])
        return people, doses

    def _person_id(self) -> str:
        """A version-4 UUID from the seed, in the upper quarter of the id space: the demo's own
        recipients, which the README's walk-through and the tests pick, stay first in the
        default order (by id)."""
        bits = self.rng.getrandbits(128) | (0b11 << 126)
        return str(uuid.UUID(int=bits, version=4))

    def _day(self) -> datetime:
        """A working hour of one of the last `days` days (fewer on Sundays, more lately)."""
        rng = self.rng
        while True:
            back = int(self.size.days * rng.random() ** 1.3)  # the campaign picks up
            day = self.now - timedelta(days=back)
            if day.weekday() == 6 and rng.random() < 0.7:
                continue
            at = day.replace(hour=3, minute=30, second=0) + timedelta(minutes=rng.randint(0, 480))
            if at <= self.now:
                return at

    def _person(self, facility: Mapping[str, Any], *, child: bool) -> dict[str, Any]:
        rng = self.rng
        while (identity := f"did:example:national-id:{rng.randint(10**7, 10**8 - 1)}") in (
            self.taken_identities
        ):
            pass
        self.taken_identities.add(identity)
        while (code := str(rng.randint(10**9, 10**10 - 1))) in self.taken_codes:
            pass
        self.taken_codes.add(code)
        age = rng.randint(1, 15) if child else rng.randint(50, 88)
        born = self.now.date() - timedelta(days=age * 365 + rng.randint(0, 364))
        place = facility.get("address") or {}
        person: dict[str, Any] = {
            "identity": identity,
            "name": f"{rng.choice(self.first_names)} {rng.choice(self.last_names)}",
            "dob": born.isoformat(),
            "gender": rng.choices(("Female", "Male", "Other"), (50, 49, 1))[0],
            "nationality": "Examplian",
            "address": {
                k: place[k] for k in ("district", "state", "pincode", "country") if k in place
            }
            | {"addressLine1": f"{rng.randint(1, 400)} Main Road"},
            "enrollmentCode": code,
            "enrollmentType": rng.choices(
                ("WALK_IN", "SELF_ENROLLMENT", "PRE_ENROLLMENT"), (45, 40, 15)
            )[0],
        }
        if rng.random() < 0.5:  # the others gave none
            person["phone"] = f"+99 9{rng.randint(0, 9999):04d} {rng.randint(0, 99999):05d}"
        return person

    def _dose(
        self,
        person: str,
        program: str,
        vaccine: Mapping[str, Any],
        facility: Mapping[str, Any],
        dose: int,
        total: int,
        at: datetime,
    ) -> dict[str, Any]:
        code = facility["code"]
        week = at.isocalendar()
        record: dict[str, Any] = {
            "recipient": person,
            "program": program,
            "vaccine": vaccine["code"],
            "facility": code,
            "dose": dose,
            "totalDoses": total,
            # one batch per vaccine, facility and week
            "batch": f"{vaccine['code'][-2:]}{week.year % 100:02d}{week.week:02d}-"
            f"{self.facilities.index(facility) + 1:02d}",  # type: ignore[arg-type]
            "date": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if self.vaccinators.get(code):
            record["vaccinator"] = self.rng.choice(self.vaccinators[code])
        return record

    def afterwards(self, conn: Any, dose_ids: list[str]) -> dict[str, int]:
        """What happened after the doses: corrections, revocations, suspensions, side-effect
        reports (one transaction; the corrected certificates follow through the outbox)."""
        rng, size, services = self.rng, self.size, self.services
        at = utcnow()
        written: dict[str, int] = {}
        chosen = rng.sample(dose_ids, min(len(dose_ids), size.corrections))
        vaccination = services[VACCINATION]
        table = vaccination.table
        updates = []
        for row in conn.execute(sa.select(table).where(table.c.id.in_(chosen))).mappings():
            old = vaccination.codec.data(row)
            new = dict(old)
            if old.get("vaccinator") and rng.random() < 0.5:  # who gave it, mistyped
                others = self.vaccinators.get(old["facility"], [])
                new["vaccinator"] = rng.choice(others)
            new["batch"] = old["batch"][:-2] + f"{rng.randint(10, 99)}"  # the batch's label
            changed = sorted(k for k in new if new[k] != old.get(k))
            if changed:
                updates.append((row, new, changed))
        vaccination.write_batch(conn, updates=updates, actor=ACTOR, at=at, checks=False)
        written["corrected vaccination"] = len(updates)
        if CERTIFICATE not in services:
            return written
        certificate = services[CERTIFICATE]
        ctable = certificate.table
        rows = conn.execute(
            sa.select(ctable).where(ctable.c.status == "active", ctable.c._deleted_at.is_(None))
            .order_by(ctable.c.statusIndex)
        ).mappings().all()  # fmt: skip
        rows = [r for r in rows if r["vaccination"] not in set(chosen)]
        picked = rng.sample(rows, min(len(rows), size.revocations + size.suspensions
                                      + size.side_effects))  # fmt: skip
        revoke = picked[: size.revocations]
        suspend = picked[size.revocations : size.revocations + size.suspensions]
        reported = picked[size.revocations + size.suspensions :]
        stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
        changes = []
        for row, status in [(r, "revoked") for r in revoke] + [(r, "suspended") for r in suspend]:
            old = certificate.codec.data(row)
            new = {**old, "status": status, "changedAt": stamp}
            if status == "revoked":
                new["reason"] = rng.choice(REVOKE_REASONS)
            else:
                new["reason"] = rng.choice(SUSPEND_REASONS)
                new["suspendedUntil"] = (at + timedelta(days=rng.randint(7, 30))).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                )
            changes.append((row, new, sorted(k for k in new if new[k] != old.get(k))))
        certificate.write_batch(conn, updates=changes, actor=ACTOR, at=at, origin=ISSUER_ORIGIN)
        written["revoked certificate"] = len(revoke)
        written["suspended certificate"] = len(suspend)
        if SIDE_EFFECT in services:
            reports = [(new_id(), self._report(conn, r)) for r in reported]
            service = services[SIDE_EFFECT]
            items = [(rid, service.defaults.apply(body)) for rid, body in reports]
            for rid, body in items:
                if errors := service.check_body(body):
                    raise ValueError(f"demo side_effect {rid}: {errors[0]}")
            # checked like a report sent to the API: it matches its certificate
            service.write_batch(conn, creates=items, actor=ACTOR, at=at)
            written[SIDE_EFFECT] = len(items)
        return written

    def _report(self, conn: Any, certificate: Mapping[str, Any]) -> dict[str, Any]:
        rng = self.rng
        vaccination = self.services[VACCINATION]
        given = conn.execute(
            sa.select(vaccination.table.c.date).where(
                vaccination.table.c.id == certificate["vaccination"]
            )
        ).scalar_one()
        day = given.date() if isinstance(given, datetime) else datetime.fromisoformat(
            str(given).replace("Z", "+00:00")).date()  # fmt: skip
        serious = rng.random() < 0.08
        report: dict[str, Any] = {
            "certificate": certificate["id"],
            "recipient": certificate["recipient"],
            "facility": certificate["facility"],
            "program": certificate["program"],
            "symptoms": rng.sample(SYMPTOMS, rng.randint(1, 3)),
            "onset": min(day + timedelta(days=rng.randint(0, 3)), self.now.date()).isoformat(),
            "severity": "Severe" if serious else rng.choices(("Mild", "Moderate"), (75, 25))[0],
            "serious": serious,
            "outcome": rng.choices(("Recovered", "Recovering", "Unknown"), (60, 30, 10))[0],
            "reportedBy": rng.choices(("Recipient", "Staff"), (70, 30))[0],
            "reviewStatus": rng.choices(("Open", "Under review", "Closed"), (50, 20, 30))[0],
        }
        if serious:
            report["seriousness"] = ["Hospitalisation"]
            report["outcome"] = "Recovering"
        return report
