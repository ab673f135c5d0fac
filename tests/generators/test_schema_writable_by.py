"""`x-registry.writableBy`: its structure (a map of fields to non-empty lists of the registry's
roles) and its meaning (top-level fields that exist and that callers may send), and the model's
`writable_by`."""

from __future__ import annotations

from typing import Any

import pytest

from tests.generators.test_schema import entity_doc, issues_of, only_issue, parse


def props() -> dict[str, Any]:
    return {
        "name": {"type": "string"},
        "status": {"type": "string", "enum": ["Active", "Blocked"], "default": "Active"},
        "address": {"type": "object", "properties": {"district": {"type": "string"}}},
        "token": {"type": "string"},
    }


def test_writable_by_is_on_the_model():
    xreg = {"writableBy": {"status": ["controller", "system-admin"], "address": ["controller"]}}
    e = parse(entity_doc(props(), xreg=xreg))
    assert e.writable_by == {"status": ("controller", "system-admin"), "address": ("controller",)}
    assert parse(entity_doc(props())).writable_by == {}


@pytest.mark.parametrize(
    ("writable_by", "where", "message"),
    [
        (["status"], "/x-registry/writableBy", "must map a field to the roles"),
        ({"status": "controller"}, "/x-registry/writableBy/status", "non-empty list of roles"),
        ({"status": []}, "/x-registry/writableBy/status", "non-empty list of roles"),
        ({"status": ["boss"]}, "/x-registry/writableBy/status/0", "must be a role: system-admin"),
        ({"status": ["controller", 3]}, "/x-registry/writableBy/status/1", "must be a role"),
        ({"status": ["public"]}, "/x-registry/writableBy/status/0", "must be a role"),
        ({"status": ["owner"]}, "/x-registry/writableBy/status/0", "must be a role"),
        ({"ghost": ["controller"]}, "/x-registry/writableBy/ghost", "'ghost' does not exist"),
        (
            {"address.district": ["controller"]},
            "/x-registry/writableBy/address.district",
            "top-level fields only",
        ),
    ],
)
def test_a_bad_writable_by_is_reported_at_its_key(writable_by: Any, where: str, message: str):
    issue = only_issue(entity_doc(props(), xreg={"writableBy": writable_by}))
    assert issue.pointer == where
    assert message in issue.message, issue.message


def test_an_internal_field_takes_no_writable_by():
    xreg = {"internal": ["token"], "writableBy": {"token": ["controller"]}}
    issue = only_issue(entity_doc(props(), xreg=xreg))
    assert issue.pointer == "/x-registry/writableBy/token"
    assert "internal" in issue.message


def test_every_bad_entry_is_reported_and_the_sound_ones_are_checked_too():
    xreg = {"writableBy": {"ghost": ["controller"], "status": ["boss"], "name": ["recipient"]}}
    pointers = sorted(i.pointer for i in issues_of(entity_doc(props(), xreg=xreg)))
    assert pointers == ["/x-registry/writableBy/ghost", "/x-registry/writableBy/status/0"]
