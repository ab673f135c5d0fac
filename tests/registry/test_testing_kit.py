"""The testing kit plugin authors get (`registry.testing`, a pytest plugin) and the template
databases that keep this suite fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import open_registry.core.app as registry_app
from open_registry.core import Settings
from open_registry.core.migrations import prepare
from open_registry.core.testing import Messages, TemplateDatabases, client_for


def test_make_registry_and_the_notification_catcher(make_registry: Any, notifications: Messages):
    reg = make_registry(register=[notifications])
    sent = reg.pm.hook.send_notification(
        channel="sms", to="+99123", template="otp-code", context={"code": "123456"}, registry=reg
    )
    assert sent == "m1"
    assert notifications.last_code("+99123") == "123456"
    assert make_registry() is not reg  # another one, on its own database


def test_client_for_signs_in_with_the_roles_given(make_registry: Any):
    reg = make_registry()
    with client_for(reg, anonymous=True) as anon:
        assert anon.get("/api/v1/recipient").status_code == 401
    with client_for(reg, "monitoring") as monitor:
        assert monitor.post("/api/v1/vaccine", json={}).status_code == 403
    with client_for(reg) as admin:
        assert admin.get("/api/v1/recipient").status_code == 200


def _schema_and_revisions(url: str, folder: Path) -> tuple[list[Any], list[str]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        ddl = sorted(conn.execute(sa.text("SELECT type, name, sql FROM sqlite_master")).all())
    engine.dispose()
    return ddl, sorted(p.read_text() for p in (folder / "versions").glob("*.py"))


@pytest.mark.fresh_migrations  # installs its own template wrapper
def test_a_template_copy_is_what_a_fresh_start_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    templates = TemplateDatabases(tmp_path / "templates")
    monkeypatch.setattr(registry_app, "prepare", templates.wrap(prepare))
    built = []
    for n in range(2):
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / f'r{n}.db'}",
            data_dir=tmp_path / f"data{n}",
            load_entrypoints=False,
        )
        reg = registry_app.open_registry(settings)
        reg.close()
        built.append(_schema_and_revisions(settings.database_url, settings.migrations_path))
    assert (templates.misses, templates.hits) == (1, 1)
    assert built[0] == built[1]
    assert built[0][0] and len(built[0][1]) == 1  # tables and one baseline revision


@pytest.mark.fresh_migrations  # installs its own template wrapper
def test_a_database_that_is_not_empty_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    templates = TemplateDatabases(tmp_path / "templates")
    monkeypatch.setattr(registry_app, "prepare", templates.wrap(prepare))
    first = Settings(database_url=f"sqlite:///{tmp_path / 'a.db'}", data_dir=tmp_path / "a",
                     load_entrypoints=False)
    registry_app.open_registry(first).close()
    other = tmp_path / "b.db"
    engine = sa.create_engine(f"sqlite:///{other}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE mine (x INTEGER)"))
    engine.dispose()
    second = Settings(database_url=f"sqlite:///{other}", data_dir=tmp_path / "b",
                      load_entrypoints=False)
    registry_app.open_registry(second).close()
    assert templates.hits == 0
    engine = sa.create_engine(f"sqlite:///{other}")
    with engine.connect() as conn:
        names = set(conn.execute(sa.text("SELECT name FROM sqlite_master")).scalars())
    engine.dispose()
    assert "mine" in names and "recipient" in names
