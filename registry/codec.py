"""Between JSON records (what the API speaks) and table rows (what the database stores).

Dates travel as `YYYY-MM-DD`, date-times as RFC 3339 in UTC (`...Z`); a field stored as NULL is
left out of the record (null and absent are the same thing to the registry).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from generators.schema import EntitySchema
from generators.tables import SYSTEM_COLUMNS

#: column name -> API name for the system fields
API_NAME = {col: api for api, col in SYSTEM_COLUMNS.items()}


def new_id() -> str:
    """A UUID version 7 (RFC 9562): time-ordered, so new rows append to the primary-key index."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 random bits
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_datetime(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z`."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_datetime(value: str) -> datetime:
    """RFC 3339 (already format-checked) to an aware datetime."""
    dt = datetime.fromisoformat(value.replace("z", "Z"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


def to_column(kind: str, value: Any) -> Any:
    """One validated JSON value to what its column stores."""
    if value is None:
        return None
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "datetime":
        return parse_datetime(value)
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def from_column(kind: str, value: Any) -> Any:
    """One stored value back to JSON."""
    if value is None:
        return None
    if kind == "date":
        return value.isoformat()
    if kind == "datetime":
        return format_datetime(value)
    return value


class Codec:
    """Converts records of one entity to rows and back."""

    def __init__(self, entity: EntitySchema):
        self.entity = entity
        self.kinds = {name: f.kind for name, f in entity.fields.items()}
        self._convert = {n: k for n, k in self.kinds.items() if k in ("date", "datetime", "number")}
        self.hidden = frozenset(entity.internal)

    def to_row(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Data fields of a validated record to column values (every field, None when absent)."""
        row: dict[str, Any] = dict.fromkeys(self.kinds)
        conv = self._convert
        for name, value in record.items():
            kind = conv.get(name)
            row[name] = to_column(kind, value) if kind is not None else value
        return row

    def data(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The data fields of a row, as JSON (what merge-patch and audit compare)."""
        out: dict[str, Any] = {}
        conv = self._convert
        for name in self.kinds:
            value = row[name]
            if value is None:
                continue
            kind = conv.get(name)
            out[name] = from_column(kind, value) if kind is not None else value
        return out

    def to_record(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A whole row as the API returns it: `id`, data fields, then the `_` system fields."""
        out: dict[str, Any] = {"id": row["id"]}
        data = self.data(row)
        for name in self.hidden:
            data.pop(name, None)
        out.update(data)
        out["_version"] = row["_version"]
        out["_createdAt"] = format_datetime(row["_created_at"])
        out["_updatedAt"] = format_datetime(row["_updated_at"])
        if row["_created_by"] is not None:
            out["_createdBy"] = row["_created_by"]
        if row["_updated_by"] is not None:
            out["_updatedBy"] = row["_updated_by"]
        if row["_deleted_at"] is not None:
            out["_deletedAt"] = format_datetime(row["_deleted_at"])
        return out
