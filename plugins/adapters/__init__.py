"""Built-in adapters to the systems a country may already run: citizen and master-data
registries (generic HTTP/JSON, FHIR R4, DHIS2), a document vault, SMS and email, webhooks.

Each adapter is its own plugin (entry point in pyproject.toml), configured by its
`[plugins.<name>]` settings table and idle without one. See docs/integrations.md.
"""
