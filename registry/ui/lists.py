"""What the list and detail pages show: columns, filters, sort and paging over one entity, and a
record's values with labels (references become links to the record they name).

Records are read through the visitor's `Gate` (`registry.gate`) only: the list shows the rows
they may read as they may see them, refuses filters on private fields they may not search by
(403, naming the field, as the API does), and a reference is labelled only with what they may
read of the record it names."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from open_registry.core.errors import BadRequest, Forbidden, RegistryError
from open_registry.core.gate import Gate
from open_registry.core.i18n import Translator
from open_registry.generators.forms import FormField, entity_description, entity_title, form_fields

#: query parameters of the list page that are not search filters
PAGE_PARAMS = frozenset({"lang", "notice"})
MAX_COLUMNS = 6


class ListPage:
    """The list page of one entity for one request (`gate`: the entity as the visitor may read
    it)."""

    def __init__(
        self,
        gate: Gate,
        t: Translator,
        locale: str,
        prefix: str,
        fields: Sequence[FormField] | None = None,
    ):
        self.gate = gate
        self.entity = gate.entity
        self.t = t
        self.locale = locale
        self.prefix = prefix
        fields = fields or form_fields(self.entity, locale=locale)
        self.by_name = {f.key: f for f in fields}

    def columns(self) -> list[str]:
        e = self.entity
        hidden = set(e.private) | set(e.internal)
        names = [n for n, f in e.fields.items() if f.is_scalar and n not in hidden]
        if e.display in names:
            names.remove(e.display)
            names.insert(0, e.display)
        return names[:MAX_COLUMNS]

    def filter_fields(self) -> list[str]:
        e = self.entity
        hidden = set(e.private) | set(e.internal)
        indexed = {n for group in e.indexes for n in group}
        return [
            n
            for n, f in e.fields.items()
            if f.is_scalar and n not in hidden and (n in indexed or f.enum)
        ]

    def label(self, name: str) -> str:
        f = self.by_name.get(name)
        return f.label if f else name

    def filters(self, current: Mapping[str, str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name in self.filter_fields():
            f = self.entity.fields[name]
            label = self.label(name)
            ff = self.by_name.get(name)
            if f.enum:
                out.append(self._filter(name, label, current, options=ff.options if ff else ()))
            elif f.kind == "boolean":
                yes_no = (_Opt("true", self.t("detail.yes")), _Opt("false", self.t("detail.no")))
                out.append(self._filter(name, label, current, options=yes_no))
            elif f.kind == "string":
                param = f"{name}[icontains]"  # as people expect: any case
                out.append(self._filter(param, self.t("list.contains", field=label), current))
            elif f.kind in ("integer", "number"):
                out.append(self._filter(name, label, current, input_type="number"))
            else:  # date, datetime
                for op, key in (("gte", "list.from"), ("lte", "list.to")):
                    param = f"{name}[{op}]"
                    out.append(
                        self._filter(param, self.t(key, field=label), current, input_type="date")
                    )
        return out

    @staticmethod
    def _filter(
        param: str,
        label: str,
        current: Mapping[str, str],
        *,
        options: Sequence[Any] = (),
        input_type: str = "text",
    ) -> dict[str, Any]:
        return {
            "param": param,
            "label": label,
            "options": options,
            "input_type": input_type,
            "value": current.get(param, ""),
        }

    def url(self, params: Sequence[tuple[str, str]]) -> str:
        query = urlencode(list(params))
        return f"{self.prefix}/{self.entity.name}" + (f"?{query}" if query else "")

    def context(self, raw: Sequence[tuple[str, str]]) -> tuple[dict[str, Any], int]:
        """The template context for the query parameters `raw`, and the HTTP status."""
        params = [(k, v) for k, v in raw if k not in PAGE_PARAMS and v != ""]
        current = dict(params)
        errors: list[str] = []
        status = 200
        items: list[dict[str, Any]] = []
        next_cursor = None
        total = None
        try:
            search = self.gate.service.parser.from_params([*params, ("count", "true")])
            page = self.gate.search(search)
            items, next_cursor, total = page.items, page.next_cursor, page.total
        except BadRequest as exc:
            errors = [e["message"] for e in exc.errors or []] or [exc.detail]
            status = 400
        except Forbidden as exc:  # a filter on a private field the visitor may not search by
            errors = [exc.detail]
            status = 403
        sort = current.get("sort", "")
        keep = [(k, v) for k, v in params if k != "cursor"]
        columns = []
        for name in self.columns():
            f = self.entity.fields[name]
            sortable = name not in self.entity.private
            sorted_ = "ascending" if sort == name else "descending" if sort == f"-{name}" else None
            new_sort = f"-{name}" if sort == name else name
            columns.append(
                {
                    "label": self.label(name),
                    "sorted": sorted_,
                    "sort_url": self.url(
                        [*[(k, v) for k, v in keep if k != "sort"], ("sort", new_sort)]
                    )
                    if sortable and f.is_scalar
                    else None,
                }
            )
        sort_options = [("", self.t("list.sort_default"))]
        for name in self.columns():
            label = self.label(name)
            sort_options.append((name, self.t("list.asc", field=label)))
            sort_options.append((f"-{name}", self.t("list.desc", field=label)))
        rows = [
            {"id": r["id"], "cells": [self.cell(n, r.get(n)) for n in self.columns()]}
            for r in items
        ]
        return (
            {
                "entity": self.entity.name,
                "title": entity_title(self.entity, self.locale),
                "description": entity_description(self.entity, self.locale),
                "filters": self.filters(current),
                "sort": sort,
                "sort_options": sort_options,
                "columns": columns,
                "rows": rows,
                "total": total,
                "errors": errors,
                "next_url": self.url([*keep, ("cursor", next_cursor)]) if next_cursor else None,
                "first_url": self.url(keep) if "cursor" in current else None,
            },
            status,
        )

    def cell(self, name: str, value: Any) -> str:
        f = self.by_name.get(name)
        return display_value(f, value, self.t) if f else ("" if value is None else str(value))


class _Opt:
    def __init__(self, value: str, label: str):
        self.value = value
        self.label = label


def display_value(f: FormField, value: Any, t: Translator) -> str:
    """A scalar value as a person reads it (enum labels, yes/no)."""
    if value is None:
        return ""
    if value is True or value is False:
        return t("detail.yes") if value else t("detail.no")
    for o in f.options:
        if o.value == value:
            return o.label
    return str(value)


def referenced(gate: Gate, field: str, value: Any) -> dict[str, Any] | None:
    """The record of `gate`'s entity whose `field` is `value`, as the visitor may see it; None
    when there is none or they may not read it (then a page shows the value alone)."""
    if field == "id":
        return gate.find(str(value))
    if not gate.can("read"):
        return None
    try:  # a private `field` the visitor may not search by is refused like any filter
        search = gate.service.parser.from_params([(field, str(value)), ("limit", "1")])
        found = gate.search(search)
    except RegistryError:
        return None
    return found.items[0] if found.items else None


def detail_items(
    fields: Sequence[FormField],
    record: Mapping[str, Any],
    records: Mapping[str, Gate],
    t: Translator,
    prefix: str,
) -> list[dict[str, Any]]:
    """Label/value items of a record for the detail page, nested like the form. `records`: every
    entity's gate for the visitor (`Registry.records(principal)`): a reference is labelled and
    linked only when they may read the record it names, else shown as its value alone."""

    def link(f: FormField, value: Any) -> dict[str, Any]:
        assert f.reference is not None
        entity, field = f.reference
        try:
            target = records[entity]
        except (KeyError, RegistryError):  # an entity no longer served
            return {"text": str(value)}
        rec = referenced(target, field, value)
        if rec is None:
            return {"text": str(value)}
        display = target.entity.display
        shown = rec.get(display) if display else None
        text = f"{shown} ({value})" if shown and str(shown) != str(value) else str(value)
        return {"text": text, "href": f"{prefix}/{entity}/{rec['id']}"}

    def item(f: FormField, value: Any) -> dict[str, Any]:
        return {
            "text": "",
            "href": None,
            "children": None,
            "rows": None,
            "pre": False,
            **shape(f, value),
        }

    def shape(f: FormField, value: Any) -> dict[str, Any]:
        if f.widget == "fieldset" and isinstance(value, dict):
            return {
                "children": [
                    item_for(c, value.get(c.key))
                    for c in f.children
                    if value.get(c.key) is not None
                ]
            }
        if f.widget == "array" and f.item is not None and isinstance(value, list):
            return {"rows": [item(f.item, v) for v in value]}
        if f.widget == "checkboxes" and isinstance(value, list):
            return {"text": ", ".join(display_value(f, v, t) for v in value)}
        if f.reference is not None:
            return link(f, value)
        if isinstance(value, dict | list):
            return {"text": json.dumps(value, ensure_ascii=False, indent=1), "pre": True}
        return {"text": display_value(f, value, t)}

    def item_for(f: FormField, value: Any) -> dict[str, Any]:
        return {"label": f.label, **item(f, value)}

    return [item_for(f, record.get(f.key)) for f in fields if record.get(f.key) is not None]
