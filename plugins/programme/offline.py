"""Offline data entry on `/ui/vaccinate`: the staff pages as an installable web app.

- `GET /ui/sw.js`: the service worker (scope `/ui/`, `Service-Worker-Allowed: /ui/`). It keeps
  the app shell in Cache Storage (the vaccinate page, the UI's CSS and scripts, the offline
  scripts) and answers from it when the registry does not; it never caches API answers or the
  day's data (`static/offline/sw.js`).
- `GET /ui/offline/manifest.webmanifest`, `GET /ui/offline/{name}`: the web app manifest, its
  icon and the page's offline scripts, from the package (no CDN).
- `GET /ui/offline/data`: the day's data for the signed-in staff member's own facility, as JSON:
  the facility, its usable stock batches, the vaccines and active programmes, its vaccinators,
  today's appointments, the recipients the day may need (appointments today and people
  vaccinated there in the last `offline_recent_days` days: id, name, birth year, gender,
  enrolment code and their doses' programme and number, never private fields) and the JSON
  Schemas of recipient and vaccination (validation keywords only) the browser validates with.
  Facility roles only (`access.STAFF`; a user without a facility gets 403), bounded by the
  `offline_*` settings (`config.py`).

The page (`static/offline/app.js`) keeps the data and the queue of entries made offline in
IndexedDB and sends them through the JSON API with their `Idempotency-Key` (see docs/ui.md,
"Offline data entry").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from open_registry.core import Forbidden, NotFound, storage, utcnow
from open_registry.core.api import GuardedRoute
from open_registry.core.auth import rules
from open_registry.core.auth.deps import principal_of
from open_registry.plugins.programme import access
from open_registry.plugins.programme.runtime import (
    APPOINTMENT,
    RECIPIENT,
    VACCINATION,
    VACCINE,
    runtime,
)

STATIC = Path(__file__).parent / "static" / "offline"
#: the files `GET /ui/offline/{name}` serves, and their media types
FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "validate.js": "text/javascript; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
#: keywords the browser's validator reads; everything else (titles, translations, examples,
#: x-registry) stays on the server
KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "uniqueItems",
        "enum",
        "const",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "minItems",
        "maxItems",
        "format",
    }
)
#: the offline form's own texts: `offline.<key>` in the registry's catalogs
#: (`registry/locales/*.json`), given to the page in the visitor's language (`offline_texts`)
TEXT_KEYS = (
    "status",
    "queue_title",
    "sync_now",
    "clear_saved",
    "no_data",
    "record_at",
    "find",
    "enrol",
    "enrolled_offline",
    "nobody",
    "new_person",
    "name",
    "dob",
    "gender",
    "identity",
    "phone",
    "female",
    "male",
    "other",
    "save",
    "saved_here",
    "badge",
    "enrol_entry",
    "dose_entry",
    "dose_of_entry",
    "saved",
    "refused",
    "waiting",
    "waits_person",
    "certificate",
    "resend",
    "discard",
    "discard_confirm",
    "session_ended",
    "sign_in",
    "dropped",
    "busy",
    "no_answer",
    "sending",
    "done",
    "done_refused",
    "sign_out_confirm",
    "unavailable",
)
#: a recipient's fields the day's data carries (never private ones)
PERSON_FIELDS = ("name", "gender", "enrollmentCode")


def validation_schema(schema: Any) -> Any:
    """`schema` with only the validation keywords (`KEYWORDS`) kept, at every level."""
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                out[key] = {name: validation_schema(sub) for name, sub in value.items()}
            elif key in KEYWORDS:
                out[key] = validation_schema(value) if isinstance(value, dict | list) else value
        return out
    if isinstance(schema, list):
        return [validation_schema(v) for v in schema]
    return schema


class DayData:
    """The day's data of one facility, read for one staff member (`build`)."""

    def __init__(self, registry: Any, records: Any):
        from open_registry.plugins.programme.vaccinate_page import Vaccinate

        self.registry = registry
        self.rt = runtime(registry)
        self.records = records
        self.desk = Vaccinate(registry, records)
        self.config = self.rt.config

    def build(self, facility: str) -> dict[str, Any]:
        """Everything the offline page needs for today at `facility` (see the module)."""
        now = utcnow()
        today = self.config.local_day(now)
        batches = self.desk.batches(facility, today)
        named = self._search("facility", [("code", facility), ("limit", "1")])
        programs = [
            {"code": p["code"], "name": p.get("name", p["code"]), "vaccineIds": p.get("vaccineIds")}
            for p in self._search(
                "program", [("status", "Active"), ("sort", "name"), ("limit", "100")]
            )
        ]
        vaccines = [
            {"code": v["code"], "name": v.get("name", v["code"]), "total": _total(v)}
            for v in self._search(VACCINE, [("sort", "name"), ("limit", "100")])
        ]
        vaccinators = [
            {"code": v["code"], "name": v.get("name", v["code"])}
            for v in (
                self._search(
                    "vaccinator", [("facilityIds", facility), ("sort", "name"), ("limit", "100")]
                )
                if self.records["vaccinator"].can("read")
                else []
            )
        ]
        appointments, people = self._people(facility, today)
        return {
            "version": 1,
            "user": self.records.principal.subject,
            "facility": {
                "code": facility,
                "name": named[0].get("name", facility) if named else facility,
            },
            "savedAt": now.isoformat().replace("+00:00", "Z"),
            "day": today.isoformat(),
            # the browser writes and shows dates in the programme's time zone, not its own
            "timezone": self.config.timezone,
            "utcOffset": _offset_minutes(now.astimezone(self.config.tz)),
            "maxAgeHours": self.config.offline_max_age_hours,
            "batches": batches,
            "programs": programs,
            "vaccines": vaccines,
            "vaccinators": vaccinators,
            "appointments": appointments,
            "recipients": people,
            "schemas": {
                name: validation_schema(self.registry.services[name].entity.json_schema)
                for name in (RECIPIENT, VACCINATION)
            },
        }

    def _search(self, entity: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        if entity not in self.registry.services or not self.records[entity].can("read"):
            return []
        g = self.records[entity]
        return list(g.search(g.service.parser.from_params(params)).items)

    def _people(
        self, facility: str, today: Any
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Today's appointments at `facility` and the recipients the day may need, bounded."""
        if not self.records[RECIPIENT].can("read"):
            return [], []
        self.records[RECIPIENT].scope("read")  # refused for callers who may not read people
        cfg = self.config
        appointments: list[dict[str, Any]] = []
        ids: list[str] = []
        with storage.read(self.registry.db.engine) as conn:
            if self.rt.has(APPOINTMENT) and self.records[APPOINTMENT].can("read"):
                t = self.rt.services[APPOINTMENT].table
                stmt = (
                    sa.select(t.c.recipient, t.c.program, t.c.dose, t.c.slot, t.c.status)
                    .where(t.c.facility == facility, t.c.date == today, t.c._deleted_at.is_(None))
                    .order_by(t.c.slot, t.c.id)
                    .limit(cfg.offline_max_appointments)
                )
                for row in conn.execute(stmt).mappings():
                    appointments.append(dict(row))
                    ids.append(row["recipient"])
            v = self.rt.services[VACCINATION].table
            since = utcnow() - timedelta(days=cfg.offline_recent_days)
            recent = (
                sa.select(v.c.recipient)
                .where(v.c.facility == facility, v.c.date >= since, v.c._deleted_at.is_(None))
                .order_by(v.c.date.desc())
                .limit(cfg.offline_max_recipients * 2)
            )
            ids.extend(r[0] for r in conn.execute(recent))
            wanted = list(dict.fromkeys(i for i in ids if i))[: cfg.offline_max_recipients]
            found = {r["id"]: r for r in self.rt.fetch_all(conn, RECIPIENT, "id", wanted)}
            doses: dict[str, list[dict[str, Any]]] = {}
            for d in self.rt.fetch_all(conn, VACCINATION, "recipient", list(found)):
                doses.setdefault(d["recipient"], []).append(
                    {"program": d.get("program"), "dose": d.get("dose")}
                )
        people = []
        for rid in wanted:
            rec = found.get(rid)
            if rec is None:
                continue
            born = rec.get("dob") or rec.get("yob")
            person: dict[str, Any] = {"id": rid, "born": str(born)[:4] if born else None}
            person.update({k: rec.get(k) for k in PERSON_FIELDS if rec.get(k) is not None})
            person["doses"] = doses.get(rid, [])
            people.append(person)
        return appointments, people


def _offset_minutes(local: datetime) -> int:
    """Minutes east of UTC of an aware local time."""
    offset = local.utcoffset()
    return int(offset.total_seconds() // 60) if offset is not None else 0


def _total(vaccine: dict[str, Any]) -> int:
    intervals = vaccine.get("doseIntervals")
    return len(intervals) + 1 if isinstance(intervals, list) else 1


def offline_texts(t: Callable[..., str]) -> dict[str, str]:
    """The offline form's texts in the page's language (`t`, the page's translator), with
    their `{placeholders}` left for the browser to fill in; `batch` is the batch choice."""
    texts = {key: t(f"offline.{key}") for key in TEXT_KEYS}
    texts["batch"] = t("vaccinate.batch_option")
    return texts


def manifest(prefix: str, name: str) -> dict[str, Any]:
    """The staff app's web app manifest (names and an icon only)."""
    return {
        "name": name,
        "short_name": "Vaccinate",
        "id": f"{prefix}/vaccinate",
        "start_url": f"{prefix}/vaccinate",
        "scope": f"{prefix}/",
        "display": "standalone",
        "background_color": "#ffffff",
        "theme_color": "#1d4f91",
        "icons": [{"src": f"{prefix}/offline/icon.svg", "sizes": "any", "type": "image/svg+xml"}],
    }


def offline_routes(registry: Any, prefix: str, site_title: str) -> APIRouter:
    """The routes of the module docstring, under the UI's `prefix` (moved into the app's own
    router: its route class)."""
    router = APIRouter(route_class=GuardedRoute)

    @router.get(
        f"{prefix}/offline/data",
        name="ui:offline_data",
        include_in_schema=False,
        dependencies=[Depends(access.STAFF)],
    )
    async def offline_data(request: Request) -> Response:
        """The day's data of the caller's own facility (facility roles, own facility only)."""
        principal = principal_of(request)
        if not principal.facility:
            raise Forbidden("the offline data is for staff of a facility")
        records = registry.records(principal)
        body = await run_in_threadpool(DayData(registry, records).build, principal.facility)
        return JSONResponse(
            body, headers={"Cache-Control": "no-store", "Vary": "Cookie, Authorization"}
        )

    @router.get(
        f"{prefix}/offline/manifest.webmanifest",
        name="ui:offline_manifest",
        include_in_schema=False,
        dependencies=[Depends(rules.public("the staff app's manifest: names and an icon"))],
    )
    async def offline_manifest() -> Response:
        body = json.dumps(manifest(prefix, f"{site_title} · Vaccinate"))
        return Response(body, media_type="application/manifest+json")

    @router.get(
        f"{prefix}/sw.js",
        name="ui:offline_worker",
        include_in_schema=False,
        dependencies=[Depends(rules.public("the staff pages' service worker: code only"))],
    )
    async def service_worker() -> Response:
        head = f"const PREFIX = {json.dumps(prefix)};\nconst VERSION = {json.dumps(_version())};\n"
        body = head + (STATIC / "sw.js").read_text(encoding="utf-8")
        headers = {"Service-Worker-Allowed": f"{prefix}/", "Cache-Control": "no-cache"}
        return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)

    @router.get(
        f"{prefix}/offline/{{name}}",
        name="ui:offline_file",
        include_in_schema=False,
        dependencies=[Depends(rules.public("the offline page's scripts and icon"))],
    )
    async def offline_file(name: str) -> Response:
        media = FILES.get(name)
        if media is None:
            raise NotFound(f"the offline app has no file {name[:80]!r}")
        return Response(
            (STATIC / name).read_bytes(), media_type=media, headers={"Cache-Control": "no-cache"}
        )

    return router


def _version() -> str:
    """Changes whenever one of the app's own files does (the worker then refreshes its cache)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted([*FILES, "sw.js"]):
        digest.update((STATIC / name).read_bytes())
    return digest.hexdigest()[:12]


def add_offline_routes(app: FastAPI, registry: Any, prefix: str, site_title: str) -> None:
    """Mount the offline routes ahead of `/ui/{entity}`."""
    from open_registry.plugins.programme.dashboard import _move_first

    ui = getattr(app.state, "ui", None)
    if ui is not None:  # the vaccinate page hands its texts to app.js (data-texts)
        ui.env.globals["offline_texts"] = offline_texts
    for route in offline_routes(registry, prefix, site_title).routes:
        app.router.routes.append(route)
    _move_first(
        app, {"ui:offline_data", "ui:offline_manifest", "ui:offline_worker", "ui:offline_file"}
    )


def offline_person(person: dict[str, Any], values: dict[str, Any]) -> str:
    """The chosen person as the page keeps them for offline use (JSON: no private fields),
    with the dose the form proposes (`next`: programme and number)."""
    born = person.get("dob") or person.get("yob")
    keep = {
        "id": person["id"],
        "born": str(born)[:4] if born else None,
        **{k: person[k] for k in PERSON_FIELDS if person.get(k) is not None},
    }
    dose = str(values.get("dose") or "")
    if values.get("program") and dose.isdigit():
        keep["next"] = {"program": values["program"], "dose": int(dose)}
    return json.dumps(keep)
