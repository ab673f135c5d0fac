"""The plugin system: one test per hook, the plugin manager, and the meta-tests that every hook
has a test and a docs entry."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from fastapi import APIRouter
from typer.testing import CliRunner

from open_registry.core import Settings, create_app, hookspecs
from open_registry.core.app import open_registry
from open_registry.core.hookspecs import hookimpl
from open_registry.core.plugins import describe, plugin_manager
from tests.authn import admin_client
from tests.conftest import FIXTURES

ROOT = Path(__file__).parents[2]
HOOKS = sorted(
    name
    for name in dir(hookspecs)
    if hasattr(getattr(hookspecs, name), f"{hookspecs.PROJECT}_spec")
)


class CountryPlugin:
    """A plugin as a country would write one."""

    def __init__(self, schema_dir: Path):
        self.schema_dir = schema_dir

    @hookimpl
    def register_schema_dirs(self, settings: Any) -> list[Path]:
        return [self.schema_dir]

    @hookimpl
    def register_formats(self) -> dict[str, Any]:
        return {"national-id": lambda v: bool(re.fullmatch(r"NID-\d{6}", v))}

    @hookimpl
    def register_routes(self, registry: Any) -> list[APIRouter]:
        router = APIRouter()

        @router.get("/api/v1/country/hello")
        def hello() -> dict[str, Any]:
            return {"entities": len(registry.schemas)}

        return [router]

    @hookimpl
    def register_commands(self, cli: typer.Typer) -> None:
        @cli.command("greet")
        def greet() -> None:
            typer.echo("hello from the plugin")

    @hookimpl
    def prepare_app(self, app: Any, registry: Any) -> None:
        @app.middleware("http")
        async def country_header(request: Any, call_next: Any) -> Any:
            response = await call_next(request)
            response.headers["X-Country"] = "Examplia"
            return response

    @hookimpl
    def lookup_person(self, identity: str, registry: Any) -> dict[str, Any] | None:
        return {"name": "Asha", "source": "country"} if identity == "NID-000001" else None


class FallbackLookup:
    @hookimpl
    def lookup_person(self, identity: str, registry: Any) -> dict[str, Any] | None:
        return {"name": "Unknown", "source": "fallback"}


@pytest.fixture
def country(settings: Settings, tmp_path: Path) -> Any:
    folder = tmp_path / "plugin_schemas"
    folder.mkdir()
    shutil.copy(FIXTURES / "schemas" / "cold_chain" / "cold_chain_equipment.json", folder)
    (folder / "citizen.json").write_text(
        json.dumps(
            {
                "type": "object",
                "required": ["nid"],
                "properties": {"nid": {"type": "string", "format": "national-id"}},
            }
        )
    )
    plugin = CountryPlugin(folder)
    reg = open_registry(settings, plugins=[plugin, FallbackLookup()])
    yield reg
    reg.close()


def test_register_schema_dirs_adds_entities(country: Any):
    assert "cold_chain_equipment" in country.schemas and "facility" in country.schemas


def test_register_formats_are_checked_on_write(country: Any):
    with admin_client(create_app(registry=country)) as c:
        bad = c.post("/api/v1/citizen", json={"nid": "12"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["keyword"] == "format"
        assert c.post("/api/v1/citizen", json={"nid": "NID-123456"}).status_code == 201


def test_register_routes_and_prepare_app(country: Any):
    with admin_client(create_app(registry=country)) as c:
        resp = c.get("/api/v1/country/hello")
        assert resp.json() == {"entities": len(country.schemas)}
        assert resp.headers["x-country"] == "Examplia"


def test_register_commands_adds_cli_commands(tmp_path: Path):
    app = typer.Typer()

    @app.command()
    def version() -> None:
        typer.echo("0")

    pm = plugin_manager(third_party=False, extra=[CountryPlugin(tmp_path)])
    pm.hook.register_commands(cli=app)
    result = CliRunner().invoke(app, ["greet"])
    assert result.exit_code == 0 and "hello from the plugin" in result.output


def test_lookup_person_first_answer_wins(country: Any):
    assert country.lookup_person("NID-000001")["source"] in ("country", "fallback")
    # pluggy calls the last registered first: the fallback answers everything
    assert country.lookup_person("NID-999999") == {"name": "Unknown", "source": "fallback"}


def test_builtin_plugins_come_from_entry_points():
    listed = {p["name"]: p for p in describe(plugin_manager(third_party=False))}
    assert listed["shipped_schemas"]["origin"].startswith("open-registry")
    assert listed["shipped_schemas"]["hooks"] == ["register_schema_dirs"]


def test_default_schemas_off_removes_the_shipped_entities(settings: Settings):
    reg = open_registry(
        settings.with_(default_schemas=False, schema_dirs=(FIXTURES / "divoc" / "registry",)),
        create_tables=False,
    )
    assert "facility" not in reg.schemas and "Facility" in reg.schemas
    reg.close()


def test_a_misspelled_hook_fails_loudly():
    class Typo:
        @hookimpl
        def after_wirte(self, event: Any) -> None:  # misspelled on purpose
            pass

    with pytest.raises(Exception, match="after_wirte"):
        plugin_manager(third_party=False, extra=[Typo()])


def test_registry_plugins_command_lists_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from open_registry.cli.main import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["plugins", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 0 and "shipped_schemas" in result.output


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str):
    here = Path(__file__)
    tests = [p for p in (ROOT / "tests").rglob("test_*.py")]
    uses = [
        p
        for p in tests
        if hook in p.read_text() and (p != here or f"def {hook}(" in here.read_text())
    ]
    assert uses, f"hook {hook} has no test"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook: str):
    docs = (ROOT / "docs" / "plugins.md").read_text()
    assert f"`{hook}" in docs, f"docs/plugins.md does not document {hook}"


def test_every_hook_has_a_one_line_docstring():
    for hook in HOOKS:
        doc = getattr(hookspecs, hook).__doc__ or ""
        assert doc and "\n" not in doc.strip(), hook


class QuotaPlugin:
    """Refuses a third vaccine: a `before_write` check that reads inside the write transaction."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []

    @hookimpl
    def before_write(
        self,
        entity: str,
        action: str,
        record: dict[str, Any],
        previous: Any,
        connection: Any,
        registry: Any,
    ) -> None:
        from open_registry.core import Conflict

        self.seen.append((entity, action, previous and previous["name"]))
        table = registry.db.tables["vaccine"]
        count = connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        if entity == "vaccine" and action == "create" and count >= 2:
            raise Conflict("at most two vaccines", fields=["code"])


