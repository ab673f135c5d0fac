"""Aggregates for the monitoring role, read from the rollups (never from the base tables; the
folded rows plus the deltas not folded in yet, `rollups.merged`):
vaccinations by day, place, programme/vaccine/dose, gender and age band; certificates; verifi-
cations; side effects; appointments; facility utilisation against the daily rate; low stock.

Each aggregate is a `Table` (columns and rows) that the API serves as JSON or CSV and the
dashboard draws. The place-based tables come from one pass over the `place` rollup.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from open_registry.core import Invalid, NotFound
from open_registry.plugins.programme import stock
from open_registry.plugins.programme.rollups import merged
from open_registry.plugins.programme.runtime import FACILITY_PROGRAMME, SIDE_EFFECT, Programme
from open_registry.plugins.programme.tables import MONTHLY

MAX_DAYS = 3660
DEFAULT_DAYS = 30
CERT_KINDS = ("issued", "corrected", "revoked", "suspended")
APPT_STATUSES = ("Suggested", "Booked", "Completed", "Cancelled", "Missed")


@dataclass(frozen=True)
class Period:
    """Which days and programme an aggregate covers."""

    start: date
    end: date
    program: str | None = None

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def each_day(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range(self.days)]

    def query(self) -> dict[str, str]:
        out = {"from": self.start.isoformat(), "to": self.end.isoformat()}
        if self.program:
            out["program"] = self.program
        return out


def period(today: date, start: str | None, end: str | None, program: str | None) -> Period:
    """The period asked for (default: the last 30 days up to today), with errors naming the
    parameter."""
    errors = []

    def parse(name: str, value: str | None, default: date) -> date:
        if value in (None, ""):
            return default
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            errors.append(
                {
                    "pointer": f"/{name}",
                    "message": "must be a date (YYYY-MM-DD)",
                    "keyword": "format",
                }
            )
            return default

    last = parse("to", end, today)
    first = parse("from", start, last - timedelta(days=DEFAULT_DAYS - 1))
    if not errors and first > last:
        errors.append(
            {"pointer": "/from", "message": "must not be after 'to'", "keyword": "maximum"}
        )
    if not errors and (last - first).days >= MAX_DAYS:
        errors.append(
            {
                "pointer": "/from",
                "message": f"a period is at most {MAX_DAYS} days",
                "keyword": "maximum",
            }
        )
    if program is not None and (len(program) > 32 or not program.strip()):
        errors.append(
            {"pointer": "/program", "message": "must be a programme code", "keyword": "format"}
        )
    if errors:
        raise Invalid("invalid analytics parameters", errors=errors)
    return Period(first, last, program or None)


def whole_months(start: date, end: date) -> tuple[date, date, date] | None:
    """(first whole month's 1st, last whole month's 1st, the day after it) within start..end,
    or None when the period holds no whole month."""
    first = start if start.day == 1 else _next_month(start)
    after_end = end + timedelta(days=1)
    last_after = after_end.replace(day=1)  # the 1st after the last whole month
    if first >= last_after:
        return None
    last = (last_after - timedelta(days=1)).replace(day=1)
    return first, last, last_after


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


@dataclass
class Table:
    """One aggregate: a name (its CSV file), a title, column names and rows."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "columns": self.columns, "rows": self.rows}

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(["" if v is None else _csv_safe(v) for v in row])
        return out.getvalue()


