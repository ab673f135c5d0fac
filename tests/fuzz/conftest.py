"""The fuzz run (`@pytest.mark.fuzz`) is CI's own step (`.ci/run`: `pytest -m fuzz tests/fuzz`):
a plain `pytest` leaves it out, unless `-m` or a path on the command line names it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from open_registry.core import Settings, open_registry
from open_registry.core.app import Registry


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    asked = "fuzz" in (config.option.markexpr or "") or any("fuzz" in a for a in config.args)
    if asked:
        return
    fuzz = [i for i in items if i.get_closest_marker("fuzz") is not None]
    if fuzz:
        config.hook.pytest_deselected(items=fuzz)
        items[:] = [i for i in items if i.get_closest_marker("fuzz") is None]


@pytest.fixture
def sqlite_registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry on a SQLite file (what these tests check does not depend on the database)."""
    reg = open_registry(
        Settings(
            database_url=f"sqlite:///{tmp_path / 'registry.db'}",
            data_dir=tmp_path / "data",
            load_entrypoints=False,
            inline_worker=False,
            # no outbox worker runs here: its lag is no reason for `/ready` to answer 503
            ready_max_lag_seconds=0,
        )
    )
    try:
        yield reg
    finally:
        reg.close()
