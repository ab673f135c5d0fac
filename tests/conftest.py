"""Fixtures: settings -> app -> client, on SQLite and (when reachable) PostgreSQL.

PostgreSQL tests use a throwaway database created for the run on 127.0.0.1:5432 (override with
REGISTRY_TEST_PG_URL, the URL of a server whose `postgres` database we may use to create others);
every test's first registry on it starts from what a fresh start builds (a copy of it: see
`registry.testing.TemplateDatabases`), or from an empty schema for `fresh_migrations` tests.
Locally they skip when no server answers; in CI (`CI=true`) a missing server is an error, so the
PostgreSQL half can never silently vanish.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import fastapi.dependencies.models as fastapi_models
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

import open_registry.core.app as registry_app
from open_registry.core import Settings, create_app
from open_registry.core.app import Registry, open_registry
from open_registry.core.testing import TemplateDatabases
from tests import cheap_hashing
from tests.authn import admin_client

FIXTURES = Path(__file__).parent / "fixtures"

# Each test builds a registry and an app: hundreds of thousands of objects that live until the
# test ends. Python's default collector walks every object ever made about once per 700
# allocations x 10 x 10 and spent a fifth of the suite doing so; what was imported is frozen
# out of its sight and it runs less often.
gc.freeze()
gc.set_threshold(20_000, 20, 20)
# ... and the apps the tests start leave it alone (`freeze_after_startup` would freeze one
# test's registry for good); tests/registry/test_startup_gc.py turns this back for its tests
registry_app._gc_frozen = True


_FASTAPI_CALLABLE_CACHES = [
    getattr(fastapi_models, name)
    for name in dir(fastapi_models)
    if name.endswith("_cached") and hasattr(getattr(fastapi_models, name), "cache_clear")
]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """When a test file's tests are over here (its module fixtures gone, and pytest's
    references to the last test's): collect its garbage, then freeze what is left (caches,
    session fixtures). Each test leaves ~10-50k objects in reference cycles (apps, registries,
    tables); the collector's full runs, left to themselves, came once per ~500 tests here and
    walked 5 million objects (~6 s each, a process with 5 GB). (Collecting after every test
    instead walks each test's objects once, but cost more in all: 336-348 s against 298 s.)

    FastAPI remembers the last 4,096 endpoints and dependencies it classified (coroutine or
    not, in `lru_cache`s of fastapi.dependencies.models): as they are closures over their
    registry, ~45 tests' registries and apps stayed alive through them. A process serving one
    app never notices; tests that make an app each forget them after each test."""
    yield
    for cached in _FASTAPI_CALLABLE_CACHES:
        cached.cache_clear()
    if nextitem is None or nextitem.path != item.path:
        gc.collect()
        gc.freeze()


# argon2's profile for tests: hundreds of users and sign-ins a run (tests/cheap_hashing.py)
cheap_hashing.install()
PG_ADMIN_URL = os.environ.get("REGISTRY_TEST_PG_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one test process more than cores (at most 4, `--maxprocesses`): the tests wait
    on servers, browsers and PostgreSQL often enough that a third process on two cores makes
    the run ~8% shorter (282 s against ~305 s here)."""
    return (os.cpu_count() or 1) + 1


def _pg_available() -> str | None:
    try:
        eng = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        eng.dispose()
        return None
    except Exception as exc:
        return str(exc).splitlines()[0]


@contextlib.contextmanager
def _throwaway_pg_database() -> Iterator[str]:
    """A database created on the test server, dropped at the end; yields its URL."""
    problem = _pg_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but not reachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    name = f"registry_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        # tests need no durability; commits without fsync keep the PostgreSQL half fast
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A database created for this test run (per process), dropped at the end; its URL."""
    with _throwaway_pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_shared_database() -> Iterator[str]:
    """Another one, for registries shared by a module's tests (`shared_demo_client`)."""
    with _throwaway_pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def template_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TemplateDatabases]:
    """This process's copies of freshly built databases (see `registry.testing`)."""
    pg = PG_ADMIN_URL if _pg_available() is None else None
    templates = TemplateDatabases(tmp_path_factory.mktemp("templates"), pg_admin_url=pg)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry_app, "prepare", templates.wrap(registry_app.prepare))
        yield templates
    templates.close()


@pytest.fixture(autouse=True)
def _template_databases(
    request: pytest.FixtureRequest, template_databases: TemplateDatabases
) -> Iterator[None]:
    """Every test opens registries from templates, except those marked `fresh_migrations`."""
    template_databases.enabled = request.node.get_closest_marker("fresh_migrations") is None
    template_databases.inherited.clear()
    yield
    template_databases.enabled = True


def reset_pg(url: str) -> None:
    eng = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    eng.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file in tmp_path, or the run's PostgreSQL database, emptied."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    url = request.getfixturevalue("pg_database")
    templates: TemplateDatabases = request.getfixturevalue("template_databases")
    if templates.enabled:
        # emptied when this test opens its first registry on it: cheaper when the tables are
        # the ones it needs (see registry.testing)
        templates.inherit(url)
    else:
        reset_pg(url)
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # tests do not survive power losses: SQLite syncs at checkpoints only (the default, FULL,
    # is tested in tests/registry/test_durability.py)
    return Settings(database_url=database_url, data_dir=tmp_path / "data", load_entrypoints=False,
                    inline_worker=False, sqlite_synchronous="NORMAL")


@pytest.fixture
def many_pg_connections(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """For a test that holds tens of PostgreSQL connections at once (parallel writers): one
    such test at a time across the run's test processes, whose other tests keep connections
    too; two of them together passed the server's 100 (`too many clients already`)."""
    lock = tmp_path_factory.getbasetemp().parent / "many-pg-connections.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    reg = open_registry(settings)
    yield reg
    reg.close()


@pytest.fixture
def client(registry: Registry) -> Iterator[TestClient]:
    """An API client signed in as a system-admin (bearer token)."""
    with admin_client(create_app(registry=registry)) as c:
        yield c


@pytest.fixture
def anon_client(registry: Registry) -> Iterator[TestClient]:
    """An API client with no credentials."""
    with TestClient(create_app(registry=registry)) as c:
        yield c


@pytest.fixture
def demo_client(registry: Registry) -> Iterator[TestClient]:
    """A system-admin client over a registry holding the demo data."""
    from open_registry.core.demo import load_demo_data

    load_demo_data(registry.services)
    with admin_client(create_app(registry=registry)) as c:
        yield c


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def shared_settings(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    template_databases: TemplateDatabases,
) -> Settings:
    """Settings of an empty database for one registry shared by a module's tests, per backend:
    only for tests that read and never write (a module's tests run one after another). The
    registry must be opened by the fixture that asks for these (PostgreSQL: the run's second
    database, emptied when opened)."""
    tmp = tmp_path_factory.mktemp("shared")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'registry.db'}"
    else:
        url = request.getfixturevalue("pg_shared_database")
        template_databases.inherit(url)
    return Settings(database_url=url, data_dir=tmp / "data", load_entrypoints=False,
                    inline_worker=False, sqlite_synchronous="NORMAL")  # fmt: skip


@pytest.fixture(scope="module")
def shared_demo_client(shared_settings: Settings) -> Iterator[TestClient]:
    """A system-admin client over the demo data, built once per module and backend
    (`shared_settings`: for tests that only read)."""
    from open_registry.core.demo import load_demo_data

    reg = open_registry(shared_settings)
    try:
        load_demo_data(reg.services)
        with admin_client(create_app(registry=reg)) as c:
            yield c
    finally:
        reg.close()