def test_before_write_can_refuse_a_write(settings: Settings):
    plugin = QuotaPlugin()
    reg = open_registry(settings, plugins=[plugin])
    try:
        with admin_client(create_app(registry=reg)) as c:
            body = {"name": "A", "manufacturer": "M", "status": "Active"}
            first = c.post("/api/v1/vaccine", json={**body, "code": "V1"})
            assert (
                c.post("/api/v1/vaccine", json={**body, "code": "V2", "name": "B"}).status_code
                == 201
            )
            refused = c.post("/api/v1/vaccine", json={**body, "code": "V3", "name": "C"})
            assert refused.status_code == 409 and "at most two" in refused.json()["detail"]
            assert c.get("/api/v1/vaccine?count=true").json()["total"] == 2  # nothing half-written
            vid = first.json()["id"]
            assert c.patch(f"/api/v1/vaccine/{vid}", json={"name": "A2"}).status_code == 200
        assert ("vaccine", "update", "A") in plugin.seen
    finally:
        reg.close()


class CheckedImportsPlugin(QuotaPlugin):
    """The same quota, asked to apply to bulk imports too (`register_write_checks`)."""

    @hookimpl
    def register_write_checks(self, registry: Any) -> list[str]:
        return ["vaccine"]


@pytest.mark.parametrize("checked", [True, False])
def test_register_write_checks_has_imports_checked_row_by_row(
    settings: Settings, tmp_path: Path, checked: bool
):
    from open_registry.core.imports.importer import import_file

    plugin = CheckedImportsPlugin() if checked else QuotaPlugin()
    reg = open_registry(settings, plugins=[plugin])
    try:
        path = tmp_path / "vaccines.csv"
        path.write_text(
            "code,name,manufacturer,status\n"
            + "".join(f"V{i},Vaccine {i},M,Active\n" for i in range(1, 5))
        )
        service = reg.services["vaccine"]
        assert service.checks_imports is checked
        result = import_file(service, path, actor="user:test")
        if not checked:  # the bulk path: the quota is not asked
            assert (result.inserted, result.failed) == (4, 0)
            assert plugin.seen == []
            return
        assert (result.inserted, result.failed) == (2, 2)
        assert [(e.row, e.keyword, e.message) for e in result.errors] == [
            (3, "conflict", "at most two vaccines"),
            (4, "conflict", "at most two vaccines"),
        ]
        # an upsert passes the stored record as `previous`
        path.write_text("code,name,manufacturer,status\nV1,Renamed,M,Active\n")
        result = import_file(service, path, actor="user:test", upsert_on="code")
        assert (result.updated, result.failed) == (1, 0)
        assert ("vaccine", "update", "Vaccine 1") in plugin.seen
    finally:
        reg.close()


