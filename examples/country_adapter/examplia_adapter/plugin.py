"""Examplia's adapter: recipients are looked up in the (fictional) Examplia National ID Service
before enrolment, and facilities come from the Examplia Health Facility Registry.

Settings (`registry.toml`):

    [plugins.examplia]
    id_service_url = "https://nid.examplia.example/api"
    id_service_key_env = "EXAMPLIA_NID_KEY"        # the API key, from the environment
    facility_registry_url = "https://hfr.examplia.example/v2"
    timeout = 5

The National ID Service answers `GET /citizens/{nid}` with
`{"nid", "names": {"given", "family"}, "dateOfBirth", "sex": "M"|"F"|"X", "mobile"}` or 404.
The facility registry answers `GET /facilities?cursor=...` with
`{"facilities": [{"hfrCode", "officialName", "ownership", "district", "province", "street",
"postcode", "operational"}], "nextCursor": "..." | null}`.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import httpx

from open_registry.core import LookupUnavailable, StartupError
from open_registry.core.hookspecs import hookimpl

NAME = "examplia"
SOURCE = "examplia-facilities"
SEX = {"M": "Male", "F": "Female", "X": "Other"}
OWNERSHIP = {"public": "GOVT", "private": "PRIVATE", "faith-based": "PRIVATE"}


def _settings(registry: Any) -> dict[str, Any]:
    table = dict((registry.settings.plugins or {}).get(NAME) or {})
    for key in ("id_service_url", "facility_registry_url"):
        value = str(table.get(key, ""))
        if value and not value.startswith(("http://", "https://")):
            raise StartupError(f"plugins.{NAME}.{key} must be an http(s) address")
    return table


def _client(table: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(timeout=float(table.get("timeout", 5)), headers=headers or {})


@hookimpl
def lookup_person(identity: str, registry: Any) -> dict[str, Any] | None:
    """A citizen by national id: their record, None if unknown, LookupUnavailable if the service
    cannot answer."""
    table = _settings(registry)
    if not table.get("id_service_url") or not identity.startswith("EX-"):
        return None  # not an Examplian national id: another plugin may know it
    key = os.environ.get(str(table.get("id_service_key_env", "EXAMPLIA_NID_KEY")), "")
    url = f"{str(table['id_service_url']).rstrip('/')}/citizens/{quote(identity, safe='')}"
    try:
        with _client(table, {"X-Examplia-Key": key}) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        raise LookupUnavailable(f"the national ID service cannot be reached ({exc})") from None
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise LookupUnavailable(f"the national ID service answered {response.status_code}")
    try:
        citizen = response.json()
        names = citizen["names"]
        person = {
            "identity": citizen["nid"],
            "name": f"{names['given']} {names['family']}".strip(),
            "dob": citizen["dateOfBirth"],
            "gender": SEX[citizen["sex"]],
        }
    except (ValueError, KeyError, TypeError):
        raise LookupUnavailable("the national ID service's answer is not a citizen") from None
    if citizen.get("mobile"):
        person["phone"] = citizen["mobile"]
    return person


def _facility(item: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "_source": f"hfr {item.get('hfrCode')}",
        "code": item.get("hfrCode"),
        "name": item.get("officialName"),
        "category": OWNERSHIP.get(str(item.get("ownership")), "GOVT"),
        "type": "Fixed location",
        "status": "Active" if item.get("operational", True) else "Inactive",
        "address": {
            "addressLine1": item.get("street") or "-",
            "district": item.get("district"),
            "state": item.get("province"),
            "pincode": item.get("postcode"),
            "country": "Examplia",
        },
    }
    record["address"] = {k: v for k, v in record["address"].items() if v is not None}
    return {k: v for k, v in record.items() if v is not None}


@hookimpl
def register_sync_sources(registry: Any) -> list[str]:
    return [SOURCE] if _settings(registry).get("facility_registry_url") else []


@hookimpl
def pull_master_data(source: str, registry: Any) -> dict[str, Any] | None:
    """Every facility of the health facility registry, cursor page by cursor page."""
    table = _settings(registry)
    if source != SOURCE or not table.get("facility_registry_url"):
        return None
    url = f"{str(table['facility_registry_url']).rstrip('/')}/facilities"
    records: list[dict[str, Any]] = []
    cursor: str | None = None
    with _client(table) as client:
        for _ in range(10_000):
            try:
                response = client.get(url, params={"cursor": cursor} if cursor else None)
                response.raise_for_status()
                page = response.json()
                items = page["facilities"]
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                raise RuntimeError(f"the facility registry cannot be read: {exc}") from None
            records.extend(_facility(i) for i in items if isinstance(i, dict))
            cursor = page.get("nextCursor")
            if not cursor:
                break
    return {"entity": "facility", "key": "code", "records": records}
