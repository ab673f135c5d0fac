"""SQLite is durable by default: WAL with `synchronous=FULL`; the `sqlite_synchronous` setting
may say NORMAL, and nothing else. (Their speed is measured by benchmarks/durability.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from open_registry.core import Settings
from open_registry.core.storage import make_engine

#: what `PRAGMA synchronous` reads back
LEVELS = {1: "NORMAL", 2: "FULL"}


def pragmas(settings: Settings) -> tuple[str, str]:
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
            level = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
    finally:
        engine.dispose()
    return mode, LEVELS[level]


def test_sqlite_runs_in_wal_mode_with_full_synchronous_by_default(tmp_path: Path):
    assert Settings().sqlite_synchronous == "FULL"
    assert pragmas(Settings(data_dir=tmp_path)) == ("wal", "FULL")


def test_sqlite_synchronous_normal_is_the_one_other_choice(tmp_path: Path):
    assert pragmas(Settings(data_dir=tmp_path, sqlite_synchronous="NORMAL")) == ("wal", "NORMAL")


@pytest.mark.parametrize("value", ["normal", " Normal ", "NORMAL"])
def test_the_setting_is_read_from_the_environment_and_the_settings_file(tmp_path: Path, value: str):
    env = {"REGISTRY_SQLITE_SYNCHRONOUS": value}
    assert Settings.load(environ=env, settings_file=None).sqlite_synchronous == "NORMAL"
    toml = tmp_path / "registry.toml"
    toml.write_text(f'sqlite_synchronous = "{value}"\n')
    assert Settings.load(environ={}, settings_file=toml).sqlite_synchronous == "NORMAL"
    assert Settings.load(environ={}, settings_file=None).sqlite_synchronous == "FULL"


@pytest.mark.parametrize("value", ["OFF", "EXTRA", "0", ""])
def test_other_values_are_refused_naming_the_setting(tmp_path: Path, value: str):
    with pytest.raises(ValueError, match="'sqlite_synchronous' must be FULL or NORMAL"):
        Settings.load(environ={"REGISTRY_SQLITE_SYNCHRONOUS": value})
    with pytest.raises(ValueError, match="'sqlite_synchronous' must be FULL or NORMAL"):
        make_engine(Settings(data_dir=tmp_path, sqlite_synchronous=value))
