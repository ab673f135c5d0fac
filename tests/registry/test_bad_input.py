"""Bad input is a 4xx problem naming the field or parameter and the reason, never a 500: numbers
beyond 64 bits, NUL characters, nameless parameters, operators on the wrong kind of field, too
many filters, sort keys or `in` values, deep or malformed bodies, garbage paging; on SQLite and
PostgreSQL (which refuses NUL in text and numbers beyond BIGINT, where SQLite overflows)."""

from __future__ import annotations

import base64
import json
from importlib import resources
from typing import Any

import pytest
from fastapi.testclient import TestClient

from open_registry.core import Settings, create_app, open_registry
from open_registry.core.query import SearchLimits, SearchParser
from open_registry.plugins.certificates import status
from tests.authn import admin_client

DEMO = resources.files("open_registry.core") / "demo"
VACCINE = json.loads((DEMO / "vaccine.json").read_text())[0]["id"]
FACILITY = json.loads((DEMO / "facility.json").read_text())[0]["id"]
RECIPIENT = json.loads((DEMO / "recipient.json").read_text())[0]["id"]

BIG = "99999999999999999999999"  # beyond 64 bits: orjson reads it as a float
U64 = "18446744073709551615"  # fits 64 bits unsigned only: orjson reads it as an int
I63 = "9223372036854775808"  # one more than BIGINT holds
MERGE = {"content-type": "application/merge-patch+json"}
JSON = {"content-type": "application/json"}


@pytest.fixture
def reader(shared_demo_client: TestClient) -> TestClient:
    """The demo data, shared per module and backend: these tests' writes are all refused."""
    return shared_demo_client


def problem(resp: Any, status_code: int = 400) -> dict[str, Any]:
    assert resp.status_code == status_code, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["status"] == status_code and body["detail"]
    return body


def error(resp: Any, status_code: int = 400) -> dict[str, Any]:
    """The first error of a problem response (pointer, message, keyword)."""
    errors = problem(resp, status_code)["errors"]
    assert errors and set(errors[0]) == {"pointer", "message", "keyword"}
    return errors[0]


def lit(template: str, value: str) -> str:
    """JSON text: `template` with `value` (a number's literal, or nested arrays) in place of #."""
    return template.replace("#", value)


def nested(depth: int, leaf: str = "1") -> str:
    """JSON text of `depth` arrays inside each other around `leaf`."""
    return "[" * depth + leaf + "]" * depth


# -- integers beyond 64 bits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value", "pointer"),
    [
        ("effectiveUntil", BIG, "/filters/effectiveUntil/eq"),
        ("effectiveUntil[gt]", U64, "/filters/effectiveUntil/gt"),
        ("effectiveUntil[in]", f"1,{I63}", "/filters/effectiveUntil/in"),
        ("effectiveUntil[between]", f"-{BIG},1", "/filters/effectiveUntil/between"),
        ("doseIntervals.min", BIG, "/filters/doseIntervals.min/eq"),  # inside a list
        ("_version", BIG, "/filters/_version/eq"),
        ("effectiveUntil", "9" * 5000, "/filters/effectiveUntil/eq"),  # beyond int()'s limit
    ],
)
def test_integers_beyond_64_bits_in_filters_are_a_400_naming_the_filter(
    reader: TestClient, param: str, value: str, pointer: str
):
    err = error(reader.get(f"/api/v1/vaccine?{param}={value}"))
    assert err["pointer"] == pointer and err["keyword"] == "type"
    assert "64-bit range" in err["message"] and len(err["message"]) < 200  # not all 5000 digits


