"""registry/app.py `freeze_after_startup`: the app's start-up freezes what it made out of the
garbage collector's sight, once per process, unless `gc_freeze` is off.

The test process has frozen its imports already (tests/conftest.py), so each test allows one
more freeze by resetting the once-per-process flag, and looks at what the freeze count gains.
Not a PostgreSQL matter: SQLite only."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import open_registry.core.app as registry_app
from open_registry.core import Settings, create_app


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'registry.db'}",
        data_dir=tmp_path / "data",
        load_entrypoints=False,
        inline_worker=False,
    )


@pytest.fixture
def unfrozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process counts as not yet frozen by an app's start-up."""
    monkeypatch.setattr(registry_app, "_gc_frozen", False)


@pytest.mark.usefixtures("unfrozen")
def test_app_start_up_freezes_what_was_made_before(settings: Settings) -> None:
    young = [[i] for i in range(2000)]  # containers the collector tracks, alive at start-up
    app = create_app(settings)
    before = gc.get_freeze_count()
    with TestClient(app) as client:
        frozen = gc.get_freeze_count()
        assert frozen >= before + len(young)
        assert gc.get_threshold()[0] >= registry_app.GC_GEN0_THRESHOLD
        assert client.get("/health").status_code == 200
    assert registry_app._gc_frozen


@pytest.mark.usefixtures("unfrozen")
def test_freeze_is_once_per_process(settings: Settings) -> None:
    assert registry_app.freeze_after_startup(settings) is True
    assert registry_app.freeze_after_startup(settings) is False


@pytest.mark.usefixtures("unfrozen")
def test_gc_freeze_off_leaves_the_collector_alone(settings: Settings) -> None:
    off = settings.with_(gc_freeze=False)
    assert Settings.load(environ={"REGISTRY_GC_FREEZE": "false"}).gc_freeze is False
    young = [[i] for i in range(2000)]
    before = gc.get_freeze_count()
    with TestClient(create_app(off)):
        # frozen objects freed since can only lower the count; nothing was added
        assert gc.get_freeze_count() <= before
    assert not registry_app._gc_frozen
    assert len(young) == 2000


def test_the_suite_lets_go_of_a_finished_tests_registry(settings: Settings) -> None:
    """tests/conftest.py clears FastAPI's classification caches after each test: without that
    they keep the last ~45 apps' endpoints, closures over their registry, alive. Fails when a
    FastAPI release renames the caches (the list is then empty) or keeps registries another way."""
    import weakref

    from tests.conftest import _FASTAPI_CALLABLE_CACHES

    assert _FASTAPI_CALLABLE_CACHES, "FastAPI's classification caches were not found"
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
    registry = weakref.ref(app.state.registry)
    del app, client
    for cached in _FASTAPI_CALLABLE_CACHES:
        cached.cache_clear()
    gc.collect()
    assert registry() is None
