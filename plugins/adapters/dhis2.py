"""DHIS2 adapter: organisation units as facilities, so a country running DHIS2 keeps one list.

    [plugins.dhis2]
    base_url = "https://dhis2.example.org"        # the instance (without /api)
    auth = { type = "apitoken", token_env = "DHIS2_TOKEN" }   # or basic
    level = 4                                      # only org units of this level (optional)
    page_size = 100
    defaults = { category = "GOVT", type = "Fixed location", "address.pincode" = "000000" }
    fields = { name = "shortName" }                # our field = their path, over the defaults

`registry sync dhis2` reads `GET /api/organisationUnits?paging=true&page=N&pageSize=...` page by
page (`pager.pageCount`) and upserts facilities by `code` (the org unit's code, else its uid).
Default mapping: name, `address` -> addressLine1, parent -> district, grandparent -> state,
phoneNumber, email, a Point geometry -> geoLocation, a closedDate -> Inactive.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from open_registry.core import StartupError
from open_registry.core.hookspecs import hookimpl
from open_registry.plugins.adapters.config import (
    dotted_defaults,
    int_setting,
    section,
    table_setting,
    url_setting,
)
from open_registry.plugins.adapters.http import ConfigError, Http, Unavailable
from open_registry.plugins.adapters.mapping import FieldMapping
from open_registry.plugins.adapters.sync import SyncError, merge

NAME = "dhis2"
FIELDS = (
    "id,code,name,shortName,level,address,phoneNumber,email,openingDate,closedDate,"
    "geometry,parent[id,name,parent[id,name]]"
)
MAX_PAGES = 100_000
DEFAULT_RULES: dict[str, Any] = {
    "code": "_code",
    "name": "name",
    "address.addressLine1": "address",
    "address.district": "parent.name",
    "address.state": "parent.parent.name",
    "contact": "phoneNumber",
    "email": "email",
    "geoLocation.lat": {"path": "_lat", "type": "number"},
    "geoLocation.lon": {"path": "_lon", "type": "number"},
    "status": "_status",
}


def _config(settings: Any) -> dict[str, Any]:
    where = f"plugins.{NAME}"
    table = section(settings, NAME)
    if not table:
        return {}
    try:
        url_setting(table, "base_url", where)
        int_setting(table, "page_size", where, 100)
        rules = {**DEFAULT_RULES, **table_setting(table, "fields", where)}
        FieldMapping(rules)
        table_setting(table, "defaults", where)
    except (ConfigError, ValueError) as exc:
        raise StartupError(str(exc)) from None
    return table


def _flatten(unit: dict[str, Any]) -> dict[str, Any]:
    """The org unit plus derived values the default mapping reads (`_code`, `_lat`, ...)."""
    out = dict(unit)
    out["_code"] = unit.get("code") or unit.get("id")
    geometry = unit.get("geometry") or {}
    coords = geometry.get("coordinates")
    if geometry.get("type") == "Point" and isinstance(coords, list) and len(coords) == 2:
        out["_lon"], out["_lat"] = coords
    out["_status"] = "Inactive" if unit.get("closedDate") else "Active"
    return out


def org_units(http: Http, base_url: str, table: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every organisation unit, page by page (raises `Unavailable` on a broken page)."""
    size = int_setting(table, "page_size", f"plugins.{NAME}", 100)
    params: dict[str, Any] = {"paging": "true", "pageSize": size, "fields": FIELDS}
    if table.get("level"):
        params["filter"] = f"level:eq:{int(table['level'])}"
    page = 1
    while page <= MAX_PAGES:
        body = http.get_json(f"{base_url}/api/organisationUnits", {**params, "page": page})
        if not isinstance(body, dict) or not isinstance(body.get("organisationUnits"), list):
            raise Unavailable(f"page {page} of organisationUnits has no organisationUnits list")
        yield from body["organisationUnits"]
        pager = body.get("pager") or {}
        try:
            count = int(pager.get("pageCount", page))
        except (TypeError, ValueError):
            raise Unavailable(f"page {page} of organisationUnits has a broken pager") from None
        if page >= count:
            return
        page += 1


@hookimpl
def register_sync_sources(registry: Any) -> list[str]:
    return [NAME] if _config(registry.settings) else []


@hookimpl
def pull_master_data(source: str, registry: Any) -> dict[str, Any] | None:
    if source != NAME:
        return None
    table = _config(registry.settings)
    if not table:
        return None
    where = f"plugins.{NAME}"
    base_url = url_setting(table, "base_url", where)
    mapping = FieldMapping({**DEFAULT_RULES, **table_setting(table, "fields", where)})
    defaults = dotted_defaults(table_setting(table, "defaults", where))
    http = Http(table, where)
    records = []
    try:
        for unit in org_units(http, base_url, table):
            if not isinstance(unit, dict):
                records.append({"_error": "an organisation unit that is not an object"})
                continue
            mapped, errors = mapping.apply(_flatten(unit))
            record = merge(defaults, mapped)
            record["_source"] = f"organisationUnit {unit.get('id')}"
            if errors:
                record["_error"] = "; ".join(f"{e['pointer']}: {e['message']}" for e in errors)
            records.append(record)
    except Unavailable as exc:
        raise SyncError(f"{NAME}: {exc}") from None
    finally:
        http.close()
    return {"entity": "facility", "key": "code", "records": records}


@hookimpl
def register_routes(registry: Any) -> list[Any]:
    _config(registry.settings)  # broken settings stop the server at start-up, not later
    return []
