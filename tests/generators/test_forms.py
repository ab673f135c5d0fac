"""Form fields from schemas (`generators.forms`) and form data <-> JSON (`generators.formdata`)."""

from __future__ import annotations

from typing import Any

import pytest

from open_registry.generators.errors import SchemaError
from open_registry.generators.formdata import (
    datetime_from_input,
    errors_by_name,
    form_to_json,
    pointer_to_name,
    record_to_form,
)
from open_registry.generators.forms import FormField, entity_title, form_fields, humanize
from open_registry.generators.schema import DRAFT_2020_12, EntitySchema, parse_entity_schema


def entity(properties: dict[str, Any], xreg: dict[str, Any] | None = None, **extra: Any):
    doc = {"$schema": DRAFT_2020_12, "type": "object", "properties": properties, **extra}
    if xreg:
        doc["x-registry"] = xreg
    return parse_entity_schema(doc, name="thing", source="thing.json")


def by_key(fields: tuple[FormField, ...]) -> dict[str, FormField]:
    return {f.key: f for f in fields}


def test_widgets_come_from_type_format_and_enum():
    e = entity(
        {
            "name": {"type": "string", "maxLength": 100},
            "bio": {"type": "string", "maxLength": 2000},
            "notes": {"type": "string"},
            "code": {"type": "string", "maxLength": 500, "pattern": "^[A-Z]+$"},
            "count": {"type": "integer", "minimum": 0},
            "ratio": {"type": "number"},
            "born": {"type": "string", "format": "date"},
            "seen": {"type": "string", "format": "date-time"},
            "opens": {"type": "string", "format": "time"},
            "mail": {"type": "string", "format": "email"},
            "phone": {"type": "string", "format": "phone"},
            "site": {"type": "string", "format": "uri"},
            "kind": {"type": "string", "enum": ["a", "b"]},
            "ok": {"type": "boolean"},
            "any": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        }
    )
    widgets = {k: f.widget for k, f in by_key(form_fields(e)).items()}
    assert widgets == {
        "name": "text",
        "bio": "textarea",
        "notes": "textarea",
        "code": "text",
        "count": "number",
        "ratio": "number",
        "born": "date",
        "seen": "datetime-local",
        "opens": "time",
        "mail": "email",
        "phone": "tel",
        "site": "url",
        "kind": "select",
        "ok": "checkbox",
        "any": "json",
    }


def test_shipped_facility_form_has_fieldsets_rows_references_and_marks(
    shipped: dict[str, EntitySchema],
):
    fields = by_key(form_fields(shipped["facility"]))
    address = fields["address"]
    assert address.widget == "fieldset" and address.required
    district = {c.key: c for c in address.children}["district"]
    assert district.input_required and district.placeholder == "Riverside"
    geo = {c.key: c for c in fields["geoLocation"].children}["lat"]
    assert geo.required and not geo.input_required  # geoLocation itself is optional
    admins = fields["admins"]
    assert admins.widget == "array" and admins.item is not None
    assert admins.item.widget == "fieldset"
    program = {c.key: c for c in fields["programs"].item.children}
    assert program["programId"].widget == "reference"
    assert program["programId"].reference == ("program", "code")
    days = {c.key: c for c in program["schedule"].children}["days"]
    assert days.widget == "checkboxes" and [o.value for o in days.options][:2] == ["Mon", "Tue"]
    assert fields["code"].attrs == {"maxlength": "32"}
    assert fields["contact"].widget == "tel"
    assert fields["averageRating"].attrs["step"] == "any"


def test_array_of_references_is_rows_of_reference_choices(shipped: dict[str, EntitySchema]):
    facility_ids = by_key(form_fields(shipped["vaccinator"]))["facilityIds"]
    assert facility_ids.widget == "array"
    assert facility_ids.item.widget == "reference"
    assert facility_ids.attrs == {"min-items": "1"}


def test_widget_hook_overrides_a_field_and_sees_its_path():
    seen = []

    def hook(path: str, schema: Any) -> str | None:
        seen.append(path)
        return "map" if path == "where" else None

    e = entity({"where": {"type": "object", "properties": {"lat": {"type": "number"}}}})
    (where,) = form_fields(e, widget_hook=hook)
    assert where.widget == "map"
    assert seen == ["where.lat", "where"]


def test_titles_and_enum_labels_are_translated_from_x_registry_i18n():
    e = entity(
        {
            "name": {"type": "string", "title": "Name"},
            "status": {"type": "string", "enum": ["Active", "Inactive"]},
            "address": {"type": "object", "properties": {"district": {"type": "string"}}},
        },
        {
            "i18n": {
                "fr": {
                    "title": "Chose",
                    "fields": {
                        "name": "Nom",
                        "status": {"title": "Statut", "enum": {"Active": "Actif"}},
                        "address.district": {"title": "District", "description": "Le district"},
                    },
                }
            }
        },
        title="Thing",
    )
    fr = by_key(form_fields(e, locale="fr-CA"))
    assert fr["name"].label == "Nom"
    assert fr["status"].label == "Statut"
    assert [o.label for o in fr["status"].options] == ["Actif", "Inactive"]
    assert fr["address"].children[0].description == "Le district"
    assert entity_title(e, "fr") == "Chose" and entity_title(e, "hi") == "Thing"
    en = by_key(form_fields(e))
    assert en["name"].label == "Name" and en["status"].label == "Status"


