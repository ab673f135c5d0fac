"""The programme plugin's settings: the `[plugins.programme]` table of the settings file (or
`REGISTRY_PLUGINS__PROGRAMME__<KEY>` variables). Every key has a working default."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from open_registry.core.plugin_settings import PluginSettingError, setting_bool, setting_int

STOCK_MODES = ("tracked", "required", "off")


#: a `[plugins.programme]` setting that cannot be used; the message names it
ConfigError = PluginSettingError


def parse_timezone(value: str) -> tzinfo:
    """An IANA zone name (`Asia/Kolkata`), `UTC`, or a fixed offset (`+05:30`)."""
    text = str(value).strip()
    m = re.fullmatch(r"([+-])(\d{2}):(\d{2})", text)
    if m:
        minutes = int(m.group(2)) * 60 + int(m.group(3))
        sign = -1 if m.group(1) == "-" else 1
        return timezone(sign * timedelta(minutes=minutes))
    if text.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"plugins.programme.timezone {text!r} is not a time zone name (e.g. Asia/Kolkata) "
            "or an offset (e.g. +05:30)"
        ) from None


@dataclass(frozen=True)
class ProgrammeConfig:
    """What the programme operations need to know."""

    #: the plugin's entities, checks and routes; off leaves the registry as without it
    enabled: bool = True
    #: refuse vaccinations at facilities not active for the programme (or beyond their rate)
    enforce_activation: bool = True
    #: a facility's own `programs[]` entries (DIVOC's shape) count as activation and rate for
    #: the pairs that have no facility_programme record yet
    facility_programs_fallback: bool = True
    #: "tracked": batches are checked and consumed where the facility keeps stock of that
    #: vaccine; "required": every vaccination needs a known batch; "off": no stock checks
    stock: str = "tracked"
    #: a vaccine's stock at a facility below this is "low" (unless a stock_threshold says else)
    low_stock_threshold: int = 50
    #: refuse a recipient whose name, birth year and phone match an enrolled one
    duplicate_check: bool = True
    #: the programme's local time: days for rates and rollups, slot and walk-in hours
    timezone: str = "UTC"
    #: age band lower bounds, e.g. "18,45,60" -> 0-17, 18-44, 45-59, 60+
    age_bands: str = "18,45,60"
    #: at most this many days ahead may be booked
    booking_horizon_days: int = 90
    #: where serious side effects are announced (an email address); empty: the log only
    monitoring_contact: str = ""
    #: verification counts are written at most this often (seconds) from each process
    verify_flush_seconds: int = 2
    #: offline data entry (`offline.py`): the day's data carries at most this many recipients
    #: (appointments today, then people vaccinated at the facility recently) ...
    offline_max_recipients: int = 300
    #: ... vaccinated there in the last this many days ...
    offline_recent_days: int = 3
    #: ... and at most this many of today's appointments
    offline_max_appointments: int = 500
    #: the page deletes the day's data it keeps (and people looked up) after this many hours
    offline_max_age_hours: int = 12

    @classmethod
    def from_settings(cls, settings: Any) -> ProgrammeConfig:
        raw: Mapping[str, Any] = (getattr(settings, "plugins", None) or {}).get("programme", {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown setting(s) plugins.programme.{', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for key, value in raw.items():
            default = known[key].default
            if isinstance(default, bool):
                values[key] = setting_bool(f"plugins.programme.{key}", value)
            elif isinstance(default, int):
                values[key] = setting_int(f"plugins.programme.{key}", value)
            elif key == "age_bands" and isinstance(value, list | tuple):
                values[key] = ",".join(str(v) for v in value)
            else:
                values[key] = str(value)
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        if self.stock not in STOCK_MODES:
            raise ConfigError(
                f"plugins.programme.stock must be one of {', '.join(STOCK_MODES)}, "
                f"got {self.stock!r}"
            )
        parse_timezone(self.timezone)
        self.bands  # noqa: B018 - checks the age bands
        for name in ("offline_max_recipients", "offline_recent_days", "offline_max_age_hours"):
            if getattr(self, name) < 1:
                raise ConfigError(f"plugins.programme.{name} must be at least 1")
        if self.offline_max_appointments < 0:
            raise ConfigError("plugins.programme.offline_max_appointments must be 0 or more")

    @property
    def tz(self) -> tzinfo:
        return parse_timezone(self.timezone)

    @property
    def bands(self) -> tuple[int, ...]:
        try:
            bounds = tuple(int(b) for b in self.age_bands.split(",") if b.strip())
        except ValueError:
            raise ConfigError(
                f"plugins.programme.age_bands must be whole numbers like 18,45,60, "
                f"got {self.age_bands!r}"
            ) from None
        if list(bounds) != sorted(set(bounds)) or any(b <= 0 for b in bounds):
            raise ConfigError("plugins.programme.age_bands must be increasing positive ages")
        return bounds

    def local_day(self, when: datetime) -> date:
        """The programme's calendar day of an instant."""
        return when.astimezone(self.tz).date()

    def age_band(self, age: int | None) -> str:
        """The band label of an age in whole years (`Unknown` without one)."""
        if age is None or age < 0:
            return "Unknown"
        low = 0
        for bound in self.bands:
            if age < bound:
                return f"{low}-{bound - 1}"
            low = bound
        return f"{low}+"

    def band_labels(self) -> list[str]:
        labels, low = [], 0
        for bound in self.bands:
            labels.append(f"{low}-{bound - 1}")
            low = bound
        return [*labels, f"{low}+", "Unknown"]