@pytest.mark.parametrize(
    ("body", "pointer", "keyword"),
    [
        (
            lit('{"filters": {"effectiveUntil": {"eq": #}}}', BIG),
            "/filters/effectiveUntil/eq",
            "maximum",
        ),
        (
            lit('{"filters": {"doseIntervals.min": #}}', U64),
            "/filters/doseIntervals.min",
            "maximum",
        ),
        ('{"filters": {"effectiveUntil": {"in": [1e19]}}}', "/filters/effectiveUntil/in", "type"),
        (lit('{"limit": #}', BIG), "/limit", "maximum"),
    ],
)
def test_integers_beyond_64_bits_in_search_bodies_are_a_400(
    reader: TestClient, body: str, pointer: str, keyword: str
):
    err = error(reader.post("/api/v1/vaccine/search", content=body, headers=JSON))
    assert (err["pointer"], err["keyword"]) == (pointer, keyword)
    assert "64-bit range" in err["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status_code", "pointer"),
    [
        ("PATCH", f"vaccine/{VACCINE}", lit('{"effectiveUntil": #}', BIG), 400, "/effectiveUntil"),
        ("PATCH", f"vaccine/{VACCINE}", lit('{"effectiveUntil": #}', I63), 400, "/effectiveUntil"),
        ("PATCH", f"vaccine/{VACCINE}", lit('{"effectiveUntil": -#}', BIG), 400, "/effectiveUntil"),
        (
            "PATCH",
            f"vaccine/{VACCINE}",
            lit('{"doseIntervals": [{"min": #, "max": 1}]}', U64),
            400,
            "/doseIntervals/0/min",
        ),
        # an integer literal beyond 64 bits is refused even where a number (float) would do
        ("PATCH", f"vaccine/{VACCINE}", lit('{"price": #}', BIG), 400, "/price"),
        # a float with no fraction is an integer to JSON Schema: it must still fit BIGINT
        ("PATCH", f"vaccine/{VACCINE}", '{"effectiveUntil": 1e19}', 422, "/effectiveUntil"),
        ("PATCH", f"vaccine/{VACCINE}", '{"effectiveUntil": 1.5e300}', 422, "/effectiveUntil"),
        (
            "PUT",
            f"vaccine/{VACCINE}",
            lit('{"code": "X", "name": "X", "effectiveUntil": #}', BIG),
            400,
            "/effectiveUntil",
        ),
        (
            "POST",
            "vaccine",
            lit('{"code": "X", "name": "X", "effectiveUntil": #}', U64),
            400,
            "/effectiveUntil",
        ),
    ],
)
def test_integers_beyond_64_bits_in_record_bodies_are_refused_naming_the_field(
    reader: TestClient, method: str, path: str, body: str, status_code: int, pointer: str
):
    headers = MERGE if method == "PATCH" else JSON
    resp = reader.request(method, f"/api/v1/{path}", content=body, headers=headers)
    err = error(resp, status_code)
    assert err["pointer"] == pointer and err["keyword"] == "maximum"
    assert "64-bit" in err["message"] or "64 bits" in err["message"]


@pytest.mark.parametrize(
    "body",
    [
        rb'{"filters": {"name": {"eq": "\\u0000 is six characters here"}}}',  # \\ then u0000
        b'{"filters": {"name": {"eq": "+1 12345678901234567890123"}}}',  # digits in text
        b'{"filters": {"price": {"gt": 1e23}}}',  # a float, not an integer literal
        b'{"filters": {"price": {"gt": 100000000000000000000000.0}}}',
        b'{"filters": {"effectiveUntil": {"eq": -9223372036854775808}}}',  # BIGINT's ends
        b'{"filters": {"effectiveUntil": {"eq": 9223372036854775807}}}',
    ],
)
def test_what_only_looks_like_a_bad_body_is_searched(reader: TestClient, body: bytes):
    resp = reader.post("/api/v1/vaccine/search", content=body, headers=JSON)
    assert resp.status_code == 200, resp.text


def test_big_integer_path_ids_and_etags_are_4xx(reader: TestClient):
    assert problem(reader.get(f"/api/v1/vaccine/{BIG}"), 404)
    resp = reader.patch(
        f"/api/v1/vaccine/{VACCINE}",
        content=b'{"name": "x"}',
        headers={**MERGE, "If-Match": f'"{BIG}"'},
    )
    assert problem(resp, 412)


