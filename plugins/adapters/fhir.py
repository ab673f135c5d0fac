"""FHIR R4 adapter: facilities from `Organization` or `Location`, vaccinators from `Practitioner`
(with their `PractitionerRole`s), and vaccinations out as WHO DDCC:VS resources.

    [plugins.fhir]
    base_url = "https://fhir.example.org/fhir"
    auth = { type = "oauth2", token_url = "...", client_id = "...", client_secret_env = "..." }
    facility_resource = "Location"             # or Organization (the default)
    identifier_system = "urn:moh:facility-code" # which identifier is the facility code
    national_id_system = "urn:moh:nid"          # which Practitioner identifier is the national id
    defaults = { category = "GOVT", type = "Fixed location", "address.pincode" = "000000" }
    vaccinator_defaults = { nationalIdentifier = "unknown" }
    fields = { name = "alias.0" }               # our field = their path, over the defaults
    push = true                                 # send each new vaccination as a transaction
    country = "IND"                             # DDCC country of vaccination (ISO 3166-1 alpha-3)

Sources: `registry sync fhir-facilities`, `registry sync fhir-vaccinators` (search pages followed
through `Bundle.link[next]`, only on the configured server). Export: `GET
/api/v1/fhir/vaccinations/{id}` is the DDCC document Bundle; with `push`, a created vaccination is
sent as a transaction Bundle of PUTs by stable ids (a retry or a duplicate changes nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import orjson
import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import Response

from open_registry.core import (
    DeliveryError,
    NotFound,
    PermanentDeliveryError,
    StartupError,
    delivery_key,
    enqueue_delivery,
    principal_of,
    timed_sender,
)
from open_registry.core.hookspecs import hookimpl
from open_registry.plugins.adapters import fhir_map
from open_registry.plugins.adapters.config import (
    dotted_defaults,
    section,
    table_setting,
    url_setting,
)
from open_registry.plugins.adapters.http import (
    ConfigError,
    Http,
    Refused,
    Unavailable,
    config_seconds,
)
from open_registry.plugins.adapters.mapping import FieldMapping
from open_registry.plugins.adapters.sync import SyncError, merge

NAME = "fhir"
FACILITIES = "fhir-facilities"
VACCINATORS = "fhir-vaccinators"
SINK = "fhir"
MAX_PAGES = 100_000


def _config(settings: Any) -> dict[str, Any]:
    table = section(settings, NAME)
    if not table:
        return {}
    where = f"plugins.{NAME}"
    try:
        url_setting(table, "base_url", where)
        if table.get("facility_resource", "Organization") not in ("Organization", "Location"):
            raise ConfigError(f"{where}.facility_resource must be Organization or Location")
        for key in ("fields", "defaults", "vaccinator_defaults", "vaccinator_fields"):
            table_setting(table, key, where)
        for key in ("fields", "vaccinator_fields"):
            if table.get(key):
                FieldMapping(table[key])
    except (ConfigError, ValueError) as exc:
        raise StartupError(str(exc)) from None
    return table


def search(http: Http, base_url: str, resource: str, params: dict[str, Any]) -> Iterator[dict]:
    """Every resource entry of a search (`Bundle.entry[].resource`), following `next` links on
    the same server only."""
    host = urlsplit(base_url).netloc
    url: str | None = f"{base_url}/{resource}"
    query: dict[str, Any] | None = params
    pages = 0
    while url and pages < MAX_PAGES:
        body = http.get_json(url, query)
        pages += 1
        if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
            raise Unavailable(f"the {resource} search did not answer with a Bundle")
        for entry in body.get("entry") or []:
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
                yield entry["resource"]
        url = next(
            (
                link.get("url")
                for link in body.get("link") or []
                if isinstance(link, dict) and link.get("relation") == "next"
            ),
            None,
        )
        query = None
        if url and urlsplit(url).netloc != host:
            raise Unavailable(f"the {resource} search's next page is on another server")


def _error_text(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{e['pointer']}: {e['message']}" for e in errors)


def _facilities(http: Http, table: dict[str, Any]) -> list[dict[str, Any]]:
    where = f"plugins.{NAME}"
    base_url = url_setting(table, "base_url", where)
    kind = str(table.get("facility_resource", "Organization"))
    defaults = dotted_defaults(table_setting(table, "defaults", where))
    extra = FieldMapping(table["fields"]) if table.get("fields") else None
    records = []
    for resource in search(http, base_url, kind, {"_count": 100}):
        if resource.get("resourceType") != kind:
            continue
        record = fhir_map.facility_from(
            resource, identifier_system=table.get("identifier_system"), defaults=defaults
        )
        if extra is not None:
            mapped, errors = extra.apply(resource)
            record = merge(record, mapped)
            if errors:
                record["_error"] = _error_text(errors)
        record["_source"] = f"{kind}/{resource.get('id')}"
        records.append(record)
    return records


def _vaccinators(http: Http, table: dict[str, Any]) -> list[dict[str, Any]]:
    where = f"plugins.{NAME}"
    base_url = url_setting(table, "base_url", where)
    system = table.get("identifier_system")
    defaults = dotted_defaults(table_setting(table, "vaccinator_defaults", where))
    extra = FieldMapping(table["vaccinator_fields"]) if table.get("vaccinator_fields") else None
    practitioners: dict[str, dict[str, Any]] = {}
    places: dict[str, str] = {}  # "Organization/abc" -> facility code
    roles: list[dict[str, Any]] = []
    params = {
        "_count": 100,
        "_include": [
            "PractitionerRole:practitioner",
            "PractitionerRole:organization",
            "PractitionerRole:location",
        ],
    }
    for resource in search(http, base_url, "PractitionerRole", params):
        kind = resource.get("resourceType")
        ref = f"{kind}/{resource.get('id')}"
        if kind == "PractitionerRole":
            roles.append(resource)
        elif kind == "Practitioner":
            practitioners[ref] = resource
        elif kind in ("Organization", "Location"):
            places[ref] = fhir_map.identifier_value(resource, system) or str(resource.get("id"))
    codes: dict[str, list[str]] = {ref: [] for ref in practitioners}
    for role in roles:
        who = (role.get("practitioner") or {}).get("reference")
        if who not in codes or role.get("active") is False:
            continue
        for key in ("organization", "location"):
            targets = role.get(key)
            for target in targets if isinstance(targets, list) else [targets]:
                place = (target or {}).get("reference")
                if place in places:
                    codes[who].append(places[place])
    records = []
    for ref, resource in practitioners.items():
        record = fhir_map.vaccinator_from(
            resource,
            facility_codes=codes[ref],
            identifier_system=table.get("practitioner_identifier_system"),
            national_id_system=table.get("national_id_system"),
            defaults=defaults,
        )
        if extra is not None:
            mapped, errors = extra.apply(resource)
            record = merge(record, mapped)
            if errors:
                record["_error"] = _error_text(errors)
        record["_source"] = ref
        records.append(record)
    return records


@hookimpl
def register_sync_sources(registry: Any) -> list[str]:
    return [FACILITIES, VACCINATORS] if _config(registry.settings) else []


@hookimpl
def pull_master_data(source: str, registry: Any) -> dict[str, Any] | None:
    if source not in (FACILITIES, VACCINATORS):
        return None
    table = _config(registry.settings)
    if not table:
        return None
    http = Http(table, f"plugins.{NAME}")
    try:
        if source == FACILITIES:
            return {"entity": "facility", "key": "code", "records": _facilities(http, table)}
        return {"entity": "vaccinator", "key": "code", "records": _vaccinators(http, table)}
    except Unavailable as exc:
        raise SyncError(f"{source}: {exc}") from None
    finally:
        http.close()


# -- export ------------------------------------------------------------------------------------


def _find(registry: Any, entity: str, field: str, value: Any) -> dict[str, Any] | None:
    service = registry.services.get(entity)
    if service is None or value in (None, ""):
        return None
    if field == "id":
        try:
            return service.get(value)
        except NotFound:
            return None
    table = service.table
    with registry.db.engine.connect() as conn:
        row = (
            conn.execute(
                sa.select(table).where(table.c[field] == value, table.c._deleted_at.is_(None))
            )
            .mappings()
            .first()
        )
    return service.codec.to_record(row) if row else None


def export_bundle(
    registry: Any, vaccination_id: str, *, document: bool = True, viewer: Any = None
) -> dict[str, Any]:
    """The DDCC document Bundle (or the transaction Bundle) of one vaccination. With a
    `viewer` (the caller's principal) the recipient is what they may see of them: no private
    field they may not read (a route's answer); without, all of it (the adapter's delivery)."""
    table = section(registry.settings, NAME)
    vaccination = _find(registry, "vaccination", "id", vaccination_id)
    if vaccination is None:
        raise NotFound(f"no vaccination with id {vaccination_id!r}")
    recipient = _find(registry, "recipient", "id", vaccination.get("recipient"))
    facility = _find(registry, "facility", "code", vaccination.get("facility"))
    if recipient is None or facility is None:
        raise NotFound("the vaccination's recipient or facility record is gone")
    if viewer is not None:
        recipient = registry.records(viewer)["recipient"].view(recipient)
    vaccine = _find(registry, "vaccine", "code", vaccination.get("vaccine"))
    vaccinator = _find(registry, "vaccinator", "code", vaccination.get("vaccinator"))
    options: dict[str, Any] = {
        "country": table.get("country"),
        "disease": str(table.get("disease", fhir_map.DEFAULT_DISEASE)),
        "brand_system": table.get("brand_system"),
        "id_system": str(table.get("id_system", fhir_map.ID_SYSTEM)),
    }
    bundle = fhir_map.ddcc_bundle(
        vaccination,
        recipient=recipient,
        facility=facility,
        vaccine=vaccine,
        vaccinator=vaccinator,
        **options,
    )
    if document:
        return bundle
    kinds = ("Patient", "Organization", "Practitioner", "Immunization")
    resources = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] in kinds]
    return fhir_map.transaction_bundle(resources)


@hookimpl
def after_write_batch(events: list[dict[str, Any]], connection: Any, registry: Any) -> None:
    table = section(registry.settings, NAME)
    if not table or str(table.get("push", "false")).lower() not in ("true", "1", "yes"):
        return
    for event in events:
        if event["event"] == "vaccination.created":
            key = delivery_key(SINK, "vaccination", event)
            enqueue_delivery(connection, registry, SINK, key, event, {})


def send(delivery: dict[str, Any], registry: Any) -> str:
    """Send one vaccination to the FHIR server as a transaction of PUTs."""
    table = _config(registry.settings)
    if not table:
        raise PermanentDeliveryError("the fhir adapter is no longer configured")
    try:
        bundle = export_bundle(registry, delivery["record_id"], document=False)
    except NotFound as exc:
        raise PermanentDeliveryError(exc.detail) from None
    body = orjson.dumps(bundle)
    http = Http(table, f"plugins.{NAME}")
    try:
        response = http.send(
            "POST",
            url_setting(table, "base_url", f"plugins.{NAME}"),
            body,
            {"Content-Type": "application/fhir+json", "Idempotency-Key": delivery["key"]},
        )
    except Refused as exc:
        raise PermanentDeliveryError(str(exc)) from None
    except Unavailable as exc:
        raise DeliveryError(str(exc)) from None
    finally:
        http.close()
    return f"{response.status_code}"


def send_seconds(delivery: dict[str, Any], registry: Any) -> float:
    """The longest `send` may take (one request): the delivery's lease is tied to it."""
    return config_seconds(_config(registry.settings), f"plugins.{NAME}")


@hookimpl
def register_senders(registry: Any) -> dict[str, Any]:
    return {SINK: timed_sender(send, send_seconds)}


@hookimpl
def register_routes(registry: Any) -> list[Any]:
    _config(registry.settings)  # broken settings stop the server at start-up, not later
    if "vaccination" not in registry.services:
        return []
    from fastapi import APIRouter, Depends
    from fastapi.concurrency import run_in_threadpool

    from open_registry.core.auth import rules

    router = APIRouter(tags=["fhir"])

    @router.get(
        "/api/v1/fhir/vaccinations/{vaccination_id}",
        dependencies=[Depends(rules.entity("vaccination", "read", record="vaccination_id"))],
        summary="A vaccination as a WHO DDCC:VS FHIR document Bundle",
        description="Personal data: for the roles that may read the vaccination, within their "
        "scope (others: 404).",
        response_class=Response,
        responses={200: {"content": {"application/fhir+json": {}}}},
    )
    async def ddcc(request: Request, vaccination_id: str) -> Response:
        # through the caller's gate: outside their scope the vaccination is not found
        vaccinations = registry.records(principal_of(request))["vaccination"]
        await run_in_threadpool(vaccinations.get, vaccination_id)
        bundle = await run_in_threadpool(
            partial(export_bundle, registry, vaccination_id, viewer=principal_of(request))
        )
        return Response(orjson.dumps(bundle), media_type="application/fhir+json")

    return [router]
