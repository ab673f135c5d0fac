"""Generic HTTP/JSON registry adapter: citizen lookup and master-data sync from any JSON API,
configured with URL templates, authentication, a field mapping and paging. No code.

    [plugins.http_registry]
    timeout = 5
    auth = { type = "oauth2", token_url = "https://id.example/token", client_id = "registry",
             client_secret_env = "ID_CLIENT_SECRET" }

    [plugins.http_registry.lookup]              # lookup_person
    url = "https://id.example/v1/people/{identity}"
    path = "person"                             # where the person is in the reply (optional)
    fields = { name = "fullName", dob = "birthDate",
               gender = { path = "sex", map = { M = "Male", F = "Female", X = "Other" } } }

    [plugins.http_registry.sources.facilities]  # `registry sync facilities`
    entity = "facility"
    key = "code"
    url = "https://mdm.example/api/facilities"
    items = "data"                              # where the list is in each page
    paging = { type = "page", param = "page", size_param = "size", size = 100, start = 1 }
    # or { type = "next", path = "links.next" } or { type = "offset", param = "offset",
    #    size_param = "limit", size = 100 }
    defaults = { category = "GOVT" }
    fields = { code = "facilityCode", name = "name", "address.district" = "district" }

A lookup answers the mapped person, None for a 404 (or an empty `path`), and raises
`LookupUnavailable` when the service cannot answer. A source may set its own `auth`/`timeout`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from open_registry.core import LookupUnavailable, StartupError
from open_registry.core.hookspecs import hookimpl
from open_registry.plugins.adapters.config import (
    dotted_defaults,
    int_setting,
    need,
    section,
    table_setting,
)
from open_registry.plugins.adapters.http import ConfigError, Http, Refused, Unavailable
from open_registry.plugins.adapters.mapping import FieldMapping, value_of
from open_registry.plugins.adapters.sync import SyncError, merge

NAME = "http_registry"
MAX_PAGES = 100_000
PAGING = ("page", "offset", "next", "none")


def _url(value: Any, where: str) -> str:
    text = str(value or "")
    if not text.startswith(("http://", "https://")):
        raise ConfigError(f"{where} must be an http(s) address, got {text!r}")
    return text


def _check_source(name: str, src: Mapping[str, Any]) -> None:
    where = f"plugins.{NAME}.sources.{name}"
    need(src, "entity", where)
    need(src, "key", where)
    _url(src.get("url"), f"{where}.url")
    FieldMapping(need(src, "fields", where))
    table_setting(src, "defaults", where)
    paging = table_setting(src, "paging", where)
    if paging.get("type", "none") not in PAGING:
        raise ConfigError(f"{where}.paging.type must be one of {', '.join(PAGING)}")
    if paging:
        int_setting(paging, "size", f"{where}.paging", 100)


def _config(settings: Any) -> dict[str, Any]:
    table = section(settings, NAME)
    if not table:
        return {}
    try:
        lookup = table_setting(table, "lookup", f"plugins.{NAME}")
        if lookup:
            _url(lookup.get("url"), f"plugins.{NAME}.lookup.url")
            if "{identity}" not in str(lookup["url"]):
                raise ConfigError(f"plugins.{NAME}.lookup.url needs an {{identity}} placeholder")
            FieldMapping(need(lookup, "fields", f"plugins.{NAME}.lookup"))
        for name, src in table_setting(table, "sources", f"plugins.{NAME}").items():
            if not isinstance(src, Mapping):
                raise ConfigError(f"plugins.{NAME}.sources.{name} must be a table")
            _check_source(name, src)
    except (ConfigError, ValueError) as exc:
        raise StartupError(str(exc)) from None
    return table


def _http(table: Mapping[str, Any], part: Mapping[str, Any], where: str) -> Http:
    merged = {k: v for k, v in table.items() if k in ("auth", "timeout", "headers", "verify_tls")}
    merged.update({k: v for k, v in part.items() if k in ("auth", "timeout", "headers")})
    return Http(merged, where)


@hookimpl
def lookup_person(identity: str, registry: Any) -> dict[str, Any] | None:
    table = _config(registry.settings)
    lookup = table.get("lookup") if table else None
    if not lookup:
        return None
    where = f"plugins.{NAME}.lookup"
    url = str(lookup["url"]).replace("{identity}", quote(identity, safe=""))
    http = _http(table, lookup, where)
    try:
        body = http.get_json(url)
    except (Unavailable, Refused) as exc:
        raise LookupUnavailable(f"the citizen registry cannot answer: {exc}") from None
    finally:
        http.close()
    if body is None:
        return None
    person = value_of(body, lookup["path"]) if lookup.get("path") else body
    if person in (None, {}, []):
        return None
    if not isinstance(person, dict):
        raise LookupUnavailable("the citizen registry's reply is not a person object")
    record, errors = FieldMapping(lookup["fields"]).apply(person)
    if errors:
        raise LookupUnavailable(
            "the citizen registry's reply cannot be mapped: "
            + "; ".join(f"{e['pointer']}: {e['message']}" for e in errors)
        )
    return record


def pages(http: Http, src: Mapping[str, Any]) -> Iterator[list[Any]]:
    """The item lists of a source, page by page (raises `Unavailable` on a broken page)."""
    url = str(src["url"])
    host = urlsplit(url).netloc
    paging = dict(src.get("paging") or {})
    kind = paging.get("type", "none")
    size = int(paging.get("size", 100))
    items_path = src.get("items")
    number = int(paging.get("start", 1 if kind == "page" else 0))
    next_url: str | None = url
    for n in range(MAX_PAGES):
        params: dict[str, Any] = {}
        if kind in ("page", "offset"):
            params[str(paging.get("param", kind))] = number
            params[str(paging.get("size_param", "size" if kind == "page" else "limit"))] = size
        if kind == "next":
            if next_url is None:
                return
            body = http.get_json(next_url, None)
        else:
            body = http.get_json(url, params)
        items = value_of(body, items_path) if items_path else body
        if not isinstance(items, list):
            raise Unavailable(f"page {n + 1} of {url} has no list at {items_path or 'the top'}")
        yield items
        if kind == "none" or not items:
            return
        if kind == "page":
            if len(items) < size:
                return
            number += 1
        elif kind == "offset":
            if len(items) < size:
                return
            number += len(items)
        else:
            found = value_of(body, str(paging.get("path", "next")))
            next_url = str(found) if found else None
            if next_url and urlsplit(next_url).netloc not in ("", host):
                raise Unavailable(f"the next page of {url} is on another server")
            if next_url and next_url.startswith("/"):
                next_url = f"{urlsplit(url).scheme}://{host}{next_url}"


@hookimpl
def register_sync_sources(registry: Any) -> list[str]:
    table = _config(registry.settings)
    return sorted((table.get("sources") or {}).keys()) if table else []


@hookimpl
def pull_master_data(source: str, registry: Any) -> dict[str, Any] | None:
    table = _config(registry.settings)
    src = (table.get("sources") or {}).get(source) if table else None
    if not src:
        return None
    where = f"plugins.{NAME}.sources.{source}"
    mapping = FieldMapping(src["fields"])
    defaults = dotted_defaults(table_setting(src, "defaults", where))
    http = _http(table, src, where)
    records: list[dict[str, Any]] = []
    try:
        for items in pages(http, src):
            for item in items:
                row = len(records) + 1
                if not isinstance(item, dict):
                    records.append({"_error": "an item that is not an object", "_source": row})
                    continue
                mapped, errors = mapping.apply(item)
                record = merge(defaults, mapped)
                if errors:
                    record["_error"] = "; ".join(f"{e['pointer']}: {e['message']}" for e in errors)
                records.append(record)
    except Unavailable as exc:
        raise SyncError(f"{source}: {exc}") from None
    finally:
        http.close()
    return {"entity": str(src["entity"]), "key": str(src["key"]), "records": records}


@hookimpl
def register_routes(registry: Any) -> list[Any]:
    _config(registry.settings)  # broken settings stop the server at start-up, not later
    return []
