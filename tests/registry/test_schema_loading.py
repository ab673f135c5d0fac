"""Schema folders at start-up: a new file is served with no code; a broken one stops start-up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from open_registry.core import Settings, StartupError, create_app
from open_registry.core.app import open_registry
from tests.authn import admin_client
from tests.conftest import FIXTURES

COLD_CHAIN = FIXTURES / "schemas" / "cold_chain"


def test_a_new_schema_file_is_served_after_a_restart(settings: Settings, tmp_path: Path):
    folder = tmp_path / "schemas"
    folder.mkdir()
    # first start: the shipped entities only, with demo data
    reg = open_registry(settings.with_(schema_dirs=(folder,), demo_data=True))
    with admin_client(create_app(registry=reg)) as c:
        assert c.get("/api/v1/cold_chain_equipment").status_code == 404
    reg.close()

    shutil.copy(COLD_CHAIN / "cold_chain_equipment.json", folder)
    reg = open_registry(settings.with_(schema_dirs=(folder,)))
    with admin_client(create_app(registry=reg)) as c:
        fac = c.get("/api/v1/facility", params={"limit": 1}).json()["items"][0]
        body = {
            "facilityCode": fac["code"],
            "serialNumber": "SN-1",
            "model": "Vestfrost",
            "kind": "ILR",
            "installedOn": "2025-03-01",
            "capacityLitres": 120,
            "location": {"room": "Store", "floor": 0},
            "temperatureLog": [{"at": "2026-01-01T08:00:00Z", "celsius": 4.5}],
        }
        created = c.post("/api/v1/cold_chain_equipment", json=body)
        assert created.status_code == 201, created.text
        # composite unique key
        dup = c.post("/api/v1/cold_chain_equipment", json=body)
        assert dup.status_code == 409 and dup.json()["fields"] == ["facilityCode", "serialNumber"]
        other = c.post("/api/v1/cold_chain_equipment", json=body | {"serialNumber": "SN-2"})
        assert other.status_code == 201
        # enum, date, reference and nested array errors, all at once
        bad = c.post(
            "/api/v1/cold_chain_equipment",
            json=body
            | {
                "serialNumber": "SN-3",
                "kind": "fridge",
                "installedOn": "2025-02-30",
                "temperatureLog": [{"at": "yesterday", "celsius": 4}],
            },
        )
        assert {e["pointer"] for e in bad.json()["errors"]} == {
            "/kind",
            "/installedOn",
            "/temperatureLog/0/at",
        }
        missing_ref = c.post(
            "/api/v1/cold_chain_equipment",
            json=body | {"serialNumber": "SN-4", "facilityCode": "NOPE"},
        )
        assert missing_ref.json()["errors"][0]["keyword"] == "reference"
        # search
        found = c.get(
            "/api/v1/cold_chain_equipment",
            params={
                "kind": "ILR",
                "installedOn[gte]": "2025-01-01",
                "location.room": "Store",
                "sort": "-serialNumber",
            },
        ).json()
        assert [r["serialNumber"] for r in found["items"]] == ["SN-2", "SN-1"]
        # OpenAPI
        spec = c.get("/openapi.json").json()
        comp = spec["components"]["schemas"]["ColdChainEquipmentInput"]
        assert comp["properties"]["kind"]["enum"] == [
            "ILR",
            "deep freezer",
            "cold box",
            "solar fridge",
        ]
        assert "/api/v1/cold_chain_equipment/{id}" in spec["paths"]
    reg.close()


def test_a_broken_schema_file_stops_start_up_naming_file_pointer_and_reason(
    settings: Settings, tmp_path: Path
):
    folder = tmp_path / "schemas"
    folder.mkdir()
    doc = json.loads((COLD_CHAIN / "cold_chain_equipment.json").read_text())
    doc["properties"]["capacityLitres"]["type"] = "litres"
    doc["x-registry"]["indexed"].append("colour")
    (folder / "cold_chain_equipment.json").write_text(json.dumps(doc))
    (folder / "broken.json").write_text("{ not json")
    with pytest.raises(StartupError) as err:
        open_registry(settings.with_(schema_dirs=(folder,)))
    text = str(err.value)
    assert "cold_chain_equipment.json: /properties/capacityLitres/type:" in text
    assert "broken.json: /: not valid JSON: line 1" in text


def test_reference_to_an_unknown_entity_stops_start_up(settings: Settings, tmp_path: Path):
    folder = tmp_path / "schemas"
    folder.mkdir()
    shutil.copy(COLD_CHAIN / "cold_chain_equipment.json", folder)
    with pytest.raises(StartupError, match="references unknown entity 'facility'"):
        open_registry(settings.with_(schema_dirs=(folder,), default_schemas=False))


def test_a_changed_schema_is_reported_not_patched(
    settings: Settings, tmp_path: Path, registry: Any
):
    registry.close()  # the fixture created the shipped tables
    folder = tmp_path / "schemas"
    folder.mkdir()
    doc = json.loads((Path(__file__).parents[2] / "entity_schemas" / "vaccine.json").read_text())
    doc["properties"]["storageTemperature"] = {"type": "number"}
    del doc["properties"]["price"]
    for spec in doc["x-registry"]["i18n"].values():  # and its translations
        spec["fields"].pop("price", None)
    (folder / "vaccine.json").write_text(json.dumps(doc))
    with pytest.raises(StartupError) as err:
        open_registry(settings.with_(schema_dirs=(folder,)))
    text = str(err.value)
    assert "add column vaccine: storageTemperature" in text
    assert "DESTRUCTIVE drop column vaccine: price is no longer in the schema" in text
    assert "registry migrate" in text


def test_an_implementer_schema_overrides_the_shipped_one(settings: Settings, tmp_path: Path):
    folder = tmp_path / "schemas"
    folder.mkdir()
    doc = json.loads((Path(__file__).parents[2] / "entity_schemas" / "vaccine.json").read_text())
    doc["title"] = "Our vaccine"
    (folder / "vaccine.json").write_text(json.dumps(doc))
    reg = open_registry(settings.with_(schema_dirs=(folder,)))
    assert reg.schemas["vaccine"].title == "Our vaccine"
    assert reg.schemas["vaccine"].source == str(folder / "vaccine.json")
    reg.close()


def test_settings_come_from_file_then_environment(tmp_path: Path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "registry.toml").write_text(
        'schema_dirs = ["schemas"]\npage_size = 20\ntitle = "Examplia"\n'
    )
    s = Settings.load(
        environ={"REGISTRY_PAGE_SIZE": "30"}, settings_file=tmp_path / "registry.toml"
    )
    assert s.schema_dirs == ((tmp_path / "schemas").resolve(),)
    assert s.page_size == 30 and s.title == "Examplia"
    env = Settings.load(
        environ={
            "REGISTRY_DATABASE_URL": "postgres://u@h/db",
            "REGISTRY_SETTINGS": str(tmp_path / "none.toml"),
        }
    )
    assert env.sqlalchemy_url == "postgresql+psycopg://u@h/db"
    with pytest.raises(ValueError, match="unknown setting 'colour'"):
        Settings.load(environ={}, settings_file=_write(tmp_path / "bad.toml", 'colour = "red"\n'))
    with pytest.raises(ValueError, match="must be a whole number"):
        Settings.load(
            environ={"REGISTRY_PAGE_SIZE": "many"}, settings_file=tmp_path / "registry.toml"
        )


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_plugin_settings_come_from_tables_and_environment(tmp_path: Path):
    path = _write(
        tmp_path / "registry.toml", '[plugins.certificates]\nissuer = "did:web:a.example"\n'
    )
    s = Settings.load(
        environ={"REGISTRY_PLUGINS__CERTIFICATES__SUITE": "Ed25519Signature2020"},
        settings_file=path,
    )
    assert s.plugins == {
        "certificates": {"issuer": "did:web:a.example", "suite": "Ed25519Signature2020"}
    }
    with pytest.raises(ValueError, match="must be tables"):
        Settings.load(environ={}, settings_file=_write(tmp_path / "bad.toml", "plugins = 3\n"))


def test_a_folder_read_again_is_parsed_once_and_a_changed_file_again(tmp_path: Path):
    from open_registry.core.schemas.loading import default_schema_dir, read_folder

    folder = tmp_path / "schemas"
    shutil.copytree(default_schema_dir(), folder)
    first, issues = read_folder(folder)
    again, _ = read_folder(folder)
    assert issues == [] and [e.name for e in again] == [e.name for e in first]
    assert all(a is b for a, b in zip(first, again, strict=True))  # the parse was reused
    again.clear()  # the caller's list is its own
    assert len(read_folder(folder)[0]) == len(first)

    doc = json.loads((folder / "vaccine.json").read_text())
    doc["title"] = "Vaccine (edited)"
    (folder / "vaccine.json").write_text(json.dumps(doc))
    edited = {e.name: e for e in read_folder(folder)[0]}
    assert edited["vaccine"].title == "Vaccine (edited)"
    (folder / "vaccine.json").write_text('{"type": ')
    broken, problems = read_folder(folder)
    assert "vaccine" not in {e.name for e in broken}
    assert any("not valid JSON" in p.message for p in problems)
