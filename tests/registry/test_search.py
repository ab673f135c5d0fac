"""Search over the demo data: every operator, dotted paths, arrays, sort and cursor paging."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

DEMO = resources.files("open_registry.core") / "demo"
FACILITIES = json.loads((DEMO / "facility.json").read_text())
VACCINATORS = json.loads((DEMO / "vaccinator.json").read_text())
RECIPIENTS = json.loads((DEMO / "recipient.json").read_text())


@pytest.fixture
def demo_client(shared_demo_client: Any) -> Any:
    """These tests only read: they share one registry with the demo data per backend."""
    return shared_demo_client


def ids(resp: Any) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {r["id"] for r in resp.json()["items"]}


def expect(records: list[dict[str, Any]], pred: Any) -> set[str]:
    return {r["id"] for r in records if pred(r)}


CASES = [
    ("facility", {"status": "Active"}, lambda r: r["status"] == "Active"),
    ("facility", {"status[neq]": "Active"}, lambda r: r["status"] != "Active"),
    ("facility", {"category[in]": "GOVT,PRIVATE"}, lambda r: True),
    ("facility", {"name[startsWith]": "Riverside"}, lambda r: r["name"].startswith("Riverside")),
    ("facility", {"name[endsWith]": "Clinic"}, lambda r: r["name"].endswith("Clinic")),
    ("facility", {"name[contains]": "Health"}, lambda r: "Health" in r["name"]),
    ("facility", {"name[notContains]": "Health"}, lambda r: "Health" not in r["name"]),
    ("facility", {"address.state": "Northland"}, lambda r: r["address"]["state"] == "Northland"),
    (
        "facility",
        {"address.district[in]": "Riverside,Hillcrest"},
        lambda r: r["address"]["district"] in ("Riverside", "Hillcrest"),
    ),
    (
        "facility",
        {"programs.programId": "MR-2026"},
        lambda r: any(p["programId"] == "MR-2026" for p in r.get("programs", [])),
    ),
    ("facility", {"averageRating[gt]": "3.5"}, lambda r: r.get("averageRating", 0) > 3.5),
    (
        "facility",
        {"averageRating[lte]": "3.5"},
        lambda r: "averageRating" in r and r["averageRating"] <= 3.5,
    ),
    (
        "vaccinator",
        {"facilityIds": FACILITIES[0]["code"]},
        lambda r: FACILITIES[0]["code"] in r["facilityIds"],
    ),
    (
        "vaccinator",
        {"facilityIds[notContains]": FACILITIES[0]["code"]},
        lambda r: FACILITIES[0]["code"] not in r["facilityIds"],
    ),
    (
        "recipient",
        {"dob[between]": "1980-01-01,1999-12-31"},
        lambda r: "1980-01-01" <= r["dob"] <= "1999-12-31",
    ),
    ("recipient", {"dob[lt]": "1960-01-01"}, lambda r: r["dob"] < "1960-01-01"),
    (
        "recipient",
        {"gender": "Female", "address.state": "Northland"},
        lambda r: r["gender"] == "Female" and r["address"]["state"] == "Northland",
    ),
]


@pytest.mark.parametrize(
    ("entity", "params", "pred"), CASES, ids=[f"{e}-{'&'.join(p)}" for e, p, _ in CASES]
)
def test_query_parameter_filters_match_the_data(
    demo_client: Any, entity: str, params: dict[str, str], pred: Any
):
    data = {"facility": FACILITIES, "vaccinator": VACCINATORS, "recipient": RECIPIENTS}[entity]
    want = expect(data, pred)
    assert want, "the case must select something"
    got = ids(demo_client.get(f"/api/v1/{entity}", params={**params, "limit": 1000}))
    assert got == want


def test_post_search_matches_query_parameters(demo_client: Any):
    body = {
        "filters": {
            "status": {"eq": "Active"},
            "address.state": "Northland",
            "programs.programId": {"in": ["COVID19-2026", "MR-2026"]},
        }
    }
    via_post = ids(demo_client.post("/api/v1/facility/search", json=body))
    via_get = ids(
        demo_client.get(
            "/api/v1/facility",
            params={
                "status": "Active",
                "address.state": "Northland",
                "programs.programId[in]": "COVID19-2026,MR-2026",
            },
        )
    )
    assert via_post == via_get and via_post


@pytest.mark.parametrize(
    "sort",
    ["name", "-name", "category,-name", "-averageRating,name", "email", "-_createdAt", "dob"],
)
def test_cursor_paging_visits_every_row_once_in_order(demo_client: Any, sort: str):
    entity = "recipient" if sort == "dob" else "facility"
    pages, seen, cursor = 0, [], None
    while True:
        params = {"limit": 5, "sort": sort, **({"cursor": cursor} if cursor else {})}
        body = demo_client.get(f"/api/v1/{entity}", params=params).json()
        seen.extend(body["items"])
        cursor = body["next"]
        pages += 1
        if not cursor:
            break
    everything = demo_client.get(f"/api/v1/{entity}", params={"limit": 1000, "sort": sort}).json()
    assert [r["id"] for r in seen] == [r["id"] for r in everything["items"]]
    assert len({r["id"] for r in seen}) == len(seen) == {"facility": 12, "recipient": 60}[entity]
    assert pages >= 3
    first = sort.split(",")[0]
    key, desc = first.lstrip("-"), first.startswith("-")
    values = [r.get(key) for r in seen if r.get(key) is not None]
    assert values == sorted(values, reverse=desc)
    # NULLs come last whatever the direction
    nulls = [i for i, r in enumerate(seen) if r.get(key) is None]
    assert nulls == list(range(len(seen) - len(nulls), len(seen)))


def test_next_link_header_and_count(demo_client: Any):
    resp = demo_client.get("/api/v1/recipient", params={"limit": 10, "count": "true"})
    assert resp.json()["total"] == 60
    assert 'rel="next"' in resp.headers["link"] and "cursor=" in resp.headers["link"]


@pytest.mark.parametrize(
    ("params", "pointer", "keyword"),
    [
        ({"spaceship": "x"}, "/filters/spaceship/eq", "field"),
        ({"name[like]": "x"}, "/filters/name/like", "operator"),
        ({"averageRating[gt]": "high"}, "/filters/averageRating/gt", "type"),
        ({"status[between]": "a"}, "/filters/status/between", "type"),
        ({"limit": "0"}, "/limit", "maximum"),
        ({"limit": "ten"}, "/limit", "type"),
        ({"sort": "address"}, "/sort", "sort"),
        ({"cursor": "garbage!"}, "/cursor", "cursor"),
        ({"programs.programId[gt]": "x"}, "/filters/programs.programId/gt", "operator"),
    ],
)
def test_bad_searches_get_400_naming_the_parameter(
    demo_client: Any, params: dict[str, str], pointer: str, keyword: str
):
    resp = demo_client.get("/api/v1/facility", params=params)
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    err = resp.json()["errors"][0]
    assert (err["pointer"], err["keyword"]) == (pointer, keyword)


def test_cursor_from_another_sort_is_refused(demo_client: Any):
    cursor = demo_client.get("/api/v1/facility", params={"limit": 2, "sort": "name"}).json()["next"]
    resp = demo_client.get(
        "/api/v1/facility", params={"limit": 2, "sort": "-name", "cursor": cursor}
    )
    assert resp.status_code == 400


def test_private_fields_cannot_be_searched(demo_client: Any):
    resp = demo_client.get("/api/v1/recipient", params={"phone": RECIPIENTS[0]["phone"]})
    assert resp.status_code == 400
    assert RECIPIENTS[0]["phone"] not in resp.text


def test_like_wildcards_are_literal(demo_client: Any):
    assert ids(demo_client.get("/api/v1/facility", params={"name[contains]": "%"})) == set()
    assert ids(demo_client.get("/api/v1/facility", params={"name[startsWith]": "_"})) == set()


def test_post_search_body_errors(demo_client: Any):
    bad = demo_client.post("/api/v1/facility/search", json={"filters": [], "where": 1})
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["pointer"] == "/where"


def test_absent_list_field_is_null_not_json_null(client: Any):
    """A record without a list field must not break element searches (JSON null vs SQL NULL)."""
    body = {k: v for k, v in RECIPIENTS[0].items() if k not in ("id", "comorbidities")}
    assert client.post("/api/v1/recipient", json=body).status_code == 201
    resp = client.get("/api/v1/recipient", params={"comorbidities": "asthma"})
    assert resp.status_code == 200 and resp.json()["items"] == []
    resp = client.get("/api/v1/recipient", params={"comorbidities[notContains]": "asthma"})
    assert len(resp.json()["items"]) == 1


def test_every_operator_the_parser_accepts_has_its_sql():
    from open_registry.core.query import SQL_OF
    from open_registry.generators.query_ops import OPERATORS

    assert set(SQL_OF) == set(OPERATORS)


def test_one_path_walker_fans_out_or_takes_one_value():
    """`path_values` serves search scopes and references (fan-out), token claims and export
    cells (`value_at`: one value, list positions) and import mappings (no list positions)."""
    from open_registry.core.paths import path_values, value_at, values_at

    doc = {
        "id": "r1",
        "address": {"state": "N", "empty": None},
        "programs": [{"id": "p1", "tags": ["a", "b"]}, {"id": "p2"}, {"other": 1}],
        "nested": [[{"x": 1}], [{"x": 2}]],
        "byIndex": {0: {"id": "d0"}},
    }
    assert path_values(doc, "programs.id") == [
        (("programs", 0, "id"), "p1"),
        (("programs", 1, "id"), "p2"),
    ]
    assert values_at(doc, "programs.tags") == ["a", "b"]  # a list at the end gives its items
    assert values_at(doc, "nested.x") == [1, 2]
    assert values_at(doc, "address.empty") == [] and values_at(doc, "id") == ["r1"]
    assert path_values(doc, ("programs", 1, "id")) == [(("programs", 1, "id"), "p2")]
    assert value_at(doc, "address.state") == "N"
    assert value_at(doc, "programs.id") is None  # no fan-out
    assert value_at(doc, "programs.0.id") is None  # a dotted part is a name, never a position
    assert value_at(doc, ("programs", 0, "tags")) == ["a", "b"]  # a list at the end, whole
    assert value_at(doc, ("programs", 5, "id")) is None and value_at(doc, ("programs", -1)) is None
    assert value_at(doc, ("programs", 0, "id"), index_lists=False) is None
    assert value_at(doc, ("byIndex", 0, "id"), index_lists=False) == "d0"
    assert path_values(doc, ("programs", 0, "id"), each=False) == [(("programs", 0, "id"), "p1")]