def _csv_safe(value: Any) -> Any:
    """Text that a spreadsheet would run as a formula is quoted with a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class Analytics:
    """The aggregates of one registry for one period."""

    def __init__(self, rt: Programme, conn: Connection, when: Period, today: date):
        self.rt = rt
        self.conn = conn
        self.when = when
        self.today = today
        self._place: list[tuple[str, str, str, str, int]] | None = None

    # -- reading the rollup --------------------------------------------------------------
    def _sum(self, name: str, *keys: str, day: bool = False, period: Period | None = None):
        """Sums of rollup `name` over the period, grouped by `keys` (and the day). Totals read
        whole months from the month level and only the days around them day by day."""
        when = period or self.when
        rollup = merged()  # the folded rows and the deltas not folded in yet
        cols = [rollup.c[k] for k in keys]
        if day:
            cols.insert(0, rollup.c.day)
        spans = [rollup.c.rollup == name, rollup.c.day.between(when.start, when.end)]
        months = None if day else whole_months(when.start, when.end)
        if months is not None:
            first, last, after = months
            spans = [
                sa.or_(
                    sa.and_(rollup.c.rollup == name + MONTHLY, rollup.c.day.between(first, last)),
                    sa.and_(
                        rollup.c.rollup == name,
                        sa.or_(
                            rollup.c.day.between(when.start, first - timedelta(days=1)),
                            rollup.c.day.between(after, when.end),
                        ),
                    ),
                )
            ]
        where = list(spans)
        if when.program:
            where.append(rollup.c.program == when.program)
        stmt = sa.select(*cols, sa.func.sum(rollup.c.n)).where(*where).group_by(*cols)
        return [(*row[:-1], int(row[-1])) for row in self.conn.execute(stmt)]

    def place(self) -> list[tuple[str, str, str, str, int]]:
        """(programme, facility, district, state, vaccinations): one pass for the place tables."""
        if self._place is None:
            self._place = self._sum("place", "program", "k1", "k2", "k3")
        return self._place

    # -- the tables ------------------------------------------------------------------------
    def total(self) -> int:
        return sum(row[-1] for row in self.place())

    def daily(self) -> Table:
        counts = dict(self._sum("dose", day=True))
        return Table(
            "daily",
            "Vaccinations per day",
            ["day", "vaccinations"],
            [[d.isoformat(), counts.get(d, 0)] for d in self.when.each_day()],
        )

    def programmes(self) -> Table:
        rows = self._sum("dose", "program", "k1", "k2")
        rows.sort(key=lambda r: (r[0], r[1], int(r[2] or 0)))
        return Table(
            "programmes",
            "Vaccinations by programme, vaccine and dose",
            ["program", "vaccine", "dose", "vaccinations"],
            [[p, v, int(d) if d.isdigit() else d, n] for p, v, d, n in rows],
        )

    def facilities(self) -> Table:
        sums: dict[tuple[str, str, str], int] = defaultdict(int)
        for _, facility, district, state, n in self.place():
            sums[(facility, district, state)] += n
        rows: list[list[Any]] = sorted(
            ([*k, n] for k, n in sums.items()), key=lambda r: (-r[3], r[0])
        )
        return Table(
            "facilities",
            "Vaccinations by facility",
            ["facility", "district", "state", "vaccinations"],
            rows,
        )

    def districts(self) -> Table:
        sums: dict[tuple[str, str], int] = defaultdict(int)
        for _, _, district, state, n in self.place():
            sums[(state, district)] += n
        rows: list[list[Any]] = sorted(
            ([*k, n] for k, n in sums.items()), key=lambda r: (-r[2], r[0], r[1])
        )
        return Table(
            "districts", "Vaccinations by district", ["state", "district", "vaccinations"], rows
        )

    def states(self) -> Table:
        sums: dict[str, int] = defaultdict(int)
        for _, _, _, state, n in self.place():
            sums[state] += n
        rows: list[list[Any]] = sorted(
            ([k, n] for k, n in sums.items()), key=lambda r: (-r[1], r[0])
        )
        return Table("states", "Vaccinations by state", ["state", "vaccinations"], rows)

    def people(self) -> Table:
        sums = {(g, b): n for g, b, n in self._sum("people", "k1", "k2")}
        order = {b: i for i, b in enumerate(self.rt.config.band_labels())}
        rows = sorted(
            ([g, b, n] for (g, b), n in sums.items()), key=lambda r: (r[0], order.get(r[1], 99))
        )
        return Table(
            "people",
            "Vaccinations by gender and age band",
            ["gender", "age_band", "vaccinations"],
            rows,
        )

    def certificates(self) -> Table:
        by_day: dict[date, dict[str, int]] = defaultdict(dict)
        for day, kind, n in self._sum("cert", "k1", day=True):
            by_day[day][kind] = n
        rows = [
            [d.isoformat(), *(by_day.get(d, {}).get(k, 0) for k in CERT_KINDS)]
            for d in self.when.each_day()
        ]
        return Table("certificates", "Certificates per day", ["day", *CERT_KINDS], rows)

    def verifications(self) -> Table:
        every_programme = Period(self.when.start, self.when.end)  # not kept by programme
        rows = sorted(
            ([o, n] for o, n in self._sum("verify", "k1", period=every_programme)),
            key=lambda r: -r[1],
        )
        return Table("verifications", "Verifications by outcome", ["outcome", "count"], rows)

    def side_effects(self) -> Table:
        by_day: dict[date, list[int]] = defaultdict(lambda: [0, 0])
        for day, serious, n in self._sum("aefi", "k2", day=True):
            by_day[day][0] += n
            if serious == "yes":
                by_day[day][1] += n
        rows = [[d.isoformat(), *by_day.get(d, [0, 0])] for d in self.when.each_day()]
        return Table(
            "side_effects", "Side-effect reports per day", ["day", "reports", "serious"], rows
        )

    def appointments(self) -> Table:
        sums = dict(self._sum("appt", "k1"))
        return Table(
            "appointments",
            "Appointments by status",
            ["status", "count"],
            [[s, sums.get(s, 0)] for s in APPT_STATUSES],
        )

    def utilisation(self) -> Table:
        """Each facility-programme's vaccinations against its rate over the period and today."""
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for program, facility, _, _, n in self.place():
            totals[(facility, program)] += n
        today = Period(self.today, self.today, self.when.program)
        now = {(f, p): n for p, f, n in self._sum("place", "program", "k1", period=today)}
        rows = []
        for fp in self._activations():
            pair = (fp["facility"], fp["program"])
            rate = fp.get("rate") or 0
            done = totals.get(pair, 0)
            capacity = rate * self.when.days
            rows.append(
                [
                    fp["facility"],
                    fp["program"],
                    fp.get("status"),
                    rate,
                    done,
                    round(done / self.when.days, 1),
                    round(100 * done / capacity, 1) if capacity else None,
                    now.get(pair, 0),
                    round(100 * now.get(pair, 0) / rate, 1) if rate else None,
                ]
            )
        rows.sort(key=lambda r: (-(r[6] or 0), r[0], r[1]))
        return Table(
            "utilisation",
            "Facility utilisation against the daily rate",
            [
                "facility",
                "program",
                "status",
                "rate",
                "vaccinations",
                "per_day",
                "utilisation_pct",
                "today",
                "today_pct",
            ],
            rows,
        )

    def _activations(self) -> list[dict[str, Any]]:
        if not self.rt.has(FACILITY_PROGRAMME):
            return []
        service = self.rt.services[FACILITY_PROGRAMME]
        table = service.table
        stmt = sa.select(table).where(table.c._deleted_at.is_(None))
        if self.when.program:
            stmt = stmt.where(table.c.program == self.when.program)
        return [service.codec.to_record(r) for r in self.conn.execute(stmt).mappings()]

    def low_stock(self) -> Table:
        rows: list[list[Any]] = [
            [lv.facility, lv.vaccine, lv.usable, lv.threshold, lv.expired]
            for lv in stock.levels(self.rt, self.conn, self.today)
            if lv.low
        ]
        rows.sort(key=lambda r: (r[2] - r[3], r[0], r[1]))
        return Table(
            "low_stock",
            "Low stock (usable doses below the threshold)",
            ["facility", "vaccine", "usable", "threshold", "expired_unused"],
            rows,
        )

    def serious_reports(self) -> Table:
        if not self.rt.has(SIDE_EFFECT):
            return Table("serious", "Serious side effects", [])
        service = self.rt.services[SIDE_EFFECT]
        t = service.table
        stmt = (
            sa.select(t)
            .where(t.c.serious.is_(True), t.c._deleted_at.is_(None))
            .order_by(t.c._created_at.desc())
            .limit(50)
        )
        if self.when.program:
            stmt = stmt.where(t.c.program == self.when.program)
        rows = []
        for r in self.conn.execute(stmt).mappings():
            rec = service.codec.to_record(r)
            rows.append(
                [
                    rec["id"],
                    rec.get("onset"),
                    rec.get("facility"),
                    rec.get("program"),
                    ", ".join(rec.get("seriousness") or []),
                    ", ".join(rec.get("symptoms") or []),
                    rec.get("reviewStatus"),
                ]
            )
        return Table(
            "serious",
            "Serious side effects (latest 50)",
            ["report", "onset", "facility", "program", "seriousness", "symptoms", "review"],
            rows,
        )

    def table(self, name: str) -> Table:
        makers: dict[str, Callable[[], Table]] = {
            "daily": self.daily,
            "programmes": self.programmes,
            "facilities": self.facilities,
            "districts": self.districts,
            "states": self.states,
            "people": self.people,
            "certificates": self.certificates,
            "verifications": self.verifications,
            "side_effects": self.side_effects,
            "serious": self.serious_reports,
            "appointments": self.appointments,
            "utilisation": self.utilisation,
            "low_stock": self.low_stock,
        }
        maker = makers.get(name)
        if maker is None:
            raise NotFound(f"no aggregate {name!r}; known: {', '.join(sorted(makers))}")
        return maker()


TABLES = (
    "daily",
    "programmes",
    "facilities",
    "districts",
    "states",
    "people",
    "certificates",
    "verifications",
    "side_effects",
    "serious",
    "appointments",
    "utilisation",
    "low_stock",
)
