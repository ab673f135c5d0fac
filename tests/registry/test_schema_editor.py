"""The schema editor (`registry.schemas.editor`, pages in `registry.ui.schema_pages`) over HTTP,
on SQLite and PostgreSQL: a change is checked, previewed with its migration, applied only when
confirmed, served at once without a restart, kept in the history, and refused when invalid,
destructive or stale, with nothing applied."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from open_registry.core import create_app, migrations
from open_registry.core.app import Registry, open_registry
from open_registry.core.demo import load_demo_data
from open_registry.core.schemas.history import HISTORY_TABLE
from open_registry.core.schemas.loading import default_schema_dir, edited_schema_dir, load_schemas
from tests.authn import admin_client

STORAGE_FIELD = {
    "name": "storage",
    "title": "Storage",
    "description": "How the vials are kept",
    "type": "string",
    "format": "",
    "enum": "2-8 C\nfrozen",
    "indexed": "on",
}
BATCH_FORM = {
    "entity": "batch",
    "title": "Vaccine batch",
    "description": "A lot of vials received at a store.",
    "field_name": "lot",
    "field_title": "Lot number",
    "field_type": "string",
    "field_format": "",
    "field_enum": "",
    "field_required": "on",
    "field_unique": "on",
}


@pytest.fixture
def app_client(registry: Registry) -> Iterator[TestClient]:
    load_demo_data(registry.services)
    app = create_app(registry=registry)
    app.state.ui.actor_of = lambda request: request.headers.get("x-user")
    with admin_client(app, headers={"x-user": "asha"}) as c:
        yield c


def hidden(page: str, name: str, form: int = 0) -> str:
    """The value of a hidden input of the `form`-th form holding one of that name."""
    found = re.findall(rf'<input type="hidden" name="{name}" value="([^"]*)"', page)
    return html.unescape(found[form])


def confirm(client: TestClient, preview: str, entity: str, **headers: str) -> Any:
    """Press "Confirm and apply" on a preview page."""
    data = {"schema": hidden(preview, "schema"), "base": hidden(preview, "base")}
    if 'name="new" value="1"' in preview:
        data["new"] = "1"
    return client.post(
        f"/ui/schemas/{entity}/apply", data=data, headers=headers, follow_redirects=False
    )


def post_field(client: TestClient, entity: str, data: dict[str, str]) -> Any:
    """Open the add-field form of `entity` and submit it with `data`."""
    form = client.get(f"/ui/schemas/{entity}/fields/new")
    return client.post(
        f"/ui/schemas/{entity}/fields/new", data={"base": hidden(form.text, "base"), **data}
    )


def count(registry: Registry, sql: str) -> int:
    with registry.db.engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def revisions(registry: Registry) -> list[str]:
    folder = registry.settings.migrations_path / "versions"
    return sorted(p.name for p in folder.glob("*.py"))


def nothing_applied(registry: Registry, entity: str, before: list[str]) -> None:
    assert revisions(registry) == before
    assert not (edited_schema_dir(registry.settings.data_dir) / f"{entity}.json").exists()
    assert count(registry, f"SELECT count(*) FROM {HISTORY_TABLE}") == 0


# -- viewing -------------------------------------------------------------------------------
def test_every_schema_is_listed_and_viewable(app_client: TestClient):
    home = app_client.get("/ui/")
    assert 'href="/ui/schemas"' in home.text
    listing = app_client.get("/ui/schemas")
    assert listing.status_code == 200
    for name in ("facility", "program", "recipient", "vaccinator", "vaccine"):
        assert f'href="/ui/schemas/{name}"' in listing.text
    page = app_client.get("/ui/schemas/vaccine")
    assert page.status_code == 200
    assert 'href="/ui/schemas/vaccine/fields/manufacturer"' in page.text
    assert "&#34;x-registry&#34;" in page.text or "&quot;x-registry&quot;" in page.text
    assert "Not changed in this editor yet" in page.text
    assert app_client.get("/ui/schemas/nothing").status_code == 404
    assert app_client.get("/ui/schemas/vaccine/fields/nothing").status_code == 404
    assert app_client.get("/ui/schemas/vaccine/history/1").status_code == 404


def test_pages_are_translated_and_every_input_has_a_label(app_client: TestClient):
    for path in ("/ui/schemas/vaccine/fields/new", "/ui/schemas/new", "/ui/schemas/vaccine/json"):
        page = app_client.get(path, params={"lang": "hi"})
        assert '<html lang="hi">' in page.text
        ids = set(re.findall(r'<(?:input|select|textarea) [^>]*id="([^"]+)"', page.text))
        labelled = set(re.findall(r'<label for="([^"]+)"', page.text))
        assert ids and ids - labelled == set(), path
    assert "Ajouter un champ" in app_client.get("/ui/schemas/vaccine?lang=fr").text


# -- adding and editing --------------------------------------------------------------------
def test_a_field_added_in_the_form_is_previewed_then_served_after_confirming(
    app_client: TestClient, registry: Registry
):
    before = revisions(registry)
    preview = post_field(app_client, "vaccine", STORAGE_FIELD)
    assert preview.status_code == 200, preview.text
    assert "add column" in preview.text and "storage" in preview.text
    assert 'id="confirm"' in preview.text
    # previewing applied nothing
    assert revisions(registry) == before
    assert "storage" not in registry.services["vaccine"].entity.fields
    form_before = app_client.get("/ui/vaccine/new").text
    assert 'name="storage"' not in form_before  # cached form of the old shape

    done = confirm(app_client, preview.text, "vaccine")
    assert done.status_code == 303
    assert done.headers["location"] == "/ui/schemas/vaccine?notice=schema_saved"
    assert "Schema saved" in app_client.get(done.headers["location"]).text

    created = app_client.post(
        "/api/v1/vaccine",
        json={
            "code": "NEW-1",
            "name": "Newvax",
            "manufacturer": "M",
            "status": "Active",
            "storage": "frozen",
        },
    )
    assert created.status_code == 201, created.text
    assert created.json()["storage"] == "frozen"
    bad = app_client.post(
        "/api/v1/vaccine",
        json={
            "code": "NEW-2",
            "name": "Other",
            "manufacturer": "M",
            "status": "Active",
            "storage": "warm",
        },
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "/storage"
    found = app_client.get("/api/v1/vaccine", params={"storage": "frozen"}).json()["items"]
    assert [r["code"] for r in found] == ["NEW-1"]
    form = app_client.get("/ui/vaccine/new").text
    assert 'name="storage"' in form and ">frozen<" in form
    spec = app_client.get("/openapi.json").json()
    assert "storage" in spec["components"]["schemas"]["VaccineInput"]["properties"]
    params = spec["paths"]["/api/v1/vaccine"]["get"]["parameters"]
    assert any(p["name"] == "storage" for p in params)
    # the revision is an ordinary one: the CLI sees a database matching the schemas
    assert len(revisions(registry)) == len(before) + 1
    plan = migrations.plan(registry.db, registry.schemas, registry.settings.migrations_path)
    assert plan.up_to_date


def test_a_restart_serves_the_edited_schema(app_client: TestClient, registry: Registry):
    preview = post_field(app_client, "vaccine", STORAGE_FIELD)
    assert confirm(app_client, preview.text, "vaccine").status_code == 303
    again = open_registry(registry.settings)  # what the next start loads
    try:
        assert "storage" in again.schemas["vaccine"].fields
        assert again.schemas["vaccine"].source.endswith("ui-schemas/vaccine.json")
        assert any("edited in the web UI" in str(w) for w in again.schemas.warnings)
    finally:
        again.close()


def test_editing_a_field_keeps_its_other_keywords(app_client: TestClient, registry: Registry):
    page = app_client.get("/ui/schemas/vaccine/fields/name")
    assert 'value="Name"' in page.text
    form = {
        "base": hidden(page.text, "base"),
        "title": "Product name",
        "description": "",
        "type": "string",
        "format": "",
        "enum": "",
        "required": "on",
        "unique": "on",
    }
    preview = app_client.post("/ui/schemas/vaccine/fields/name", data=form)
    assert "No table changes" in preview.text
    assert confirm(app_client, preview.text, "vaccine").status_code == 303
    name = registry.schemas["vaccine"].fields["name"]
    assert name.title == "Product name" and name.max_length == 200  # maxLength kept
    assert "Product name" in app_client.get("/ui/vaccine/new").text
    assert revisions(registry) == ["0001_baseline.py"]  # validation-only: no revision


def test_json_edit_applies_and_the_history_keeps_every_version(
    app_client: TestClient, registry: Registry
):
    page = app_client.get("/ui/schemas/program/json")
    text = html.unescape(re.search(r"<textarea [^>]*>(.*?)</textarea>", page.text, re.S)[1])
    doc = json.loads(text)
    doc["properties"]["budget"] = {"type": "number", "minimum": 0}
    preview = app_client.post(
        "/ui/schemas/program/json",
        data={"schema": json.dumps(doc), "base": hidden(page.text, "base"), "_action": "preview"},
    )
    assert "add column" in preview.text
    assert '<span class="add">+    &#34;budget&#34;' in preview.text
    assert confirm(app_client, preview.text, "program", **{"x-user": "ravi"}).status_code == 303

    versions = app_client.get("/ui/schemas/program").text
    assert "Version 1" in versions and "Version 2" in versions
    assert "ravi" in versions and "(not signed in)" in versions  # the file's version: no actor
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT', versions)
    first = app_client.get("/ui/schemas/program/history/1")
    assert first.status_code == 200 and "budget" not in first.text
    assert str(default_schema_dir() / "program.json") in first.text
    second = app_client.get("/ui/schemas/program/history/2")
    assert "budget" in second.text and "ravi" in second.text and "0002" in second.text
    assert '<span class="add">' in second.text  # the diff from version 1
    with registry.db.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT version, actor, origin, revision FROM {HISTORY_TABLE} ORDER BY version"
            )
        ).all()
    assert [(r[0], r[1], r[2] == "ui") for r in rows] == [(1, None, False), (2, "ravi", True)]
    assert rows[1][3].startswith("0002")


def test_a_new_entity_gets_its_api_and_pages(app_client: TestClient, registry: Registry):
    preview = app_client.post("/ui/schemas/new", data=BATCH_FORM)
    assert preview.status_code == 200, preview.text
    assert "create table" in preview.text and "batch" in preview.text
    assert app_client.get("/api/v1/batch").status_code == 404
    assert confirm(app_client, preview.text, "batch").status_code == 303

    created = app_client.post("/api/v1/batch", json={"lot": "L-1"})
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert app_client.post("/api/v1/batch", json={"lot": "L-1"}).status_code == 409  # unique
    assert app_client.patch(f"/api/v1/batch/{rid}", json={"lot": "L-2"}).json()["lot"] == "L-2"
    assert app_client.get("/api/v1/batch").json()["items"][0]["lot"] == "L-2"
    assert app_client.delete(f"/api/v1/batch/{rid}").status_code == 204
    assert "/api/v1/batch/{id}" in app_client.get("/openapi.json").json()["paths"]
    assert any(e["name"] == "batch" for e in app_client.get("/api/v1").json()["entities"])

    made = app_client.post("/ui/batch/new", data={"lot": "L-9"}, follow_redirects=False)
    assert made.status_code == 303
    detail = app_client.get(made.headers["location"])
    assert "L-9" in detail.text and "Lot number" in detail.text
    assert "Vaccine batch" in app_client.get("/ui/").text


# -- refusals --------------------------------------------------------------------------------
def test_invalid_json_and_invalid_schemas_name_the_pointer_and_apply_nothing(
    app_client: TestClient, registry: Registry
):
    before = revisions(registry)
    base = hidden(app_client.get("/ui/schemas/vaccine/json").text, "base")
    broken = app_client.post(
        "/ui/schemas/vaccine/json", data={"schema": '{"type": "object",', "base": base}
    )
    assert broken.status_code == 422
    assert "not valid JSON: line 1 column 19" in broken.text
    assert "{&#34;type&#34;: &#34;object&#34;," in broken.text  # the input is kept

    doc = json.loads((default_schema_dir() / "vaccine.json").read_text())
    doc["properties"]["price"]["type"] = "money"
    bad = app_client.post(
        "/ui/schemas/vaccine/json", data={"schema": json.dumps(doc), "base": base}
    )
    assert bad.status_code == 422
    assert "<code>/properties/price/type</code>: not valid JSON Schema" in bad.text
    doc["properties"]["price"]["type"] = "number"
    doc["x-registry"]["searchable"] = ["name"]
    doc["x-registry"]["unique"].append("nothing")
    bad = app_client.post(
        "/ui/schemas/vaccine/json", data={"schema": json.dumps(doc), "base": base}
    )
    assert bad.status_code == 422
    assert "<code>/x-registry/searchable</code>: unknown setting" in bad.text
    assert "<code>/x-registry/unique/2</code>: field &#39;nothing&#39; does not exist" in bad.text

    applied = app_client.post(
        "/ui/schemas/vaccine/apply", data={"schema": json.dumps(doc), "base": base}
    )
    assert applied.status_code == 422 and "/x-registry/searchable" in applied.text
    checked = app_client.post("/ui/schemas/vaccine/check", data={"schema": json.dumps(doc)})
    assert checked.status_code == 200
    assert {e["pointer"] for e in checked.json()["errors"]} >= {"/x-registry/searchable"}
    assert app_client.post(
        "/ui/schemas/vaccine/check",
        data={"schema": (default_schema_dir() / "vaccine.json").read_text()},
    ).json() == {"ok": True, "errors": []}

    field = post_field(
        app_client,
        "vaccine",
        {**STORAGE_FIELD, "type": "integer", "format": "email", "enum": "1\ntwo"},
    )
    assert field.status_code == 422
    assert re.search(r'id="s-format"[^>]*aria-invalid="true"', field.text)
    assert "a format applies to text fields only" in field.text
    assert "&#39;two&#39; is not a whole number" in field.text
    assert 'value="storage"' in field.text  # the input is kept
    clash = post_field(app_client, "vaccine", {**STORAGE_FIELD, "name": "code"})
    assert clash.status_code == 422 and "there is a field &#39;code&#39; already" in clash.text
    for name in ("schemas", "vaccine", "9lives"):
        refused = app_client.post("/ui/schemas/new", data={**BATCH_FORM, "entity": name})
        assert refused.status_code == 422, name
    nothing_applied(registry, "vaccine", before)
    assert "searchable" not in json.dumps(registry.schemas["vaccine"].json_schema)


def test_destructive_changes_are_refused_with_the_reason(
    app_client: TestClient, registry: Registry
):
    before = revisions(registry)
    with_site = count(registry, 'SELECT count(*) FROM facility WHERE "websiteUrl" IS NOT NULL')
    assert with_site > 0
    page = app_client.get("/ui/schemas/facility/fields/websiteUrl")
    dropped = app_client.post(
        "/ui/schemas/facility/fields/websiteUrl",
        data={"base": hidden(page.text, "base"), "_remove": "1"},
    )
    assert dropped.status_code == 200
    assert "This change cannot be applied" in dropped.text
    assert f"{with_site} row(s) hold a value in websiteUrl" in dropped.text
    assert 'id="confirm"' not in dropped.text
    forced = confirm_anyway(app_client, dropped.text, "facility")
    assert forced.status_code == 409 and "drop column" in forced.text

    page = app_client.get("/ui/schemas/vaccine/fields/effectiveUntil")
    retyped = app_client.post(
        "/ui/schemas/vaccine/fields/effectiveUntil",
        data={"base": hidden(page.text, "base"), "type": "string", "title": "Protection"},
    )
    assert "change type" in retyped.text and "cannot be applied" in retyped.text
    assert confirm_anyway(app_client, retyped.text, "vaccine").status_code == 409

    required = post_field(app_client, "vaccine", {**STORAGE_FIELD, "required": "on"})
    assert "storage is a new required field" in required.text
    assert "cannot be applied" in required.text
    nothing_applied(registry, "facility", before)
    assert count(registry, 'SELECT count(*) FROM facility WHERE "websiteUrl" IS NOT NULL') == (
        with_site
    )


def confirm_anyway(client: TestClient, preview: str, entity: str) -> Any:
    """Post the refused change to the apply step directly (as a crafted request would)."""
    data = {"schema": hidden(preview, "schema"), "base": hidden(preview, "base")}
    return client.post(f"/ui/schemas/{entity}/apply", data=data, follow_redirects=False)


def test_a_stale_edit_is_a_clear_conflict(app_client: TestClient, registry: Registry):
    first = app_client.get("/ui/schemas/vaccine/fields/new")
    second = app_client.get("/ui/schemas/vaccine/fields/new")  # another admin, same moment
    preview = post_field(
        app_client, "vaccine", {**STORAGE_FIELD, "base": hidden(first.text, "base")}
    )
    assert confirm(app_client, preview.text, "vaccine").status_code == 303

    late = app_client.post(
        "/ui/schemas/vaccine/fields/new",
        data={"name": "shelfLife", "type": "integer", "base": hidden(second.text, "base")},
    )
    assert late.status_code == 409
    assert "Someone else changed this schema" in late.text
    assert "version 2, by asha" in late.text
    assert "shelfLife" in late.text  # the change is kept, in the JSON editor
    # a confirm posted with the old base (a preview page left open) is refused the same way
    stale_apply = app_client.post(
        "/ui/schemas/vaccine/apply",
        data={"schema": hidden(preview.text, "schema"), "base": hidden(first.text, "base")},
    )
    assert stale_apply.status_code == 409 and "Someone else changed" in stale_apply.text
    assert "shelfLife" not in registry.schemas["vaccine"].fields
    assert count(registry, f"SELECT count(*) FROM {HISTORY_TABLE}") == 2


def test_a_schema_saved_by_another_process_is_a_conflict(
    app_client: TestClient, registry: Registry
):
    base = hidden(app_client.get("/ui/schemas/vaccine/json").text, "base")
    folder = edited_schema_dir(registry.settings.data_dir)
    folder.mkdir(parents=True)
    doc = json.loads((default_schema_dir() / "vaccine.json").read_text())
    doc["title"] = "Vaccine (other worker)"
    (folder / "vaccine.json").write_text(json.dumps(doc))
    resp = app_client.post(
        "/ui/schemas/vaccine/json", data={"schema": json.dumps(doc), "base": base}
    )
    assert resp.status_code == 409 and "Restart this server" in resp.text


def test_a_failing_migration_leaves_nothing_behind(
    app_client: TestClient, registry: Registry, monkeypatch: pytest.MonkeyPatch
):
    before = revisions(registry)
    preview = post_field(app_client, "vaccine", STORAGE_FIELD)

    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(migrations, "apply_pending", broken)
    with pytest.raises(RuntimeError):
        confirm(app_client, preview.text, "vaccine")
    nothing_applied(registry, "vaccine", before)
    assert "storage" not in registry.schemas["vaccine"].fields
    insp = sa.inspect(registry.db.engine)
    assert "storage" not in {c["name"] for c in insp.get_columns("vaccine")}


def test_cross_site_posts_are_refused(app_client: TestClient, registry: Registry):
    preview = post_field(app_client, "vaccine", STORAGE_FIELD)
    resp = confirm(app_client, preview.text, "vaccine", origin="https://evil.example")
    assert resp.status_code == 403
    assert "storage" not in registry.schemas["vaccine"].fields


# -- precedence and reload, without HTTP -----------------------------------------------------
def test_the_editor_folder_is_loaded_last_and_replaces_files(tmp_path: Path):
    folder = edited_schema_dir(tmp_path)
    folder.mkdir(parents=True)
    doc = json.loads((default_schema_dir() / "vaccine.json").read_text())
    doc["properties"]["storage"] = {"type": "string"}
    (folder / "vaccine.json").write_text(json.dumps(doc))
    loaded = load_schemas([default_schema_dir()], edited=folder)
    assert "storage" in loaded["vaccine"].fields
    assert [str(w) for w in loaded.warnings if "edited in the web UI" in str(w)]
    assert "storage" not in load_schemas([default_schema_dir()])["vaccine"].fields
    absent = load_schemas([default_schema_dir()], edited=tmp_path / "none")
    assert "storage" not in absent["vaccine"].fields


def test_reload_with_the_same_schemas_changes_nothing(registry: Registry):
    calls: list[set[str]] = []
    registry.on_reload.append(calls.append)
    service = registry.services["vaccine"]
    assert registry.reload_schemas(registry.schemas) == set()
    assert calls == [set()]
    assert registry.services["vaccine"] is not service  # rebuilt, same shape
    assert registry.services["vaccine"].entity == service.entity