@pytest.mark.parametrize("path", ["/api/v1/outbox/{}/retry", "/api/v1/outbox/deliveries/{}/retry"])
@pytest.mark.parametrize("number", [BIG, I63, "0"])
def test_outbox_row_numbers_beyond_64_bits_are_a_400(reader: TestClient, path: str, number: str):
    """(found by the fuzz run: SQLite raised OverflowError, a 500)"""
    assert problem(reader.post(path.format(number)), 400)


def test_json_integers_of_every_spelling_are_stored_and_searched(client: TestClient):
    """`1.0` and `1e20` are integers to JSON Schema: stored in a JSON column they used to break
    every later search of the field on PostgreSQL (a cast to BIGINT of "1.0")."""
    for i, (literal, top) in enumerate((("1.0", "5.0"), ("1e20", "7"))):
        body = (
            f'{{"code": "V{i}", "name": "Vax {i}", "manufacturer": "M", "status": "Active",'
            f' "effectiveUntil": {top}, "doseIntervals": [{{"min": {literal}, "max": 2}}]}}'
        )
        created = client.post("/api/v1/vaccine", content=body, headers=JSON)
        assert created.status_code == 201, created.text
    first = client.get("/api/v1/vaccine?code=V0").json()["items"][0]
    assert first["effectiveUntil"] == 5 and isinstance(first["effectiveUntil"], int)
    found = client.get("/api/v1/vaccine", params={"doseIntervals.min": "1"})
    assert found.status_code == 200, found.text
    assert [r["code"] for r in found.json()["items"]] == ["V0"]
    found = client.get("/api/v1/vaccine", params={"doseIntervals.min[in]": "100000000000000000000"})
    assert found.status_code == 400  # beyond 64 bits as a filter
    found = client.get("/api/v1/vaccine", params={"doseIntervals.max": "2"})
    assert {r["code"] for r in found.json()["items"]} == {"V0", "V1"}


# -- NUL characters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "pointer"),
    [
        ("PATCH", f"vaccine/{VACCINE}", {"name": "a\x00b"}, "/name"),
        ("POST", "vaccine", {"code": "N1", "name": "N", "manufacturer": "\x00"}, "/manufacturer"),
        ("PATCH", f"facility/{FACILITY}", {"admins": [{"name": "a\x00"}]}, "/admins/0/name"),
        ("PATCH", f"facility/{FACILITY}", {"geoLocation": {"la\x00t": 1}}, "/geoLocation/la\x00t"),
        ("PATCH", f"recipient/{RECIPIENT}", {"identity": "x\x00"}, "/identity"),  # private
        ("POST", "vaccine/search", {"filters": {"name": {"eq": "\x00"}}}, "/filters/name/eq"),
        ("POST", "vaccine/search", {"filters": {"na\x00me": "x"}}, "/filters/na\x00me"),
    ],
)
def test_nul_in_a_body_is_a_400_naming_the_place(
    reader: TestClient, method: str, path: str, body: Any, pointer: str
):
    headers = MERGE if method == "PATCH" else JSON
    resp = reader.request(method, f"/api/v1/{path}", content=json.dumps(body), headers=headers)
    err = error(resp)
    assert (err["pointer"], err["keyword"]) == (pointer, "nul")
    assert "NUL" in err["message"]