@pytest.mark.parametrize(
    ("i18n", "pointer"),
    [
        ({"fr": {"fields": {"nope": "x"}}}, "/x-registry/i18n/fr/fields/nope"),
        ({"French": {}}, "/x-registry/i18n/French"),
        ({"fr": {"colour": "x"}}, "/x-registry/i18n/fr"),
        ({"fr": {"fields": {"name": {"title": 3}}}}, "/x-registry/i18n/fr/fields/name"),
    ],
)
def test_bad_i18n_block_is_reported_with_its_pointer(i18n: Any, pointer: str):
    with pytest.raises(SchemaError) as exc:
        entity({"name": {"type": "string"}}, {"i18n": i18n})
    assert [i.pointer for i in exc.value.issues] == [pointer]


def test_humanize_names():
    assert humanize("operatingHourStart") == "Operating hour start"
    assert humanize("icd11_code") == "Icd11 code"


def test_form_to_json_converts_by_type_and_drops_empty_values(
    shipped: dict[str, EntitySchema],
):
    fields = form_fields(shipped["facility"])
    pairs = [
        ("code", " F1 "),
        ("name", "Clinic"),
        ("address.district", "D"),
        ("address.country", ""),
        ("geoLocation.lat", ""),
        ("geoLocation.lon", ""),
        ("averageRating", "4"),
        ("admins.0.name", ""),
        ("admins.0.mobile", ""),
        ("admins.2.name", "B"),
        ("programs.0.programId", "P"),
        ("programs.0.rate", "12"),
        ("programs.0.statusUpdatedAt", "2026-01-15T09:30"),
        ("programs.0.schedule.days", "Mon"),
        ("programs.0.schedule.days", "Tue"),
        ("_version", "3"),
    ]
    body, kept = form_to_json(fields, pairs)
    assert body == {
        "code": "F1",
        "name": "Clinic",
        "address": {"district": "D"},
        "averageRating": 4,
        "admins": [{"name": "B"}],
        "programs": [
            {
                "programId": "P",
                "rate": 12,
                "statusUpdatedAt": "2026-01-15T09:30:00Z",
                "schedule": {"days": ["Mon", "Tue"]},
            }
        ],
    }
    # rows are renumbered so that error pointers (/admins/0/name) match the names shown again
    assert kept["admins.0.name"] == "B" and "admins.2.name" not in kept
    assert kept["programs.0.schedule.days"] == ["Mon", "Tue"]


def test_values_that_do_not_convert_are_passed_on_as_typed(shipped: dict[str, EntitySchema]):
    fields = form_fields(shipped["vaccine"])
    body, kept = form_to_json(fields, [("effectiveUntil", "12x"), ("price", "abc")])
    assert body == {"effectiveUntil": "12x", "price": "abc"}
    assert kept == {"effectiveUntil": "12x", "price": "abc"}


def test_checkbox_is_false_when_unticked_and_true_when_ticked():
    fields = form_fields(entity({"ok": {"type": "boolean"}, "n": {"type": "string"}}))
    assert form_to_json(fields, [("n", "x")])[0] == {"n": "x", "ok": False}
    assert form_to_json(fields, [("ok", "true")])[0] == {"ok": True}


def test_record_to_form_round_trips_through_form_to_json(shipped: dict[str, EntitySchema]):
    fields = form_fields(shipped["facility"])
    record = {
        "code": "F1",
        "name": "Clinic",
        "category": "GOVT",
        "type": "Mobile",
        "status": "Active",
        "address": {"addressLine1": "1 Road", "district": "D", "state": "S", "pincode": "1234"},
        "geoLocation": {"lat": 28.5, "lon": 77},
        "admins": [{"name": "A", "mobile": "+91 1234567"}],
        "programs": [
            {
                "programId": "P",
                "rate": 5,
                "statusUpdatedAt": "2026-01-15T09:30:00Z",
                "schedule": {"days": ["Mon"], "startTime": "09:00"},
            }
        ],
        "id": "ignored",
        "_version": 2,
    }
    values = record_to_form(fields, record)
    assert values["programs.0.statusUpdatedAt"] == "2026-01-15T09:30:00"
    pairs = [(k, item) for k, v in values.items() for item in (v if isinstance(v, list) else [v])]
    body, _ = form_to_json(fields, pairs)
    assert body == {k: v for k, v in record.items() if k not in ("id", "_version")}


def test_error_pointers_map_to_input_names(shipped: dict[str, EntitySchema]):
    fields = form_fields(shipped["facility"])
    errors = [
        {"pointer": "/address/district", "message": "required", "keyword": "required"},
        {"pointer": "/admins/0/mobile", "message": "bad phone", "keyword": "format"},
        {"pointer": "", "message": "whole record", "keyword": "type"},
    ]
    assert errors_by_name(fields, errors) == {
        "address.district": ["required"],
        "admins.0.mobile": ["bad phone"],
        "": ["whole record"],
    }
    assert pointer_to_name("/a~1b/0/c~0d") == "a/b.0.c~d"


def test_errors_inside_a_json_box_go_to_the_box():
    fields = form_fields(entity({"extra": {"anyOf": [{"type": "object"}, {"type": "string"}]}}))
    got = errors_by_name(fields, [{"pointer": "/extra/deep/x", "message": "m", "keyword": "k"}])
    assert got == {"extra": ["m"]}


def test_datetime_local_input_is_read_as_utc():
    assert datetime_from_input("2026-01-15T09:30") == "2026-01-15T09:30:00Z"
    assert datetime_from_input("2026-01-15T09:30:05") == "2026-01-15T09:30:05Z"
    assert datetime_from_input("2026-01-15T09:30:05+05:30") == "2026-01-15T09:30:05+05:30"
