"""String formats checked on write; one table serves every validator so they agree.

Patterns are matched with `fullmatch`: `$` alone would accept a trailing newline.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, time

from rfc3339_validator import validate_rfc3339

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]*$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{5,19}$")


def is_date(value: str) -> bool:
    """RFC 3339 full-date: YYYY-MM-DD and a real day."""
    if not _DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def is_date_time(value: str) -> bool:
    """RFC 3339 date-time with a time zone offset."""
    # validate_rfc3339 ends its pattern with `$`, which also matches before a final newline.
    return not value.endswith("\n") and validate_rfc3339(value) and is_date(value[:10])


def is_time(value: str) -> bool:
    """HH:MM or HH:MM:SS, optional fraction and offset (operating hours)."""
    if not _TIME.fullmatch(value):
        return False
    try:
        time.fromisoformat(value[:8].rstrip("Z+-"))
    except ValueError:
        return False
    return True


def is_email(value: str) -> bool:
    return bool(_EMAIL.fullmatch(value))


def is_uri(value: str) -> bool:
    return bool(_URI.fullmatch(value))


def is_uuid(value: str) -> bool:
    return bool(_UUID.fullmatch(value))


def is_phone(value: str) -> bool:
    """A telephone number: optional +, digits, spaces, dashes, brackets (7 to 20 characters)."""
    return bool(_PHONE.fullmatch(value))


FORMATS: dict[str, Callable[[str], bool]] = {
    "date": is_date,
    "date-time": is_date_time,
    "time": is_time,
    "email": is_email,
    "uri": is_uri,
    "uuid": is_uuid,
    "phone": is_phone,
}