@pytest.mark.parametrize(
    ("url", "pointer"),
    [
        ("vaccine?name=a%00b", "/filters/name/eq"),
        ("vaccine?name[contains]=%00", "/filters/name/contains"),
        ("vaccine?name[in]=a,%00", "/filters/name/in"),
        ("vaccine?id=%00", "/filters/id/eq"),
        ("facility?address.state=%00", "/filters/address.state/eq"),
        ("facility?programs.programId=%00", "/filters/programs.programId/eq"),
        ("recipient?identity=%00", "/filters/identity/eq"),  # private: a blind index
        ("vaccine?na%00me=x", "/filters/na\x00me/eq"),
        ("vaccine/export?name=%00", "/filters/name/eq"),
    ],
)
def test_nul_in_a_filter_is_a_400_naming_the_filter(reader: TestClient, url: str, pointer: str):
    err = error(reader.get(f"/api/v1/{url}"))
    assert err["pointer"] == pointer and "NUL" in err["message"]


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_nul_in_a_path_id_is_a_400(reader: TestClient, method: str):
    resp = reader.request(method, "/api/v1/vaccine/a%00b", content=b"{}", headers=MERGE)
    assert "control character" in problem(resp)["detail"]


# -- parameter names and operators -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["vaccine?=x", "vaccine?[eq]=x", "vaccine/export?=x", "vaccine/export?[eq]=x"]
)
def test_a_nameless_parameter_is_a_400(reader: TestClient, url: str):
    err = error(reader.get(f"/api/v1/{url}"))
    assert (err["pointer"], err["keyword"]) == ("/filters//eq", "field")
    assert "needs a field name" in err["message"]


def test_a_nameless_filter_in_a_search_body_is_a_400(reader: TestClient):
    err = error(reader.post("/api/v1/vaccine/search", json={"filters": {"": {"eq": "x"}}}))
    assert (err["pointer"], err["keyword"]) == ("/filters//eq", "field")
    err = error(reader.post("/api/v1/vaccine/search", json={"filters": {"name": {"": "x"}}}))
    assert (err["pointer"], err["keyword"]) == ("/filters/name/", "operator")


@pytest.mark.parametrize(
    ("url", "pointer", "says"),
    [
        ("facility?geoLocation[gte]=1", "/filters/geoLocation/gte", "holds objects"),
        ("facility?geoLocation=1", "/filters/geoLocation/eq", "geoLocation.lat"),
        ("facility?address=x", "/filters/address/eq", "holds objects"),
        ("facility?admins[gte]=1", "/filters/admins/gte", "list of objects"),
        ("facility?admins[contains]=x", "/filters/admins/contains", "admins.name"),
        ("facility?programs[gte]=x", "/filters/programs/gte", "list of objects"),
        ("program?vaccineIds[gt]=x", "/filters/vaccineIds/gt", "a list"),
        ("program?vaccineIds[between]=a,b", "/filters/vaccineIds/between", "a list"),
        ("facility?averageRating[contains]=1", "/filters/averageRating/contains", "text fields"),
        ("facility?programs.rate[contains]=1", "/filters/programs.rate/contains", "text fields"),
        ("facility?name[foo]=x", "/filters/name/foo", "unknown operator"),
        ("facility?name[]=x", "/filters/name/", "unknown operator"),
        ("facility?averageRating=nan", "/filters/averageRating/eq", "finite"),
        ("facility?averageRating[gt]=1e400", "/filters/averageRating/gt", "finite"),
    ],
)
def test_an_operator_on_the_wrong_kind_of_field_is_a_400(
    reader: TestClient, url: str, pointer: str, says: str
):
    err = error(reader.get(f"/api/v1/{url}"))
    assert err["pointer"] == pointer and says in err["message"]


@pytest.mark.parametrize(
    ("filters", "pointer", "says"),
    [
        ({"geoLocation": {"eq": {"lat": 1}}}, "/filters/geoLocation/eq", "holds objects"),
        ({"admins": {"contains": {"name": "x"}}}, "/filters/admins/contains", "list of objects"),
        ({"name": {"eq": None}}, "/filters/name/eq", "null"),
        ({"name": {"in": [{"a": 1}]}}, "/filters/name/in", "single value"),
        ({"averageRating": {"eq": True}}, "/filters/averageRating/eq", "not a valid number"),
        ({"programs.rate": {"eq": 1.5}}, "/filters/programs.rate/eq", "not a valid integer"),
    ],
)
def test_a_search_body_filter_of_the_wrong_kind_is_a_400(
    reader: TestClient, filters: dict[str, Any], pointer: str, says: str
):
    err = error(reader.post("/api/v1/facility/search", json={"filters": filters}))
    assert err["pointer"] == pointer and says in err["message"]


