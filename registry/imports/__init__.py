"""Bulk import and export of records: CSV and JSON Lines readers, the importer and its API."""
