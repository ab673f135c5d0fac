"""OpenAPI 3.1 shows each entity's real schema; /docs works offline."""

from __future__ import annotations

from typing import Any

from open_registry.generators.openapi import component_name


def test_openapi_is_3_1_with_real_entity_schemas(client: Any, registry: Any):
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    schemas = spec["components"]["schemas"]
    for entity in registry.schemas:
        comp = component_name(entity.name)  # facility_programme -> FacilityProgramme
        create = spec["paths"][f"/api/v1/{entity.name}"]["post"]
        ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{comp}Input"
        assert schemas[f"{comp}Input"]["properties"] == entity.json_schema["properties"]
        assert schemas[f"{comp}Input"].get("required", []) == entity.json_schema.get("required", [])
        record = schemas[comp]
        assert {"id", "_version", "_createdAt"} <= set(record["properties"])
        read = spec["paths"][f"/api/v1/{entity.name}/{{id}}"]["get"]
        assert (
            read["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            == f"#/components/schemas/{comp}"
        )
        assert "422" in create["responses"] and "409" in create["responses"]
        params = {p["name"] for p in spec["paths"][f"/api/v1/{entity.name}"]["get"]["parameters"]}
        assert {"limit", "cursor", "sort"} <= params
        assert not params & set(entity.private)


def test_facility_input_schema_is_not_a_generic_object(client: Any):
    spec = client.get("/openapi.json").json()
    facility = spec["components"]["schemas"]["FacilityInput"]
    assert facility["properties"]["category"]["enum"] == ["GOVT", "PRIVATE"]
    assert facility["properties"]["address"]["properties"]["district"]["type"] == "string"
    assert facility["additionalProperties"] is False


def test_docs_page_uses_packaged_assets_only(client: Any):
    html = client.get("/docs").text
    assert "/docs/assets/swagger-ui-bundle.js" in html
    assert "cdn." not in html and "https://" not in html.split("<body>")[1].split("</body>")[
        0
    ].replace("https://fastapi", "")
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