# -- how much one search may ask for ---------------------------------------------------------------

TEXT_FIELDS = ["name", "code", "manufacturer", "status", "vaccinationMode", "icd11Code"]
TEXT_OPS = ["eq", "neq", "contains", "notContains", "startsWith", "endsWith", "gt", "gte", "lt"]


@pytest.mark.parametrize("n", [51, 5000])
def test_too_many_filters_in_the_query_is_a_400_naming_the_limit(reader: TestClient, n: int):
    query = "&".join(["name=x"] * n)
    err = error(reader.get(f"/api/v1/vaccine?{query}"))
    assert (err["pointer"], err["keyword"]) == ("/filters", "maxItems")
    assert "max_filters" in err["message"] and "50" in err["message"]


def test_fifty_filters_are_fine(reader: TestClient):
    query = "&".join(f"name[neq]=x{i}" for i in range(50))
    assert reader.get(f"/api/v1/vaccine?{query}").status_code == 200


def test_too_many_filters_in_a_search_body_is_a_400(reader: TestClient):
    filters = {f: {op: "x" for op in TEXT_OPS} for f in TEXT_FIELDS}  # 54 filters
    err = error(reader.post("/api/v1/vaccine/search", json={"filters": filters}))
    assert (err["pointer"], err["keyword"]) == ("/filters", "maxItems")
    assert "max_filters" in err["message"]


@pytest.mark.parametrize(
    "sort",
    [
        "code,name,manufacturer,vaccinationMode,effectiveUntil,status,price,icd11Code,_createdAt",
        ",".join(["name", "-code"] * 2500),
    ],
)
def test_too_many_or_repeated_sort_keys_are_a_400(reader: TestClient, sort: str):
    err = error(reader.get("/api/v1/vaccine", params={"sort": sort}))
    assert err["pointer"] == "/sort"
    assert "max_sort_keys" in err["message"] or "more than once" in err["message"]


def test_too_many_sort_keys_in_a_search_body_is_a_400(reader: TestClient):
    err = error(reader.post("/api/v1/vaccine/search", json={"sort": ["name"] * 5000}))
    assert (err["pointer"], err["keyword"]) == ("/sort", "maxItems")
    assert "max_sort_keys" in err["message"]


def test_in_lists_are_bounded_together(reader: TestClient):
    values = ",".join(f"v{i}" for i in range(1000))
    assert reader.get(f"/api/v1/vaccine?name[in]={values}").status_code == 200
    err = error(reader.get(f"/api/v1/vaccine?name[in]={values},one-more"))
    assert (err["pointer"], err["keyword"]) == ("/filters/name/in", "maxItems")
    assert "max_filter_values" in err["message"]
    half = [f"v{i}" for i in range(600)]
    body = {"filters": {"name": {"in": half}, "code": {"in": half}}}
    err = error(reader.post("/api/v1/vaccine/search", json=body))
    assert err["pointer"] == "/filters/code/in" and "max_filter_values" in err["message"]


def test_the_parser_takes_its_limits_from_settings(registry: Any):
    limits = SearchLimits.from_settings(
        Settings(max_filters=2, max_sort_keys=1, max_filter_values=3)
    )
    parser = SearchParser(
        registry.services["vaccine"].entity, page_size=10, max_page_size=20, limits=limits
    )
    parser.from_params([("name", "a"), ("code", "b"), ("sort", "name")])
    for params, setting in [
        ([("name", "a"), ("code", "b"), ("status", "c")], "max_filters"),
        ([("sort", "name,code")], "max_sort_keys"),
        ([("name[in]", "a,b"), ("code[in]", "c,d")], "max_filter_values"),
    ]:
        with pytest.raises(Exception, match=setting):
            parser.from_params(params)
    assert SearchLimits() == SearchLimits.from_settings(Settings())
    assert SearchLimits().max_filters == 50


