"""Between JSON records (what the API speaks) and table rows (what the database stores).

Dates travel as `YYYY-MM-DD`, date-times as RFC 3339 in UTC (`...Z`); a field stored as NULL is
left out of the record (null and absent are the same thing to the registry). Private fields are
sealed on the way in and opened on the way out (`registry.crypto`), with their blind index.
"""

from __future__ import annotations

import os
import time
import unicodedata
import uuid
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from open_registry.core.crypto import FieldCipher
from open_registry.core.errors import Invalid
from open_registry.generators.columns import SYSTEM_COLUMNS, blind_index_column, blind_indexed
from open_registry.generators.schema import EntitySchema

#: a row by column name: a dict, or SQLAlchemy's `RowMapping` (from `.mappings()`), whose keys
#: may also be column objects, so that a type checker takes it for no `Mapping[str, Any]`
RowLike = Mapping[Any, Any]

#: column name -> API name for the system fields
API_NAME = {col: api for api, col in SYSTEM_COLUMNS.items()}

#: the whole numbers an integer column (BIGINT, SQLite's INTEGER) holds: signed 64 bits
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT64_RANGE = f"{INT64_MIN}..{INT64_MAX}"


def fits_int64(value: int | float) -> bool:
    """Whether a whole number (an int, or a float with no fraction) fits an integer column."""
    return INT64_MIN <= value <= INT64_MAX


def new_id() -> str:
    """A UUID version 7 (RFC 9562): time-ordered, so new rows append to the primary-key index."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 random bits
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return str(uuid.UUID(int=value))


def camel(name: str) -> str:
    """`snake_case` as `camelCase` (a system table's column as a JSON key)."""
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


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


def json_value(kind: str, value: Any) -> Any:
    """A validated JSON value as the registry reads it back (date-times in UTC, numbers float)."""
    if value is None or kind not in ("datetime", "number"):
        return value
    return from_column(kind, to_column(kind, value))


def blind_input(kind: str, value: Any) -> Any:
    """What the blind index of a value is computed over: its JSON form, text in NFC."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    value = json_value(kind, value)
    if isinstance(value, str):
        return unicodedata.normalize("NFC", value)
    return value


class Codec:
    """Converts records of one entity to rows and back."""

    def __init__(self, entity: EntitySchema, cipher: FieldCipher | None = None):
        self.entity = entity
        self.kinds = {name: f.kind for name, f in entity.fields.items()}
        self.hidden = frozenset(entity.internal)
        self.private = frozenset(entity.private)
        if self.private and cipher is None:
            raise ValueError(f"{entity.name} has private fields: a cipher is needed")
        self.cipher = cipher
        #: private field -> its blind index column
        self.blind = {f: blind_index_column(f) for f in blind_indexed(entity)}
        #: column -> the field it serves (blind index columns -> their field)
        self.field_of_column = {c: f for f, c in self.blind.items()}
        self._convert = {
            n: k
            for n, k in self.kinds.items()
            if k in ("date", "datetime", "number") and n not in self.private
        }
        #: integer columns (BIGINT): what goes in must fit 64 bits (JSON Schema's "integer" has
        #: no bound, and it takes 1e19 for one)
        self._integers = frozenset(
            n for n, k in self.kinds.items() if k == "integer" and n not in self.private
        )
        self._empty = dict.fromkeys([*self.kinds, *self.blind.values()])

    def blind_value(self, name: str, value: Any) -> str:
        """The blind index of `value` (a record value or a search value) for field `name`."""
        assert self.cipher is not None
        return self.cipher.blind(name, blind_input(self.kinds[name], value))

    def to_row(self, record: Mapping[str, Any], record_id: str) -> dict[str, Any]:
        """Data fields of a validated record to column values (every field, None when absent);
        private values sealed for record `record_id`, with their blind index."""
        row = dict(self._empty)
        conv = self._convert
        private = self.private
        integers = self._integers
        out_of_range: list[str] = []
        for name, value in record.items():
            if name in integers and value is not None:
                value = self._whole(name, value, out_of_range)
            if name in private:
                if value is None:
                    continue
                value = json_value(self.kinds[name], value)
                row[name] = self.cipher.seal(name, record_id, value)  # type: ignore[union-attr]
                if name in self.blind:
                    row[self.blind[name]] = self.blind_value(name, value)
                continue
            kind = conv.get(name)
            row[name] = to_column(kind, value) if kind is not None else value
        if out_of_range:
            raise Invalid(
                f"{len(out_of_range)} field{'s' if len(out_of_range) != 1 else ''} failed "
                "validation",
                errors=[
                    {
                        "pointer": f"/{name}",
                        "message": f"{name!r} must be a whole number in {INT64_RANGE} (64 bits)",
                        "keyword": "maximum",
                    }
                    for name in out_of_range
                ],
            )
        return row

    @staticmethod
    def _whole(name: str, value: Any, out_of_range: list[str]) -> Any:
        """A validated integer field's value as its column takes it: an int (`5.0` is 5); a
        value beyond 64 bits is noted in `out_of_range` (the caller refuses the record)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value  # not a number: the validator has said so already
        if not fits_int64(value):
            out_of_range.append(name)
            return None
        return int(value) if isinstance(value, float) and value.is_integer() else value

    def normalised(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A record as `data(to_row(record))` would give it back, without sealing anything."""
        return {
            name: json_value(self.kinds[name], value)
            for name, value in record.items()
            if value is not None and name in self.kinds
        }

    def data(self, row: RowLike) -> dict[str, Any]:
        """The data fields of a row, as JSON (what merge-patch and audit compare)."""
        out: dict[str, Any] = {}
        conv = self._convert
        private = self.private
        for name in self.kinds:
            value = row[name]
            if value is None:
                continue
            if name in private:
                out[name] = self.cipher.open(name, row["id"], value)  # type: ignore[union-attr]
                continue
            kind = conv.get(name)
            out[name] = from_column(kind, value) if kind is not None else value
        return out

    def to_record(self, row: RowLike) -> dict[str, Any]:
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
