"""Credential templates (placeholders, types, missing values, filters) and the Bitstring Status
List encoding."""

from __future__ import annotations

import base64
import gzip

import pytest

from open_registry.plugins.certificates import status
from open_registry.plugins.certificates.template import CredentialTemplate, TemplateError

CONTEXT = {
    "recipient": {"name": "Asha Rao", "address": {"district": "Portview"}, "phone": None},
    "vaccination": {"dose": 2, "date": "2026-03-01T10:30:00Z", "batch": '"}], "x": {"'},
}


def fill(document: dict) -> dict:
    return CredentialTemplate({"@context": ["x"], **document}).fill(CONTEXT)


def test_a_whole_placeholder_keeps_its_type_and_missing_values_disappear():
    out = fill(
        {
            "dose": "{{ vaccination.dose }}",
            "name": "{{recipient.name}}",
            "phone": "{{ recipient.phone }}",
            "nowhere": "{{ recipient.address.city }}",
            "address": {"city": "{{ recipient.address.city }}"},
            "list": ["{{ nothing }}"],
            "through_text": "{{ recipient.name.first }}",
        }
    )
    assert out == {"@context": ["x"], "dose": 2, "name": "Asha Rao"}


def test_text_with_placeholders_filters_and_no_structure_injection():
    out = fill(
        {
            "label": "Dose {{ vaccination.dose }} of {{ total }} on {{ vaccination.date | date }}",
            "shout": "{{ recipient.name | upper }}",
            "batch": "{{ vaccination.batch }}",
        }
    )
    assert out["label"] == "Dose 2 of  on 2026-03-01"
    assert out["shout"] == "ASHA RAO"
    assert out["batch"] == '"}], "x": {"'  # a value stays a string, whatever it holds
    with pytest.raises(TemplateError, match="unknown filter 'shout'"):
        fill({"x": "{{ recipient.name | shout }}"})
    with pytest.raises(TemplateError, match="@context"):
        CredentialTemplate({"type": "x"})


def test_status_lists_encode_decode_and_refuse_bad_input():
    encoded = status.encode([0, 7, 8, 131071])
    bits = status.decode(encoded)
    assert len(bits) == status.LIST_SIZE // 8
    assert [i for i in (0, 1, 7, 8, 9, 131071) if status.bit(bits, i)] == [0, 7, 8, 131071]
    assert status.locate(131072 + 5) == (1, 5)
    with pytest.raises(status.StatusListError):
        status.encode([status.LIST_SIZE])
    with pytest.raises(status.StatusListError, match="multibase"):
        status.decode("z123")
    with pytest.raises(status.StatusListError):
        status.decode("u!!!")
    bomb = "u" + base64.urlsafe_b64encode(gzip.compress(bytes(2 << 20))).decode().rstrip("=")
    with pytest.raises(status.StatusListError, match="1 MiB"):
        status.decode(bomb)
    with pytest.raises(status.StatusListError, match="outside"):
        status.bit(bits, status.LIST_SIZE)
    entry = {
        "type": "BitstringStatusListEntry",
        "statusPurpose": "revocation",
        "statusListIndex": "12",
        "statusListCredential": "https://x.example/1",
    }
    assert status.entries({"credentialStatus": entry})[0]["statusListIndex"] == 12
    with pytest.raises(status.StatusListError, match="whole-number"):
        status.entries({"credentialStatus": [{**entry, "statusListIndex": "twelve"}]})