# -- bodies ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (f"facility/{FACILITY}", lit('{"address": #}', nested(65))),
        (f"facility/{FACILITY}", lit('{"address": #}', nested(990))),  # was a RecursionError
        (f"facility/{FACILITY}", '{"geoLocation": ' + '{"a":' * 300 + "1" + "}" * 301),
        ("vaccine/search", lit('{"filters": {"name": {"eq": #}}}', nested(100))),
    ],
)
def test_a_deeply_nested_body_is_a_400_naming_the_limit(reader: TestClient, path: str, body: str):
    method = "POST" if path.endswith("search") else "PATCH"
    headers = JSON if method == "POST" else MERGE
    err = error(reader.request(method, f"/api/v1/{path}", content=body, headers=headers))
    assert err["keyword"] == "maxDepth" and "max_body_depth" in err["message"]
    assert err["pointer"].count("/") == 64  # where the 65th level starts


def test_nesting_beyond_the_json_parser_is_a_400(reader: TestClient):
    err = error(reader.patch(f"/api/v1/facility/{FACILITY}", content=nested(5000), headers=MERGE))
    assert err["keyword"] == "json" and "depth" in err["message"]


def test_max_body_depth_is_a_setting(settings: Settings):
    reg = open_registry(settings.with_(max_body_depth=4))
    try:
        with admin_client(create_app(registry=reg)) as c:
            ok = '{"filters": {"name": {"in": ["a"]}}}'  # four levels: body, filters, name, in
            assert c.post("/api/v1/vaccine/search", content=ok, headers=JSON).status_code == 200
            deep = '{"filters": {"name": {"in": [["a"]]}}}'
            err = error(c.post("/api/v1/vaccine/search", content=deep, headers=JSON))
            assert err["pointer"] == "/filters/name/in/0" and "4 levels" in err["message"]
    finally:
        reg.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "status_code", "keyword"),
    [
        ("POST", "vaccine", b'{"name": "\xff\xfe"}', 400, "json"),  # invalid UTF-8
        ("PATCH", f"vaccine/{VACCINE}", b'{"name": "\xc3\x28"}', 400, "json"),
        ("PATCH", f"vaccine/{VACCINE}", b'{"name": "\\ud800"}', 400, "json"),  # lone surrogate
        ("POST", "vaccine", b"", 400, "json"),
        ("POST", "vaccine", b"[1, 2]", 422, "type"),  # not an object
        ("PUT", f"vaccine/{VACCINE}", b'"text"', 422, "type"),
        ("PATCH", f"vaccine/{VACCINE}", b"null", 422, "type"),
        ("POST", "vaccine/search", b"[]", 400, "type"),
        ("POST", "vaccine/search", b"17", 400, "type"),
        ("PATCH", f"vaccine/{VACCINE}", b'{"price": 1e400}', 400, "json"),
        ("PATCH", f"vaccine/{VACCINE}", b'{"price": NaN}', 400, "json"),
        ("PATCH", f"vaccine/{VACCINE}", b'{"price": -Infinity}', 400, "json"),
        ("POST", "vaccine/search", b'{"filters": {"price": {"gt": Infinity}}}', 400, "json"),
        ("POST", "vaccine/search", b'{"limit": 1e400}', 400, "json"),
    ],
)
def test_malformed_bodies_are_4xx(
    reader: TestClient, method: str, path: str, body: bytes, status_code: int, keyword: str
):
    headers = MERGE if method == "PATCH" else JSON
    resp = reader.request(method, f"/api/v1/{path}", content=body, headers=headers)
    err = error(resp, status_code)
    assert err["keyword"] == keyword and err["pointer"] == ""