class StarsPlugin:
    """A field type as a plugin: `format: rating` fields get a star widget drawn by its template."""

    def __init__(self, folder: Path):
        self.folder = folder

    @hookimpl
    def register_templates(self) -> list[Path]:
        return [self.folder]

    @hookimpl
    def lookup_widget(self, path: str, schema: dict[str, Any]) -> str | None:
        return "stars" if schema.get("format") == "rating" else None

    @hookimpl
    def register_formats(self) -> dict[str, Any]:
        return {"rating": lambda v: v in ("1", "2", "3", "4", "5")}


def test_register_templates_and_lookup_widget_draw_a_plugin_field_type(
    settings: Settings, tmp_path: Path
):
    widgets = tmp_path / "templates" / "widgets"
    widgets.mkdir(parents=True)
    (widgets / "stars.html").write_text(
        '<span class="stars" id="{{ id }}-stars">{% for n in range(1, 6) %}'
        '<input type="radio" name="{{ name }}" value="{{ n }}"'
        "{% if value == n|string %} checked{% endif %}>{% endfor %}</span>\n"
    )
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "review.json").write_text(
        json.dumps(
            {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "title": "Review",
                "properties": {
                    "title": {"type": "string"},
                    "score": {"type": "string", "format": "rating"},
                },
            }
        )
    )
    reg = open_registry(
        settings.with_(schema_dirs=(schemas,)), plugins=[StarsPlugin(tmp_path / "templates")]
    )
    try:
        with admin_client(create_app(registry=reg)) as c:
            page = c.get("/ui/review/new").text
            assert 'class="stars" id="f-score-stars"' in page and page.count('name="score"') == 5
            assert 'name="title"' in page and 'type="text"' in page  # others keep theirs
            assert c.post("/api/v1/review", json={"score": "9"}).status_code == 422
    finally:
        reg.close()


def test_plugin_settings_are_converted_with_errors_naming_the_setting():
    from open_registry.core.plugin_settings import (
        PluginSettingError,
        setting_bool,
        setting_int,
        setting_list,
    )

    assert setting_bool("plugins.x.on", "Yes") is True and setting_bool("plugins.x.on", 0) is False
    assert setting_int("plugins.x.n", "7", minimum=1) == 7
    assert setting_list("a, b,,c") == ("a", "b", "c") and setting_list(["a"]) == ("a",)
    with pytest.raises(PluginSettingError, match=r"plugins\.x\.on must be true or false"):
        setting_bool("plugins.x.on", "maybe")
    with pytest.raises(PluginSettingError, match=r"plugins\.x\.n must be at least 1, got 0"):
        setting_int("plugins.x.n", "0", minimum=1)
    with pytest.raises(PluginSettingError, match="must be a whole number"):
        setting_int("plugins.x.n", "two")


def test_registry_record_is_none_for_what_does_not_exist(registry):
    assert registry.record("no_such_entity", "x") is None
    assert registry.record("vaccine", None) is None
    assert registry.record("vaccine", "00000000-0000-0000-0000-000000000000") is None
    made = registry.services["vaccine"].create(
        {"code": "V9", "name": "Nine", "manufacturer": "M", "status": "Active"}, actor="t"
    )
    assert registry.record("vaccine", made["id"])["code"] == "V9"


def test_trace_hooks_logs_each_call_without_record_values(
    settings: Settings, caplog: pytest.LogCaptureFixture
):
    from open_registry.core.app import open_registry

    reg = open_registry(settings.with_(trace_hooks=True))
    try:
        with caplog.at_level("INFO", logger="registry.hooks"):
            vaccine = json.loads((ROOT / "registry" / "demo" / "vaccine.json").read_text())[0]
            vaccine.pop("id")
            vaccine["name"] = "Zanzibar-Quokka Serum"
            reg.services["vaccine"].create(vaccine, actor="t")
    finally:
        reg.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "registry.hooks"]
    assert any(
        line.startswith("hook before_write(entity='vaccine', action='create', record={")
        for line in lines
    ), lines
    assert any(line.startswith("hook before_write returned [0 items]") for line in lines), lines
    assert not any("Zanzibar-Quokka" in line for line in lines)


def test_without_the_switch_no_hook_call_is_logged(
    registry: Any, caplog: pytest.LogCaptureFixture
):
    with caplog.at_level("INFO", logger="registry.hooks"):
        registry.pm.hook.register_write_checks(registry=registry)
    assert [r for r in caplog.records if r.name == "registry.hooks"] == []


def test_plugin_state_is_made_once_per_registry_and_kept_apart_by_key(registry: Any):
    import threading

    from open_registry.core import StateKey

    made: list[int] = []
    key: StateKey[list[int]] = StateKey("counter")
    other: StateKey[list[int]] = StateKey("counter")  # same name, another key

    def make() -> list[int]:
        made.append(1)
        return [len(made)]

    threads = [
        threading.Thread(target=lambda: registry.state(key, make)) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made == [1]
    assert registry.state(key, make) == [1]
    assert registry.state(other, make) == [2]