def test_a_repeated_key_takes_the_last_value(reader: TestClient):
    body = b'{"limit": 1000, "limit": 2}'
    resp = reader.post("/api/v1/vaccine/search", content=body, headers=JSON)
    assert resp.status_code == 200 and len(resp.json()["items"]) == 2


# -- paging ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "-1", "1000000", "1e3", "nan", "inf", "%00", "9" * 5000])
def test_a_bad_page_size_is_a_400(reader: TestClient, limit: str):
    err = error(reader.get(f"/api/v1/vaccine?limit={limit}"))
    assert err["pointer"] == "/limit" and len(err["message"]) < 200


@pytest.mark.parametrize("limit", [0, -1, 10**6, 1.5, 1e300, "ten", True, [], {}])
def test_a_bad_page_size_in_a_search_body_is_a_400(reader: TestClient, limit: Any):
    err = error(reader.post("/api/v1/vaccine/search", json={"limit": limit}))
    assert err["pointer"] == "/limit"


def cursor_with(reader: TestClient, sort: str, values: list[Any]) -> str:
    """A real cursor of the vaccine list sorted by `sort`, its values replaced."""
    cursor = reader.get("/api/v1/vaccine", params={"limit": 1, "sort": sort}).json()["next"]
    data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    data["v"] = values
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort", "values"),
    [
        ("id", [{"a": 1}]),
        ("id", [[1]]),
        ("id", [5]),
        ("id", [True]),
        ("id", ["a\x00b"]),
        ("_version", [2**64 - 1, "x"]),
        ("_version", ["x", "x"]),
        ("effectiveUntil", [2**64 - 1, "x"]),
        ("effectiveUntil", [1.5, "x"]),
        ("price", [[1], "x"]),
        ("price", ["x", "x"]),
        ("_createdAt", [5, "x"]),
    ],
)
def test_a_forged_cursor_is_a_400(reader: TestClient, sort: str, values: list[Any]):
    cursor = cursor_with(reader, sort, values)
    for resp in (
        reader.get("/api/v1/vaccine", params={"sort": sort, "cursor": cursor}),
        reader.post("/api/v1/vaccine/search", json={"sort": [sort], "cursor": cursor}),
    ):
        err = error(resp)
        assert (err["pointer"], err["keyword"]) == ("/cursor", "cursor")


@pytest.mark.parametrize("cursor", ["garbage!", "%00", "A" * 20000, "W10"])
def test_a_garbage_cursor_is_a_400(reader: TestClient, cursor: str):
    assert error(reader.get(f"/api/v1/vaccine?cursor={cursor}"))["pointer"] == "/cursor"


# -- certificate status lists ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-1",
        " 1",
        "1_0",
        "\u00b2",
        "\u0661",
        "1e3",
        str(status.MAX_LIST_NUMBER + 1),
        "9" * 5000,
        status.MAX_LIST_NUMBER + 1,
        10**30,
        -1,
        True,
        1.0,
    ],
)
def test_a_status_list_number_out_of_range_is_refused(value: Any):
    with pytest.raises(status.StatusListError):
        status.list_number(value)


def test_status_list_numbers_in_range_are_read():
    assert status.list_number("0") == 0 and status.list_number(7) == 7
    top = status.MAX_LIST_NUMBER
    assert status.list_number(str(top)) == top
    assert (top + 1) * status.LIST_SIZE - 1 <= 2**63 - 1  # its last index fits statusIndex


@pytest.mark.parametrize("number", [BIG, I63, str(status.MAX_LIST_NUMBER + 1)])
def test_a_status_list_number_beyond_range_is_a_404(reader: TestClient, number: str):
    assert problem(reader.get(f"/api/v1/status-lists/revocation/{number}"), 404)
